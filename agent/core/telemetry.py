"""The telemetry hook: one ``CallContext`` per LLM call and ``record_*`` for every event type.

Both pipelines are fed from here. ``CallContext.new`` fixes, before an LLM call starts, every id
the call will be known by: the HF event id, the session, user and turn, the call site's ``kind``
and, when LangFuse forwarding is on, the trace and observation ids its generation will carry.
The context travels to litellm under one namespaced metadata key (``ml_intern``), so the
LangFuse logger reads the same ids that the HF row gets.

Every ``record_*`` builds one ``Event`` and hands it to ``session.send_event``. None of them
raises into the agent (see ``agent.core.guard``).
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.core import guard, messages
from agent.core.dataset import pricing
from agent.core.privacy.error_text import content_strings, error_details, safe_error_text
from agent.core.session import Event, Session, TraceLink, caller_trace, new_id, utcnow

logger = logging.getLogger(__name__)

METADATA_KEY = "ml_intern"

KINDS: tuple[str, ...] = ("main", "research", "compaction", "effort_probe", "restore")


@dataclass(frozen=True, slots=True)
class CallContext:
    """Everything an LLM call is known by, fixed before the call starts."""

    event_id: str
    kind: str
    session_id: str
    user_id: str | None
    turn_index: int
    langfuse_trace_id: str | None = None
    langfuse_observation_id: str | None = None
    langfuse_sampled: bool | None = None
    # The observation the call's generation nests under, and whether the trace is a caller's.
    langfuse_parent_id: str | None = None
    langfuse_caller_trace: bool = False
    # A per-call redaction override: may only make the operator's policy stricter.
    redact: str | None = None
    # The names of the caller's own metadata keys (litellm adds keys of its own beside them).
    metadata_keys: tuple[str, ...] = ()
    started_monotonic: float = field(default_factory=time.monotonic, compare=False)

    @classmethod
    def new(
        cls,
        session: Session,
        kind: str,
        *,
        redact: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CallContext:
        if kind not in KINDS:
            raise ValueError(f"unknown call kind {kind!r}; expected one of {', '.join(KINDS)}")
        link = session.link(event_type="llm_call", caller_trace=caller_trace(metadata))
        return cls(
            event_id=new_id(),
            kind=kind,
            session_id=session.session_id,
            user_id=session.user_id,
            turn_index=session.turn_index,
            redact=redact,
            metadata_keys=tuple(str(k) for k in metadata or () if k != METADATA_KEY),
            **_link_fields(link),
        )

    def as_metadata(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("started_monotonic")
        return d

    @classmethod
    def from_metadata(cls, md: dict[str, Any]) -> CallContext:
        names = set(cls.__dataclass_fields__) - {"started_monotonic"}
        values = {k: v for k, v in md.items() if k in names}
        if "metadata_keys" in values:
            values["metadata_keys"] = tuple(values["metadata_keys"] or ())
        return cls(**values)


def _send(
    session: Session,
    event_type: str,
    data: dict[str, Any],
    *,
    payload: dict[str, Any] | None = None,
    turn_index: int | None = None,
) -> Event:
    """Build one session event (filed under the turn it belongs to) and fan it out."""
    ti = session.event_turn() if turn_index is None else turn_index
    event = Event(
        event_id=new_id(),
        event_type=event_type,
        timestamp=utcnow(),
        data=data,
        session_id=session.session_id,
        user_id=session.user_id,
        turn_index=ti,
        payload=payload or {},
        **_link_fields(session.link(ti, event_type)),
    )
    session.send_event(event)
    return event


# Event field <- TraceLink field: the LangFuse ids an event is filed under. A CallContext holds
# them under the Event's names. (attrgetter, zip and dict: this runs for every row.)
_LINK_FIELDS = (
    ("langfuse_trace_id", "trace_id"),
    ("langfuse_observation_id", "observation_id"),
    ("langfuse_sampled", "sampled"),
    ("langfuse_parent_id", "parent_id"),
    ("langfuse_caller_trace", "caller_trace"),
)
_EVENT_NAMES = tuple(ours for ours, _ in _LINK_FIELDS)
_of_link = operator.attrgetter(*(theirs for _, theirs in _LINK_FIELDS))
_of_context = operator.attrgetter(*_EVENT_NAMES)


def _link_fields(link: TraceLink) -> dict[str, Any]:
    return dict(zip(_EVENT_NAMES, _of_link(link), strict=True))


# -- llm calls --


def usage_fields(response: Any) -> dict[str, int]:
    """Token counts from a litellm response, cache tokens included (0 when absent)."""
    get = messages.field  # a response or its usage may be a dict or an object
    usage = get(response, "usage")
    details = get(usage, "prompt_tokens_details")
    prompt = int(get(usage, "prompt_tokens") or 0)
    completion = int(get(usage, "completion_tokens") or 0)
    cache_read = get(details, "cached_tokens") or get(usage, "cache_read_input_tokens") or 0
    cache_creation = (
        get(details, "cache_creation_tokens") or get(usage, "cache_creation_input_tokens") or 0
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(get(usage, "total_tokens") or prompt + completion),
        "cache_read_tokens": int(cache_read),
        "cache_creation_tokens": int(cache_creation),
    }


def response_cost(response: Any, model: str) -> float | None:
    """USD cost as litellm computes it; None when litellm does not know the model's price."""
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    if cost is not None:
        return float(cost)
    try:
        import litellm  # local: telemetry must import cheaply

        return float(litellm.completion_cost(completion_response=response, model=model))
    except Exception:
        return None


