"""LangfuseForwardingLogger: LLM calls and session events as LangFuse traces.

A litellm ``CustomLogger`` (for LLM calls, sync and async, success and failure, streamed or
not) that is also an event sink (for ``turn_*``, ``tool_call``, ``hf_job_*``, ``sandbox_*`` and
``feedback`` events from the same ``send_event`` fan-out as the HF Dataset sink) and the
``TraceLinker`` that hands out LangFuse ids before the work happens, so the HF rows carry them.

Object model: a session is a LangFuse session; a turn is a trace whose id is
``Langfuse.create_trace_id(seed=f"{session_id}:{turn_index}")`` with one root span ``turn``
(input: the user's message, output: the final reply); each LLM call is a generation
``llm.<kind>`` under it; tools, jobs and sandboxes are spans and events under it; feedback is a
score on the trace.

Never in the agent's way: the litellm hooks only copy what they need into a small record and put
it on a bounded queue (drops are counted). One daemon worker redacts each record with the
operator's policy (the single choke point: nothing reaches the SDK unredacted) and builds the
LangFuse objects with the official SDK on a private TracerProvider. Spans leave through our
httpx exporter; scores through the SDK's httpx client. ``shutdown(timeout)`` is bounded even on
a dead or silent host.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

import httpx
from litellm.integrations.custom_logger import CustomLogger
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from agent.core import guard
from agent.core.callbacks.otlp_httpx import HttpxOTLPSpanExporter
from agent.core.callbacks.record import CallRecord, ScoreRecord, SpanRecord
from agent.core.callbacks.redaction import RedactionPolicy, redact
from agent.core.session import Event, TraceLink
from agent.core.telemetry import METADATA_KEY, CallContext, usage_fields

logger = logging.getLogger(__name__)

OTLP_PATH = "/api/public/otel/v1/traces"

# Model parameters forwarded as the generation's model parameters. Anything else in litellm's
# optional params (api keys, api_base, headers, extra_body ...) never leaves the process.
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
    "stream",
)

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


def trace_id_for(session_id: str, turn_index: int) -> str:
    """``Langfuse.create_trace_id(seed=f"{session_id}:{turn_index}")``, without the import."""
    return hashlib.sha256(f"{session_id}:{turn_index}".encode()).digest()[:16].hex()


def turn_span_id(session_id: str, turn_index: int) -> str:
    """The deterministic id of a turn's root span, so calls can name their parent early."""
    return hashlib.sha256(f"{session_id}:{turn_index}:turn".encode()).digest()[:8].hex()


def _ns(dt: datetime) -> int:
    if dt.tzinfo is None:  # litellm hands naive local times
        dt = dt.astimezone()
    return int(dt.timestamp() * 1e9)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return dt.astimezone(UTC)


# -- litellm kwargs -> CallRecord (on the caller's thread: cheap, no I/O) --


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _message_out(message: Any) -> dict[str, Any] | None:
    if message is None:
        return None
    out: dict[str, Any] = {"role": _get(message, "role", "assistant") or "assistant"}
    out["content"] = _get(message, "content")
    tool_calls = _get(message, "tool_calls") or []
    if tool_calls:
        out["tool_calls"] = [
            {
                "id": _get(tc, "id"),
                "type": "function",
                "function": {
                    "name": _get(_get(tc, "function"), "name"),
                    "arguments": _get(_get(tc, "function"), "arguments"),
                },
            }
            for tc in tool_calls
        ]
    reasoning = _get(message, "reasoning_content")
    if reasoning:
        out["reasoning_content"] = reasoning
    return out


def _plain_message(m: Any) -> dict[str, Any]:
    if isinstance(m, dict):
        return dict(m)
    return _message_out(m) or {}


