"""The forwarding core: our records, redacted, as LangFuse objects on the wire.

``Engine.handle(items)`` runs on one worker thread and takes a batch of items:

- ``("call", CallRecord)``: an LLM call, as a generation under its turn (or a caller's span);
- ``("event", Event)``: a session event, as the turn's own span, a child span or event, or (for
  ``feedback``) a score;
- ``("close_turns", "flush" | "shutdown")``: close the turns a flush or shutdown closes.

Each record passes the operator's redaction policy first (``redact``: the single choke point,
nothing reaches the SDK unredacted), then every string is made encodable (a lone surrogate
would fail a whole export batch). An item that raises is reported through ``agent.core.guard``
(logged once, raised under tests) and costs only itself.

The same core runs in the agent's process (in-thread mode) and in the forwarding sidecar: it
needs no litellm and no agent state, only records. ``counts`` / ``dropped`` say what the host
acknowledged and what was lost, by reason; ``stats()`` is their snapshot.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, OrderedDict
from typing import Any

from agent.core import guard
from agent.core.encodable import encodable
from agent.core.forwarding.build import Builder, item_wire_text
from agent.core.forwarding.capture import score_record, span_record
from agent.core.forwarding.client import SdkClient
from agent.core.forwarding.linker import TURN_EVENTS, score_id_for, trace_id_for, turn_span_id
from agent.core.forwarding.scores import score_body
from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings
from agent.core.forwarding.turns import Turns
from agent.core.internals import langfuse as sdk_internals
from agent.core.privacy.memo import ContentMemo
from agent.core.privacy.redaction import RedactionPolicy, RedactionReport, redact
from agent.core.privacy.scrubber import scrub
from agent.core.records import CallRecord
from agent.core.session import Event

__all__ = ["Engine"]

logger = logging.getLogger(__name__)

# Turn span ids already counted as acknowledged traces (bounded; see _on_exported).
_MAX_ACKED_TURNS = 4096
# In a long burst, the worker lets the agent's thread have the GIL after this many items.
YIELD_EVERY = 4
# A call record's fields other than its messages and tools (which the memo finishes).
_CALL_REST = tuple(
    f.name for f in dataclasses.fields(CallRecord) if f.name not in ("messages", "tools")
)
# What the exporter's queue drops, by its reason, as the forwarder reports it.
_EXPORT_QUEUE_DROPS = {
    "queue_full": "export_queue_full",
    "closed": "not_exported_at_shutdown",
    "not_processed_at_shutdown": "not_exported_at_shutdown",
}


class Engine:
    """See the module docstring."""

    def __init__(
        self,
        settings: LangfuseSettings,
        *,
        policy: RedactionPolicy,
        options: ForwarderOptions,
        span_exporter: Any = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self._lock = threading.Lock()
        self.dropped = Counter[str]()
        # generations, spans, traces: what the host acknowledged (see _on_exported)
        self.counts = Counter[str]({"generations": 0, "spans": 0, "traces": 0})
        self._acked_turns: OrderedDict[int, None] = OrderedDict()
        self._warned: set[str] = set()
        self._since_yield = 0  # records handled since the worker last offered the GIL
        self.sdk = SdkClient(
            settings,
            options,
            span_exporter=span_exporter,
            media_upload=policy.media_upload,
            count=self.count,
            on_exported=self._on_exported,
            on_export_drop=self._on_export_drop,
            on_score_result=self._on_score_result,
        )
        # Always there (with 0 bytes it remembers nothing): a sidecar's records come with their
        # messages packed, and the memo is what unpacks them. It remembers only when the SDK
        # gets our text, never our objects: an SDK mask or its media upload may change the
        # objects it is handed, and a remembered item is handed out again.
        remember = not policy.media_upload and sdk_internals.client_mask_is_unset(self.sdk.client)
        self.memo = ContentMemo(
            encodable,  # a remembered item is handed out finished: see _redact
            text_of=item_wire_text,
            max_bytes=options.content_memo_bytes if remember else 0,
        )
        self.builder = Builder(
            client=self.sdk.client,
            tracer=self.sdk.tracer,
            ids=self.sdk.ids,
            trace_name=options.trace_name,
            wire_texts=self.memo.wire_text,
        )
        self.turns = Turns(emit=self.builder.turn, count=self.count, grace_s=options.turn_grace_s)
        self._handlers = {
            "call": self._call,
            "event": self._event,
            "close_turns": lambda why: self.turns.close_all(final=why == "shutdown"),
        }

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    # -- the worker --

    def handle(self, items: list[tuple[str, Any]]) -> None:
        """Forward a batch (possibly empty: a timer of the turns is due)."""
        self.turns.close_due()
        for kind, item in items:
            try:
                self._handlers[kind](item)
            except Exception as exc:
                guard.report(f"langfuse.worker.{kind}", exc)
            self._since_yield += 1
            if self._since_yield >= YIELD_EVERY:
                # Why (latency): in a long burst, let the agent's threads have the GIL every
                # few records (counted across batches: the intake hands them over in chunks),
                # so a burst never holds them up for more than a few records' work.
                self._since_yield = 0
                time.sleep(0)

    def next_due(self) -> float | None:
        """Seconds until the worker must run without new items (an open turn closes)."""
        return self.turns.next_close()

    def _redact(self, record: Any) -> tuple[Any, RedactionReport]:
        """The policy's copy of ``record``, then every string made encodable: a lone surrogate
        (a non-UTF-8 file name in a tool error ...) would make the whole export batch fail."""
        if isinstance(record, CallRecord):
            # Messages and tool definitions come out of the memo encodable (its finish step):
            # the rest of the record is made encodable here.
            red, report = redact(record, self.policy, memo=self.memo)
            rest, replaced = encodable(tuple(getattr(red, name) for name in _CALL_REST))
            if replaced:
                red = dataclasses.replace(red, **dict(zip(_CALL_REST, rest, strict=True)))
                report.unencodable += replaced
        else:
            red, report = redact(record, self.policy)
            red, replaced = encodable(red)
            report.unencodable += replaced
        if report.unencodable:
            self.count("unencodable_replaced", report.unencodable)
        return red, report

    def _call(self, record: CallRecord) -> None:
        red, report = self._redact(record)
        assert red.trace_id is not None
        parent = red.parent_id
        if parent is None and not red.caller_trace:  # a context from before parent ids
            parent = turn_span_id(red.session_id, red.turn_index, red.trace_id)
        turn = self.turns.for_child(
            red.trace_id, parent, red.session_id, red.turn_index, red.user_id, red.caller_trace
        )
        if turn is not None:
            turn.add_call(red)
        self.builder.generation(red, report, parent=parent, turn=turn)

    def _event(self, event: Event) -> None:
        if event.event_type == "feedback":
            self._feedback(event)
            return
        red, report = self._redact(span_record(event))
        ti = event.turn_index or 0
        sid = event.session_id or ""
        trace_id = red.trace_id or trace_id_for(sid, ti)
        if event.event_type in TURN_EVENTS:
            span_id = red.observation_id or turn_span_id(sid, ti, trace_id)
            turn = self.turns.for_event(event, red, trace_id, span_id)
            if event.event_type == "turn_start":
                self.turns.start(turn, red)
            else:
                self.turns.complete(turn, red, event)
            return
        caller_trace = event.langfuse_caller_trace
        parent = event.langfuse_parent_id
        if parent is None and not caller_trace:
            parent = turn_span_id(sid, ti, trace_id)
        turn = self.turns.for_child(trace_id, parent, red.session_id, ti, red.user_id, caller_trace)
        if turn is not None:
            turn.add_child(red)
        self.builder.child(red, report, trace_id=trace_id, parent=parent, caller_trace=caller_trace)

    def _feedback(self, event: Event) -> None:
        trace_id = event.langfuse_trace_id or trace_id_for(
            event.session_id or "", event.turn_index or 0
        )
        red, _ = self._redact(score_record(event, trace_id))
        score_id = event.langfuse_observation_id or score_id_for(event.event_id)
        if not self.sdk.scores.submit(score_body(red, score_id, self.settings.environment)):
            with self._lock:
                self.dropped["score_queue_full"] += 1

    # -- what the host said --

    def _on_exported(self, spans: Any) -> None:
        """Count what the host acknowledged (not what was queued): a turn's root span is its
        trace, a generation is a call, anything else a span or event."""
        counts: Counter[str] = Counter()
        for span in spans:
            if span.name == "turn":
                # A turn span re-sent wider (a late child) is still one trace.
                span_id = span.get_span_context().span_id
                with self._lock:
                    if span_id in self._acked_turns:
                        continue
                    self._acked_turns[span_id] = None
                    if len(self._acked_turns) > _MAX_ACKED_TURNS:
                        self._acked_turns.popitem(last=False)
                counts["traces"] += 1
            elif (span.attributes or {}).get("langfuse.observation.type") == "generation":
                counts["generations"] += 1
            else:
                counts["spans"] += 1
        with self._lock:
            self.counts.update(counts)

    def _on_export_drop(self, count: int, reason: str) -> None:
        with self._lock:
            self.dropped[f"export_{reason}"] += count

    def _on_score_result(self, outcome: str, status: int | None, text: str) -> None:
        with self._lock:
            if outcome == "accepted":
                self.counts["scores"] += 1
                return
            self.dropped[f"score_{outcome}"] += 1
            first = outcome not in self._warned
            self._warned.add(outcome)
        if first:
            # A network failure's text names its cause (refused, DNS, TLS, timeout: scores.py).
            where = f"HTTP {status}" if status is not None else (text or "no answer")
            hint = ""
            if status == 400:
                hint = f" (the server found the score invalid: {scrub(text)[:200]!r})"
            elif status in (401, 403):
                hint = " (check LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY and the host's region)"
            logger.warning(
                "LangFuse did not accept a feedback score: %s%s; it is dropped (counted). "
                "Further failures like this one are counted, not logged.",
                where,
                hint,
            )

    # -- lifecycle (after the worker has handled the matching close_turns item) --

    def flush(self, deadline: float) -> bool:
        return self.sdk.flush(deadline)

    def shutdown(self, deadline: float) -> bool:
        """Deliver what can be delivered by ``deadline``, then stop; True when all of it was."""
        finished, unsent = self.sdk.shutdown(deadline)
        if unsent:
            with self._lock:
                self.dropped["score_not_sent_at_shutdown"] += unsent
        return finished and not unsent

    def stats(self) -> dict[str, Any]:
        """Counts and drops so far, and the exporter's own figures."""
        with self._lock:
            dropped = Counter(self.dropped)
            out: dict[str, Any] = {**self.counts}
        for reason, n in self.sdk.handoff.worker.dropped.items():
            dropped[_EXPORT_QUEUE_DROPS.get(reason, f"export_{reason}")] += n
        out["dropped"] = {k: v for k, v in dropped.items() if v}
        stats = getattr(self.sdk.exporter, "stats", None)
        if callable(stats):
            out["exporter"] = stats()
        return out
