"""LangfuseForwardingLogger: LLM calls and session events as LangFuse traces.

A litellm ``CustomLogger`` (for LLM calls, sync and async, success and failure, streamed or
not) that is also an event sink (for ``turn_*``, ``tool_call``, ``hf_job_*``, ``sandbox_*`` and
``feedback`` events from the same ``send_event`` fan-out as the HF Dataset sink) and the
``TraceLinker`` that hands out LangFuse ids before the work happens, so the HF rows carry them.

Object model: a session is a LangFuse session; a turn is a trace whose id is
``Langfuse.create_trace_id(seed=f"{session_id}:{turn_index}")`` (or, when the agent runs inside
a caller's OpenTelemetry span or LangFuse observation, the caller's trace) with one span
``turn`` (input: the user's message, output: the final reply); each LLM call is a generation
``llm.<kind>`` under it; tools, jobs and sandboxes are spans and events under it; feedback is a
score on the trace, with the id the HF row holds.

Ids that resolve: every id handed out names an object that is forwarded (turn rows: the turn
span; calls: their generation; tool, job and sandbox rows: their span or event; feedback: its
score). Work with no LangFuse object, and every row of a turn sampling left out, gets null ids.

Trace attributes are written once: the name (one stable name, default ``ml-intern turn``, the
turn index in metadata), tags (the union of the turn's kinds and the caller's tags), metadata
and version go on the turn span only, when it closes; session and user go on every span, with
the same values. The turn span is created when the turn closes, so it covers every observation
filed under it (a restore call just before the turn, the last call whose litellm callback comes
after ``turn_complete``, a sandbox torn down after it): it closes a short grace period after
``turn_complete``, at a flush, or at shutdown; a child that comes later reopens it (the same
span id is sent again, wider). Children are started with LangFuse's trace claim in their
parent context, so the SDK's span processor never marks one an extra root.

Never in the agent's way: the litellm hooks only copy what they need into a small record and put
it on a bounded queue (drops are counted). One daemon worker redacts each record with the
operator's policy (the single choke point: nothing reaches the SDK unredacted) and builds the
LangFuse objects with the official SDK on a private TracerProvider. Spans leave through our
httpx exporter; scores through our own one-object-per-request sender (servers up to at least
4.16 answer 400 to the SDK's arrays), counted only when the server accepted them.
``shutdown(timeout)`` is bounded even on a dead or silent host.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from litellm.integrations.custom_logger import CustomLogger
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from agent.core import guard
from agent.core.callbacks.media_upload import configure_media
from agent.core.callbacks.record import CallerContext, CallRecord, ScoreRecord, SpanRecord
from agent.core.callbacks.redaction import RedactionPolicy, RedactionReport, redact
from agent.core.encodable import encodable, id_bytes
from agent.core.forwarding import otlp
from agent.core.internals import litellm as litellm_internals
from agent.core.known_secrets import KNOWN_SECRETS
from agent.core.messages import field, message_dict
from agent.core.redact import scrub
from agent.core.session import Event, TraceLink
from agent.core.telemetry import METADATA_KEY, CallContext, usage_fields

logger = logging.getLogger(__name__)

SCORES_PATH = "/api/public/scores"
DEFAULT_TRACE_NAME = "ml-intern turn"
# How long a turn span waits after turn_complete for the turn's last children (litellm calls
# the last call's callback after the turn returned; the sandbox is torn down after the turn).
DEFAULT_TURN_GRACE_S = 2.0
# A turn known only from its children (calls made outside record_turn_start/complete) closes
# after this long without a new child, or at a flush.
_IMPLICIT_TURN_IDLE_S = 10.0
_MAX_OPEN_TURNS = 1024  # past this, the oldest open turn is closed early
_MAX_CLOSED_TURNS = 256  # closed turns remembered, so a late child can reopen one
_MAX_LINKED_TURNS = 4096  # turns whose ids the linker remembers (feedback, late events)
# The OpenTelemetry baggage key the langfuse SDK's span processor reads as "this trace is
# already claimed by an app root": a span started with it in its parent context is never
# marked an app root (`langfuse.internal.is_app_root`), whatever the order spans start in.
_LANGFUSE_TRACE_CLAIM = "langfuse_trace_id"

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

# Turn span ids already counted as acknowledged traces (bounded; see _on_exported).
_MAX_ACKED_TURNS = 4096

# A call's HF row: its LangFuse generation comes through litellm's callback, not this event.
_CALL_EVENT_TYPES = frozenset({"llm_call", "llm_call_error"})

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
_TURN_EVENTS = frozenset({"turn_start", "turn_complete"})
# Everything the linker hands ids out for: the events above and LLM calls.
LINKED_TYPES = EVENT_TYPES | {"llm_call"}

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


def _reasoning_tokens(response: Any) -> int:
    usage = field(response, "usage")
    details = field(usage, "completion_tokens_details")
    value = field(details, "reasoning_tokens") or field(usage, "reasoning_tokens") or 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


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


# -- litellm kwargs -> CallRecord (on the caller's thread: cheap, no I/O) --


def _plain_message(m: Any) -> dict[str, Any]:
    if isinstance(m, dict):
        return dict(m)
    return message_dict(m) or {}


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
        choice = (field(response, "choices") or [None])[0]
        output = message_dict(field(choice, "message"))
        usage = usage_fields(response)
        usage["reasoning_tokens"] = _reasoning_tokens(response)
    cost = kwargs.get("response_cost")
    stream = bool(kwargs.get("stream") or optional.get("stream"))
    completion_start = kwargs.get("completion_start_time") if stream and not failed else None
    error_message = None
    if failed:
        error_message = str(exc) if exc is not None else "the call failed without a response"
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
        metadata=extra,
        redact_override=ctx.redact,
        parent_id=ctx.langfuse_parent_id,
        caller_trace=bool(ctx.langfuse_caller_trace),
        caller=caller,
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


# -- turns: what the linker knows (any thread) and what the worker builds --


@dataclasses.dataclass(frozen=True, slots=True)
class _TurnLink:
    """The ids of one turn, fixed when its ``turn_start`` row is linked."""

    trace_id: str
    span_id: str
    parent_id: str | None
    caller_trace: bool
    sampled: bool


@dataclasses.dataclass(slots=True)
class _Turn:
    """One turn's span, built on the worker from the turn's events and children, emitted when
    the turn closes (see the module docstring)."""

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


# -- scores: one JSON object per request, counted when accepted --


class _ScoreSender:
    """Posts scores to ``/api/public/scores`` one JSON object per request from a daemon thread.

    Why not the SDK: langfuse 5.0.4 posts a JSON array, which servers up to at least 4.16 answer
    with 400 (and the SDK counted nothing either way). One object per request is what every
    server since the OTLP endpoint (3.22) accepts. A score counts as sent only on a 2xx answer;
    a 4xx is final (dropped, ``score_http_<status>``); 408/429/5xx and network errors are
    retried a few times, then dropped (``score_http_<status>`` / ``score_unreachable``).
    The queue is bounded (``score_queue_full``); ``close(deadline)`` stops within the deadline.
    """

    RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(
        self,
        *,
        url: str,
        headers: Mapping[str, str],
        client: httpx.Client,
        on_result: Any,
        max_queue: int = 1000,
        attempts: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self._url = url
        self._headers = dict(headers)
        self._client = client
        self._on_result = on_result  # (outcome: "accepted" | drop reason, status | None, text)
        self._max_queue = max_queue
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._cond = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._busy = False
        self._abandoned = False  # close() gave up on the score in flight (counted unsent)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, body: dict[str, Any]) -> bool:
        with self._cond:
            if self._stop.is_set() or len(self._queue) >= self._max_queue:
                return False
            self._queue.append(body)
            if self._thread is None:  # started on the first score: most runs send none
                self._thread = threading.Thread(
                    target=self._run, name="langfuse-scores", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        return True

    def drain(self, deadline: float) -> bool:
        """Wait until every submitted score has been answered (or ``deadline``)."""
        with self._cond:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def close(self, deadline: float) -> int:
        """Send what can be sent before ``deadline``, then stop; returns how many were not."""
        self.drain(deadline)
        with self._cond:
            self._stop.set()
            left = len(self._queue) + (1 if self._busy else 0)
            self._abandoned = self._busy
            self._queue.clear()
            self._cond.notify_all()
        return left

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
                if not self._queue:
                    return
                body = self._queue.popleft()
                self._busy = True
            try:
                result = self._send(body)
            except Exception as exc:  # a bug: never lose the thread over it
                guard.report("langfuse.scores", exc)
                result = ("internal_error", None, "")
            with self._cond:
                self._busy = False
                abandoned, self._abandoned = self._abandoned, False
                self._cond.notify_all()
            if not abandoned:
                self._on_result(*result)

    def _send(self, body: dict[str, Any]) -> tuple[str, int | None, str]:
        payload = json.dumps(body).encode()
        headers = {**self._headers, "Content-Type": "application/json"}
        reason, status, text = "unreachable", None, ""
        for attempt in range(self._attempts):
            if attempt and self._stop.wait(self._backoff_s * 2 ** (attempt - 1)):
                break
            try:
                response = self._client.post(self._url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                reason, status, text = "unreachable", None, type(exc).__name__
                continue
            status = response.status_code
            if 200 <= status < 300:
                return "accepted", status, ""
            reason, text = f"http_{status}", response.text[:200]
            if status not in self.RETRYABLE:
                break
        return reason, status, text


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
        traces_endpoint: str | None = None,
        trace_name: str = DEFAULT_TRACE_NAME,
        nest_in_caller_trace: bool = True,
        turn_grace_s: float = DEFAULT_TURN_GRACE_S,
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
        self.trace_name = trace_name or DEFAULT_TRACE_NAME
        self.nest_in_caller_trace = nest_in_caller_trace
        self.turn_grace_s = max(0.0, float(turn_grace_s))
        self.closed = False
        self._lock = threading.Condition()
        self._queue: deque[tuple[str, Any]] = deque()
        self._idle = False
        self._hurry = threading.Event()
        self._enqueued = 0
        self._done = 0
        self.dropped = Counter[str]()
        # generations, spans, traces: what the host acknowledged (see _on_exported)
        self.counts = Counter[str]({"generations": 0, "spans": 0, "traces": 0})
        self._acked_turns: OrderedDict[int, None] = OrderedDict()
        # Worker-only state: open turns by (trace id, turn span id), recently closed ones.
        self._turns: dict[tuple[str, str], _Turn] = {}
        self._closed_turns: OrderedDict[tuple[str, str], _Turn] = OrderedDict()
        # Linker state (any thread): the ids of recent turns, by (session id, turn index).
        self._links: OrderedDict[tuple[str, int], _TurnLink] = OrderedDict()
        self._links_lock = threading.Lock()
        self._warned: set[str] = set()
        # Calls whose HF row was written but whose litellm callback has not reached us yet
        # (event id -> when the row came), and callbacks that came before their row: so flush
        # and shutdown can say which calls litellm never handed over (see settle_calls).
        self._awaited: dict[str, float] = {}
        self._early: dict[str, None] = {}

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
        headers = otlp.langfuse_headers(settings)
        self.exporter = span_exporter or otlp.for_langfuse(
            settings,
            traces_endpoint=traces_endpoint,
            timeout=min(10.0, max(1.0, flush_timeout_s)),
            on_drop=self._on_export_drop,
            on_exported=self._on_exported,
        )
        timeout = int(settings.timeout_s)
        self._http = httpx.Client(
            timeout=httpx.Timeout(float(timeout), connect=min(3.0, float(timeout))),
            trust_env=False,
        )
        self._scores = _ScoreSender(
            url=settings.host + SCORES_PATH,
            headers=headers,
            client=self._http,
            on_result=self._on_score_result,
        )
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
            # Every setting the SDK would otherwise read from LANGFUSE_* itself, explicitly:
            # validated by our config, so the SDK never parses the environment behind us.
            timeout=timeout,
            sample_rate=rate,  # our provider samples; the SDK only validates it
            media_upload_thread_count=int(settings.media_upload_thread_count),
            debug=bool(settings.debug),
            tracing_enabled=True,  # the gate never builds a forwarder while it is off
        )
        # Inline media: off unless the operator turned LangFuse's media upload on (counted).
        configure_media(self.client, enabled=self.policy.media_upload, counts=self.counts)
        KNOWN_SECRETS.add(settings.secret_key)
        resources = getattr(self.client, "_resources", None)
        if resources is not None:
            # The SDK's own exit hook flushes with no timeout; ours is bounded.
            atexit.unregister(resources.shutdown)
        self._resources = resources
        self._worker = threading.Thread(target=self._run, name="langfuse-forwarder", daemon=True)
        self._worker.start()

    # -- the linker: ids before the work --

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
        key = (session_id, turn_index)
        turn = None
        if event_type != "turn_start":
            with self._links_lock:
                turn = self._links.get(key)
        if turn is None and event_type in _TURN_EVENTS:
            turn = self._new_turn_link(session_id, turn_index)
            with self._links_lock:
                self._links[key] = turn
                self._links.move_to_end(key)
                while len(self._links) > _MAX_LINKED_TURNS:
                    self._links.popitem(last=False)
        if turn is not None:
            if not turn.sampled:
                return TraceLink(sampled=False)
            if event_type in _TURN_EVENTS:
                observation_id, parent_id = turn.span_id, turn.parent_id
            elif event_type is None:
                observation_id, parent_id = None, turn.parent_id
            elif event_type == "feedback":
                observation_id, parent_id = self._new_id(), None  # the score's id
            else:
                observation_id, parent_id = self._new_id(), turn.span_id
            return TraceLink(turn.trace_id, observation_id, True, parent_id, turn.caller_trace)
        # Work in no turn the linker knows: a caller's span, else the session's own trace.
        if event_type == "feedback":
            return self._linked(trace_id_for(session_id, turn_index), None)
        nest = self._caller_span()
        if nest is not None:
            trace_id, span_id, owned = nest
            if event_type is None:
                return self._linked(trace_id, span_id, caller_trace=owned, observation=False)
            return self._linked(trace_id, span_id, caller_trace=owned)
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
        observation_id = self._new_id() if observation else None
        return TraceLink(trace_id, observation_id, True, parent_id, caller_trace)

    def _new_turn_link(self, session_id: str, turn_index: int) -> _TurnLink:
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

    def _new_id(self) -> str:
        return f"{self._ids._random.generate_span_id():016x}"

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
            if not isinstance(ours, dict) or not ours.get("event_id"):
                # Not a call made through agent.core.llm: it carries no context of ours, so it
                # is not forwarded.
                self.counts["foreign_calls"] += 1
                return
            if ours.get("langfuse_sampled") is False:
                self.counts["sampled_out_calls"] += 1
                return
            if not ours.get("langfuse_trace_id"):
                # Made before forwarding was on: its row has no ids, so nothing is forwarded.
                self.counts["unlinked_calls"] += 1
                return
            ctx = CallContext.from_metadata(ours)
            self._call_arrived(ctx.event_id)
            record = call_record_from_litellm(kwargs, response, start_time, end_time, ctx)
            self._put("call", record)

    # -- the sink: session events --

    def export(self, event: Event) -> None:
        if event.event_type in _CALL_EVENT_TYPES:
            self._call_recorded(event)
            return
        if event.event_type not in EVENT_TYPES or event.session_id is None:
            return
        if event.langfuse_sampled is False:
            self.counts["sampled_out_events"] += 1
            return
        self._put("event", event)

    # -- which calls litellm handed over: a call's row and its callback meet by event id --

    def _call_recorded(self, event: Event) -> None:
        if not event.langfuse_trace_id or event.langfuse_sampled is False:
            return  # made while forwarding was off, or sampled out: no callback is awaited
        with self._lock:
            if event.event_id in self._early:
                del self._early[event.event_id]
                return
            self._awaited[event.event_id] = time.monotonic()
            if len(self._awaited) > self.queue_size:
                # Bounded: litellm is far behind (or lost these); count the oldest as dropped.
                del self._awaited[next(iter(self._awaited))]
                self.dropped["no_litellm_callback"] += 1

    def _call_arrived(self, event_id: str) -> None:
        with self._lock:
            if event_id in self._awaited:
                del self._awaited[event_id]
                return
            self._early[event_id] = None
            if len(self._early) > self.queue_size:
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

    def _put(self, kind: str, item: Any, *, control: bool = False) -> None:
        with self._lock:
            if self.closed:
                if not control:
                    self.dropped["after_shutdown"] += 1
                return
            if len(self._queue) >= self.queue_size and not control:
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
                        # Asleep until a record arrives or the next open turn is due to close.
                        wait = self._next_turn_close()
                        if wait is not None and wait <= 0:
                            break
                        self._lock.wait(wait)
                    self._idle = False
                    gather = bool(self._queue) and not self.closed
            self._close_due_turns()
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
                    self._close_turns(final=item == "shutdown")
            except Exception as exc:
                guard.report(f"langfuse.worker.{kind}", exc)
                # guard.report counts it too; the suite fails on it (tests/conftest.py).
                self.counts["internal_errors"] += 1
            finally:
                with self._lock:
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
            context = baggage.set_baggage(_LANGFUSE_TRACE_CLAIM, trace_id, context=context)
        return context

    def _start_span(
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
        return self.client._otel_tracer.start_span(
            name,
            context=self._parent_context(trace_id, parent_span_id, claim=claim),
            start_time=_ns(start_time),
        )

    @staticmethod
    def _who(span: Any, *, session_id: str | None, user_id: str | None) -> None:
        """Session and user: trace attributes, set identically on every span of a trace."""
        attrs: dict[str, Any] = {}
        if session_id:
            attrs["session.id"] = session_id
        if user_id:
            attrs["user.id"] = user_id
        if attrs and span.is_recording():
            span.set_attributes(attrs)

    def _redact(self, record: Any) -> tuple[Any, RedactionReport]:
        """The policy's copy of ``record``, then every string made encodable: a lone surrogate
        (a non-UTF-8 file name in a tool error ...) would make the whole export batch fail."""
        red, report = redact(record, self.policy)
        red, replaced = encodable(red)
        if replaced:
            report.unencodable += replaced
            self.counts["unencodable_replaced"] += replaced
        return red, report

    def _forward_call(self, record: CallRecord) -> None:
        from langfuse import LangfuseGeneration

        red, report = self._redact(record)
        assert red.trace_id is not None
        parent = red.parent_id
        if parent is None and not red.caller_trace:  # a context from before parent ids
            parent = turn_span_id(red.session_id, red.turn_index, red.trace_id)
        turn = self._turn_for_child(
            red.trace_id, parent, red.session_id, red.turn_index, red.user_id, red.caller_trace
        )
        if turn is not None:
            turn.wire_session_id = red.wire_session_id
            turn.add_call(red)
        caller = red.caller
        span = self._start_span(
            caller.generation_name or f"llm.{red.kind}",
            trace_id=red.trace_id,
            span_id=red.observation_id,
            parent_span_id=parent,
            start_time=red.start_time,
        )
        if not red.caller_trace:
            self._who(span, session_id=red.wire_session_id, user_id=red.user_id)
        failed = red.error_type is not None or red.output is None
        metadata: dict[str, Any] = {
            **{k: v for k, v in (red.metadata or {}).items() if k != "trace_metadata"},
            "kind": red.kind,
            "hf_event_id": red.event_id,
            "turn_index": red.turn_index,
            "stream": red.stream,
            "redaction": report.as_metadata(),
        }
        if red.error_type:
            metadata["error_type"] = red.error_type
        if caller.tags and turn is None:
            metadata["tags"] = list(caller.tags)  # no trace of ours to put them on
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
            version=caller.version,
            # These three only go through the SDK's serializer, as input and output do.
            model_parameters=_wire_value(self.client, red.model_parameters or None),
            usage_details=_wire_value(self.client, langfuse_usage_details(red.usage))
            if not failed
            else None,
            cost_details=_wire_value(self.client, {"total": red.cost_usd})
            if red.cost_usd is not None
            else None,
            completion_start_time=red.completion_start_time,
            level="ERROR" if failed else None,
            status_message=red.error_message if failed else None,
        )
        if caller.prompt_name and span.is_recording():
            span.set_attribute("langfuse.observation.prompt.name", caller.prompt_name)
            if caller.prompt_version is not None:
                span.set_attribute("langfuse.observation.prompt.version", caller.prompt_version)
        span.end(end_time=_ns(red.end_time))

    def _forward_event(self, event: Event) -> None:
        if event.event_type == "feedback":
            self._forward_feedback(event)
            return
        record = _span_record(event)
        red, report = self._redact(record)
        ti = event.turn_index or 0
        sid = event.session_id or ""
        trace_id = red.trace_id or trace_id_for(sid, ti)
        if event.event_type in _TURN_EVENTS:
            span_id = red.observation_id or turn_span_id(sid, ti, trace_id)
            turn = self._turn_for_event(event, red, trace_id, span_id)
            if event.event_type == "turn_start":
                self._start_turn(turn, red)
            else:
                self._complete_turn(turn, red, event)
            return
        parent = event.langfuse_parent_id
        if parent is None and not event.langfuse_caller_trace:
            parent = turn_span_id(sid, ti, trace_id)
        turn = self._turn_for_child(
            trace_id, parent, red.session_id, ti, red.user_id, event.langfuse_caller_trace
        )
        if turn is not None:
            turn.wire_session_id = red.wire_session_id
            turn.cover(red.start_time or red.timestamp, red.timestamp)
        self._child_span(red, report, trace_id, parent, event.langfuse_caller_trace)

    # -- turns (worker only) --

    def _turn_for_child(
        self,
        trace_id: str,
        parent_id: str | None,
        session_id: str | None,
        turn_index: int,
        user_id: str | None,
        caller_trace: bool,
    ) -> _Turn | None:
        """The open turn a child nests under: reopened if it already closed, created (known
        from its children only) if the child came first. None: the parent is not a turn."""
        if parent_id is None or parent_id != turn_span_id(session_id or "", turn_index, trace_id):
            return None
        key = (trace_id, parent_id)
        turn = self._turns.get(key)
        if turn is not None:
            if not turn.started and not turn.ended:  # known from children only: idle timer
                turn.close_at = time.monotonic() + _IMPLICIT_TURN_IDLE_S
            return turn
        turn = self._closed_turns.pop(key, None)
        if turn is not None:
            # A late child: the turn is sent again (same span id) to cover it.
            self.counts["late_children"] += 1
            turn.close_at = time.monotonic() + self.turn_grace_s
        else:
            turn = _Turn(
                trace_id=trace_id,
                span_id=parent_id,
                parent_id=None,
                caller_trace=caller_trace,
                session_id=session_id,
                user_id=user_id,
                turn_index=turn_index,
                close_at=time.monotonic() + _IMPLICIT_TURN_IDLE_S,
            )
        self._open(key, turn)
        return turn

    def _turn_for_event(self, event: Event, red: SpanRecord, trace_id: str, span_id: str) -> _Turn:
        key = (trace_id, span_id)
        turn = self._turns.get(key)
        if turn is not None and event.event_type == "turn_start" and turn.ended:
            # The same turn index started again (a caller that never advanced it): the
            # finished turn goes out first; the new one reuses its ids.
            self._close_turn(turn)
            turn = None
        if turn is None:
            # A turn closed while known from its children only (a restore call long before the
            # user's first message) is the same turn: reopened, so its span still covers them.
            turn = self._closed_turns.pop(key, None)
            if turn is not None and event.event_type == "turn_start" and turn.ended:
                turn = None
        if turn is None:
            turn = _Turn(
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
        self._open(key, turn)
        return turn

    def _open(self, key: tuple[str, str], turn: _Turn) -> None:
        self._turns[key] = turn
        while len(self._turns) > _MAX_OPEN_TURNS:
            oldest = next(iter(self._turns.values()))
            self.counts["turns_closed_early"] += 1
            self._close_turn(oldest)

    def _start_turn(self, turn: _Turn, red: SpanRecord) -> None:
        turn.started = True
        turn.close_at = None  # in progress until turn_complete
        turn.input = red.input
        turn.metadata["hf_event_id"] = red.event_id
        turn.cover(red.timestamp)

    def _complete_turn(self, turn: _Turn, red: SpanRecord, event: Event) -> None:
        if not turn.started:
            # turn_start was never seen (dropped, or forwarding started mid-turn): the start
            # the duration implies.
            with contextlib.suppress(Exception):
                turn.cover(
                    red.timestamp - timedelta(milliseconds=float(event.data.get("duration_ms", 0)))
                )
        ok = bool(event.data.get("ok", True))
        turn.ended = True
        turn.output = red.output
        turn.metadata.update(red.metadata or {})
        turn.level = None if ok else "WARNING"
        turn.status_message = None if ok else "the turn ended without a final answer"
        turn.cover(red.timestamp)
        turn.close_at = time.monotonic() + self.turn_grace_s

    def _next_turn_close(self) -> float | None:
        """Seconds until the next open turn is due to close (None: none is)."""
        due = [t.close_at for t in self._turns.values() if t.close_at is not None]
        return (min(due) - time.monotonic()) if due else None

    def _close_due_turns(self) -> None:
        if not self._turns:
            return
        now = time.monotonic()
        for turn in [t for t in self._turns.values() if t.close_at is not None]:
            if turn.close_at is not None and turn.close_at <= now:
                try:
                    self._close_turn(turn)
                except Exception as exc:
                    guard.report("langfuse.worker.close_turn", exc)
                    self.counts["internal_errors"] += 1

    def _close_turns(self, *, final: bool) -> None:
        """At a flush: every turn that ended or is known from its children only. At shutdown:
        every turn, those still running marked as cut short."""
        for turn in list(self._turns.values()):
            if final or turn.ended or not turn.started:
                if final and turn.started and not turn.ended:
                    turn.level = "WARNING"
                    turn.status_message = "the session ended mid-turn"
                    turn.cover(datetime.now(UTC))
                self._close_turn(turn)

    def _close_turn(self, turn: _Turn) -> None:
        from langfuse import LangfuseSpan

        key = (turn.trace_id, turn.span_id)
        self._turns.pop(key, None)
        turn.close_at = None
        self._closed_turns[key] = turn
        self._closed_turns.move_to_end(key)
        while len(self._closed_turns) > _MAX_CLOSED_TURNS:
            self._closed_turns.popitem(last=False)
        start = turn.lo or datetime.now(UTC)
        end = turn.hi or start
        # Nested under a caller's LangFuse observation: the caller's root is the app root.
        span = self._start_span(
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
            input=_wire_value(self.client, turn.input),
            output=_wire_value(self.client, turn.output),
            metadata={"turn_index": turn.turn_index, **turn.metadata},
            version=turn.version,
            level=turn.level,  # type: ignore[arg-type]
            status_message=turn.status_message,
        )
        span.end(end_time=_ns(end))
        if turn.emitted:
            self.counts["turns_resent"] += 1
        else:
            turn.emitted = True

    def _trace_attributes(self, span: Any, turn: _Turn) -> None:
        """The trace's attributes, written on the turn span only (LangFuse keeps the last value
        written for a trace, in no particular span order)."""
        if not span.is_recording():
            return
        from langfuse._client.attributes import _serialize_metadata_value

        self._who(span, session_id=turn.wire_session_id, user_id=turn.user_id)
        attrs: dict[str, Any] = {
            "langfuse.trace.name": turn.trace_name or self.trace_name,
            "langfuse.trace.metadata.turn_index": _serialize_metadata_value(turn.turn_index),
        }
        tags = sorted(turn.kinds | turn.tags)
        if tags:
            attrs["langfuse.trace.tags"] = tags
        for k, v in turn.trace_metadata.items():
            if k != "turn_index":
                attrs[f"langfuse.trace.metadata.{k}"] = _serialize_metadata_value(v)
        span.set_attributes(attrs)

    # -- children --

    def _child_span(
        self,
        red: SpanRecord,
        report: Any,
        trace_id: str,
        parent: str | None,
        caller_trace: bool,
    ) -> None:
        from langfuse import LangfuseEvent, LangfuseSpan

        is_span = red.start_time is not None
        span = self._start_span(
            red.name,
            trace_id=trace_id,
            span_id=red.observation_id,
            parent_span_id=parent,
            start_time=red.start_time or red.timestamp,
        )
        if not caller_trace:
            self._who(span, session_id=red.wire_session_id, user_id=red.user_id)
        if red.event_type == "session_end" and not caller_trace and span.is_recording():
            # The session's rollup as metadata of its last trace (written once, by this span;
            # a caller's trace keeps its own metadata: the rollup is this event's metadata).
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
        if (
            redaction.get("fields")
            or redaction.get("secrets")
            or redaction.get("failures")
            or redaction.get("unencodable")
        ):
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

    # -- feedback --

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
        red, _ = self._redact(record)
        body: dict[str, Any] = {
            # The id the feedback row holds, so the row names the score LangFuse stores (and a
            # retried post updates the same score).
            "id": event.langfuse_observation_id or score_id_for(event.event_id),
            "traceId": red.trace_id,
            "name": red.name,
            "value": red.value,
            "dataType": "NUMERIC",
        }
        if red.comment is not None:
            body["comment"] = red.comment
        if self.settings.environment:
            body["environment"] = self.settings.environment
        if not self._scores.submit(body):
            with self._lock:
                self.dropped["score_queue_full"] += 1

    def _on_score_result(self, outcome: str, status: int | None, text: str) -> None:
        with self._lock:
            if outcome == "accepted":
                self.counts["scores"] += 1
                return
            self.dropped[f"score_{outcome}"] += 1
            first = outcome not in self._warned
            self._warned.add(outcome)
        if first:
            where = f"HTTP {status}" if status is not None else f"no answer ({text or 'error'})"
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

    # -- lifecycle --

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
        """Deliver what is queued within ``timeout``: turns that ended (or are known from their
        children only) close now, without waiting for their grace period."""
        budget = self.flush_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._put("close_turns", "flush", control=True)
        if not self._drain(deadline):
            return False
        if not self._scores.drain(deadline):
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
        self._put("close_turns", "shutdown", control=True)
        drained = self._drain(deadline)
        unsent = self._scores.close(deadline)
        with self._lock:
            self.closed = True
            left = len(self._queue)
            self._queue.clear()
            if left:
                self.dropped["not_processed_at_shutdown"] += left
            if unsent:
                self.dropped["score_not_sent_at_shutdown"] += unsent
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
        report["completed_in_time"] = bool(drained and finished and not unsent)
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
    data = dict(event.data)
    payload = event.payload or {}
    t = event.event_type
    name = t
    start = None
    inp: Any = None
    out: Any = None
    in_field = out_field = None
    level = "DEFAULT"
    status = status_field = None
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
        # A tool's error text quotes its arguments and output: it is a tool result (dropped
        # under no-tool-io), never plain metadata.
        error = data.pop("error", None)
        if not data.get("ok", True):
            level, status, status_field = "ERROR", error, "tool_results"
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
        status_field=status_field,
    )


# -- registration with litellm: once per process --

_register_lock = threading.Lock()


_LITELLM_LANGFUSE_CALLBACKS = ("langfuse", "langfuse_otel")


def _filter_litellm_callbacks(keep: Any) -> None:
    # litellm copies entries of ``litellm.callbacks`` into its other lists at call time.
    for lst in litellm_internals.callback_lists():
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
