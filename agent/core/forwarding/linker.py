"""The linker: LangFuse ids handed out before the work happens, so the HF rows can carry them.

``TraceLinker.link`` (the ``agent.core.session.TraceLinker`` protocol) runs on the agent's
threads, in the agent's process, whatever mode the forwarder runs in: it needs the caller's
OpenTelemetry context (a turn nests under the caller's active span or LangFuse observation) and
it must answer at once. It is cheap: a dictionary lookup, a hash, a sampling decision.

Ids:

- a turn's trace: ``Langfuse.create_trace_id(seed=f"{session_id}:{turn_index}")`` (computed
  here without importing the SDK), or the caller's trace when the turn nests in one;
- a turn's span: deterministic (``turn_span_id``), so every row of the turn and every child can
  name it before the span exists;
- everything else: a fresh random 64-bit id, fixed when the row is written;
- a feedback row: the id of the score it becomes.

Sampling is decided per trace, with the same ratio sampler the forwarder's tracer provider
uses, so a turn is kept or dropped whole, and a sampled-out row carries null ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from typing import Any

from agent.core.encodable import id_bytes
from agent.core.session import TraceLink

__all__ = [
    "EVENT_TYPES",
    "LINKED_TYPES",
    "TURN_EVENTS",
    "TraceLinker",
    "make_sampler",
    "score_id_for",
    "trace_id_for",
    "turn_span_id",
]

# Session events the forwarder turns into LangFuse objects (any other event has null ids).
EVENT_TYPES = frozenset(
    {
        "turn_start",
        "turn_complete",
        "tool_call",
        "hf_job_submit",
        "hf_job_complete",
        "sandbox_create",
        "sandbox_destroy",
        "feedback",
        "session_end",
    }
)
TURN_EVENTS = frozenset({"turn_start", "turn_complete"})
# Everything the linker hands ids out for: the events above and LLM calls.
LINKED_TYPES = EVENT_TYPES | {"llm_call"}

_MAX_LINKED_TURNS = 4096  # turns whose ids the linker remembers (feedback, late events)


def trace_id_for(session_id: str, turn_index: int) -> str:
    """``Langfuse.create_trace_id(seed=f"{session_id}:{turn_index}")``, without the import.

    An id holding a lone surrogate (which the SDK cannot hash) is hashed with its surrogates
    passed through (``encodable.id_bytes``): same id as the SDK's for every other string.
    """
    return hashlib.sha256(id_bytes(f"{session_id}:{turn_index}")).digest()[:16].hex()


def turn_span_id(session_id: str, turn_index: int, trace_id: str | None = None) -> str:
    """The deterministic id of a turn's span, so the turn's rows and children can name it early.

    A turn nested in a caller's trace gets an id seeded with that trace too: the same turn
    index can then never collide with the id of a turn on the session's own trace."""
    seed = f"{session_id}:{turn_index}:turn"
    if trace_id is not None and trace_id != trace_id_for(session_id, turn_index):
        seed += f":{trace_id}"
    return hashlib.sha256(id_bytes(seed)).digest()[:8].hex()


def score_id_for(event_id: str) -> str:
    """A score id for a feedback event that was not linked (built by hand, not by telemetry)."""
    return hashlib.sha256(id_bytes(f"{event_id}:score")).digest()[:8].hex()


