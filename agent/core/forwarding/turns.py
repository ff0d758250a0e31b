"""Turns: which span each agent turn becomes, and when it is sent.

A turn is one span ``turn`` (input: the user's message, output: the final reply) that every
observation of the turn nests under. It is created when the turn closes, so it covers every
observation filed under it (a restore call just before the turn, the last call whose litellm
callback comes after ``turn_complete``, a sandbox torn down after it):

- it closes a grace period after ``turn_complete``, at a flush, or at shutdown (those still
  running then are marked cut short);
- a turn known only from its children (calls made outside ``record_turn_start`` /
  ``record_turn_complete``) closes after ``IMPLICIT_TURN_IDLE_S`` without a new child, or at a
  flush;
- a child that comes after its turn was sent reopens it: the same span id is sent again, wider
  (``late_children``, ``turns_resent``).

Bounded: past ``MAX_OPEN_TURNS`` open turns the oldest is closed early
(``turns_closed_early``); ``MAX_CLOSED_TURNS`` closed turns are remembered for late children.
Used by one thread only (the forwarder's worker).
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.core import guard
from agent.core.forwarding.linker import turn_span_id
from agent.core.records import CallRecord, SpanRecord
from agent.core.session import Event

__all__ = ["Turn", "Turns"]
# A turn known only from its children closes after this long without a new child, or at a flush.
IMPLICIT_TURN_IDLE_S = 10.0
MAX_OPEN_TURNS = 1024  # past this, the oldest open turn is closed early
MAX_CLOSED_TURNS = 256  # closed turns remembered, so a late child can reopen one


@dataclasses.dataclass(slots=True)
class Turn:
    """One turn's span, gathered from the turn's events and children until it is sent."""

    trace_id: str
    span_id: str
    parent_id: str | None
    caller_trace: bool
    session_id: str | None
    user_id: str | None
    turn_index: int
    # What `session.id` carries (redacted: scrubbed, or a pseudonym under session_id=hash).
    wire_session_id: str | None = None
    lo: datetime | None = None  # the earliest start among the turn and its children
    hi: datetime | None = None  # the latest end
    started: bool = False  # turn_start seen
    ended: bool = False  # turn_complete seen
    input: Any = None
    output: Any = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    level: str | None = None
    status_message: str | None = None
    kinds: set[str] = dataclasses.field(default_factory=set)
    tags: set[str] = dataclasses.field(default_factory=set)
    trace_name: str | None = None
    trace_metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: str | None = None
    close_at: float | None = None  # time.monotonic() when the turn closes; None: not yet known
    emitted: bool = False

    def cover(self, start: datetime | None, end: datetime | None = None) -> None:
        for t in (start, end):
            if t is None:
                continue
            if self.lo is None or t < self.lo:
                self.lo = t
            if self.hi is None or t > self.hi:
                self.hi = t

    def add_call(self, red: CallRecord) -> None:
        self.wire_session_id = red.wire_session_id
        self.cover(red.start_time, red.end_time)
        self.kinds.add(red.kind)
        caller = red.caller
        self.tags.update(caller.tags)
        self.trace_name = self.trace_name or caller.trace_name
        self.version = self.version or caller.trace_version or caller.version
        trace_md = (red.metadata or {}).get("trace_metadata")
        if isinstance(trace_md, Mapping):
            for k, v in trace_md.items():
                self.trace_metadata.setdefault(str(k), v)
        elif trace_md is not None:
            self.trace_metadata.setdefault("trace_metadata", trace_md)

    def add_child(self, red: SpanRecord) -> None:
        self.wire_session_id = red.wire_session_id
        self.cover(red.start_time or red.timestamp, red.timestamp)


Key = tuple[str, str]  # (trace id, turn span id)


class Turns:
    """The open and recently closed turns (see the module docstring).

    ``emit(turn, start, end)`` builds and sends a turn's span; ``count(name)`` counts.
    """

    def __init__(
        self,
        *,
        emit: Callable[[Turn, datetime, datetime], None],
        count: Callable[[str], None],
        grace_s: float,
    ) -> None:
        self._emit = emit
        self._count = count
        self.grace_s = max(0.0, float(grace_s))
        self._open: dict[Key, Turn] = {}
        self._closed: OrderedDict[Key, Turn] = OrderedDict()

    # -- finding a turn --

    def for_child(
        self,
        trace_id: str,
        parent_id: str | None,
        session_id: str | None,
        turn_index: int,
        user_id: str | None,
        caller_trace: bool,
    ) -> Turn | None:
        """The open turn a child nests under: reopened if it already closed, created (known
        from its children only) if the child came first. None: the parent is not a turn."""
        if parent_id is None or parent_id != turn_span_id(session_id or "", turn_index, trace_id):
            return None
        key = (trace_id, parent_id)
        turn = self._open.get(key)
        if turn is not None:
            if not turn.started and not turn.ended:  # known from children only: idle timer
                turn.close_at = time.monotonic() + IMPLICIT_TURN_IDLE_S
            return turn
        turn = self._closed.pop(key, None)
        if turn is not None:
            # A late child: the turn is sent again (same span id) to cover it.
            self._count("late_children")
            turn.close_at = time.monotonic() + self.grace_s
        else:
            turn = Turn(
                trace_id=trace_id,
                span_id=parent_id,
                parent_id=None,
                caller_trace=caller_trace,
                session_id=session_id,
                user_id=user_id,
                turn_index=turn_index,
                close_at=time.monotonic() + IMPLICIT_TURN_IDLE_S,
            )
        self._keep_open(key, turn)
        return turn

    def for_event(self, event: Event, red: SpanRecord, trace_id: str, span_id: str) -> Turn:
        """The turn a ``turn_start`` / ``turn_complete`` event is about."""
        key = (trace_id, span_id)
        restart = event.event_type == "turn_start"
        turn = self._open.get(key)
        if turn is not None and restart and turn.ended:
            # The same turn index started again (a caller that never advanced it): the
            # finished turn goes out first; the new one reuses its ids.
            self.close(turn)
            turn = None
        if turn is None:
            # A turn closed while known from its children only (a restore call long before the
            # user's first message) is the same turn: reopened, so its span still covers them.
            turn = self._closed.pop(key, None)
            if turn is not None and restart and turn.ended:
                turn = None
        if turn is None:
            turn = Turn(
                trace_id=trace_id,
                span_id=span_id,
                parent_id=event.langfuse_parent_id,
                caller_trace=event.langfuse_caller_trace,
                session_id=red.session_id,
                user_id=red.user_id,
                turn_index=event.turn_index or 0,
            )
        turn.parent_id = event.langfuse_parent_id
        turn.caller_trace = event.langfuse_caller_trace
        turn.user_id = red.user_id
        turn.wire_session_id = red.wire_session_id
        self._keep_open(key, turn)
        return turn

    def _keep_open(self, key: Key, turn: Turn) -> None:
        self._open[key] = turn
        while len(self._open) > MAX_OPEN_TURNS:
            oldest = next(iter(self._open.values()))
            self._count("turns_closed_early")
            self.close(oldest)

    # -- what the turn's own events say --

    def start(self, turn: Turn, red: SpanRecord) -> None:
        turn.started = True
        turn.close_at = None  # in progress until turn_complete
        turn.input = red.input
        turn.metadata["hf_event_id"] = red.event_id
        turn.cover(red.timestamp)

    def complete(self, turn: Turn, red: SpanRecord, event: Event) -> None:
        if not turn.started:
            # turn_start was never seen (dropped, or forwarding started mid-turn): the start
            # the duration implies (none when the duration is not a number).
            try:
                ms = float(event.data.get("duration_ms", 0))
                turn.cover(red.timestamp - timedelta(milliseconds=ms))
            except (TypeError, ValueError, OverflowError):
                pass  # not a usable duration: the turn starts where its events say
        ok = bool(event.data.get("ok", True))
        turn.ended = True
        turn.output = red.output
        turn.metadata.update(red.metadata or {})
        turn.level = None if ok else "WARNING"
        turn.status_message = None if ok else "the turn ended without a final answer"
        turn.cover(red.timestamp)
        turn.close_at = time.monotonic() + self.grace_s

    # -- closing --

    def next_close(self) -> float | None:
        """Seconds until the next open turn is due to close (None: none is)."""
        due = [t.close_at for t in self._open.values() if t.close_at is not None]
        return (min(due) - time.monotonic()) if due else None

    def close_due(self) -> None:
        if not self._open:
            return
        now = time.monotonic()
        for turn in [t for t in self._open.values() if t.close_at is not None]:
            if turn.close_at is not None and turn.close_at <= now:
                try:
                    self.close(turn)
                except Exception as exc:
                    guard.report("langfuse.worker.close_turn", exc)

    def close_all(self, *, final: bool) -> None:
        """At a flush: every turn that ended or is known from its children only. At shutdown:
        every turn, those still running marked as cut short."""
        for turn in list(self._open.values()):
            if final or turn.ended or not turn.started:
                if final and turn.started and not turn.ended:
                    turn.level = "WARNING"
                    turn.status_message = "the session ended mid-turn"
                    turn.cover(datetime.now(UTC))
                self.close(turn)

    def close(self, turn: Turn) -> None:
        key = (turn.trace_id, turn.span_id)
        self._open.pop(key, None)
        turn.close_at = None
        self._closed[key] = turn
        self._closed.move_to_end(key)
        while len(self._closed) > MAX_CLOSED_TURNS:
            self._closed.popitem(last=False)
        start = turn.lo or datetime.now(UTC)
        self._emit(turn, start, turn.hi or start)
        if turn.emitted:
            self._count("turns_resent")
        else:
            turn.emitted = True
