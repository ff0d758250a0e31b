"""Sessions, events and the one fan-out every event goes through.

``send_event`` hands each ``Event`` to every sink attached to the session: the HF Dataset sink
always, the LangFuse forwarder when forwarding is on, test sinks in tests. A sink that raises
never breaks the agent: the failure is logged once per distinct error at WARNING and counted.

An event has two parts: ``data`` (small, typed metadata that every sink may persist) and
``payload`` (message content such as a tool's arguments or a turn's reply). ``payload`` is never
written to the HF Dataset; it is only forwarded to LangFuse, through the redaction policy.

Work is filed under LangFuse ids handed out before it is forwarded (``TraceLink`` from the
session's ``TraceLinker``); ``caller_trace`` turns the trace a caller names in an LLM call's
metadata (``existing_trace_id``) into ids LangFuse accepts.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from agent.core import guard

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TraceLink:
    """The LangFuse ids an event or an LLM call is filed under.

    ``trace_id`` / ``observation_id`` name the object LangFuse will store for the work (for a
    ``feedback`` event the observation id is the score's id); both are None while forwarding is
    off, for work that has no LangFuse object, and for a turn that sampling left out
    (``sampled`` False). ``parent_id`` is the observation the work nests under (the turn's span,
    or a caller's span); ``caller_trace`` says the trace belongs to a caller (a LangFuse
    observation or ``existing_trace_id``), whose trace-level attributes are not overwritten.
    """

    trace_id: str | None = None
    observation_id: str | None = None
    sampled: bool | None = None
    parent_id: str | None = None
    caller_trace: bool = False


_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_OBSERVATION_ID = re.compile(r"[0-9a-f]{16}")


def _normalise_id(value: Any, pattern: re.Pattern[str], nbytes: int) -> str | None:
    """A caller's id as LangFuse's OTLP ingestion needs it: lowercase hex as is (UUID dashes
    dropped), anything else hashed to ``nbytes`` bytes, as litellm's LangFuse callback does."""
    if value is None or value == "":
        return None
    text = str(value)
    compact = text.lower().replace("-", "")
    if pattern.fullmatch(compact):
        return compact
    return hashlib.sha256(text.encode("utf-8")).digest()[:nbytes].hex()


def caller_trace(metadata: Mapping[str, Any] | None) -> tuple[str, str | None] | None:
    """``(trace_id, parent_observation_id)`` from a call's ``existing_trace_id`` /
    ``parent_observation_id`` metadata (litellm's LangFuse keys), or None."""
    if not metadata:
        return None
    trace_id = _normalise_id(metadata.get("existing_trace_id"), _TRACE_ID, 16)
    if trace_id is None:
        return None
    return trace_id, _normalise_id(metadata.get("parent_observation_id"), _OBSERVATION_ID, 8)


@runtime_checkable
class TraceLinker(Protocol):
    """Hands out LangFuse ids before the work they describe is forwarded.

    ``event_type`` is the row the ids are for (``turn_start``, ``tool_call``, ``llm_call`` ...;
    None: just the trace the session's current turn is filed under). ``caller_trace`` is a
    caller's ``(trace_id, parent_observation_id)`` to file an LLM call under instead.
    """

    def link(
        self,
        session_id: str,
        turn_index: int,
        event_type: str | None = None,
        *,
        caller_trace: tuple[str, str | None] | None = None,
    ) -> TraceLink: ...


@runtime_checkable
class Sink(Protocol):
    """Receives every event. ``export`` must be cheap and must not block on I/O."""

    def export(self, event: Event) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def shutdown(self, timeout: float | None = None) -> bool: ...


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the HF Dataset (``payload`` excepted: see the module docstring)."""

    event_id: str
    event_type: str
    timestamp: datetime
    data: dict[str, Any]
    session_id: str | None = None
    user_id: str | None = None
    turn_index: int | None = None
    kind: str | None = None
    langfuse_trace_id: str | None = None
    langfuse_observation_id: str | None = None
    langfuse_sampled: bool | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    # Where the event's LangFuse object nests (not persisted: the row holds its own ids only).
    langfuse_parent_id: str | None = None
    langfuse_caller_trace: bool = False

    def to_row(self) -> dict[str, Any]:
        """The persisted shape: one JSON object per line of the dataset."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp.isoformat(timespec="microseconds"),
            "session_id": self.session_id,
            "user_id": self.user_id,
            "turn_index": self.turn_index,
            "kind": self.kind,
            "data": self.data,
            "langfuse_trace_id": self.langfuse_trace_id,
            "langfuse_observation_id": self.langfuse_observation_id,
            "langfuse_sampled": self.langfuse_sampled,
        }


class InMemorySink:
    """Keeps every event in a list. For tests and embedding; bounded by ``max_events``."""

    def __init__(self, max_events: int = 100_000) -> None:
        self.events: list[Event] = []
        self.max_events = max_events
        self.dropped = 0
        self._lock = threading.Lock()

    def export(self, event: Event) -> None:
        with self._lock:
            if len(self.events) >= self.max_events:
                self.dropped += 1
                return
            self.events.append(event)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True

    def of_type(self, event_type: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.event_type == event_type]


