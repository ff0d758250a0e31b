"""Our records, built field by field from what litellm hands a callback and from session events.

Never by copying litellm's kwargs: they hold the provider API key, api_base and headers. A call
becomes a ``CallRecord`` (``call_record``), a session event a ``SpanRecord`` (``span_record``,
driven by one table: which payload goes where, under which redaction field) or, for feedback,
a ``ScoreRecord`` (``score_record``). The caller's litellm LangFuse metadata keys (tags, names,
version, prompt) become a ``CallerContext``; everything else they put in ``metadata=`` is
content, bound for redaction.

Runs off the agent's thread (the forwarder's intake worker): the litellm hook only takes
references (``CallRefs``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from agent.core.messages import field, message_dict
from agent.core.privacy.scrubber import scrub
from agent.core.records import CallerContext, CallRecord, ScoreRecord, SpanRecord
from agent.core.session import Event
from agent.core.telemetry import CallContext, usage_fields

__all__ = [
    "CALLER_STEERING_KEYS",
    "MODEL_PARAMETERS",
    "CallRefs",
    "call_record",
    "caller_context",
    "score_record",
    "span_record",
]

# Model parameters forwarded as the generation's model parameters. Anything else in litellm's
# optional params (api keys, api_base, headers, extra_body ...) never leaves the process.
# `stream` is not a model parameter (it changes no output): it goes to metadata.
MODEL_PARAMETERS: tuple[str, ...] = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "reasoning_effort",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
)

# litellm's documented LangFuse metadata keys that steer the trace (everything else a caller
# puts in `metadata=` is generation metadata, through redaction).
CALLER_STEERING_KEYS = frozenset(
    {
        "tags",
        "trace_name",
        "generation_name",
        "version",
        "trace_version",
        "existing_trace_id",
        "parent_observation_id",
        "prompt",
    }
)


def utc(dt: datetime | None) -> datetime | None:
    """``dt`` in UTC (litellm hands naive local times)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return dt.astimezone(UTC)


# -- the caller's LangFuse metadata (litellm's keys) --


def _label(value: Any, limit: int = 200) -> str | None:
    """A name or label from caller metadata: a string, scrubbed of named secrets, bounded."""
    if value is None:
        return None
    text = scrub(str(value)).strip()
    return text[:limit] or None


def _prompt_link(prompt: Any) -> tuple[str | None, int | None]:
    """(name, version) of a LangFuse prompt given as the SDK's prompt client or as a mapping
    with ``name`` and ``version`` (litellm accepts both). A fallback prompt (the SDK's stand-in
    when the server could not be reached) links nothing, as in the SDK."""
    if prompt is None:
        return None, None
    if isinstance(prompt, Mapping):
        name, version, fallback = prompt.get("name"), prompt.get("version"), False
    else:
        name = getattr(prompt, "name", None)
        version = getattr(prompt, "version", None)
        fallback = bool(getattr(prompt, "is_fallback", False))
    if fallback or name is None or isinstance(version, bool):
        return None, None
    try:
        number = int(version) if version is not None else None
    except (TypeError, ValueError):
        number = None
    return _label(name), number


def caller_context(metadata: Mapping[str, Any]) -> tuple[CallerContext, dict[str, Any]]:
    """The caller's steering keys as a ``CallerContext``, and the rest of their metadata
    (``trace_metadata`` included) as content bound for redaction."""
    raw_tags = metadata.get("tags")
    if isinstance(raw_tags, str):
        raw_tags = [raw_tags]
    tags = tuple(
        t for t in (_label(x, 100) for x in (raw_tags or ()) if x is not None) if t is not None
    )
    prompt_name, prompt_version = _prompt_link(metadata.get("prompt"))
    ctx = CallerContext(
        tags=tuple(dict.fromkeys(tags))[:50],
        trace_name=_label(metadata.get("trace_name")),
        generation_name=_label(metadata.get("generation_name")),
        version=_label(metadata.get("version")),
        trace_version=_label(metadata.get("trace_version")),
        prompt_name=prompt_name,
        prompt_version=prompt_version,
    )
    rest = {str(k): v for k, v in metadata.items() if k not in CALLER_STEERING_KEYS}
    return ctx, rest


