"""OTLP protobuf encoding of spans, written straight in the wire format (performance).

Why not only OpenTelemetry's ``encode_spans``: it builds one protobuf object per attribute and
value and hashes each span's Resource (a JSON dump of its attributes) to group spans. On
LangFuse generations (about 16 attributes each) that was measured at 57 us of CPU per span
against 21 us here (``bench/``): the largest part of the span-export thread's time, and in
thread mode that thread shares the GIL with the agent; issue 13 counts CPU over every thread.

Contract of ``OTLPEncoder.encode(spans)``: the bytes of
``encode_spans(spans).SerializeToString()``: the same fields in the same order, the same
grouping (in dicts by resource, then by instrumentation scope, in first-seen order, as
``encode_spans`` does), the same values. Anything it does not expect (an attribute value of another type, an int outside int64)
hands the whole batch to ``encode_spans``. As a guard against a future OpenTelemetry changing
its encoding, each encoder compares its first batch with ``encode_spans`` and, if they differ,
uses ``encode_spans`` from then on. A string UTF-8 cannot carry raises ``UnicodeEncodeError``
(the exporter then drops and counts that span alone, see ``encoding``).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

__all__ = ["OTLPEncoder"]


def _encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


logger = logging.getLogger(__name__)

# Spans encoded between two offers of the GIL to other threads (see OTLPEncoder._encode).
YIELD_EVERY = 8


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
    parent = span.parent
    parts = _identity(span, ctx, parent)
    parts.extend(_attributes(span.attributes, 0x4A, keys))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    parts.extend(_events(span, keys))
    parts.extend(_links(span, keys))
    parts.append(_status(span.status))
    # field 16 (flags, fixed32): a two-byte tag
    parts.append(b"\x85\x01" + _FIXED32.pack(_flags(parent)))
    return b"".join(parts)


def _identity(span: ReadableSpan, ctx: Any, parent: Any) -> list[bytes]:
    """Fields 1-8: ids, trace state, parent, name, kind, start and end."""
    parts = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
    ]
    if ctx.trace_state:
        state = ",".join([f"{k}={v}" for k, v in ctx.trace_state.items()])
        if state:
            parts.append(_ld(0x1A, state.encode("utf-8")))
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
    return parts


def _events(span: ReadableSpan, keys: dict[str, bytes]) -> list[bytes]:
    """Fields 11-12: the events and how many were dropped."""
    parts = []
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
    return parts


def _links(span: ReadableSpan, keys: dict[str, bytes]) -> list[bytes]:
    """Fields 13-14: the links and how many were dropped."""
    parts = []
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
    return parts


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


class OTLPEncoder:
    """``encode_spans(spans).SerializeToString()``, faster. One per exporter (it keeps the
    encoded form of attribute keys it has seen)."""

    def __init__(self, fallback: Callable[[Sequence[ReadableSpan]], bytes] | None = None) -> None:
        """``fallback``: how a batch this encoder leaves alone is encoded (default:
        ``encode_spans``; it must give the same bytes for what it accepts)."""
        self._keys: dict[str, bytes] = {}
        self._fast: bool | None = None  # None until the first batch has been compared
        self._fallback = fallback or _encode_spans

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        if self._fast is False:
            return self._fallback(spans)
        try:
            body = self._encode(spans)
        except UnicodeEncodeError:
            # A string UTF-8 cannot carry (a lone surrogate): the exporter finds the span and
            # drops and counts it alone.
            raise
        except Exception:
            return self._fallback(spans)
        if self._fast is None:
            reference = self._fallback(spans)
            self._fast = body == reference
            if not self._fast:
                logger.debug("fast OTLP encoding differs from OpenTelemetry's: not using it")
                return reference
        return body

    def _encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        keys = self._keys
        # resource -> scope -> [encoded span]: dicts, as encode_spans groups them (hash, then
        # equality: two equal resources with different hashes stay apart there, and here).
        # The last span's list is reused while resource and scope are the same objects
        # (usually all of them: the hash of a Resource is a JSON dump of its attributes).
        groups: dict[Any, dict[Any, list[bytes]]] = {}
        last_resource: Any = object()
        last_scope: Any = object()
        last_list: list[bytes] = []
        for n, span in enumerate(spans, 1):
            resource = span.resource
            scope = span.instrumentation_scope or None
            if resource is not last_resource or scope is not last_scope:
                last_list = groups.setdefault(resource, {}).setdefault(scope, [])
                last_resource, last_scope = resource, scope
            last_list.append(_span(span, keys))
            if n % YIELD_EVERY == 0:
                # Why (latency): a batch of 64 spans is a millisecond of Python; now and then
                # the agent's threads get the GIL (an export thread shares it with them).
                time.sleep(0)
        out = []
        for resource, scopes in groups.items():
            body = [_ld(0x0A, b"".join(_attributes(resource.attributes, 0x0A, keys)))]
            for scope, encoded in scopes.items():
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


_SPAN_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
