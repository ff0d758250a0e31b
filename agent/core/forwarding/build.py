"""Redacted records -> LangFuse observations, built with the official SDK.

Every observation is an OpenTelemetry span started on our private tracer (with the id the
linker handed out, the true start time, and the parent it nests under) and wrapped in the
SDK's ``LangfuseGeneration`` / ``LangfuseSpan`` / ``LangfuseEvent``, which write LangFuse's
attributes (type, input, output, metadata, model, usage, cost, level, environment, release).
Only what the SDK has no keyword for is set here: session and user (on every span of a trace,
identically), the trace's own attributes (on the turn span only, written once), and a prompt
link. Input is what redaction returned: nothing reaches this module unredacted.

Why ``wire_value`` (performance): for a dict or list the SDK walks the whole value looking for
media, then serialises it with its ``EventSerializer`` (a Python ``default`` hook per node).
When the value is plain JSON and no SDK mask is configured, the SDK's result is exactly
``json.dumps(value)``, and a string passes both steps unchanged, so the SDK is handed that
string: the same span attributes, byte for byte (``bench/checks.py`` verifies it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent.core.internals import langfuse as sdk_internals
from agent.core.records import CallRecord, SpanRecord

__all__ = [
    "Builder",
    "item_wire_text",
    "langfuse_usage_details",
    "metadata_attributes",
    "ns",
    "wire_value",
]

# The OpenTelemetry baggage key the langfuse SDK reads as "this trace is already claimed by an
# app root": a span started with it in its parent context is never marked an app root
# (`langfuse.internal.is_app_root`), whatever the order spans start in.
TRACE_CLAIM = "langfuse_trace_id"


def ns(dt: datetime) -> int:
    if dt.tzinfo is None:  # litellm hands naive local times
        dt = dt.astimezone()
    return int(dt.timestamp() * 1e9)


# -- token counts as LangFuse reads them --


def langfuse_usage_details(usage: Mapping[str, int]) -> dict[str, int]:
    """``usage_details`` for a generation from our usage numbers (``usage_fields`` plus
    ``reasoning_tokens``), as LangFuse adds them up.

    LangFuse sums every key containing "input" into the input count and every key containing
    "output" into the output count. litellm's ``prompt_tokens`` already includes cache reads
    and cache writes (OpenAI's ``prompt_tokens_details.cached_tokens``; Anthropic's
    ``cache_read_input_tokens`` / ``cache_creation_input_tokens``, which litellm adds to it), and
    ``completion_tokens`` includes reasoning tokens. So ``input`` is sent without the cached
    parts and ``output`` without the reasoning part (``output_reasoning_tokens``, the name
    LangFuse gives OpenAI's ``completion_tokens_details.reasoning_tokens``), and each sum is the
    call's own count. Parts larger than the whole (a provider's own arithmetic) are clamped.
    """
    prompt = max(0, int(usage.get("prompt_tokens") or 0))
    completion = max(0, int(usage.get("completion_tokens") or 0))
    total = max(0, int(usage.get("total_tokens") or 0)) or prompt + completion
    cache_read = min(prompt, max(0, int(usage.get("cache_read_tokens") or 0)))
    cache_creation = min(prompt - cache_read, max(0, int(usage.get("cache_creation_tokens") or 0)))
    reasoning = min(completion, max(0, int(usage.get("reasoning_tokens") or 0)))
    details = {
        "input": prompt - cache_read - cache_creation,
        "output": completion - reasoning,
        "total": total,
    }
    if cache_read:
        details["cache_read_input_tokens"] = cache_read
    if cache_creation:
        details["cache_creation_input_tokens"] = cache_creation
    if reasoning:
        details["output_reasoning_tokens"] = reasoning
    return details


# -- attribute values, serialised once (performance) --

_MAX_SAFE_INT = 2**53 - 1  # the langfuse serializer turns larger ints into strings
_MAX_PLAIN_DEPTH = 16  # well below the serializer's depth cap (20), past which it writes "<dict>"
_MEDIA_TYPES = ("base64", "media")


def _plain_json(v: Any, depth: int = 1) -> bool:
    """True when the langfuse SDK would write ``v`` exactly as ``json.dumps(v)``: only exact
    built-in JSON types, JS-safe ints, finite floats, str keys, shallow nesting, and nothing its
    media manager would pick up (``data:`` URIs, base64 / media / inline_data parts)."""
    t = type(v)
    if t is dict:
        return _plain_dict_keys(v, depth) and _plain_items(v.values(), depth)
    if t is list or t is tuple:
        return depth < _MAX_PLAIN_DEPTH and _plain_items(v, depth)
    return _plain_scalar(v)


def _plain_dict_keys(v: dict[Any, Any], depth: int) -> bool:
    if depth >= _MAX_PLAIN_DEPTH:
        return False
    if v.get("type") in _MEDIA_TYPES or "inline_data" in v or "inlineData" in v:
        return False
    for k in v:  # noqa: SIM110 - a loop: no generator per dict on this hot path
        if type(k) is not str:
            return False
    return True


def _plain_items(items: Any, depth: int) -> bool:
    # Leaves are checked inline (one call per container, not per value).
    for x in items:
        tx = type(x)
        if tx is str:
            if x.startswith("data:"):
                return False
        elif tx is dict or tx is list or tx is tuple:
            if not _plain_json(x, depth + 1):
                return False
        elif not (x is None or tx is bool) and not _plain_scalar(x):
            return False
    return True


def _plain_scalar(v: Any) -> bool:
    t = type(v)
    if t is str:
        return not v.startswith("data:")
    if v is None or t is bool:
        return True
    if t is int:
        return -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT
    if t is float:
        return math.isfinite(v)
    return False


def wire_value(value: Any) -> Any:
    """``value`` as handed to the SDK for an attribute it only serialises: ``json.dumps`` of a
    plain dict or list (see the module docstring), anything else unchanged. Only valid while
    the client has no mask (``Builder`` checks)."""
    if isinstance(value, dict | list) and _plain_json(value):
        return json.dumps(value)
    return value


# Where a message or tool definition sits in a generation's input ({"messages": [item]}): the
# depth ``_plain_json`` checks it at (the stricter of the two input shapes).
_ITEM_DEPTH = 3


def item_wire_text(item: Any) -> str | None:
    """``json.dumps(item)`` when a generation's input holding ``item`` would be sent as
    ``json.dumps`` of the whole (``wire_value``), else None. Joined with ``", "`` inside
    ``[...]``, such texts are byte for byte ``json.dumps`` of the list (its default separators)."""
    if type(item) is dict and _plain_json(item, _ITEM_DEPTH):
        return json.dumps(item)
    return None


# More metadata keys than this go through the SDK (which keeps a span within OpenTelemetry's
# attribute limit its own way); ours have fewer than ten.
_MAX_OWN_METADATA_KEYS = 32
_METADATA_PREFIX = "langfuse.observation.metadata."


def metadata_attributes(metadata: Mapping[str, Any]) -> dict[str, str] | None:
    """An observation's metadata as the SDK writes it (one attribute per key, each value JSON,
    strings included, compact), or None when any value is not plain JSON (then the SDK must).
    Why (performance): the SDK's serializer walks every value in Python (a ``default`` call per
    node) before encoding it; for plain JSON the result is ``json.dumps`` with its separators,
    byte for byte (the test of the fast paths compares both)."""
    if len(metadata) > _MAX_OWN_METADATA_KEYS:
        return None
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if value is None:
            continue  # the SDK skips None too
        if type(key) is not str:
            return None
        if type(value) is str:
            out[_METADATA_PREFIX + key] = json.dumps(value, ensure_ascii=False)
        elif _plain_json(value):
            out[_METADATA_PREFIX + key] = json.dumps(
                value, separators=(",", ":"), ensure_ascii=False
            )
        else:
            return None
    return out


def _joined(items: Any, text_of: Any) -> str | None:
    texts = []
    for item in items:
        text = text_of(item)
        if text is None:
            return None
        texts.append(text)
    return "[" + ", ".join(texts) + "]"


def _redaction_metadata(report: Any, *, always: bool) -> dict[str, Any]:
    """The record's redaction report for its metadata (a child's only when it says something)."""
    redaction = report.as_metadata()
    if always or any(redaction.get(k) for k in ("fields", "secrets", "failures", "unencodable")):
        return {"redaction": redaction}
    return {}


def _generation_metadata(red: CallRecord, report: Any, *, in_turn: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        **{k: v for k, v in (red.metadata or {}).items() if k != "trace_metadata"},
        "kind": red.kind,
        "hf_event_id": red.event_id,
        "turn_index": red.turn_index,
        "stream": red.stream,
        **_redaction_metadata(report, always=True),
    }
    if red.error_type:
        metadata["error_type"] = red.error_type
    if red.caller.tags and not in_turn:
        metadata["tags"] = list(red.caller.tags)  # no trace of ours to put them on
    return metadata


class Builder:
    """Builds one observation at a time on the forwarder's thread (see the module docstring).

    ``ids.choose`` fixes the id of the next span the tracer starts (ours are chosen before the
    work happens); ``tracer`` is the SDK's tracer name on our private provider. ``wire_texts``
    (a ``ContentMemo``'s): the wire text of a remembered message or tool definition, so a
    generation's input is joined from texts serialised once (the same bytes, see
    ``item_wire_text``).
    """

    def __init__(
        self, *, client: Any, tracer: Any, ids: Any, trace_name: str, wire_texts: Any = None
    ) -> None:
        self.client = client
        self.trace_name = trace_name
        self._tracer = tracer
        self._ids = ids
        # An SDK mask must see every value as given: no fast path then.
        self.fast = sdk_internals.client_mask_is_unset(client)
        self._serialize_metadata = sdk_internals.serialize_metadata_value()
        self._texts = wire_texts if self.fast else None

    def wire(self, value: Any) -> Any:
        return wire_value(value) if self.fast else value

    def generation_input(self, red: CallRecord) -> Any:
        """A generation's input as handed to the SDK: ``{"messages", "tools"}`` (or the bare
        message list without tools), joined from remembered texts when every item has one."""
        if self._texts is not None:
            messages = _joined(red.messages, self._texts)
            if messages is not None and not red.tools:
                return messages
            tools = _joined(red.tools, self._texts) if messages is not None else None
            if tools is not None:
                return f'{{"messages": {messages}, "tools": {tools}}}'
        if red.tools:
            return self.wire({"messages": list(red.messages), "tools": list(red.tools)})
        return self.wire(list(red.messages))

    # -- spans --

    def _parent_context(self, trace_id: str, parent_span_id: str | None, *, claim: bool) -> Any:
        from opentelemetry import baggage
        from opentelemetry import trace as otel_trace
        from opentelemetry.context import Context

        context: Any = Context()
        if parent_span_id is not None:
            parent = otel_trace.NonRecordingSpan(
                otel_trace.SpanContext(
                    trace_id=int(trace_id, 16),
                    span_id=int(parent_span_id, 16),
                    is_remote=False,
                    trace_flags=otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED),
                )
            )
            context = otel_trace.set_span_in_context(parent, context)
        if claim:
            # Not an app root: the trace's root is the turn span (or the caller's own root).
            context = baggage.set_baggage(TRACE_CLAIM, trace_id, context=context)
        return context

    def start_span(
        self,
        name: str,
        *,
        trace_id: str,
        span_id: str | None,
        parent_span_id: str | None,
        start_time: datetime,
        claim: bool = True,
    ) -> Any:
        # The trace id of a span without a parent is chosen like its span id; a span with a
        # parent takes the parent's.
        self._ids.choose(trace_id=trace_id if parent_span_id is None else None, span_id=span_id)
        return self._tracer.start_span(
            name,
            context=self._parent_context(trace_id, parent_span_id, claim=claim),
            start_time=ns(start_time),
        )

    @staticmethod
    def who(span: Any, *, session_id: str | None, user_id: str | None) -> None:
        """Session and user: trace attributes, set identically on every span of a trace."""
        attrs: dict[str, Any] = {}
        if session_id:
            attrs["session.id"] = session_id
        if user_id:
            attrs["user.id"] = user_id
        if attrs and span.is_recording():
            span.set_attributes(attrs)

    # -- observations --

    def generation(self, red: CallRecord, report: Any, *, parent: str | None, turn: Any) -> None:
        """One LLM call as a generation (``turn``: the turn it is filed under, or None)."""
        from langfuse import LangfuseGeneration

        assert red.trace_id is not None
        caller = red.caller
        span = self.start_span(
            caller.generation_name or f"llm.{red.kind}",
            trace_id=red.trace_id,
            span_id=red.observation_id,
            parent_span_id=parent,
            start_time=red.start_time,
        )
        if not red.caller_trace:
            self.who(span, session_id=red.wire_session_id, user_id=red.user_id)
        failed = red.error_type is not None or red.output is None
        metadata: Any = _generation_metadata(red, report, in_turn=turn is not None)
        own_metadata = metadata_attributes(metadata) if self.fast else None
        LangfuseGeneration(
            otel_span=span,
            langfuse_client=self.client,
            input=self.generation_input(red),
            output=self.wire(red.output),
            metadata=None if own_metadata is not None else metadata,
            model=red.model,
            version=caller.version,
            # These three only go through the SDK's serializer, as input and output do.
            model_parameters=self.wire(red.model_parameters or None),
            usage_details=None if failed else self.wire(langfuse_usage_details(red.usage)),
            cost_details=None if red.cost_usd is None else self.wire({"total": red.cost_usd}),
            completion_start_time=red.completion_start_time,
            level="ERROR" if failed else None,
            status_message=red.error_message if failed else None,
        )
        self._own_attributes(span, own_metadata, caller)
        span.end(end_time=ns(red.end_time))

    @staticmethod
    def _own_attributes(span: Any, metadata: dict[str, str] | None, caller: Any) -> None:
        """What a generation gets beside the SDK's: its metadata when written here
        (``metadata_attributes``) and a prompt link (the SDK wants its prompt client for it)."""
        if not span.is_recording():
            return
        attrs: dict[str, Any] = dict(metadata or {})
        if caller.prompt_name:
            attrs["langfuse.observation.prompt.name"] = caller.prompt_name
            if caller.prompt_version is not None:
                attrs["langfuse.observation.prompt.version"] = caller.prompt_version
        if attrs:
            span.set_attributes(attrs)

    def child(
        self, red: SpanRecord, report: Any, *, trace_id: str, parent: str | None, caller_trace: bool
    ) -> None:
        """A tool call, job or sandbox event as a span (it has a start) or an event."""
        from langfuse import LangfuseEvent, LangfuseSpan

        span = self.start_span(
            red.name,
            trace_id=trace_id,
            span_id=red.observation_id,
            parent_span_id=parent,
            start_time=red.start_time or red.timestamp,
        )
        if not caller_trace:
            self.who(span, session_id=red.wire_session_id, user_id=red.user_id)
        if red.event_type == "session_end" and not caller_trace and span.is_recording():
            # The session's rollup as metadata of its last trace (written once, by this span;
            # a caller's trace keeps its own metadata: the rollup is this event's metadata).
            span.set_attribute(
                "langfuse.trace.metadata.session_usage",
                json.dumps(red.metadata, default=str, separators=(",", ":")),
            )
        cls = LangfuseSpan if red.start_time is not None else LangfuseEvent
        cls(
            otel_span=span,
            langfuse_client=self.client,
            input=self.wire(red.input),
            output=self.wire(red.output),
            metadata={
                **(red.metadata or {}),
                "event_type": red.event_type,
                "hf_event_id": red.event_id,
                **_redaction_metadata(report, always=False),
            },
            level=red.level if red.level != "DEFAULT" else None,  # type: ignore[arg-type]
            status_message=red.status_message,
        )
        span.end(end_time=ns(red.timestamp))

    def turn(self, turn: Any, start: datetime, end: datetime) -> None:
        """A turn's span, covering ``start``..``end`` (see ``agent.core.forwarding.turns``)."""
        from langfuse import LangfuseSpan

        # Nested under a caller's LangFuse observation: the caller's root is the app root.
        span = self.start_span(
            "turn",
            trace_id=turn.trace_id,
            span_id=turn.span_id,
            parent_span_id=turn.parent_id,
            start_time=start,
            claim=turn.caller_trace,
        )
        if not turn.caller_trace:
            self._trace_attributes(span, turn)
        LangfuseSpan(
            otel_span=span,
            langfuse_client=self.client,
            input=self.wire(turn.input),
            output=self.wire(turn.output),
            metadata={"turn_index": turn.turn_index, **turn.metadata},
            version=turn.version,
            level=turn.level,
            status_message=turn.status_message,
        )
        span.end(end_time=ns(end))

    def _trace_attributes(self, span: Any, turn: Any) -> None:
        """The trace's attributes, written on the turn span only (LangFuse keeps the last value
        written for a trace, in no particular span order)."""
        if not span.is_recording():
            return
        encode = self._serialize_metadata
        self.who(span, session_id=turn.wire_session_id, user_id=turn.user_id)
        attrs: dict[str, Any] = {
            "langfuse.trace.name": turn.trace_name or self.trace_name,
            "langfuse.trace.metadata.turn_index": encode(turn.turn_index),
        }
        tags = sorted(turn.kinds | turn.tags)
        if tags:
            attrs["langfuse.trace.tags"] = tags
        for k, v in turn.trace_metadata.items():
            if k != "turn_index":
                attrs[f"langfuse.trace.metadata.{k}"] = encode(v)
        span.set_attributes(attrs)
