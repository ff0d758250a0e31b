"""LangfuseForwardingLogger: LLM calls and session events as LangFuse traces.

A litellm ``CustomLogger`` (for LLM calls, sync and async, success and failure, streamed or
not) that is also an event sink (for ``turn_*``, ``tool_call``, ``hf_job_*``, ``sandbox_*``,
``session_end`` and ``feedback`` events from the same ``send_event`` fan-out as the HF Dataset
sink). Its ``linker`` hands out LangFuse ids before the work happens, so the HF rows carry them
(``agent.core.forwarding.linker``).

Object model (``agent.core.forwarding.engine`` builds it): a session is a LangFuse session; a
turn is a trace with one span ``turn``; each LLM call is a generation ``llm.<kind>`` under it;
tools, jobs and sandboxes are spans and events under it; feedback is a score on the trace.

Never in the agent's way: the litellm hooks and ``export`` only take references and put them
on a bounded queue (``BatchWorker``: drops counted, never blocking). The queue's worker builds
our records from them (``capture``) and hands them to the forwarding core (``Engine``), which
redacts, builds the LangFuse objects with the official SDK and hands finished spans to the
exporter's queue (the second and last before the socket). Where the core runs is
``options.mode``: ``"sidecar"`` (opt-in) in a child process of its own, fed through a pipe
(``agent.core.forwarding.sidecar``: the core's Python never holds this process's GIL), falling
back to ``"thread"`` (the intake worker's thread) when no child can start. An exporter object
passed in (``span_exporter=``) lives in this process, so it means ``"thread"``. ``flush(timeout)`` and
``shutdown(timeout)`` are bounded even on a dead or silent host, and say what they did not
deliver: ``stats()["dropped"]`` by reason.

Which calls litellm handed over: a call's HF row and its callback meet by event id, so flush and
shutdown can count calls whose callback never came (``settle_calls``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from agent.core import guard
from agent.core.batch import BatchWorker
from agent.core.forwarding.capture import CallRefs, call_record
from agent.core.forwarding.engine import Engine
from agent.core.forwarding.linker import EVENT_TYPES, TraceLinker
from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings
from agent.core.forwarding.sidecar import Sidecar
from agent.core.internals import langfuse as sdk_internals
from agent.core.privacy.known import KNOWN_SECRETS
from agent.core.privacy.redaction import RedactionPolicy
from agent.core.session import Event
from agent.core.telemetry import METADATA_KEY, CallContext

__all__ = ["LangfuseForwardingLogger"]

logger = logging.getLogger(__name__)

# A call's HF row: its LangFuse generation comes through litellm's callback, not this event.
_CALL_EVENT_TYPES = frozenset({"llm_call", "llm_call_error"})
# What the forwarder's own queue drops, by its reason, as the forwarder reports it.
_INTAKE_DROPS = {"queue_full": "queue_full", "closed": "after_shutdown"}


class LangfuseForwardingLogger(CustomLogger):
    """See the module docstring. Create it through ``agent.core.observability`` (the gate)."""

    # How long the worker lets a burst of records gather after a quiet spell (performance: one
    # wake-up and one hand-over of the GIL per burst, not per record).
    GATHER_S = 0.02
    # Records handed to the core at a time (see ``_handle``).
    CHUNK = 4

    def __init__(
        self,
        settings: LangfuseSettings,
        *,
        policy: RedactionPolicy | None = None,
        options: ForwarderOptions | None = None,
        span_exporter: Any = None,
        sidecar: Sidecar | None = None,
    ) -> None:
        """``sidecar``: one already started for these settings (``register`` starts it before
        importing this module); else one is started here when ``options.mode`` says so."""
        super().__init__()
        self.settings = settings
        self.policy = policy or RedactionPolicy.from_spec(None)
        self.options = options or ForwarderOptions()
        self._lock = threading.Lock()
        self._closed = False
        self.counts = Counter[str]()
        self.dropped = Counter[str]()
        # Calls whose HF row was written but whose litellm callback has not reached us yet
        # (event id -> when the row came), and callbacks that came before their row.
        self._awaited: dict[str, float] = {}
        self._early: dict[str, None] = {}
        KNOWN_SECRETS.add(settings.secret_key)
        in_child = sidecar is not None or (self.options.mode == "sidecar" and span_exporter is None)
        # The linker runs on the agent's threads (``Observability.linker``). Its tracer name
        # tells the SDK's spans from a caller's: with the core in the sidecar, an SDK span here
        # can only be the application's own, so the SDK's name is asked only if the
        # application imported the SDK (performance: the import costs this process ~0.3 s).
        self.linker = TraceLinker(
            sample_rate=float(settings.sample_rate),
            nest_in_caller_trace=self.options.nest_in_caller_trace,
            tracer_name=sdk_internals.tracer_name()
            if not in_child or "langfuse" in sys.modules
            else sdk_internals.DEFAULT_TRACER_NAME,
        )
        # The forwarding core: the Engine here, or the sidecar that runs it in a child process.
        self.core: Engine | Sidecar
        if sidecar is not None:
            self.core = sidecar
        elif in_child:
            self.core = Sidecar(settings, policy=self.policy, options=self.options)
        else:
            self.core = Engine(
                settings, policy=self.policy, options=self.options, span_exporter=span_exporter
            )
        # Records bound for the sidecar carry their messages pickled (see ``call_record``).
        self._pack = isinstance(self.core, Sidecar)
        self._intake: BatchWorker[tuple[str, Any]] = BatchWorker(
            "langfuse.forwarder",
            self._handle,
            capacity=self.options.queue_size,
            gather_s=self.GATHER_S,
            tick=self.core.next_due,
        )

    @property
    def engine(self) -> Engine | None:
        """The forwarding core when it runs in this process (``"thread"`` mode or the sidecar's
        fallback), else None."""
        core = self.core
        return core if isinstance(core, Engine) else core.fallback

    def trace_url(self, trace_id: str) -> str:
        return f"{self.settings.host}/trace/{trace_id}"

    @property
    def closed(self) -> bool:
        return self._closed

    # -- litellm hooks: take references, enqueue, return --

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._enqueue_call(kwargs, response_obj, start_time, end_time)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._enqueue_call(kwargs, None, start_time, end_time)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._enqueue_call(kwargs, response_obj, start_time, end_time)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._enqueue_call(kwargs, None, start_time, end_time)

    def _enqueue_call(self, kwargs: Any, response: Any, start_time: Any, end_time: Any) -> None:
        with guard.guarded("langfuse.callback"):
            md = (kwargs.get("litellm_params") or {}).get("metadata") or {}
            ours = md.get(METADATA_KEY)
            if not isinstance(ours, dict) or not ours.get("event_id"):
                # Not a call made through agent.core.llm: it carries no context of ours, so it
                # is not forwarded.
                self._count("foreign_calls")
                return
            if ours.get("langfuse_sampled") is False:
                self._count("sampled_out_calls")
                return
            if not ours.get("langfuse_trace_id"):
                # Made before forwarding was on: its row has no ids, so nothing is forwarded.
                self._count("unlinked_calls")
                return
            ctx = CallContext.from_metadata(ours)
            self._call_arrived(ctx.event_id)
            self._put(("call", CallRefs(ctx, kwargs, response, start_time, end_time)))

    # -- the sink: session events --

    def export(self, event: Event) -> None:
        if event.event_type in _CALL_EVENT_TYPES:
            self._call_recorded(event)
            return
        if event.event_type not in EVENT_TYPES or event.session_id is None:
            return
        if event.langfuse_sampled is False:
            self._count("sampled_out_events")
            return
        self._put(("event", event))

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _put(self, item: tuple[str, Any]) -> None:
        if self._intake.put(item):
            return
        if not self._closed:
            guard.warn_once(
                "langfuse-queue-full",
                "LangFuse forwarding queue is full (%d items): dropping (counted). Is the "
                "LangFuse host reachable?",
                self.options.queue_size,
            )

    # -- the worker: references -> records -> the forwarding core --

    def _handle(self, batch: list[tuple[str, Any]]) -> None:
        if not batch:
            self.core.handle([])  # a timer of the core is due
        # Why (latency): a few records at a time. Handing them over (a write to the sidecar's
        # pipe, or the core's own yield) lets the agent's threads have the GIL in between, so
        # a burst never holds them up for more than a few records' work.
        for start in range(0, len(batch), self.CHUNK):
            items = []
            for kind, item in batch[start : start + self.CHUNK]:
                if kind == "call":
                    try:
                        item = call_record(item, pack=self._pack)
                    except Exception as exc:  # one odd response costs only its own call
                        guard.report("langfuse.worker.capture", exc)
                        continue
                items.append((kind, item))
            self.core.handle(items)

    # -- which calls litellm handed over: a call's row and its callback meet by event id --

    def _call_recorded(self, event: Event) -> None:
        if not event.langfuse_trace_id or event.langfuse_sampled is False:
            return  # made while forwarding was off, or sampled out: no callback is awaited
        with self._lock:
            if event.event_id in self._early:
                del self._early[event.event_id]
                return
            self._awaited[event.event_id] = time.monotonic()
            if len(self._awaited) > self.options.queue_size:
                # Bounded: litellm is far behind (or lost these); count the oldest as dropped.
                del self._awaited[next(iter(self._awaited))]
                self.dropped["no_litellm_callback"] += 1

    def _call_arrived(self, event_id: str) -> None:
        with self._lock:
            if event_id in self._awaited:
                del self._awaited[event_id]
                return
            self._early[event_id] = None
            if len(self._early) > self.options.queue_size:
                del self._early[next(iter(self._early))]

    def settle_calls(self, *, since: float, litellm_idle: bool, final: bool) -> int:
        """How many calls recorded before ``since`` (a ``time.monotonic()``) never reached this
        forwarder through litellm's callbacks. When litellm has nothing left to run
        (``litellm_idle``) they never will: counted as dropped (``no_litellm_callback``). At
        shutdown (``final``), calls whose callbacks litellm was still running are dropped too
        (``litellm_callback_pending``). Otherwise they are only reported."""
        with self._lock:
            late = [k for k, t in self._awaited.items() if t <= since]
            if late and (litellm_idle or final):
                for key in late:
                    del self._awaited[key]
                reason = "no_litellm_callback" if litellm_idle else "litellm_callback_pending"
                self.dropped[reason] += len(late)
        return len(late)

    # -- lifecycle --

    def flush_report(self, timeout: float | None = None) -> dict[str, Any]:
        """Flush what is queued (bounded) and report; the forwarder stays open."""
        self.flush(timeout)
        return self.stats()

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver what is queued within ``timeout``: turns that ended (or are known from their
        children only) close now, without waiting for their grace period."""
        deadline = time.monotonic() + (self.options.flush_timeout_s if timeout is None else timeout)
        if self._closed:
            return True
        self._intake.put(("close_turns", "flush"), force=True)
        if not self._intake.drain(deadline):
            return False
        return self.core.flush(deadline)

    def shutdown(self, timeout: float | None = None) -> dict[str, Any]:
        """Deliver what can be delivered within ``timeout`` seconds, then stop. Idempotent."""
        deadline = time.monotonic() + (self.options.flush_timeout_s if timeout is None else timeout)
        with self._lock:
            already, self._closed = self._closed, True
        if already:
            return self.stats()
        self._intake.put(("close_turns", "shutdown"), force=True)
        hurry = getattr(self.core, "hurry", None)  # the sidecar's: see Sidecar.hurry
        if hurry is not None:
            hurry(deadline)
        drained = self._intake.close(deadline)
        finished = self.core.shutdown(deadline)
        report = self.stats()
        report["completed_in_time"] = bool(drained and finished)
        total_dropped = sum(report["dropped"].values())
        if total_dropped:
            logger.warning(
                "LangFuse forwarding dropped %d item(s): %s",
                total_dropped,
                ", ".join(f"{k}={v}" for k, v in sorted(report["dropped"].items())),
            )
        return report

    def stats(self) -> dict[str, Any]:
        engine = self.core.stats()
        with self._lock:
            dropped = Counter(self.dropped)
            counts = dict(self.counts)
        for reason, n in self._intake.dropped.items():
            dropped[_INTAKE_DROPS.get(reason, reason)] += n
        dropped.update(engine.pop("dropped"))
        return {
            "host": self.settings.host,
            "queued": self._intake.queued,
            "queue_high_water": self._intake.high_water,
            **counts,
            **engine,
            "dropped": {k: v for k, v in dropped.items() if v},
        }