def make_sampler(rate: float) -> Any:
    """The per-trace sampler shared by the linker and the tracer provider."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased

    return ALWAYS_ON if rate >= 1.0 else TraceIdRatioBased(rate)


@dataclasses.dataclass(frozen=True, slots=True)
class _TurnLink:
    """The ids of one turn, fixed when its ``turn_start`` row is linked."""

    trace_id: str
    span_id: str
    parent_id: str | None
    caller_trace: bool
    sampled: bool


class TraceLinker:
    """See the module docstring. Thread-safe."""

    def __init__(self, *, sample_rate: float, nest_in_caller_trace: bool, tracer_name: str) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self.nest_in_caller_trace = nest_in_caller_trace
        self._sampler = make_sampler(float(sample_rate))
        self._random = RandomIdGenerator()
        self._tracer_name = tracer_name
        # The ids of recent turns, by (session id, turn index).
        self._links: OrderedDict[tuple[str, int], _TurnLink] = OrderedDict()
        self._lock = threading.Lock()

    def link(
        self,
        session_id: str,
        turn_index: int,
        event_type: str | None = None,
        *,
        caller_trace: tuple[str, str | None] | None = None,
    ) -> TraceLink:
        """The ids the work will be forwarded under (see ``agent.core.session.TraceLinker``)."""
        if caller_trace is not None:  # existing_trace_id: the caller's trace, as they said
            trace_id, parent_id = caller_trace
            return self._linked(trace_id, parent_id, caller_trace=True)
        if event_type is not None and event_type not in LINKED_TYPES:
            return TraceLink()  # no LangFuse object for this row
        turn = self._turn(session_id, turn_index, event_type)
        if turn is not None:
            return self._in_turn(turn, event_type)
        return self._outside_turns(session_id, turn_index, event_type)

    def _turn(self, session_id: str, turn_index: int, event_type: str | None) -> _TurnLink | None:
        """The turn the work belongs to: known, or new for a ``turn_*`` row (None: neither)."""
        key = (session_id, turn_index)
        if event_type != "turn_start":
            with self._lock:
                turn = self._links.get(key)
            if turn is not None or event_type not in TURN_EVENTS:
                return turn
        turn = self._new_turn(session_id, turn_index)
        with self._lock:
            self._links[key] = turn
            self._links.move_to_end(key)
            while len(self._links) > _MAX_LINKED_TURNS:
                self._links.popitem(last=False)
        return turn

    def _in_turn(self, turn: _TurnLink, event_type: str | None) -> TraceLink:
        if not turn.sampled:
            return TraceLink(sampled=False)
        if event_type in TURN_EVENTS:
            observation_id, parent_id = turn.span_id, turn.parent_id
        elif event_type is None:
            observation_id, parent_id = None, turn.parent_id
        elif event_type == "feedback":
            observation_id, parent_id = self.new_id(), None  # the score's id
        else:
            observation_id, parent_id = self.new_id(), turn.span_id
        return TraceLink(turn.trace_id, observation_id, True, parent_id, turn.caller_trace)

    def _outside_turns(self, session_id: str, turn_index: int, event_type: str | None) -> TraceLink:
        """Work in no turn the linker knows: a caller's span, else the session's own trace."""
        if event_type == "feedback":
            return self._linked(trace_id_for(session_id, turn_index), None)
        nest = self._caller_span()
        if nest is not None:
            trace_id, span_id, owned = nest
            return self._linked(
                trace_id, span_id, caller_trace=owned, observation=event_type is not None
            )
        trace_id = trace_id_for(session_id, turn_index)
        parent_id = turn_span_id(session_id, turn_index)
        return self._linked(trace_id, parent_id, observation=event_type is not None)

    def _linked(
        self,
        trace_id: str,
        parent_id: str | None,
        *,
        caller_trace: bool = False,
        observation: bool = True,
    ) -> TraceLink:
        if not self.sampled(trace_id):
            return TraceLink(sampled=False)
        observation_id = self.new_id() if observation else None
        return TraceLink(trace_id, observation_id, True, parent_id, caller_trace)

    def _new_turn(self, session_id: str, turn_index: int) -> _TurnLink:
        nest = self._caller_span()
        if nest is None:
            trace_id = trace_id_for(session_id, turn_index)
            parent_id, owned = None, False
        else:
            trace_id, parent_id, owned = nest
        return _TurnLink(
            trace_id=trace_id,
            span_id=turn_span_id(session_id, turn_index, trace_id),
            parent_id=parent_id,
            caller_trace=owned,
            sampled=self.sampled(trace_id),
        )

    def _caller_span(self) -> tuple[str, str, bool] | None:
        """(trace id, span id, is a LangFuse observation) of the caller's active span in the
        global OpenTelemetry context (where LangFuse's ``@observe`` puts its observations too),
        or None when there is none or nesting is off."""
        if not self.nest_in_caller_trace:
            return None
        from opentelemetry import trace as otel_trace

        span = otel_trace.get_current_span()
        context = span.get_span_context()
        if not context.is_valid:
            return None
        scope = getattr(span, "instrumentation_scope", None)
        attributes = getattr(span, "attributes", None) or {}
        owned = (scope is not None and scope.name == self._tracer_name) or any(
            str(k).startswith("langfuse.") for k in attributes
        )
        return f"{context.trace_id:032x}", f"{context.span_id:016x}", owned

    def new_id(self) -> str:
        return f"{self._random.generate_span_id():016x}"

    def sampled(self, trace_id: str) -> bool:
        result = self._sampler.should_sample(None, int(trace_id, 16), "turn")
        return bool(result.decision.is_sampled())