# -- litellm kwargs -> CallRecord --


class CallRefs(NamedTuple):
    """What the litellm hook keeps of a call: references only, no copies (see the module
    docstring). ``response`` is None for a failed call."""

    ctx: CallContext
    kwargs: dict[str, Any]
    response: Any
    start_time: datetime
    end_time: datetime


def _plain_message(m: Any) -> dict[str, Any]:
    if isinstance(m, dict):
        return dict(m)
    return message_dict(m) or {}


def _reasoning_tokens(response: Any) -> int:
    usage = field(response, "usage")
    details = field(usage, "completion_tokens_details")
    value = field(details, "reasoning_tokens") or field(usage, "reasoning_tokens") or 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _outcome(kwargs: dict[str, Any], response: Any) -> dict[str, Any]:
    """The fields that depend on whether the call succeeded."""
    exc = kwargs.get("exception")
    if exc is None and response is not None:
        choice = (field(response, "choices") or [None])[0]
        usage = usage_fields(response)
        usage["reasoning_tokens"] = _reasoning_tokens(response)
        cost = kwargs.get("response_cost")
        return {
            "output": message_dict(field(choice, "message")),
            "usage": usage,
            "cost_usd": float(cost) if cost is not None else None,
        }
    return {
        "error_type": type(exc).__name__ if exc is not None else None,
        "error_message": str(exc) if exc is not None else "the call failed without a response",
    }


_dumps = pickle.dumps
_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _packed(item: Any) -> Any:
    """``item`` pickled (see ``call_record``), or as it is when it does not pickle."""
    try:
        return _dumps(item, _PICKLE_PROTOCOL)
    except Exception:
        return item


def call_record(refs: CallRefs, *, pack: bool = False) -> CallRecord:
    """Our record of one call, built field by field from what litellm handed the callback.

    ``pack`` (the forwarding sidecar's records): a successful call's messages and tool
    definitions are each pickled here, so the sidecar recognises the ones it has seen before by
    their bytes, without unpickling them (``agent.core.privacy.memo``). A failed call's are not:
    its error text is stripped of the call's content (``redaction``), which needs them whole.
    """
    ctx, kwargs = refs.ctx, refs.kwargs
    optional = kwargs.get("optional_params") or {}
    outcome = _outcome(kwargs, refs.response)
    messages, tools = _content(kwargs, optional, pack=pack and "output" in outcome)
    md = (kwargs.get("litellm_params") or {}).get("metadata") or {}
    caller, extra = caller_context({k: md[k] for k in ctx.metadata_keys if k in md})
    return CallRecord(
        event_id=ctx.event_id,
        kind=ctx.kind,
        session_id=ctx.session_id,
        user_id=ctx.user_id,
        turn_index=ctx.turn_index,
        trace_id=ctx.langfuse_trace_id,
        observation_id=ctx.langfuse_observation_id,
        model=str(kwargs.get("model") or ""),
        start_time=utc(refs.start_time) or datetime.now(UTC),
        end_time=utc(refs.end_time) or datetime.now(UTC),
        messages=messages,
        tools=tools,
        model_parameters={k: optional[k] for k in MODEL_PARAMETERS if optional.get(k) is not None},
        metadata=extra,
        redact_override=ctx.redact,
        parent_id=ctx.langfuse_parent_id,
        caller_trace=bool(ctx.langfuse_caller_trace),
        caller=caller,
        **_stream(kwargs, optional, succeeded="output" in outcome),
        **outcome,
    )