def call_record_from_litellm(
    kwargs: dict[str, Any],
    response: Any,
    start_time: datetime,
    end_time: datetime,
    ctx: CallContext,
) -> CallRecord:
    """Our record of one call, built field by field from what litellm handed the callback."""
    optional = kwargs.get("optional_params") or {}
    params = {k: optional[k] for k in MODEL_PARAMETERS if optional.get(k) is not None}
    exc = kwargs.get("exception")
    failed = exc is not None or response is None
    output = None
    usage: dict[str, int] = {}
    if not failed:
        choice = (_get(response, "choices") or [None])[0]
        output = _message_out(_get(choice, "message"))
        usage = usage_fields(response)
    cost = kwargs.get("response_cost")
    stream = bool(kwargs.get("stream") or optional.get("stream"))
    completion_start = kwargs.get("completion_start_time") if stream and not failed else None
    error_message = None
    if failed:
        error_message = str(exc) if exc is not None else "the call failed without a response"
    return CallRecord(
        event_id=ctx.event_id,
        kind=ctx.kind,
        session_id=ctx.session_id,
        user_id=ctx.user_id,
        turn_index=ctx.turn_index,
        trace_id=ctx.langfuse_trace_id,
        observation_id=ctx.langfuse_observation_id,
        model=str(kwargs.get("model") or ""),
        start_time=_utc(start_time) or datetime.now(UTC),
        end_time=_utc(end_time) or datetime.now(UTC),
        messages=tuple(_plain_message(m) for m in kwargs.get("messages") or ()),
        tools=tuple(dict(t) for t in optional.get("tools") or ()),
        model_parameters=params,
        output=output,
        usage=usage,
        cost_usd=float(cost) if cost is not None and not failed else None,
        completion_start_time=_utc(completion_start),
        stream=stream,
        error_type=type(exc).__name__ if exc is not None else None,
        error_message=error_message,
        redact_override=ctx.redact,
    )


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
        if depth >= _MAX_PLAIN_DEPTH:
            return False
        if v.get("type") in _MEDIA_TYPES or "inline_data" in v or "inlineData" in v:
            return False
        for k in v:
            if type(k) is not str:
                return False
        items: Any = v.values()
    elif t is list or t is tuple:
        if depth >= _MAX_PLAIN_DEPTH:
            return False
        items = v
    else:
        return _plain_scalar(v)
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


def _wire_value(client: Any, value: Any) -> Any:
    """``value`` as an argument the SDK only serialises (input, output, usage, cost, model
    parameters of a generation; input and output of a span or event).

    Why (performance): for a dict or list the SDK walks the whole value looking for media,
    then serialises it with its ``EventSerializer`` (a Python ``default`` hook per node): about
    40% of the worker's time per call on a realistic generation. When ``_plain_json`` holds and
    no mask is configured, the SDK's result is exactly ``json.dumps(value)``, and a string
    passes through both steps unchanged, so we hand it that string (same span attributes,
    byte for byte). Anything else goes to the SDK as before.
    """
    if (
        isinstance(value, dict | list)
        and getattr(client, "_mask", True) is None
        and _plain_json(value)
    ):
        return json.dumps(value)
    return value


# -- span ids chosen by us --


class _ChosenIds(IdGenerator):
    """An OpenTelemetry IdGenerator that returns the ids the worker chose for the next span.

    Our ids are handed out before the work happens (they go into the HF rows), so the span that
    describes the work must be created with exactly that id. Only the worker thread creates
    spans on our private provider; the chosen id is thread-local all the same.
    """

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._local = threading.local()

    def choose(self, *, trace_id: str | None = None, span_id: str | None = None) -> None:
        self._local.trace_id = int(trace_id, 16) if trace_id else None
        self._local.span_id = int(span_id, 16) if span_id else None

    def generate_span_id(self) -> int:
        chosen = getattr(self._local, "span_id", None)
        self._local.span_id = None
        return chosen or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        chosen = getattr(self._local, "trace_id", None)
        self._local.trace_id = None
        return chosen or self._random.generate_trace_id()


class _OpenTurn:
    __slots__ = ("kinds", "span", "wrapper")

    def __init__(self, span: Any, wrapper: Any) -> None:
        self.span = span
        self.wrapper = wrapper
        self.kinds: set[str] = set()


