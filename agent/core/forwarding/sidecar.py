"""The forwarding sidecar, the parent's side: the forwarding core in a child process of its own.

Why: redacting a call, building its LangFuse objects with the SDK and encoding them costs a few
hundred microseconds of Python per call. On a thread of the agent's process that work holds the
GIL while the agent's own threads wait for it (up to the interpreter's switch interval: the
agent's p99). In a child process it runs on another core and never holds the agent's GIL. What
stays here: the intake worker builds our small records from litellm's objects (``capture``:
they hold the provider's key and cannot be pickled anyway) and pickles them into the pipe.

``Sidecar`` has the forwarding core's interface (``handle``, ``next_due``, ``flush``,
``shutdown``, ``stats``: see ``agent.core.forwarding.engine``), so the forwarder drives either.

Contract:

- Started at once, in the background (``python -m agent.core.forwarding.child``: the langfuse SDK
  and OpenTelemetry, never litellm; at a lower scheduling priority); nothing waits for it but
  the first batch. Its environment holds no secret value this process knows and its command
  line none at all: the settings, the policy and every known secret value go over the pipe (and
  new secret values with the next batch).
- Falls back to the same core on the intake worker's thread (``Engine``, in this process) when
  the child cannot start (``START_TIMEOUT_S``) or exits unexpectedly (logged at WARNING). Items
  the child had not handled when it exited are counted as dropped (``sidecar_exited``).
- The child's log records are re-emitted here under their own logger names (scrubbed there), its
  internal errors are counted in this process's ``agent.core.guard`` (so the test suite sees
  them), its counts and drops come with every flush and about once a second.
- ``flush(deadline)`` returns once the child has exported everything sent before it (or at the
  deadline). ``shutdown(deadline)`` asks the child to deliver and exit within the deadline, then
  kills it if it has not; what it had not handled is counted (``sidecar_killed``; what it had
  handled but not yet exported is known only from its last report, at most a second old). Both
  stay bounded when the child has stopped reading (a control message gives up at its deadline). The child also
  exits on its own at the end of its input or when this process is gone (see ``child``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from agent.core import guard
from agent.core.forwarding.child import RECORD_KINDS, ChildSpec
from agent.core.forwarding.pipe import EOF, Reader, Writer
from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings
from agent.core.privacy.known import KNOWN_SECRETS
from agent.core.privacy.redaction import RedactionPolicy

__all__ = ["START_TIMEOUT_S", "Sidecar"]

logger = logging.getLogger(__name__)

# How long the first batch waits for the child to be ready before falling back to a thread.
START_TIMEOUT_S = 30.0
# After its deadline, how long a shutdown waits for a killed child to be reaped.
_REAP_S = 1.0
_CHILD_MODULE = "agent.core.forwarding.child"


def child_environment() -> dict[str, str]:
    """This process's environment without any value it knows to be secret, and with its
    ``sys.path`` (so a redaction hook importable here is importable there)."""
    KNOWN_SECRETS.refresh_if_stale()
    secrets = [s for s in KNOWN_SECRETS.values() if s]
    # A value that holds a known secret anywhere (a URL with a password, "Bearer <key>") stays
    # behind too, not only one that equals it.
    env = {
        k: v
        for k, v in os.environ.items()
        if "SECRET" not in k.upper() and not any(s in v for s in secrets)
    }
    # An entry holding the separator itself cannot be passed on (it would split into two).
    env["PYTHONPATH"] = os.pathsep.join(
        os.path.abspath(p or ".") for p in sys.path if os.pathsep not in p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def policy_arguments(policy: RedactionPolicy) -> dict[str, Any]:
    """The policy's constructor arguments, as plain picklable data (its compiled form is rebuilt
    in the child; a hook goes by reference, so it must be importable there)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(policy):
        if f.init:
            value = getattr(policy, f.name)
            out[f.name] = dict(value) if isinstance(value, Mapping) else value
    return out