def _content(
    kwargs: dict[str, Any], optional: dict[str, Any], *, pack: bool
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The call's messages and tool definitions, each pickled when ``pack`` (see call_record)."""
    raw_messages = kwargs.get("messages") or ()
    raw_tools = optional.get("tools") or ()
    if pack:
        return (
            tuple(_packed(m if type(m) is dict else _plain_message(m)) for m in raw_messages),
            tuple(_packed(t) for t in raw_tools),
        )
    return tuple(_plain_message(m) for m in raw_messages), tuple(dict(t) for t in raw_tools)


def _stream(kwargs: dict[str, Any], optional: dict[str, Any], *, succeeded: bool) -> dict[str, Any]:
    """Whether the call streamed and, for a stream that succeeded, when its first chunk came."""
    stream = bool(kwargs.get("stream") or optional.get("stream"))
    first = kwargs.get("completion_start_time") if stream and succeeded else None
    return {"stream": stream, "completion_start_time": utc(first)}


# -- session events -> SpanRecord (one table) --


def _tool_call(event: Event, data: dict[str, Any]) -> dict[str, Any]:
    # A tool's error text quotes its arguments and output: it is a tool result (dropped under
    # no-tool-io), never plain metadata.
    error = data.pop("error", None)
    out: dict[str, Any] = {
        "name": f"tool.{data.get('name')}",
        "start_time": event.timestamp - timedelta(milliseconds=float(data.get("duration_ms") or 0)),
    }
    if not data.get("ok", True):
        out.update(level="ERROR", status_message=error, status_field="tool_results")
    return out


def _job_complete(event: Event, data: dict[str, Any]) -> dict[str, Any]:
    status = data.get("status")
    if status in (None, "completed"):
        return {}
    return {"level": "ERROR", "status_message": f"job {status}"}


@dataclass(frozen=True)
class _Shape:
    """How one event type becomes a span: its name, which payload keys are its input and
    output and under which redaction field, and what else depends on the event."""

    name: str
    input: tuple[str, str] | None = None  # (payload key, redaction field)
    output: tuple[str, str] | None = None
    more: Callable[[Event, dict[str, Any]], dict[str, Any]] | None = None


# Job and sandbox costs (estimated_cost_usd) and the session rollup travel in metadata.
_SHAPES: dict[str, _Shape] = {
    "turn_start": _Shape("turn", input=("user_message", "user_messages")),
    "turn_complete": _Shape("turn", output=("final_reply", "completion")),
    "tool_call": _Shape(
        "tool",
        input=("arguments", "tool_calls"),
        output=("result", "tool_results"),
        more=_tool_call,
    ),
    "hf_job_submit": _Shape("hf_job.submit", input=("command", "tool_calls")),
    "hf_job_complete": _Shape("hf_job.complete", more=_job_complete),
    "sandbox_create": _Shape("sandbox.create"),
    "sandbox_destroy": _Shape("sandbox.destroy"),
    "session_end": _Shape("session.end"),
}


def span_record(event: Event) -> SpanRecord:
    """A telemetry event as a SpanRecord: which payload goes where, under which policy field."""
    data = dict(event.data)
    payload = event.payload or {}
    shape = _SHAPES.get(event.event_type) or _Shape(event.event_type)
    fields: dict[str, Any] = {"name": shape.name}
    if shape.input is not None:
        fields["input"], fields["input_field"] = payload.get(shape.input[0]), shape.input[1]
    if shape.output is not None:
        fields["output"], fields["output_field"] = payload.get(shape.output[0]), shape.output[1]
    if shape.more is not None:
        fields.update(shape.more(event, data))
    return SpanRecord(
        event_id=event.event_id,
        event_type=event.event_type,
        session_id=event.session_id,
        user_id=event.user_id,
        turn_index=event.turn_index,
        trace_id=event.langfuse_trace_id,
        observation_id=event.langfuse_observation_id,
        timestamp=event.timestamp,
        metadata=data,
        **fields,
    )


def score_record(event: Event, trace_id: str) -> ScoreRecord:
    """A ``feedback`` event as the score it becomes on ``trace_id``."""
    return ScoreRecord(
        event_id=event.event_id,
        trace_id=trace_id,
        name=str(event.data.get("name") or "user_feedback"),
        value=float(event.data.get("value", 0.0)),
        session_id=event.session_id,
        user_id=event.user_id,
        comment=(event.payload or {}).get("comment"),
    )
