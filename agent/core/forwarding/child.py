"""The forwarding sidecar's own process: the forwarding core, fed over a pipe by its parent.

Started by ``agent.core.forwarding.sidecar`` as ``python -m agent.core.forwarding.child``, with
its standard input and output as the two pipes and an environment holding no secret (the
settings, the redaction policy and every known secret value come over the pipe, in the first
message). It imports the langfuse SDK and OpenTelemetry, never litellm. Ctrl-C (SIGINT, sent
to the whole foreground process group) is ignored: the parent decides when the child stops.

Contract:

- First message ``("init", ChildSpec)``; the answer is ``("ready", pid, loopback_guarded)``
  once the core is built, or ``("failed", text)`` (then it exits).
- ``("items", blobs, secrets)``: each item pickled on its own, for ``Engine.handle``
  (``secrets``: the parent's known secret values when they changed since the last message,
  else None; learned first, whatever becomes of the items). An item that does not unpickle is
  counted (``sidecar_unpicklable``) and costs only itself, as does one that fails in
  ``Engine.handle``; a message that fails costs only itself. ``handled`` counts records (calls
  and events), not control items.
- ``("flush", seq, budget_s)`` / ``("shutdown", seq, budget_s)``: answered with
  ``("flushed" | "bye", seq, ok, stats, handled)``; after ``bye`` the process exits.
- Along the way: ``("log", logger name, level, text)`` for every record at or above the
  parent's level (scrubbed here, re-emitted there), and ``("stats", stats, handled,
  errors)`` about once a second while something changed (``errors``: new internal-error
  counts by place, which the parent reports as its own).
- It dies with its parent: at the end of its input (the parent exited or closed the pipe) or
  when its parent process is gone, it closes the turns it holds, delivers within the flush
  bound, and exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import select
import signal
import sys
import time
from collections import Counter
from types import MappingProxyType
from typing import Any

from agent.core import guard
from agent.core.forwarding.pipe import EOF, Reader, Writer
from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings

__all__ = ["RECORD_KINDS", "ChildSpec", "main"]

STATS_EVERY_S = 1.0
NICE = 10  # added to the parent's scheduling niceness


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """Everything the child needs, sent over the pipe (never in its argv or environment)."""

    settings: LangfuseSettings
    policy: dict[str, Any]  # RedactionPolicy's constructor arguments (``sidecar.policy_arguments``)
    options: ForwarderOptions
    secrets: tuple[str, ...]
    log_level: int
    loopback_only: bool
    parent_pid: int


# Items that carry a record (the others are control items, never counted as lost): what the
# parent counts as sent and this process as handled.
RECORD_KINDS = frozenset({"call", "event"})


class _ToParent(logging.Handler):
    """Log records as ``("log", ...)`` messages, scrubbed of every secret this process knows."""

    def __init__(self, writer: Writer) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        from agent.core.privacy.scrubber import scrub

        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" ({type(exc).__name__}: {exc})"
            self._writer.send(("log", record.name, record.levelno, scrub(text)))
        except Exception:
            pass  # the parent is gone: nobody is left to tell


class Child:
    """The core and the loop that feeds it (see the module docstring)."""

    def __init__(self, spec: ChildSpec, reader: Reader, writer: Writer, stdin_fd: int) -> None:
        from agent.core.forwarding.engine import Engine

        self._reader = reader
        self._writer = writer
        self._fd = stdin_fd
        self._parent = spec.parent_pid
        _learn(spec.secrets)
        self.engine = Engine(spec.settings, policy=_policy(spec.policy), options=spec.options)
        self._budget = spec.options.flush_timeout_s
        self.handled = 0  # records (calls and events) handled, control items not counted
        self.unpicklable = 0  # records that did not unpickle here
        self._errors_sent: Counter[str] = Counter()
        self._last_stats: Any = None
        self._stats_due = time.monotonic()

    # -- the loop --

    def run(self) -> None:
        loopback = sys.modules.get("agent.testing.loopback")  # imported only for the guard
        guarded = bool(loopback is not None and loopback.installed())
        self._writer.send(("ready", os.getpid(), guarded))
        while True:
            due = self.engine.next_due()
            wait = STATS_EVERY_S if due is None else max(0.0, min(due, STATS_EVERY_S))
            readable, _, _ = select.select([self._fd], [], [], wait)
            if not readable:
                if not self._parent_alive():
                    break
                self.engine.handle([])  # a turn is due to close
                self._push_stats()
                continue
            message = self._reader.read()
            if message is EOF:
                break
            try:
                if self._dispatch(message):
                    return
            except Exception as exc:
                guard.report("langfuse.sidecar.child", exc)
        self._last_words()

    def _dispatch(self, message: tuple[Any, ...]) -> bool:
        """Handle one message; True when the child is done."""
        kind = message[0]
        if kind == "items":
            _, blobs, secrets = message
            if secrets is not None:
                _learn(secrets)  # first: whatever becomes of the items
            items = []
            for blob in blobs:
                try:
                    items.append(pickle.loads(blob))
                except Exception as exc:
                    # A record that pickled there but does not unpickle here (an exception
                    # with keyword-only arguments ...) costs only itself, and is counted.
                    self.unpicklable += 1
                    self.handled += 1
                    guard.report("langfuse.sidecar.unpickle", exc)
            self.engine.handle(items)
            self.handled += sum(1 for k, _ in items if k in RECORD_KINDS)
            if time.monotonic() >= self._stats_due:
                self._push_stats()
            return False
        if kind == "flush":
            _, seq, budget = message
            ok = self.engine.flush(time.monotonic() + budget)
            self._writer.send(("flushed", seq, ok, *self._report()))
            return False
        if kind == "shutdown":
            _, seq, budget = message
            ok = self.engine.shutdown(time.monotonic() + budget)
            self._writer.send(("bye", seq, ok, *self._report()))
            return True
        raise ValueError(f"unknown message {kind!r}")

    def _parent_alive(self) -> bool:
        # Reparented (our parent exited and something else adopted us): the parent is gone even
        # if a process it forked still holds the pipe open.
        return os.getppid() == self._parent

    def _last_words(self) -> None:
        """The parent is gone: close every turn, deliver within the flush bound, exit."""
        self.engine.handle([("close_turns", "shutdown")])
        self.engine.shutdown(time.monotonic() + self._budget)

    # -- what the parent hears --

    def _report(self) -> tuple[dict[str, Any], int, dict[str, int]]:
        """(stats, items handled, internal errors counted since the last report, by place)."""
        counts = guard.error_counts()
        new = {k: v - self._errors_sent[k] for k, v in counts.items() if v > self._errors_sent[k]}
        self._errors_sent.update(new)
        stats = self.engine.stats()
        if self.unpicklable:
            stats["dropped"]["sidecar_unpicklable"] = self.unpicklable
        return stats, self.handled, new

    def _push_stats(self) -> None:
        self._stats_due = time.monotonic() + STATS_EVERY_S
        stats, handled, errors = self._report()
        snapshot = (stats, handled)
        if snapshot == self._last_stats and not errors:
            return
        self._last_stats = snapshot
        self._writer.send(("stats", stats, handled, errors))


def _policy(arguments: dict[str, Any]) -> Any:
    """The parent's policy again (``sidecar.policy_arguments``: mappings came as dicts)."""
    from agent.core.privacy.redaction import RedactionPolicy

    return RedactionPolicy(
        **{k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in arguments.items()}
    )