class LangfuseForwardingLogger(CustomLogger):
    """See the module docstring. Create it through ``agent.core.observability`` (the gate)."""

    # How long the worker lets a burst of records gather after a quiet spell (see _run).
    _GATHER_S = 0.02
    # ... and how many records of a burst it works through before letting the agent's thread in.
    _YIELD_EVERY = 4

    def __init__(
        self,
        settings: Any,
        *,
        policy: RedactionPolicy | None = None,
        queue_size: int = 10_000,
        flush_timeout_s: float = 5.0,
        span_exporter: Any = None,
        flush_at: int = 64,
        flush_interval_s: float = 1.0,
    ) -> None:
        super().__init__()
        from langfuse import Langfuse
        from langfuse._client.constants import LANGFUSE_TRACER_NAME
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased

        self.settings = settings
        self.policy = policy or RedactionPolicy.from_spec(None)
        self.flush_timeout_s = flush_timeout_s
        self.queue_size = queue_size
        self.closed = False
        self._lock = threading.Condition()
        self._queue: deque[tuple[str, Any]] = deque()
        self._idle = False
        self._hurry = threading.Event()
        self._enqueued = 0
        self._done = 0
        self.dropped = Counter[str]()
        self.counts = Counter[str]()
        self._turns: dict[tuple[str, int], _OpenTurn] = {}

        # Sample per trace on our own provider (the SDK ignores its sample rate once it is
        # given a provider): a turn's trace id decides, so a turn is kept or dropped whole.
        rate = float(settings.sample_rate)
        self._sampler = ALWAYS_ON if rate >= 1.0 else TraceIdRatioBased(rate)
        self._ids = _ChosenIds()
        resource_attrs = {"service.name": "ml-intern"}
        if settings.environment:
            resource_attrs["langfuse.environment"] = settings.environment
        if settings.release:
            resource_attrs["langfuse.release"] = settings.release
        # A private provider: never installed globally, so other libraries' spans never reach
        # our exporter, and no exit hook of its own (our shutdown is the bounded one).
        self._provider = TracerProvider(
            sampler=self._sampler,
            resource=Resource.create(resource_attrs),
            id_generator=self._ids,  # type: ignore[arg-type]
            shutdown_on_exit=False,
        )
        auth = base64.b64encode(f"{settings.public_key}:{settings.secret_key}".encode()).decode()
        try:
            from langfuse._version import __version__ as langfuse_version
        except Exception:  # pragma: no cover - version module moved
            langfuse_version = "unknown"
        self.exporter = span_exporter or HttpxOTLPSpanExporter(
            endpoint=settings.host + OTLP_PATH,
            headers={
                "Authorization": f"Basic {auth}",
                "x-langfuse-sdk-name": "python",
                "x-langfuse-sdk-version": langfuse_version,
                "x-langfuse-public-key": settings.public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=min(10.0, max(1.0, flush_timeout_s)),
            on_drop=self._on_export_drop,
        )
        self._http = httpx.Client(timeout=httpx.Timeout(5.0, connect=3.0), trust_env=False)
        self._tracer_name = LANGFUSE_TRACER_NAME
        self.client = Langfuse(
            public_key=settings.public_key,
            secret_key=settings.secret_key,
            base_url=settings.host,  # always explicit: the SDK would fall back to a cloud host
            httpx_client=self._http,
            tracer_provider=self._provider,
            span_exporter=self.exporter,
            should_export_span=self._is_ours,
            environment=settings.environment,
            release=settings.release,
            flush_at=flush_at,
            flush_interval=flush_interval_s,
            timeout=5,
        )
        resources = getattr(self.client, "_resources", None)
        if resources is not None:
            # The SDK's own exit hook flushes with no timeout; ours is bounded.
            atexit.unregister(resources.shutdown)
        self._resources = resources
        self._worker = threading.Thread(target=self._run, name="langfuse-forwarder", daemon=True)
        self._worker.start()

    # -- the linker: ids before the work --

    def link(self, session_id: str, turn_index: int) -> TraceLink:
        trace_id = trace_id_for(session_id, turn_index)
        span_id = self._ids._random.generate_span_id()
        return TraceLink(
            trace_id=trace_id, observation_id=f"{span_id:016x}", sampled=self.sampled(trace_id)
        )

    def sampled(self, trace_id: str) -> bool:
        result = self._sampler.should_sample(None, int(trace_id, 16), "turn")
        return result.decision.is_sampled()

    def trace_url(self, trace_id: str) -> str:
        return f"{self.settings.host}/trace/{trace_id}"

    def _is_ours(self, span: Any) -> bool:
        scope = getattr(span, "instrumentation_scope", None)
        return scope is not None and scope.name == self._tracer_name

    # -- litellm hooks: copy, enqueue, return --

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
            if not isinstance(ours, dict) or not ours.get("langfuse_trace_id"):
                # Not a call made through agent.core.llm (or made before forwarding was on):
                # it carries no context of ours, so it is not forwarded.
                self.counts["foreign_calls"] += 1
                return
            if ours.get("langfuse_sampled") is False:
                self.counts["sampled_out_calls"] += 1
                return
            ctx = CallContext.from_metadata(ours)
            record = call_record_from_litellm(kwargs, response, start_time, end_time, ctx)
            self._put("call", record)

    # -- the sink: session events --

    def export(self, event: Event) -> None:
        if event.event_type not in EVENT_TYPES or event.session_id is None:
            return
        if event.langfuse_sampled is False:
            self.counts["sampled_out_events"] += 1
            return
        self._put("event", event)

    def _put(self, kind: str, item: Any) -> None:
        with self._lock:
            if self.closed:
                self.dropped["after_shutdown"] += 1
                return
            if len(self._queue) >= self.queue_size:
                self.dropped["queue_full"] += 1
                guard.warn_once(
                    "langfuse-queue-full",
                    "LangFuse forwarding queue is full (%d items): dropping (counted). Is the "
                    "LangFuse host reachable?",
                    self.queue_size,
                )
                return
            self._queue.append((kind, item))
            self._enqueued += 1
            if self._idle:
                self._lock.notify()

    # -- the worker --

    def _run(self) -> None:
        streak = 0
        while True:
            with self._lock:
                gather = False
                if not self._queue and not self.closed:
                    self._idle = True
                    while not self._queue and not self.closed:
                        self._lock.wait()
                    self._idle = False
                    gather = not self.closed
            if gather:
                # Why (performance): woken by the first record after a quiet spell, let the
                # records of a burst gather (a flush or shutdown cuts this short) and then work
                # through them in one go. _put only wakes an idle worker, so a burst costs one
                # wake-up and one hand-over of the GIL to this thread instead of one per record,
                # each of which stalls the agent's thread.
                self._hurry.wait(self._GATHER_S)
                self._hurry.clear()
            with self._lock:
                if not self._queue:
                    if self.closed:
                        return
                    continue
                kind, item = self._queue.popleft()
            try:
                self._wait_for_room()
                if kind == "call":
                    self._forward_call(item)
                elif kind == "event":
                    self._forward_event(item)
                elif kind == "close_turns":
                    self._close_open_turns()
            except Exception as exc:
                guard.report(f"langfuse.worker.{kind}", exc)
                # guard.report counts it too; the suite fails on it (tests/conftest.py).
                self.counts["internal_errors"] += 1
            finally:
                with self._lock:
                    self._busy = False
                    self._done += 1
                    self._lock.notify_all()
                    more = bool(self._queue)
            streak = streak + 1 if more else 0
            if streak >= self._YIELD_EVERY:
                # Why (latency): in a long burst, let the agent's thread have the GIL now and
                # then, so a burst never holds it up for more than a few records.
                streak = 0
                time.sleep(0)

    def _wait_for_room(self) -> None:
        """Back-pressure from the span processor's queue to ours (which counts its drops)."""
        proc = self._span_queue()
        if proc is None:
            return
        queue, cap = proc
        deadline = time.monotonic() + 30.0
        while len(queue) >= cap * 0.9 and not self.closed and time.monotonic() < deadline:
            time.sleep(0.01)

    def _span_queue(self) -> tuple[Any, int] | None:
        # OpenTelemetry's BatchSpanProcessor drops silently when full; peek at it so we never
        # hand it more than it holds. Private attributes: guarded, optional.
        try:
            for proc in self._provider._active_span_processor._span_processors:
                inner = getattr(proc, "_batch_processor", None)
                if inner is not None:
                    return inner._queue, inner._max_queue_size
        except Exception:
            return None
        return None

    def _parent_context(self, trace_id: str, parent_span_id: str | None) -> Any:
        from opentelemetry import trace as otel_trace

        ctx_span = otel_trace.NonRecordingSpan(
            otel_trace.SpanContext(
                trace_id=int(trace_id, 16),
                span_id=int(parent_span_id, 16)
                if parent_span_id
                else self._ids._random.generate_span_id(),
                is_remote=False,
                trace_flags=otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED),
            )
        )
        return otel_trace.set_span_in_context(ctx_span)

    def _start_span(
        self,
        name: str,
        *,
        trace_id: str,
        span_id: str | None,
        parent_span_id: str | None,
        start_time: datetime,
    ) -> Any:
        tracer = self.client._otel_tracer
        if parent_span_id is None:
            # A root span: its trace id must be ours, so it is chosen like the span id.
            from opentelemetry.context import Context

            self._ids.choose(trace_id=trace_id, span_id=span_id)
            return tracer.start_span(name, context=Context(), start_time=_ns(start_time))
        self._ids.choose(span_id=span_id)
        return tracer.start_span(
            name,
            context=self._parent_context(trace_id, parent_span_id),
            start_time=_ns(start_time),
        )

    def _trace_attributes(
        self,
        span: Any,
        *,
        session_id: str | None,
        user_id: str | None,
        tags: list[str],
        name: str | None = None,
    ) -> None:
        attrs: dict[str, Any] = {}
        if session_id:
            attrs["session.id"] = session_id
        if user_id:
            attrs["user.id"] = user_id
        if tags:
            attrs["langfuse.trace.tags"] = sorted(set(tags))
        if name:
            attrs["langfuse.trace.name"] = name
        if attrs and span.is_recording():
            span.set_attributes(attrs)

    def _forward_call(self, record: CallRecord) -> None:
        from langfuse import LangfuseGeneration

        red, report = redact(record, self.policy)
        assert red.trace_id is not None
        key = (red.session_id, red.turn_index)
        turn = self._turns.get(key)
        if turn is not None:
            turn.kinds.add(red.kind)
        parent = turn_span_id(red.session_id, red.turn_index)
        span = self._start_span(
            f"llm.{red.kind}",
            trace_id=red.trace_id,
            span_id=red.observation_id,
            parent_span_id=parent,
            start_time=red.start_time,
        )
        self._trace_attributes(
            span,
            session_id=red.session_id,
            user_id=red.user_id,
            tags=[red.kind],
            name=None,
        )
        usage = red.usage or {}
        usage_details = {
            "input": usage.get("prompt_tokens", 0),
            "output": usage.get("completion_tokens", 0),
            "total": usage.get("total_tokens", 0),
        }
        if usage.get("cache_read_tokens"):
            usage_details["cache_read_input_tokens"] = usage["cache_read_tokens"]
        if usage.get("cache_creation_tokens"):
            usage_details["cache_creation_input_tokens"] = usage["cache_creation_tokens"]
        failed = red.error_type is not None or red.output is None
        metadata: dict[str, Any] = {
            "kind": red.kind,
            "hf_event_id": red.event_id,
            "turn_index": red.turn_index,
            "stream": red.stream,
            "redaction": report.as_metadata(),
            **(red.metadata or {}),
        }
        if red.error_type:
            metadata["error_type"] = red.error_type
        gen_input: Any = list(red.messages)
        if red.tools:
            gen_input = {"messages": list(red.messages), "tools": list(red.tools)}
        LangfuseGeneration(
            otel_span=span,
            langfuse_client=self.client,
            input=_wire_value(self.client, gen_input),
            output=_wire_value(self.client, red.output),
            metadata=metadata,
            model=red.model,
            # These three only go through the SDK's serializer, as input and output do.
            model_parameters=_wire_value(self.client, red.model_parameters or None),
            usage_details=_wire_value(self.client, usage_details) if not failed else None,
            cost_details=_wire_value(self.client, {"total": red.cost_usd})
            if red.cost_usd is not None
            else None,
            completion_start_time=red.completion_start_time,
            level="ERROR" if failed else None,
            status_message=red.error_message if failed else None,
        )
        span.end(end_time=_ns(red.end_time))
        self.counts["generations"] += 1

    def _forward_event(self, event: Event) -> None:
        if event.event_type == "feedback":
            self._forward_feedback(event)
            return
        record = _span_record(event)
        red, report = redact(record, self.policy)
        trace_id = red.trace_id or trace_id_for(event.session_id or "", event.turn_index or 0)
        key = (event.session_id or "", event.turn_index or 0)
        if event.event_type == "turn_start":
            self._open_turn(key, red, trace_id)
            return
        if event.event_type == "turn_complete":
            self._close_turn(key, red, trace_id, event)
            return
        self._child_span(red, report, trace_id)

    def _open_turn(self, key: tuple[str, int], red: SpanRecord, trace_id: str) -> None:
        from langfuse import LangfuseSpan

        stale = self._turns.pop(key, None)
        if stale is not None:
            stale.span.end()
        span = self._start_span(
            "turn",
            trace_id=trace_id,
            span_id=turn_span_id(*key),
            parent_span_id=None,
            start_time=red.timestamp,
        )
        self._trace_attributes(
            span,
            session_id=red.session_id,
            user_id=red.user_id,
            tags=[],
            name=f"turn {key[1]}",
        )
        wrapper = LangfuseSpan(
            otel_span=span,
            langfuse_client=self.client,
            input=red.input,
            metadata={"turn_index": key[1], "hf_event_id": red.event_id},
        )
        self._turns[key] = _OpenTurn(span, wrapper)

    def _close_turn(
        self, key: tuple[str, int], red: SpanRecord, trace_id: str, event: Event
    ) -> None:
        turn = self._turns.pop(key, None)
        if turn is None:
            # turn_start was never seen (dropped, or forwarding started mid-turn): open it now
            # with the start time the duration implies.
            start = red.timestamp
            with contextlib.suppress(Exception):
                from datetime import timedelta

                start = red.timestamp - timedelta(
                    milliseconds=float(event.data.get("duration_ms", 0))
                )
            self._open_turn(key, dataclasses.replace(red, timestamp=start), trace_id)
            turn = self._turns.pop(key)
        span = turn.span
        ok = bool(event.data.get("ok", True))
        turn.wrapper.update(
            output=red.output,
            metadata=dict(red.metadata or {}),
            level=None if ok else "WARNING",
            status_message=None if ok else "the turn ended without a final answer",
        )
        if turn.kinds and span.is_recording():
            span.set_attribute("langfuse.trace.tags", sorted(turn.kinds))
        span.end(end_time=_ns(red.timestamp))
        self.counts["traces"] += 1

    def _child_span(self, red: SpanRecord, report: Any, trace_id: str) -> None:
        from langfuse import LangfuseEvent, LangfuseSpan

        parent = turn_span_id(red.session_id or "", red.turn_index or 0)
        is_span = red.start_time is not None
        span = self._start_span(
            red.name,
            trace_id=trace_id,
            span_id=red.observation_id,
            parent_span_id=parent,
            start_time=red.start_time or red.timestamp,
        )
        self._trace_attributes(span, session_id=red.session_id, user_id=red.user_id, tags=[])
        if red.event_type == "session_end" and span.is_recording():
            # The session's rollup as metadata of its last trace (written once, by this span).
            span.set_attribute(
                "langfuse.trace.metadata.session_usage",
                json.dumps(red.metadata, default=str, separators=(",", ":")),
            )
        cls = LangfuseSpan if is_span else LangfuseEvent
        metadata = {
            **(red.metadata or {}),
            "event_type": red.event_type,
            "hf_event_id": red.event_id,
        }
        redaction = report.as_metadata()
        if redaction.get("fields") or redaction.get("secrets") or redaction.get("failures"):
            metadata["redaction"] = redaction
        cls(
            otel_span=span,
            langfuse_client=self.client,
            input=_wire_value(self.client, red.input),
            output=_wire_value(self.client, red.output),
            metadata=metadata,
            level=red.level if red.level != "DEFAULT" else None,
            status_message=red.status_message,
        )
        span.end(end_time=_ns(red.timestamp))
        self.counts["spans"] += 1

    def _forward_feedback(self, event: Event) -> None:
        trace_id = event.langfuse_trace_id or trace_id_for(
            event.session_id or "", event.turn_index or 0
        )
        record = ScoreRecord(
            event_id=event.event_id,
            trace_id=trace_id,
            name=str(event.data.get("name") or "user_feedback"),
            value=float(event.data.get("value", 0.0)),
            session_id=event.session_id,
            user_id=event.user_id,
            comment=(event.payload or {}).get("comment"),
        )
        red, _ = redact(record, self.policy)
        self.client.create_score(
            trace_id=red.trace_id,
            name=red.name,
            value=red.value,
            comment=red.comment,
            data_type="NUMERIC",
        )
        self.counts["scores"] += 1

    def _close_open_turns(self) -> None:
        for key in list(self._turns):
            turn = self._turns.pop(key)
            with contextlib.suppress(Exception):
                if turn.span.is_recording():
                    turn.span.set_attributes(
                        {
                            "langfuse.observation.level": "WARNING",
                            "langfuse.observation.status_message": "the session ended mid-turn",
                        }
                    )
                turn.span.end()

    # -- lifecycle --

    def _on_export_drop(self, count: int, reason: str) -> None:
        with self._lock:
            self.dropped[f"export_{reason}"] += count

    def _drain(self, deadline: float) -> bool:
        self._hurry.set()
        with self._lock:
            target = self._enqueued
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._worker.is_alive():
                    return False
                self._lock.wait(min(remaining, 0.05))
        return True

    def flush_report(self, timeout: float | None = None) -> dict[str, Any]:
        """Flush what is queued (bounded) and report; the forwarder stays open."""
        self.flush(timeout)
        return self.stats()

    def flush(self, timeout: float | None = None) -> bool:
        budget = self.flush_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + budget
        if not self._drain(deadline):
            return False
        return self._bounded(
            lambda: self._provider.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000)),
            deadline,
        )

    def _bounded(self, fn: Any, deadline: float, *, with_event: bool = False) -> Any:
        """Run ``fn`` on a daemon thread and give up at ``deadline`` (the SDK's flush and
        OpenTelemetry's export take no usable timeout). Returns whether it finished in time
        (and, with ``with_event``, the event set when it does finish)."""
        done = threading.Event()
        result: list[Any] = []

        def target() -> None:
            try:
                result.append(fn())
            except Exception as exc:
                guard.report("langfuse.flush", exc)
            finally:
                done.set()

        threading.Thread(target=target, name="langfuse-flush", daemon=True).start()
        finished = done.wait(max(0.0, deadline - time.monotonic()))
        ok = finished and bool(result) and result[0] is not False
        return (ok, done) if with_event else ok

    def shutdown(self, timeout: float | None = None) -> dict[str, Any]:
        """Deliver what can be delivered within ``timeout`` seconds, then stop. Idempotent."""
        budget = self.flush_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + budget
        with self._lock:
            already = self.closed
        if already:
            return self.stats()
        self._put("close_turns", None)
        drained = self._drain(deadline)
        with self._lock:
            self.closed = True
            left = len(self._queue)
            self._queue.clear()
            if left:
                self.dropped["not_processed_at_shutdown"] += left
            self._lock.notify_all()
        self._hurry.set()

        def stop_sdk() -> bool:
            if self._resources is not None:
                self._resources.shutdown()  # flushes spans and scores, joins its threads
            else:
                self._provider.shutdown()
            return True

        finished, stopped = self._bounded(stop_sdk, deadline, with_event=True)
        if not finished:
            # A dead or silent host: stop waiting. Shutting the exporter down aborts the export
            # in flight and drops (and counts) every later one at once, so the SDK's own
            # shutdown, still running on its daemon thread, ends promptly and sends nothing.
            with contextlib.suppress(Exception):
                self.exporter.shutdown(timeout_millis=200)
            with contextlib.suppress(Exception):
                self._http.close()
            if not stopped.wait(0.5):
                pending = self._span_queue()
                if pending is not None:
                    self.dropped["not_exported_at_shutdown"] += len(pending[0])
        self._forget_client()
        report = self.stats()
        report["completed_in_time"] = bool(drained and finished)
        total_dropped = sum(self.dropped.values())
        if total_dropped:
            logger.warning(
                "LangFuse forwarding dropped %d item(s): %s",
                total_dropped,
                ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())),
            )
        return report

    def _forget_client(self) -> None:
        # The SDK caches one client per public key for the process; a later setup with the same
        # key must not silently reuse this (shut down) one.
        with contextlib.suppress(Exception):
            from langfuse._client.resource_manager import LangfuseResourceManager

            with LangfuseResourceManager._lock:
                if (
                    LangfuseResourceManager._instances.get(self.settings.public_key)
                    is self._resources
                ):
                    del LangfuseResourceManager._instances[self.settings.public_key]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {
                "host": self.settings.host,
                "queued": len(self._queue),
                **{k: v for k, v in self.counts.items()},
                "dropped": dict(self.dropped),
            }
        with contextlib.suppress(Exception):
            out["exporter"] = self.exporter.stats()
        return out