def _loopback_only() -> bool:
    """True when this process refuses non-loopback connections (the test suite, the benchmark):
    the child is then held to the same guard. Looked up, never imported: production code has no
    business importing the test doubles."""
    loopback = sys.modules.get("agent.testing.loopback")
    return bool(loopback is not None and loopback.installed())


class Sidecar:
    """See the module docstring."""

    def __init__(
        self, settings: LangfuseSettings, *, policy: RedactionPolicy, options: ForwarderOptions
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.options = options
        self._lock = threading.Lock()
        self._replied = threading.Condition(self._lock)
        self._replies: dict[int, tuple[Any, ...]] = {}
        self._ready = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: Writer | None = None
        self._fallback: Any = None  # the Engine, once running in this process
        self._why_fallback: str | None = None
        self._fell_back = threading.Event()  # set once the fallback engine is in place
        self._stopping = False
        self._seq = 0
        self._sent = 0  # items written to the pipe
        self._handled = 0  # ... of which the child reported handled
        self._secrets_version = -1
        self._child_stats: dict[str, Any] = {}
        self.dropped: Counter[str] = Counter()
        self.pid: int | None = None
        self.loopback_guarded = False  # the child refuses non-loopback connections, as we do
        # The process that owns the child: a fork of it inherits the pipe, and must never send
        # the child a flush or a shutdown (its exit would stop the parent's sidecar).
        self._owner = os.getpid()
        # Set by a shutdown (``hurry``): by when the child must be ready, or the core runs here.
        self._ready_by: float | None = None
        self._thread = threading.Thread(target=self._run, name="langfuse.sidecar", daemon=True)
        self._thread.start()

    @property
    def fallback(self) -> Any:
        """The Engine running in this process since the child failed, else None."""
        return self._fallback

    @property
    def mode(self) -> str:
        return "thread" if self._fallback is not None else "sidecar"

    # -- start-up and the reader (one thread: the child's messages, in order) --

    def _run(self) -> None:
        try:
            reader = self._start()
        except Exception as exc:
            self._kill()
            self._fall_back(f"{type(exc).__name__}: {exc}")
            return
        if reader is None:
            return
        self._ready.set()
        while True:
            try:
                message = reader.read()
            except Exception as exc:  # a corrupt frame: the child is of no further use
                guard.report("langfuse.sidecar.read", exc)
                message = EOF
            if message is EOF:
                self._child_gone()
                return
            try:
                self._on_message(message)
            except Exception as exc:
                guard.report("langfuse.sidecar.message", exc)

    def _start(self) -> Reader | None:
        spec = ChildSpec(
            settings=self.settings,
            policy=policy_arguments(self.policy),
            options=self.options,
            secrets=KNOWN_SECRETS.values(),
            log_level=logging.getLogger().getEffectiveLevel(),
            loopback_only=_loopback_only(),
            parent_pid=os.getpid(),
        )
        self._secrets_version = KNOWN_SECRETS.version
        # Pickled before the child exists: a policy that cannot cross (a hook defined inside a
        # function) means the thread at once, not a child started for nothing.
        init = pickle.dumps(("init", spec), protocol=pickle.HIGHEST_PROTOCOL)
        proc = subprocess.Popen(
            [sys.executable, "-m", _CHILD_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the child reports over the pipe, scrubbed
            env=child_environment(),
            close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        self._proc = proc
        writer = Writer(proc.stdin)
        reader = Reader(proc.stdout)
        writer.send_bytes(init)
        first = reader.read()
        while first is not EOF and first[0] == "log":  # what it said while starting
            self._on_message(first)
            first = reader.read()
        if first is EOF or first[0] != "ready":
            why = first[1] if first is not EOF and first[0] == "failed" else "it exited"
            self._kill()
            self._fall_back(str(why))
            return None
        self.pid, self.loopback_guarded = first[1], first[2]
        self._writer = writer
        return reader

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "log":
            _, name, level, text = message
            logging.getLogger(name).log(level, "%s", text)
        elif kind == "stats":
            self._update(*message[1:])
        elif kind in ("flushed", "bye"):
            _, seq, ok, *report = message
            self._update(*report)
            with self._lock:
                self._replies[seq] = (ok,)
                self._replied.notify_all()
        else:
            raise ValueError(f"unknown message from the sidecar: {kind!r}")

    def _update(self, stats: dict[str, Any], handled: int, errors: dict[str, int]) -> None:
        with self._lock:
            self._child_stats = stats
            self._handled = handled
        for where, n in errors.items():
            guard.count(where, n)

    def _child_gone(self) -> None:
        """End of the child's output: expected after a shutdown, else it died."""
        with self._lock:
            stopping = self._stopping
            lost = self._sent - self._handled
            self._sent = self._handled
            self._replied.notify_all()
            if not stopping:
                # From now on nothing is written to its pipe: records wait for the fallback
                # (handle waits until it is in place) instead of going nowhere uncounted.
                self._writer = None
                self._ready.clear()
        if stopping:
            return
        code = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._proc.wait(_REAP_S)  # reaped: no zombie left behind
        if lost:
            with self._lock:
                self.dropped["sidecar_exited"] += lost
        self._fall_back(f"it exited unexpectedly (exit status {code})", died=True)

    def _fall_back(self, why: str, *, died: bool = False) -> None:
        """Run the core on the intake worker's thread from now on (warned once)."""
        from agent.core.forwarding.engine import Engine

        with self._lock:
            if self._stopping:
                self._ready.set()
                return
            # One engine, ever: the reader (the child exited) and the intake worker (it was not
            # ready in time) can both get here at once, and a second engine would replace the
            # one that already took records (they would be neither sent nor counted).
            first = self._why_fallback is None
            if first:
                self._why_fallback = why
        if not first:
            self._fell_back.wait(START_TIMEOUT_S)  # until the first caller's engine is in place
            return
        # Once per forwarder at most (it falls back for good), so not deduplicated further.
        logger.warning(
            "LangFuse forwarding sidecar %s (%s): forwarding from a thread of this process instead",
            "died" if died else "unavailable",
            why,
        )
        try:
            engine = Engine(self.settings, policy=self.policy, options=self.options)
        except Exception as exc:
            guard.report("langfuse.sidecar.fallback", exc)
            engine = None
        with self._lock:
            self._fallback = engine
            self._writer = None
        self._ready.set()
        self._fell_back.set()

    # -- the core's interface (called on the intake worker's thread) --

    def hurry(self, deadline: float) -> None:
        """A shutdown is coming with ``deadline``: if the child is not up by half the time left,
        what the intake holds is handled here instead (a short-lived program whose sidecar
        starts slowly, on a loaded machine, still delivers its last calls)."""
        self._ready_by = time.monotonic() + max(0.0, deadline - time.monotonic()) / 2

    def _wait_ready(self) -> bool:
        give_up = time.monotonic() + START_TIMEOUT_S
        # In slices: a shutdown may bring the limit forward (``hurry``) while this waits.
        while not self._ready.wait(0.05):
            if time.monotonic() >= min(give_up, self._ready_by or give_up):
                return False
        return True

    def handle(self, items: list[tuple[str, Any]]) -> None:
        if not self._ready.is_set() and not self._wait_ready():
            self._kill()
            self._fall_back("not ready in time")
        if self._fallback is not None:
            self._fallback.handle(items)
            return
        writer = self._writer
        if writer is None:  # stopped (a shutdown whose bound ran out before the child was up)
            lost = sum(1 for kind, _ in items if kind in RECORD_KINDS)  # not control items
            with self._lock:
                self.dropped["sidecar_unavailable"] += lost
            return
        secrets = None
        if KNOWN_SECRETS.version != self._secrets_version:
            self._secrets_version = KNOWN_SECRETS.version
            secrets = KNOWN_SECRETS.values()
        self._send_items(writer, items, secrets)

    def _send_items(self, writer: Writer, items: list[tuple[str, Any]], secrets: Any) -> None:
        """One frame: each item pickled on its own (one that does not pickle, or that the child
        cannot unpickle, costs only itself) and the new secret values, which travel whatever
        becomes of the items (a secret must never be lost with an odd record)."""
        blobs: list[bytes] = []
        records = 0
        for item in items:
            try:
                blobs.append(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
            except Exception:
                with self._lock:
                    self.dropped["sidecar_unpicklable"] += 1
                guard.report("langfuse.sidecar.pickle", TypeError("a record does not pickle"))
                continue
            records += item[0] in RECORD_KINDS
        data = pickle.dumps(("items", blobs, secrets), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            current = self._writer is writer
            if current:
                self._sent += records
        if not current:
            # The child went away after handle() looked: what it would have sent goes to the
            # fallback instead (handle waits for it), not into a dead pipe.
            self.handle(items)
            return
        # A broken pipe: the child is gone, and the reader counts what it had not handled.
        with contextlib.suppress(OSError, ValueError):
            writer.send_bytes(data)

    def next_due(self) -> float | None:
        fallback = self._fallback
        return fallback.next_due() if fallback is not None else None  # the child keeps its timers

    def flush(self, deadline: float) -> bool:
        return self._request("flush", deadline)

    def shutdown(self, deadline: float) -> bool:
        """Deliver what the child can by ``deadline``, stop it (killed past the deadline) and
        count what it left behind. Idempotent. In a forked copy of the owner: nothing (the child
        is the owner's)."""
        if os.getpid() != self._owner:
            return False
        with self._lock:
            # Before the request: the child exits right after its answer, and its end must not
            # read as a death (a fallback to a thread, at shutdown).
            self._stopping = True
        ok = self._request("shutdown", deadline)
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()  # end of input: the child exits even if it missed the request
        if not self._reap(deadline):
            self._kill()
            with self._lock:
                lost = self._sent - self._handled
                self._sent = self._handled
                if lost:
                    self.dropped["sidecar_killed"] += lost
            ok = False
        self._thread.join(max(0.0, min(_REAP_S, deadline - time.monotonic())))
        proc = self._proc
        if proc is not None and proc.stdout is not None and not self._thread.is_alive():
            proc.stdout.close()  # the reader is done with it: no descriptor left per forwarder
        return ok

    def _request(self, kind: str, deadline: float) -> bool:
        if os.getpid() != self._owner:
            return False  # a forked copy: the child answers to its owner only
        if not self._ready.wait(max(0.0, deadline - time.monotonic())):
            return False
        fallback = self._fallback
        if fallback is not None:
            return bool(getattr(fallback, kind)(deadline))
        writer = self._writer
        if writer is None:
            return False
        with self._lock:
            self._seq += 1
            seq = self._seq
        # The child's own bound ends a little before ours, so its answer arrives in time.
        budget = max(0.0, (deadline - time.monotonic()) * 0.9 - 0.05)
        try:
            writer.send((kind, seq, budget), deadline=deadline)
        except (OSError, ValueError):  # TimeoutError included: the child stopped reading
            return False
        with self._lock:
            while seq not in self._replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._replied.wait(remaining)
            (ok,) = self._replies.pop(seq)
        return bool(ok)

    def _reap(self, deadline: float) -> bool:
        proc = self._proc
        if proc is None:
            return True
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            # Not reaped in time: the interpreter reaps it with its next subprocess call.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_REAP_S)

    def stats(self) -> dict[str, Any]:
        fallback = self._fallback
        with self._lock:
            dropped = Counter(self.dropped)
            child = dict(self._child_stats)
        if fallback is not None:
            engine = fallback.stats()
            dropped.update(child.pop("dropped", {}))
            dropped.update(engine.pop("dropped"))
            for key in ("generations", "spans", "traces", "scores"):
                if key in child:
                    engine[key] = engine.get(key, 0) + child[key]
            child = engine
        else:
            dropped.update(child.pop("dropped", {}))
        for key in ("generations", "spans", "traces"):
            child.setdefault(key, 0)  # the same keys as in-thread, before the child's first report
        child["dropped"] = {k: v for k, v in dropped.items() if v}
        child["forwarder_mode"] = self.mode
        if self.pid is not None:
            child["sidecar_pid"] = self.pid
        return child
