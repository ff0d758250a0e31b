"""An OTLP/HTTP span exporter on httpx: bounded retries, counted drops, a shutdown that returns.

The langfuse SDK's default exporter is OpenTelemetry's ``OTLPSpanExporter``, which sends over
``requests``: respx cannot see it, and a dead or silent host holds ``flush()``/``shutdown()``
for as long as its timeouts and retries allow. ``HttpxOTLPSpanExporter`` is what we pass as the
SDK's ``span_exporter=`` instead.

Contract:

- ``export(spans)`` POSTs one OTLP ``ExportTraceServiceRequest`` (protobuf, gzip by default) and
  returns SUCCESS when every span was accepted, FAILURE otherwise. It never raises for network
  conditions or server answers. An unexpected internal error (a bug) is logged once at
  WARNING and swallowed; under tests (``ML_INTERN_STRICT_TELEMETRY=1``) it is
  re-raised, as everywhere in our telemetry.
- 2xx is success whatever the body holds. 408/429/500/502/503/504, connection errors and
  timeouts are retried up to ``max_retries`` times with exponential backoff and jitter, or after
  the server's ``Retry-After`` (seconds or HTTP-date) capped at ``max_retry_after``. 401/403 are
  not retried and warn once per exporter, naming LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY.
  413 splits the batch in halves, recursively; a span too large on its own is dropped. Any other
  answer is dropped without retry and warned once per status. A span that cannot be encoded
  (a lone surrogate in an attribute ...) is dropped alone; the rest of its batch is sent.
- Every dropped span is counted in ``stats()["dropped_by_reason"]`` (reasons: ``auth``,
  ``too_large``, ``retries_exhausted``, ``aborted``, ``shutdown``, ``http_<status>``,
  ``encode_error``, ``internal_error``) and reported to ``on_drop(count, reason)``, whose own
  exceptions are logged once and swallowed. Each distinct cause is logged once at WARNING;
  no log line, ``stats()`` or ``repr`` ever holds the Authorization header or the secret key.
- ``abort()`` (any thread) makes every export in flight at that moment give up within about
  ``_POLL_S`` seconds, including one blocked on a host that accepted the connection and never
  answers; later exports proceed normally. ``shutdown(timeout_millis)`` aborts for good and
  returns within ``_SHUTDOWN_GRACE_S`` at most. Both drop and count the aborted spans.
  Prompt interruption of a request that is on the wire needs the exporter's own client: with a
  caller-supplied ``client`` an abort takes effect between attempts only.

Thread-safe: the BatchSpanProcessor exports from its worker while shutdown or a bounded flush
comes from another thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import gzip
import logging
import math
import os
import random
import select
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpcore
import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agent.core import guard

logger = logging.getLogger(__name__)

LANGFUSE_TRACES_PATH = "/api/public/otel/v1/traces"
# 408 is as transient as the gateway errors; OpenTelemetry's own list omits 500, the brief keeps it.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# How often a blocked socket operation or connect looks at the abort flag. Short enough for a
# shutdown to feel immediate, long enough to cost nothing while a request is healthy.
_POLL_S = 0.05
# The response body is never needed (2xx with garbage is success): read this much at most.
_MAX_RESPONSE_BYTES = 64 * 1024
# Once aborted, an in-flight export unwinds within _POLL_S; this only bounds pathological cases
# (a stuck DNS lookup, a caller-supplied client) so shutdown() still returns.
_SHUTDOWN_GRACE_S = 1.0
_CONNECT_TIMEOUT_MAX_S = 5.0

_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})

Compression = Literal["gzip", "none"]
DropCallback = Callable[[int, str], None]
ExportedCallback = Callable[[Sequence[ReadableSpan]], None]


# -- LangFuse wiring helpers --


def langfuse_traces_endpoint(base_url: str) -> str:
    """The OTLP traces endpoint of a LangFuse host (``{base_url}/api/public/otel/v1/traces``)."""
    return base_url.rstrip("/") + LANGFUSE_TRACES_PATH


def langfuse_headers(
    *, public_key: str, secret_key: str, sdk_version: str | None = None
) -> dict[str, str]:
    """The headers the langfuse SDK's own exporter sends, so ingestion treats us the same."""
    if sdk_version is None:
        sdk_version = _langfuse_version()
    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
    return {
        "Authorization": f"Basic {token}",
        "x-langfuse-sdk-name": "python",
        "x-langfuse-sdk-version": sdk_version,
        "x-langfuse-public-key": public_key,
        "x-langfuse-ingestion-version": "4",
    }