def record_llm_call(
    session: Session,
    ctx: CallContext,
    response: Any,
    *,
    model: str,
    latency_ms: float,
    stream: bool = False,
) -> Event | None:
    """One ``llm_call`` row for a successful call."""
    with guard.guarded("record_llm_call"):
        choice = (getattr(response, "choices", None) or [None])[0]
        message = getattr(choice, "message", None)
        tool_calls = getattr(message, "tool_calls", None) or []
        data: dict[str, Any] = {
            "model": model,
            "latency_ms": round(latency_ms, 3),
            "finish_reason": getattr(choice, "finish_reason", None),
            **usage_fields(response),
            "cost_usd": response_cost(response, model),
            "stream": stream,
            "tool_calls": len(tool_calls),
        }
        return _send_call(session, ctx, "llm_call", data)
    return None


def record_llm_call_error(
    session: Session,
    ctx: CallContext,
    error: BaseException,
    *,
    model: str,
    latency_ms: float,
    stream: bool = False,
    messages: Any = None,
) -> Event | None:
    """One ``llm_call_error`` row for a failed call: the error's type, HTTP status and provider
    code, and its message without the call's content (``messages``), quotes or secrets
    (``agent.core.privacy.error_text``)."""
    with guard.guarded("record_llm_call_error"):
        data = {
            "model": model,
            "latency_ms": round(latency_ms, 3),
            **error_details(error, quoted=content_strings(messages)),
            "stream": stream,
        }
        return _send_call(session, ctx, "llm_call_error", data)
    return None


def _send_call(session: Session, ctx: CallContext, event_type: str, data: dict[str, Any]) -> Event:
    """The row of an LLM call: every id from its context, fixed before the call."""
    event = Event(
        event_id=ctx.event_id,
        event_type=event_type,
        timestamp=utcnow(),
        data=data,
        session_id=ctx.session_id,
        user_id=ctx.user_id,
        turn_index=ctx.turn_index,
        kind=ctx.kind,
        **dict(zip(_EVENT_NAMES, _of_context(ctx), strict=True)),
    )
    session.send_event(event)
    return event


# -- turns --


def record_turn_start(session: Session, *, user_message: str) -> Event | None:
    with guard.guarded("record_turn_start"):
        session.in_turn = True
        data = {"message_chars": len(user_message)}
        return _send(session, "turn_start", data, payload={"user_message": user_message})
    return None


def record_turn_complete(
    session: Session,
    *,
    final_reply: str,
    duration_ms: float,
    steps: int,
    llm_calls: int,
    ok: bool = True,
) -> Event | None:
    with guard.guarded("record_turn_complete"):
        session.in_turn = False
        data = {
            "duration_ms": round(duration_ms, 3),
            "steps": steps,
            "llm_calls": llm_calls,
            "reply_chars": len(final_reply),
            "ok": ok,
        }
        payload = {"final_reply": final_reply}
        return _send(session, "turn_complete", data, payload=payload, turn_index=session.turn_index)
    return None


# -- tools, jobs, sandboxes --


def record_tool_call(
    session: Session,
    *,
    name: str,
    duration_ms: float,
    ok: bool,
    tool_call_id: str | None = None,
    arguments: Any = None,
    result: Any = None,
    error: str | None = None,
) -> Event | None:
    """One ``tool_call`` row. Arguments and result go to LangFuse only (``payload``)."""
    with guard.guarded("record_tool_call"):
        data: dict[str, Any] = {
            "name": name,
            "duration_ms": round(duration_ms, 3),
            "ok": ok,
            "tool_call_id": tool_call_id,
        }
        if error is not None:
            # Tool errors quote their arguments (paths, tokens): none of that goes to the row.
            data["error"] = safe_error_text(error, quoted=content_strings([arguments, result]))
        payload = {"arguments": arguments, "result": result}
        return _send(session, "tool_call", data, payload=payload)
    return None


def record_hf_job_submit(
    session: Session,
    *,
    job_id: str,
    image: str | None = None,
    flavor: str | None = None,
    command: str | None = None,
    job_url: str | None = None,
    timeout_s: float | None = None,
    backend: str = "hub",
) -> Event | None:
    """One ``hf_job_submit`` row. The command goes to LangFuse only (``payload``)."""
    with guard.guarded("record_hf_job_submit"):
        data = {
            "job_id": job_id,
            "image": image,
            "flavor": flavor,
            "job_url": job_url,
            "timeout_s": None if timeout_s is None else float(timeout_s),
            "backend": backend,
        }
        return _send(session, "hf_job_submit", data, payload={"command": command})
    return None


