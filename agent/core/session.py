"""Sessions, events and the one fan-out every event goes through.

``send_event`` hands each ``Event`` to every sink attached to the session: the HF Dataset sink
always, the LangFuse forwarder when forwarding is on, test sinks in tests. A sink that raises
never breaks the agent: the failure is logged once per distinct error at WARNING and counted.

An event has two parts: ``data`` (small, typed metadata that every sink may persist) and
``payload`` (message content such as a tool's arguments or a turn's reply). ``payload`` is never
written to the HF Dataset; it is only forwarded to LangFuse, through the redaction policy.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from agent.core import guard

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TraceLink:
    """The LangFuse ids an event or an LLM call is filed under (None while forwarding is off)."""

    trace_id: str | None = None
    observation_id: str | None = None
    sampled: bool | None = None


@runtime_checkable
class TraceLinker(Protocol):
    """Hands out LangFuse ids before the work they describe is forwarded."""

    def link(self, session_id: str, turn_index: int) -> TraceLink: ...


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


class Session:
    """One agent session: its ids, the turn counter and the sinks its events go to.

    ``observability`` (an ``agent.core.observability.Observability``) contributes its sinks and,
    when LangFuse forwarding is on, the linker that hands out trace and observation ids.
    """

    def __init__(
        self,
        user_id: str | None = None,
        session_id: str | None = None,
        *,
        observability: Any = None,
        sinks: Iterable[Sink] = (),
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
        if observability is not None:
            self.sinks.extend(observability.sinks)
            self.linker = observability.linker

    def link(self, turn_index: int | None = None) -> TraceLink:
        """The LangFuse ids for new work in ``turn_index`` (the current turn by default)."""
        if self.linker is None:
            return TraceLink()
        with guard.guarded("session.link"):
            return self.linker.link(
                self.session_id, self.turn_index if turn_index is None else turn_index
            )
        return TraceLink()

    def event_turn(self) -> int:
        """The turn an event that happens now belongs to."""
        if self.in_turn or self.turn_index == 0:
            return self.turn_index
        return self.turn_index - 1

    def send_event(self, event: Event) -> None:
        send_event(self.sinks, event)


def send_event(sinks: Iterable[Sink], event: Event) -> None:
    """Fan ``event`` out to every sink; a sink that raises is reported once and skipped."""
    for sink in sinks:
        try:
            sink.export(event)
        except Exception as exc:
            guard.report(f"sink {type(sink).__name__}", exc)