def _learn(secrets: tuple[str, ...]) -> None:
    from agent.core.privacy.known import KNOWN_SECRETS

    for value in secrets:
        KNOWN_SECRETS.add(value)


def _setup_process(spec: ChildSpec, writer: Writer) -> None:
    if spec.loopback_only:
        from agent.testing import loopback

        loopback.install("forwarding sidecar")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_ToParent(writer))
    root.setLevel(spec.log_level)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Background work: when the cores are busy, the agent's own threads go first.
    with contextlib.suppress(OSError):
        os.nice(NICE)
    stdin = os.fdopen(sys.stdin.fileno(), "rb", buffering=0)  # unbuffered: select sees it all
    # The pipe to the parent on a descriptor of its own; descriptor 1 becomes stderr (the null
    # device), so a stray print, even from C, never corrupts the pipe.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    writer = Writer(out)
    reader = Reader(stdin)
    first = reader.read()
    if first is EOF or first[0] != "init":
        return 2
    spec: ChildSpec = first[1]
    try:
        _setup_process(spec, writer)
        child = Child(spec, reader, writer, stdin.fileno())
    except Exception as exc:
        from agent.core.privacy.scrubber import scrub

        writer.send(("failed", scrub(f"{type(exc).__name__}: {exc}")))
        return 1
    try:
        child.run()
    except Exception as exc:  # the last resort: say why (scrubbed), then exit
        logging.getLogger(__name__).error(
            "LangFuse forwarding sidecar stopped: %s: %s", type(exc).__name__, exc
        )
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    # Everything is delivered (or counted) by now: skip the interpreter's teardown (the SDK's
    # and OpenTelemetry's exit hooks would flush again), which the parent's shutdown waits for.
    os._exit(code)