# Where a LangFuse header's value comes from, for messages about a bad one.
_HEADER_SOURCES = {
    "x-langfuse-public-key": " (it is LANGFUSE_PUBLIC_KEY)",
    "authorization": " (it is built from LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY)",
}


def _header_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value, or None."""
    if not value.isascii():
        return "holds a non-ASCII character"
    if any(c in value for c in "\r\n\0") or not value.isprintable():
        return "holds a line break or control character"
    return None


def _langfuse_version() -> str:
    # Package metadata, not `import langfuse`: importing the SDK is slow and has side effects.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("langfuse")
    except PackageNotFoundError:
        return "unknown"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), else None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are GMT; parsedate_to_datetime returns naive for "-0000".

        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


# -- OTLP protobuf encoding, fast path --
#
# Why (performance): OpenTelemetry's ``encode_spans`` builds one protobuf object per attribute
# and value and hashes each span's Resource (a JSON dump of its attributes) to group spans; on
# LangFuse generations (about 16 attributes each) that is most of the exporter thread's time,
# and that thread shares the GIL with the agent. ``OTLPEncoder`` writes the same
# ``ExportTraceServiceRequest`` straight in the protobuf wire format: the same fields in the
# same order, the same grouping (by equal resource, then by equal instrumentation scope, in
# first-seen order), the same values, so the bytes are identical to
# ``encode_spans(spans).SerializeToString()``. Anything it does not expect (an attribute value
# of another type, an int outside int64) makes it hand the whole batch to ``encode_spans``. As a
# guard against a future OpenTelemetry changing its encoding, each encoder compares its first
# batch with ``encode_spans`` and, if they differ, uses ``encode_spans`` from then on.


class _Unexpected(Exception):
    """Raised by the fast encoder for input it leaves to OpenTelemetry's encoder."""