def _span_record(event: Event) -> SpanRecord:
    """A telemetry event as a SpanRecord: which payload goes where, under which policy field."""
    from datetime import timedelta

    data = dict(event.data)
    payload = event.payload or {}
    t = event.event_type
    name = t
    start = None
    inp: Any = None
    out: Any = None
    in_field = out_field = None
    level = "DEFAULT"
    status = None
    if t == "turn_start":
        inp, in_field = payload.get("user_message"), "user_messages"
        name = "turn"
    elif t == "turn_complete":
        out, out_field = payload.get("final_reply"), "completion"
        name = "turn"
    elif t == "tool_call":
        name = f"tool.{data.get('name')}"
        inp, in_field = payload.get("arguments"), "tool_calls"
        out, out_field = payload.get("result"), "tool_results"
        start = event.timestamp - timedelta(milliseconds=float(data.get("duration_ms") or 0))
        if not data.get("ok", True):
            level, status = "ERROR", data.get("error")
    elif t == "hf_job_submit":
        name = "hf_job.submit"
        inp, in_field = payload.get("command"), "tool_calls"
    elif t == "hf_job_complete":
        name = "hf_job.complete"
        if data.get("status") not in (None, "completed"):
            level, status = "ERROR", f"job {data.get('status')}"
    elif t in ("sandbox_create", "sandbox_destroy", "session_end"):
        # Job and sandbox costs (estimated_cost_usd) and the session rollup travel in metadata.
        name = t.replace("_", ".")
    return SpanRecord(
        event_id=event.event_id,
        event_type=t,
        name=name,
        session_id=event.session_id,
        user_id=event.user_id,
        turn_index=event.turn_index,
        trace_id=event.langfuse_trace_id,
        observation_id=event.langfuse_observation_id,
        timestamp=event.timestamp,
        start_time=start,
        input=inp,
        output=out,
        input_field=in_field,
        output_field=out_field,
        metadata=data,
        status_message=status,
        level=level,
    )


# -- registration with litellm: once per process --

_register_lock = threading.Lock()


# litellm copies entries of ``litellm.callbacks`` into these lists at call time.
_LITELLM_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)
_LITELLM_LANGFUSE_CALLBACKS = ("langfuse", "langfuse_otel")


def _filter_litellm_callbacks(keep: Any) -> None:
    import litellm

    for name in _LITELLM_CALLBACK_LISTS:
        lst = getattr(litellm, name, None)
        if isinstance(lst, list):
            lst[:] = [cb for cb in lst if keep(cb)]


def register(forwarder: LangfuseForwardingLogger) -> None:
    """Put ``forwarder`` in ``litellm.callbacks``, replacing any other instance of ours, and
    never alongside litellm's own LangFuse callbacks (which fall back to a cloud host)."""
    import litellm

    with _register_lock:
        _filter_litellm_callbacks(
            lambda cb: (
                not isinstance(cb, LangfuseForwardingLogger)
                and cb not in _LITELLM_LANGFUSE_CALLBACKS
            )
        )
        litellm.callbacks = [*litellm.callbacks, forwarder]


def unregister(forwarder: LangfuseForwardingLogger) -> None:
    with _register_lock:
        _filter_litellm_callbacks(lambda cb: cb is not forwarder)