class SessionUsage:
    """Running totals of one session, kept from the events it sends (for ``session_end``).

    Updated by ``Session.send_event`` before the fan-out, so it sees exactly the events the
    sinks see. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started_monotonic = time.monotonic()
        self.turns = 0
        self.by_kind: dict[str, dict[str, Any]] = {}
        self.tool_calls = 0
        self.tool_errors = 0
        self.hf_jobs = 0
        self.job_cost_usd = 0.0
        self.sandboxes = 0
        self.sandbox_cost_usd = 0.0

    def add(self, event: Event) -> None:
        t, d = event.event_type, event.data or {}
        with self._lock:
            if t in ("llm_call", "llm_call_error"):
                k = self.by_kind.setdefault(
                    str(event.kind),
                    {
                        "kind": event.kind,
                        "calls": 0,
                        "errors": 0,
                        "prompt_tokens": 0,
                        "completion_tokens": 0,
                        "total_tokens": 0,
                        "cost_usd": 0.0,
                    },
                )
                if t == "llm_call_error":
                    k["errors"] += 1
                    return
                k["calls"] += 1
                for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
                    k[name] += _num(d.get(name), int)
                k["cost_usd"] += _num(d.get("cost_usd"), float)
            elif t == "turn_complete":
                self.turns += 1
            elif t == "tool_call":
                self.tool_calls += 1
                self.tool_errors += 0 if d.get("ok", True) else 1
            elif t == "hf_job_complete":
                self.hf_jobs += 1
                self.job_cost_usd += _num(d.get("estimated_cost_usd"), float)
            elif t in ("sandbox_create", "sandbox_destroy"):
                self.sandboxes += t == "sandbox_create"
                self.sandbox_cost_usd += _num(d.get("estimated_cost_usd"), float)

    def rollup(self) -> dict[str, Any]:
        """The ``session_end`` data: calls, errors, tokens and cost per kind, tools, jobs,
        sandboxes, duration and the all-in cost."""
        with self._lock:
            kinds = [dict(v) for _, v in sorted(self.by_kind.items())]
            llm_cost = sum(k["cost_usd"] for k in kinds)
            total = llm_cost + self.job_cost_usd + self.sandbox_cost_usd
            return {
                "duration_s": round(time.monotonic() - self.started_monotonic, 3),
                "turns": self.turns,
                "llm_calls": sum(k["calls"] for k in kinds),
                "llm_errors": sum(k["errors"] for k in kinds),
                "prompt_tokens": sum(k["prompt_tokens"] for k in kinds),
                "completion_tokens": sum(k["completion_tokens"] for k in kinds),
                "total_tokens": sum(k["total_tokens"] for k in kinds),
                "llm_cost_usd": round(llm_cost, 10),
                "by_kind": [{**k, "cost_usd": round(k["cost_usd"], 10)} for k in kinds],
                "tool_calls": self.tool_calls,
                "tool_errors": self.tool_errors,
                "hf_jobs": self.hf_jobs,
                "job_cost_usd": round(self.job_cost_usd, 10),
                "sandboxes": self.sandboxes,
                "sandbox_cost_usd": round(self.sandbox_cost_usd, 10),
                "total_cost_usd": round(total, 10),
            }


def _num(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return kind(0)
    return kind(value) if value == value else kind(0)  # NaN counts as 0


class Session:
    """One agent session: its ids, the turn counter and the sinks its events go to.

    ``observability`` (an ``agent.core.observability.Observability``) contributes its sinks,
    the operator's hardware prices (its config's ``hf_hardware_prices``; ``hardware_prices=``
    wins) and, when LangFuse forwarding is on, the linker that hands out trace and observation
    ids.
    """

    def __init__(
        self,
        user_id: str | None = None,
        session_id: str | None = None,
        *,
        observability: Any = None,
        sinks: Iterable[Sink] = (),
        hardware_prices: Mapping[str, float] | None = None,
    ) -> None:
        self.session_id: str = session_id or new_id()
        self.user_id: str | None = user_id
        self.turn_index: int = 0
        # True between turn_start and turn_complete. Events outside a turn (a sandbox torn down
        # at the end of a session) belong to the turn before them.
        self.in_turn: bool = False
        self.observability = observability
        self.sinks: list[Sink] = list(sinks)
        self.linker: TraceLinker | None = None
        # Totals for the session_end rollup (agent.core.telemetry.record_session_end).
        self.usage = SessionUsage()
        self.ended = False
        # The operator's hardware prices (``hf_hardware_prices``), over pricing.py's table: what
        # every job and sandbox row of this session is costed with, whoever records it.
        self.hardware_prices: Mapping[str, float] | None = hardware_prices
        if observability is not None:
            self.sinks.extend(observability.sinks)
            self.linker = observability.linker
            if hardware_prices is None:
                config = getattr(observability, "config", None)
                self.hardware_prices = getattr(config, "hf_hardware_prices", None)

    def link(
        self,
        turn_index: int | None = None,
        event_type: str | None = None,
        *,
        caller_trace: tuple[str, str | None] | None = None,
    ) -> TraceLink:
        """The LangFuse ids for new work of type ``event_type`` in ``turn_index`` (the current
        turn by default). Without ``event_type``: the trace the turn is filed under."""
        if self.linker is None:
            return TraceLink()
        with guard.guarded("session.link"):
            return self.linker.link(
                self.session_id,
                self.turn_index if turn_index is None else turn_index,
                event_type,
                caller_trace=caller_trace,
            )
        return TraceLink()

    def event_turn(self) -> int:
        """The turn an event that happens now belongs to."""
        if self.in_turn or self.turn_index == 0:
            return self.turn_index
        return self.turn_index - 1

    def send_event(self, event: Event) -> None:
        with guard.guarded("session.usage"):
            self.usage.add(event)
        send_event(self.sinks, event)


def send_event(sinks: Iterable[Sink], event: Event) -> None:
    """Fan ``event`` out to every sink; a sink that raises is reported once and skipped."""
    for sink in sinks:
        try:
            sink.export(event)
        except Exception as exc:
            guard.report(f"sink {type(sink).__name__}", exc)