def record_hf_job_complete(
    session: Session,
    *,
    job_id: str,
    status: str,
    duration_s: float,
    wall_time_s: float | None = None,
    flavor: str | None = None,
    backend: str = "hub",
    prices: Mapping[str, float] | None = None,
) -> Event | None:
    """One ``hf_job_complete`` row, with its estimated cost (``agent.core.dataset.pricing``).

    ``wall_time_s``: the time the job ran on its hardware (what HF bills); ``duration_s`` when
    not given. A ``local`` run costs nothing. Prices: ``prices``, else the session's
    (``hf_hardware_prices`` of its config), over the table.
    """
    with guard.guarded("record_hf_job_complete"):
        wall = duration_s if wall_time_s is None else wall_time_s
        data = {
            "job_id": job_id,
            "status": status,
            "duration_s": round(duration_s, 3),
            "wall_time_s": round(wall, 3),
            "flavor": flavor,
            "estimated_cost_usd": pricing.estimate_cost(
                "local" if backend == "local" else flavor, wall, _prices(session, prices)
            ),
            "backend": backend,
        }
        return _send(session, "hf_job_complete", data)
    return None


def _prices(session: Session, prices: Mapping[str, float] | None) -> Mapping[str, float] | None:
    """The price overrides of a cost estimate: the call's, else the session's configured ones."""
    return prices if prices is not None else getattr(session, "hardware_prices", None)


def record_sandbox_create(
    session: Session,
    *,
    sandbox_id: str,
    backend: str = "local",
    hardware: str | None = None,
    create_latency_s: float | None = None,
    prices: Mapping[str, float] | None = None,
) -> Event | None:
    """One ``sandbox_create`` row; its cost is the creation's (price x ``create_latency_s``)."""
    with guard.guarded("record_sandbox_create"):
        return _send_sandbox(
            session,
            "sandbox_create",
            {"sandbox_id": sandbox_id},
            backend=backend,
            hardware=hardware,
            create_latency_s=create_latency_s,
            billed_s=create_latency_s,
            prices=prices,
        )
    return None


def record_sandbox_destroy(
    session: Session,
    *,
    sandbox_id: str,
    lifetime_s: float,
    runs: int = 0,
    backend: str = "local",
    hardware: str | None = None,
    create_latency_s: float | None = None,
    prices: Mapping[str, float] | None = None,
) -> Event | None:
    """One ``sandbox_destroy`` row; its cost is the lifetime's (creation excluded, so the
    costs of a sandbox's two rows add up to the whole)."""
    with guard.guarded("record_sandbox_destroy"):
        return _send_sandbox(
            session,
            "sandbox_destroy",
            {"sandbox_id": sandbox_id, "lifetime_s": round(lifetime_s, 3), "runs": runs},
            backend=backend,
            hardware=hardware,
            create_latency_s=create_latency_s,
            billed_s=lifetime_s,
            prices=prices,
        )
    return None


def _send_sandbox(
    session: Session,
    event_type: str,
    data: dict[str, Any],
    *,
    backend: str,
    hardware: str | None,
    create_latency_s: float | None,
    billed_s: float | None,
    prices: Mapping[str, float] | None,
) -> Event:
    """A sandbox row: ``data``, then the machine and the cost of ``billed_s`` seconds on it
    (a local sandbox runs on ``local`` hardware, which is free)."""
    hardware = hardware or ("local" if backend == "local" else None)
    cost = pricing.estimate_cost(
        hardware, billed_s, _prices(session, prices), per_started_minute=False
    )
    data = {
        **data,
        "backend": backend,
        "hardware": hardware,
        "create_latency_s": None if create_latency_s is None else round(float(create_latency_s), 6),
        "estimated_cost_usd": cost,
    }
    return _send(session, event_type, data)


def record_feedback(
    session: Session,
    *,
    value: float,
    comment: str | None = None,
    name: str = "user_feedback",
    turn_index: int | None = None,
) -> Event | None:
    """A user's rating of a turn (the current one by default); a score in LangFuse."""
    with guard.guarded("record_feedback"):
        data = {"name": name, "value": float(value), "has_comment": bool(comment)}
        payload = {"comment": comment}
        return _send(session, "feedback", data, payload=payload, turn_index=turn_index)
    return None


# -- sessions --


def record_session_end(session: Session) -> Event | None:
    """The session's ``session_end`` row: its usage rollup (calls, errors, tokens and cost per
    kind, tool calls, job and sandbox cost, duration, the all-in cost).

    Call it once when a session is over (``Agent.close()`` does); later calls return None.
    """
    with guard.guarded("record_session_end"):
        if session.ended:
            return None
        session.ended = True
        return _send(session, "session_end", session.usage.rollup())
    return None