_VARINT_CACHE = [
    bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)
]
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _varint(n: int) -> bytes:
    if n < 16384:
        return _VARINT_CACHE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (message, string, bytes) with a one-byte tag."""
    return bytes((tag,)) + _varint(len(payload)) + payload


_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message body, as OpenTelemetry's ``_encode_value`` would fill it."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _ld(0x0A, value.encode("utf-8"))
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _Unexpected("int out of int64 range")
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _ld(0x3A, value)
    if isinstance(value, list | tuple):
        return _ld(0x2A, b"".join([_ld(0x0A, _any_value(v)) for v in value]))
    raise _Unexpected(type(value).__name__)


def _attributes(attributes: Any, tag: int, keys: dict[str, bytes]) -> list[bytes]:
    """Repeated ``KeyValue`` fields (``tag``) for an attributes mapping."""
    if not attributes:
        return []
    out = []
    for key, value in attributes.items():
        kb = keys.get(key)
        if kb is None:
            if type(key) is not str:
                raise _Unexpected("attribute key")
            kb = _ld(0x0A, key.encode("utf-8"))
            if len(keys) < 4096:
                keys[key] = kb
        out.append(_ld(tag, kb + _ld(0x12, _any_value(value))))
    return out


def _status(status: Any) -> bytes:
    if status is None:
        return b""
    parts = []
    if status.description:
        parts.append(_ld(0x12, status.description.encode("utf-8")))
    code = status.status_code.value
    if code:
        parts.append(b"\x18" + _varint(code))
    return _ld(0x7A, b"".join(parts))


_SPAN_FLAGS_HAS_IS_REMOTE = 0x100
_SPAN_FLAGS_IS_REMOTE = 0x200


def _flags(context: Any) -> int:
    flags = _SPAN_FLAGS_HAS_IS_REMOTE
    if context and context.is_remote:
        flags |= _SPAN_FLAGS_IS_REMOTE
    return flags


def _span(span: ReadableSpan, keys: dict[str, bytes]) -> bytes:
    ctx = span.get_span_context()
    parts = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
    ]
    if ctx.trace_state:
        state = ",".join([f"{k}={v}" for k, v in ctx.trace_state.items()])
        if state:
            parts.append(_ld(0x1A, state.encode("utf-8")))
    parent = span.parent
    if parent:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_ld(0x2A, span.name.encode("utf-8")))
    kind = _SPAN_KINDS[span.kind]
    if kind:
        parts.append(b"\x30" + _varint(kind))
    if span.start_time:
        parts.append(b"\x39" + _FIXED64.pack(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _FIXED64.pack(span.end_time))
    parts.extend(_attributes(span.attributes, 0x4A, keys))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events or ():
        body = [b"\x09" + _FIXED64.pack(event.timestamp)] if event.timestamp else []
        if event.name:
            body.append(_ld(0x12, event.name.encode("utf-8")))
        body.extend(_attributes(event.attributes, 0x1A, keys))
        if event.dropped_attributes:
            body.append(b"\x20" + _varint(event.dropped_attributes))
        parts.append(_ld(0x5A, b"".join(body)))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links or ():
        body = [
            b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + link.context.span_id.to_bytes(8, "big"),
        ]
        body.extend(_attributes(link.attributes, 0x22, keys))
        if link.dropped_attributes:
            body.append(b"\x28" + _varint(link.dropped_attributes))
        body.append(b"\x35" + _FIXED32.pack(_flags(link.context)))
        parts.append(_ld(0x6A, b"".join(body)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    parts.append(_status(span.status))
    # field 16 (flags, fixed32): a two-byte tag
    parts.append(b"\x85\x01" + _FIXED32.pack(_flags(parent)))
    return b"".join(parts)


def _scope(scope: Any, keys: dict[str, bytes]) -> bytes:
    if scope is None:
        return b""
    parts = []
    if scope.name:
        parts.append(_ld(0x0A, scope.name.encode("utf-8")))
    if scope.version:
        parts.append(_ld(0x12, scope.version.encode("utf-8")))
    parts.extend(_attributes(scope.attributes, 0x1A, keys))
    return b"".join(parts)


def _group(items: list[tuple[Any, Any]], key: Any) -> Any:
    """The value filed under ``key`` in ``items`` (identity first, then equality), or None."""
    for k, v in items:
        if k is key:
            return v
    for k, v in items:
        if k == key:
            return v
    return None


class OTLPEncoder:
    """``encode_spans(spans).SerializeToString()``, faster. One per exporter (it keeps the
    encoded form of attribute keys it has seen)."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._fast: bool | None = None  # None until the first batch has been compared

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        if self._fast is False:
            return encode_spans(spans).SerializeToString()
        try:
            body = self._encode(spans)
        except UnicodeEncodeError:
            # A string UTF-8 cannot carry (a lone surrogate). encode_spans would silently drop
            # that attribute (logging a traceback) or raise, depending on where it sits: let the
            # exporter find the span and drop and count it instead.
            raise
        except Exception:
            return encode_spans(spans).SerializeToString()
        if self._fast is None:
            reference = encode_spans(spans).SerializeToString()
            self._fast = body == reference
            if not self._fast:
                logger.debug("fast OTLP encoding differs from OpenTelemetry's: not using it")
                return reference
        return body

    def _encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        keys = self._keys
        # resource -> [(scope, [encoded span])], both in first-seen order, grouped by equality
        # like OpenTelemetry's dict grouping (identity checked first: usually all the same).
        groups: list[tuple[Any, list[tuple[Any, list[bytes]]]]] = []
        last_resource: Any = object()
        last_scope: Any = object()
        last_list: list[bytes] = []
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            if resource is not last_resource or scope is not last_scope:
                scopes = _group(groups, resource)
                if scopes is None:
                    scopes = []
                    groups.append((resource, scopes))
                last_list = _group(scopes, scope)
                if last_list is None:
                    last_list = []
                    scopes.append((scope, last_list))
                last_resource, last_scope = resource, scope
            last_list.append(_span(span, keys))
        out = []
        for resource, scopes in groups:
            body = [_ld(0x0A, b"".join(_attributes(resource.attributes, 0x0A, keys)))]
            for scope, encoded in scopes:
                scope_body = [_ld(0x0A, _scope(scope, keys))]
                scope_body.extend(_ld(0x12, s) for s in encoded)
                schema = scope.schema_url if scope is not None else None
                if schema:
                    scope_body.append(_ld(0x1A, schema.encode("utf-8")))
                body.append(_ld(0x12, b"".join(scope_body)))
            if resource.schema_url:
                body.append(_ld(0x1A, resource.schema_url.encode("utf-8")))
            out.append(_ld(0x0A, b"".join(body)))
        return b"".join(out)


def _span_kinds() -> dict[Any, int]:
    from opentelemetry.trace import SpanKind

    return {
        SpanKind.INTERNAL: 1,
        SpanKind.SERVER: 2,
        SpanKind.CLIENT: 3,
        SpanKind.PRODUCER: 4,
        SpanKind.CONSUMER: 5,
    }


_SPAN_KINDS = _span_kinds()


# -- the exporter --


class HttpxOTLPSpanExporter(SpanExporter):
    """OTLP/HTTP protobuf span exporter over httpx. See the module docstring for the contract."""

    def __init__(
        self,
        *,
        endpoint: str,
        headers: Mapping[str, str],
        timeout: float = 10.0,
        compression: Compression = "gzip",
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 30.0,
        client: httpx.Client | None = None,
        on_drop: DropCallback | None = None,
        on_exported: ExportedCallback | None = None,
    ) -> None:
        if compression not in ("gzip", "none"):
            raise ValueError(f"compression must be 'gzip' or 'none', got {compression!r}")
        for name, value in (
            ("timeout", timeout),
            ("backoff_base", backoff_base),
            ("backoff_max", backoff_max),
            ("max_retry_after", max_retry_after),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")

        for name, value in headers.items():
            problem = _header_problem(value)
            if problem:
                # Never the value: it may be (or hold) a key.
                raise ValueError(f"header {name} {problem}{_HEADER_SOURCES.get(name.lower(), '')}")
        self._endpoint = endpoint
        self._where = _display_url(endpoint)
        self._compression: Compression = compression
        self._headers = {
            k: v
            for k, v in headers.items()
            if k.lower() not in ("content-type", "content-encoding")
        }
        self._headers["Content-Type"] = "application/x-protobuf"
        if compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._secrets = _secret_values(headers)
        self._timeout_s = float(timeout)
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, _CONNECT_TIMEOUT_MAX_S))
        self._max_retries = max_retries
        self._backoff_base = float(backoff_base)
        self._backoff_max = float(backoff_max)
        self._max_retry_after = float(max_retry_after)
        self._on_drop = on_drop
        self._on_exported = on_exported

        # One lock guards counters, the abort epoch, the in-flight count and the warn-once set.
        # The condition lets retry waits and shutdown() sleep until something changes.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopped = threading.Event()
        self._epoch = 0  # bumped by abort(): exports started under an older epoch give up
        self._inflight = 0
        self._local = threading.local()  # per export: the epoch it started under, its deadline
        self._warned: set[str] = set()

        self._exported_spans = 0
        self._dropped_spans = 0
        self._dropped_by_reason: dict[str, int] = {}
        self._requests = 0
        self._retries = 0
        self._bytes_sent = 0
        self._last_error: str | None = None

        self._encoder = OTLPEncoder()
        self._owns_client = client is None
        self._client = client or httpx.Client(
            transport=_InterruptibleTransport(self._interrupt_reason),
            timeout=self._timeout,
            trust_env=False,  # no env proxies or netrc: traces go where the operator said
            follow_redirects=False,
        )

    @classmethod
    def for_langfuse(
        cls, *, base_url: str, public_key: str, secret_key: str, **kwargs: Any
    ) -> HttpxOTLPSpanExporter:
        """An exporter for a LangFuse host, with the endpoint and headers the SDK would use."""
        return cls(
            endpoint=langfuse_traces_endpoint(base_url),
            headers=langfuse_headers(public_key=public_key, secret_key=secret_key),
            **kwargs,
        )

    def __repr__(self) -> str:
        # Never the headers: they hold the credentials.
        return f"{type(self).__name__}(endpoint={self._where!r})"

    # -- SpanExporter --

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        batch = list(spans)
        if not batch:
            return SpanExportResult.SUCCESS
        with self._lock:
            # Checked under the lock shutdown() takes, so it either sees this export in flight
            # (and waits for it) or this export sees it stopped.
            stopped = self._stopped.is_set()
            if not stopped:
                self._inflight += 1
                self._local.epoch = self._epoch
        if stopped:
            self._drop(len(batch), "shutdown")
            return SpanExportResult.FAILURE
        self._local.cause = None
        try:
            return SpanExportResult.SUCCESS if self._send(batch) else SpanExportResult.FAILURE
        except Exception as exc:
            # A bug, not a network condition (those never reach here).
            self._note_error(f"internal error: {type(exc).__name__}")
            self._warn_once(
                f"internal:{type(exc).__name__}",
                "OTLP span export to %s failed with an internal error; %d span(s) dropped: %s: %s",
                self._where,
                len(batch),
                type(exc).__name__,
                self._scrub(str(exc)),
            )
            self._drop(len(batch), "internal_error")
            if guard.strict():
                raise
            return SpanExportResult.FAILURE
        finally:
            self._local.epoch = None
            self._local.deadline = None
            with self._changed:
                self._inflight -= 1
                self._changed.notify_all()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: every export is sent before it returns."""
        return True

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Stop for good: abort what is in flight, refuse later exports, close our client.

        Returns within ``min(timeout_millis, _SHUTDOWN_GRACE_S)`` plus the client close.
        """
        try:
            with self._changed:
                self._stopped.set()
                self._epoch += 1
                self._changed.notify_all()
                grace = min(max(float(timeout_millis), 0.0) / 1000.0, _SHUTDOWN_GRACE_S)
                # Let aborted exports count their drops, so stats() is final when we return.
                self._changed.wait_for(lambda: self._inflight == 0, timeout=grace)
            if self._owns_client:
                self._client.close()
        except Exception as exc:
            self._warn_once(
                f"shutdown:{type(exc).__name__}",
                "OTLP span exporter shutdown for %s hit an internal error: %s: %s",
                self._where,
                type(exc).__name__,
                self._scrub(str(exc)),
            )
            if guard.strict():
                raise

    def abort(self) -> None:
        """Make every export in flight right now give up promptly (its spans are dropped).

        Safe from any thread and never blocks. Exports that start afterwards are unaffected;
        use ``shutdown()`` to stop for good.
        """
        with self._changed:
            self._epoch += 1
            self._changed.notify_all()

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (spans, requests, retries, compressed bytes sent)."""
        with self._lock:
            return {
                "exported_spans": self._exported_spans,
                "dropped_spans": self._dropped_spans,
                "dropped_by_reason": dict(self._dropped_by_reason),
                "requests": self._requests,
                "retries": self._retries,
                "bytes_sent": self._bytes_sent,
                "last_error": self._last_error,
            }

    # -- sending --

    def _send(self, spans: list[ReadableSpan]) -> bool:
        """Deliver ``spans``, splitting on 413. True when every span was accepted."""
        all_encodable = True
        try:
            body = self._encoder.encode(spans)
        except Exception as exc:
            # One span the encoder cannot handle must cost only itself: find it, drop and count
            # it, and send the others.
            spans, encoded = self._encodable_only(spans, exc)
            if encoded is None:
                return False
            body, all_encodable = encoded, False
        payload = (
            gzip.compress(body, compresslevel=6, mtime=0) if self._compression == "gzip" else body
        )

        outcome = self._post_with_retries(payload)
        if outcome == "ok":
            with self._lock:
                self._exported_spans += len(spans)
            self._exported(spans)
            return all_encodable
        if outcome == "too_large":
            if len(spans) > 1:
                middle = len(spans) // 2
                first = self._send(spans[:middle])
                second = self._send(spans[middle:])
                return first and second
            self._warn_once(
                "too_large",
                "%s rejected a single span as too large (HTTP 413, %d bytes encoded); "
                "dropped. Further oversize spans are counted in stats(), not logged.",
                self._where,
                len(payload),
            )
            outcome = "too_large"
        self._drop(len(spans), outcome)
        return False

    def _encodable_only(
        self, spans: list[ReadableSpan], exc: Exception
    ) -> tuple[list[ReadableSpan], bytes | None]:
        """The spans that encode on their own and the encoded batch of them (None when none
        does). Each span that does not is dropped and counted as ``encode_error``."""
        good: list[ReadableSpan] = []
        bad = 0
        for span in spans:
            try:
                self._encoder.encode([span])
            except Exception:
                bad += 1
            else:
                good.append(span)
        # The exception's text may quote the attribute value: name its type and the count only.
        self._note_error(f"encode error: {type(exc).__name__}")
        self._warn_once(
            f"encode:{type(exc).__name__}",
            "Could not encode %d of %d span(s) as OTLP protobuf (%s); those were dropped and "
            "counted, the others sent. Further encode errors are counted in stats(), not logged.",
            bad or len(spans),
            len(spans),
            type(exc).__name__,
        )
        if not good or not bad:
            # Nothing encodes, or each span does alone but not together: drop the batch.
            self._drop(len(spans), "encode_error")
            return [], None
        self._drop(bad, "encode_error")
        try:
            return good, self._encoder.encode(good)
        except Exception:
            self._drop(len(good), "encode_error")
            return [], None

    def _post_with_retries(self, payload: bytes) -> str:
        """``"ok"``, ``"too_large"``, or the drop reason after retries (warned once per cause)."""
        attempt = 0
        while True:
            if self._interrupt_reason() == "aborted":
                return self._aborted()
            self._local.deadline = time.monotonic() + self._timeout_s
            try:
                status, retry_after, cause = self._attempt(payload)
            finally:
                self._local.deadline = None
            if status is not None and 200 <= status < 300:
                return "ok"
            if self._interrupt_reason() == "aborted":
                return self._aborted()
            if status == 413:
                return "too_large"
            if status in (401, 403):
                # One warning per exporter for both: either way the key pair is wrong.
                self._warn_once(
                    "auth",
                    "LangFuse at %s rejected the span export with HTTP %d: check "
                    "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (the pair must belong to a "
                    "project on this host). Spans are dropped and counted until this is fixed; "
                    "this is logged once.",
                    self._where,
                    status,
                )
                return "auth"
            if status is not None and status not in RETRYABLE_STATUSES:
                self._warn_once(
                    f"status:{status}",
                    "%s answered the span export with HTTP %d; spans dropped without retry. "
                    "Further drops for this status are counted in stats(), not logged.",
                    self._where,
                    status,
                )
                return f"http_{status}"
            if attempt >= self._max_retries:
                self._warn_once(
                    f"exhausted:{cause}",
                    "Span export to %s failed %d time(s) (last: %s); spans dropped. Further "
                    "drops for this cause are counted in stats(), not logged.",
                    self._where,
                    attempt + 1,
                    cause,
                )
                return "retries_exhausted"
            if retry_after is not None:
                delay = min(retry_after, self._max_retry_after)
            else:
                delay = min(self._backoff_max, self._backoff_base * (2**attempt))
                delay *= random.uniform(
                    0.8, 1.2
                )  # jitter: clients that failed together drift apart
            attempt += 1
            with self._lock:
                self._retries += 1
            logger.debug(
                "span export to %s: %s, retry %d in %.2fs", self._where, cause, attempt, delay
            )
            if self._wait(delay):
                return self._aborted()

    def _attempt(self, payload: bytes) -> tuple[int | None, float | None, str]:
        """One POST: (status or None on a transport error, Retry-After seconds, cause)."""
        with self._lock:
            self._requests += 1
            self._bytes_sent += len(payload)
        status: int | None = None
        try:
            with self._client.stream(
                "POST",
                self._endpoint,
                content=payload,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                try:
                    # Drain a little so a healthy connection can be reused; the content is unused.
                    received = 0
                    for chunk in response.iter_raw():
                        received += len(chunk)
                        if received > _MAX_RESPONSE_BYTES:
                            break
                except httpx.HTTPError:
                    if not 200 <= status < 300:
                        raise
                    # The server said 2xx before the body broke: the spans were taken.
        except httpx.HTTPError as exc:
            name = type(exc).__name__
            self._note_error(f"{name}: {exc}" if str(exc) else name)
            cause = f"{transport_cause(exc, self._timeout_s)} ({name})"
            self._local.cause = cause
            return None, None, cause
        except RuntimeError:
            # httpx refuses a closed client with RuntimeError; anything else is a bug.
            if not self._client.is_closed:
                raise
            self._note_error("client closed")
            return None, None, "client closed"
        if not 200 <= status < 300:
            self._note_error(f"HTTP {status}")
            self._local.cause = f"HTTP {status}"
        return status, retry_after, f"HTTP {status}"

    def _aborted(self) -> str:
        # Name what the export was struggling with when it was cut short: "aborted" alone says
        # nothing about a refused connection, a TLS handshake to a plain-HTTP port ...
        cause = getattr(self._local, "cause", None)
        self._note_error(f"aborted after: {cause}" if cause else "aborted")
        self._warn_once(
            f"aborted:{cause}",
            "Span export to %s was aborted (shutdown or flush deadline)%s; its spans were "
            "dropped. Further aborted exports are counted in stats(), not logged.",
            self._where,
            f" while failing with: {cause}" if cause else "",
        )
        return "aborted"

    def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` seconds unless aborted first; True when aborted."""
        epoch = getattr(self._local, "epoch", None)
        with self._changed:
            return self._changed.wait_for(
                lambda: self._stopped.is_set() or self._epoch != epoch, timeout=delay
            )

    def _interrupt_reason(self) -> Literal["aborted", "deadline"] | None:
        """Polled by our transport's sockets (in the exporting thread) and between attempts."""
        if self._stopped.is_set():
            return "aborted"
        epoch = getattr(self._local, "epoch", None)
        if epoch is not None and epoch != self._epoch:
            return "aborted"
        deadline = getattr(self._local, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            return "deadline"
        return None

    # -- accounting and logging --

    def _drop(self, count: int, reason: str) -> None:
        with self._lock:
            self._dropped_spans += count
            self._dropped_by_reason[reason] = self._dropped_by_reason.get(reason, 0) + count
        if reason == "shutdown":
            self._warn_once(
                "shutdown",
                "Span export to %s called after shutdown; spans dropped and counted.",
                self._where,
            )
        if self._on_drop is not None:
            try:
                self._on_drop(count, reason)
            except Exception as exc:
                # The caller's hook is guarded like any user hook: it must not break exports,
                # and re-raising here would turn one drop into two (this one, internal_error).
                self._warn_once(
                    f"on_drop:{type(exc).__name__}",
                    "on_drop callback raised %s: %s",
                    type(exc).__name__,
                    self._scrub(str(exc)),
                )

    def _exported(self, spans: Sequence[ReadableSpan]) -> None:
        if self._on_exported is None:
            return
        try:
            self._on_exported(spans)
        except Exception as exc:
            self._warn_once(
                f"on_exported:{type(exc).__name__}",
                "on_exported callback raised %s: %s",
                type(exc).__name__,
                self._scrub(str(exc)),
            )

    def _note_error(self, text: str) -> None:
        text = self._scrub(text)[:200]
        with self._lock:
            self._last_error = text

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        logger.warning(message, *args)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        return text


def transport_cause(exc: BaseException, timeout_s: float | None = None) -> str:
    """What went wrong on the way to the host, in words an operator can act on."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "DNS lookup failed (the host name does not resolve)"
        if isinstance(current, ssl.SSLError):
            reason = getattr(current, "reason", None) or type(current).__name__
            hint = (
                ": is that port plain HTTP? then use http://"
                if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL")
                else ""
            )
            return f"TLS handshake failed ({reason}){hint}"
        if isinstance(current, ConnectionRefusedError) or (
            isinstance(current, OSError) and current.errno == errno.ECONNREFUSED
        ):
            return "connection refused (nothing listens on that host and port)"
        if isinstance(current, ConnectionResetError):
            return "connection reset by the host"
        current = current.__cause__ or current.__context__
    if isinstance(exc, httpx.TimeoutException):
        within = f" within {timeout_s:g}s" if timeout_s else ""
        return f"timed out (no answer{within})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the host did not answer with HTTP"
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused (nothing listens on that host and port)"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "DNS lookup failed (the host name does not resolve)"
    return "the connection failed"


def _secret_values(headers: Mapping[str, str]) -> list[str]:
    """Every string that must never appear in a log line or in stats: header values and parts."""
    found: set[str] = set()
    for name, value in headers.items():
        if name.lower() not in _SENSITIVE_HEADERS or not value:
            continue
        found.add(value)
        scheme, _, token = value.partition(" ")
        if token:
            found.add(token)
        if scheme.lower() == "basic" and token:
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                decoded = base64.b64decode(token, validate=True).decode()
                found.add(decoded)
                _, _, secret = decoded.partition(":")
                found.add(secret)
    # Longest first, so a value is replaced whole before any of its parts.
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def _display_url(url: str) -> str:
    """The endpoint without userinfo or query, fit for log lines."""
    try:
        parsed = httpx.URL(url)
    except Exception:
        return "<invalid endpoint>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


# -- an httpx transport whose sockets give up when the exporter aborts --
#
# Closing an httpx client from another thread does not wake a thread blocked in recv() on
# Linux, and httpx has no cancellation for sync requests. So our transport runs every socket
# operation in _POLL_S slices and asks the exporter between slices whether to give up. It is a
# plain httpcore.ConnectionPool with its own network backend: respx, which patches the pool,
# still sees every request.

InterruptCheck = Callable[[], "Literal['aborted', 'deadline'] | None"]

_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _HTTPCORE_TO_HTTPX:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _InterruptibleTransport(httpx.BaseTransport):
    def __init__(self, check: InterruptCheck) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=4,
            max_keepalive_connections=2,
            keepalive_expiry=30.0,
            network_backend=_InterruptibleBackend(check),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]  # httpx's streams iterate bytes
            extensions=request.extensions,
        )
        with _mapped_errors():
            response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _mapped_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


# What a non-blocking connect_ex returns while the handshake is under way (10035: Windows).
_CONNECT_PENDING = frozenset(
    {
        0,
        errno.EINPROGRESS,
        errno.EWOULDBLOCK,
        errno.EALREADY,
        getattr(errno, "WSAEWOULDBLOCK", 10035),
    }
)


class _InterruptibleBackend(httpcore.NetworkBackend):
    def __init__(self, check: InterruptCheck) -> None:
        self._check = check

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        deadline = _deadline(timeout)
        try:
            # Not interruptible (the resolver has no cancel); bounded by the system resolver.
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        last: Exception | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if local_address is not None:
                    sock.bind((local_address, 0))
                self._connect(sock, address, deadline)
                return _InterruptibleStream(sock, self._check)
            except (httpcore.ConnectTimeout, httpcore.ConnectError):
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                last = exc
        raise httpcore.ConnectError(str(last) if last else f"no address for {host!r}") from last

    def _connect(self, sock: socket.socket, address: Any, deadline: float | None) -> None:
        # Non-blocking connect, then wait for writability in slices: a SYN that is never
        # answered (firewalled host, full accept queue) must not outlive an abort.
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in _CONNECT_PENDING:
            raise OSError(code, os.strerror(code))
        if code != 0:
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_WRITE)
                while True:
                    wait = _slice(
                        self._check, deadline, httpcore.ConnectTimeout, httpcore.ConnectError
                    )
                    if selector.select(wait):
                        break
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
        sock.setblocking(True)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not supported by this exporter")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _slice(
    check: InterruptCheck,
    deadline: float | None,
    timeout_error: type[Exception],
    abort_error: type[Exception],
) -> float:
    """The next wait slice, or raise when aborted or out of time."""
    reason = check()
    if reason == "aborted":
        raise abort_error("span export aborted")
    if reason == "deadline":
        raise timeout_error("span export attempt exceeded its timeout")
    if deadline is None:
        return _POLL_S
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise timeout_error("timed out")
    return min(_POLL_S, remaining)


class _InterruptibleStream(httpcore.NetworkStream):
    def __init__(self, sock: socket.socket, check: InterruptCheck) -> None:
        self._sock = sock
        self._check = check

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = _deadline(timeout)
        while True:
            self._settimeout(
                _slice(self._check, deadline, httpcore.ReadTimeout, httpcore.ReadError)
            )
            try:
                return self._sock.recv(max_bytes)
            except TimeoutError:
                continue  # one slice elapsed: look at the abort flag and the deadline again
            except OSError as exc:
                raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        deadline = _deadline(timeout)
        view = memoryview(buffer)
        while view:
            self._settimeout(
                _slice(self._check, deadline, httpcore.WriteTimeout, httpcore.WriteError)
            )
            try:
                sent = self._sock.send(view)
            except TimeoutError:
                continue  # nothing was taken: TLS requires the same buffer on the retry
            except OSError as exc:
                raise httpcore.WriteError(str(exc)) from exc
            view = view[sent:]

    def _settimeout(self, seconds: float) -> None:
        try:
            self._sock.settimeout(seconds)
        except OSError as exc:  # closed under us by the pool
            raise httpcore.ReadError(str(exc)) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        deadline = _deadline(timeout)
        try:
            tls = ssl_context.wrap_socket(
                self._sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
            while True:
                tls.settimeout(
                    _slice(self._check, deadline, httpcore.ConnectTimeout, httpcore.ConnectError)
                )
                try:
                    tls.do_handshake()
                    break
                except TimeoutError:
                    continue
        except (httpcore.ConnectTimeout, httpcore.ConnectError):
            self.close()
            raise
        except OSError as exc:  # ssl.SSLError included
            self.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return _InterruptibleStream(tls, self._check)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            # SSLSocket has the SSLObject methods httpcore asks for (selected_alpn_protocol).
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return _is_readable(self._sock)
        return None


def _is_readable(sock: socket.socket) -> bool:
    """True when an idle pooled socket has data or EOF waiting: the pool must not reuse it."""
    if sock.fileno() < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
