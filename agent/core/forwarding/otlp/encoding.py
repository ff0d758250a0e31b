"""Spans as an OTLP ``ExportTraceServiceRequest`` body: OpenTelemetry's ``encode_spans``, strict.

``encode(spans)`` returns ``encode_spans(spans).SerializeToString()``, but first raises
``UnicodeEncodeError`` when a string of a span cannot be carried as UTF-8 (a lone surrogate
from a non-UTF-8 file name ...). Why: ``encode_spans`` raises for such a span name, but for an
attribute it drops the attribute and logs a traceback, so the span would leave incomplete and
the operator would see a stack trace instead of a count. Raising lets the exporter find the
span, drop it alone and count it (``encode_error``).

The bytes come from ``protobuf.OTLPEncoder`` (the same bytes, written straight in the wire
format: 17 against 43 us of CPU per LangFuse generation span, measured on 64 spans of the heavy
workload); batches it leaves alone go through ``encode_spans`` with the check above. (It was
removed once, when only the caller's wall time was measured and showed no difference; issue 13
counts CPU over every thread, and there it is a fifth of the export thread's work.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from agent.core.forwarding.otlp.protobuf import OTLPEncoder

__all__ = ["encode"]


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """The protobuf body for ``spans``; ``UnicodeEncodeError`` for a string UTF-8 cannot carry."""
    return _ENCODER.encode(spans)


def _checked_encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """``encode_spans``, but raising for a string UTF-8 cannot carry (see the docstring)."""
    for span in spans:
        for text in _strings(span):
            if not text.isascii():
                text.encode("utf-8")  # raises for a lone surrogate; the common case is ASCII
    return encode_spans(spans).SerializeToString()


_ENCODER = OTLPEncoder(_checked_encode_spans)


def _strings(span: ReadableSpan) -> Iterator[str]:
    """Every string ``encode_spans`` writes for this span (its resource and scope included)."""
    yield span.name
    if span.status is not None and span.status.description:
        yield span.status.description
    yield from _attribute_strings(span.attributes)
    for event in span.events or ():
        yield event.name
        yield from _attribute_strings(event.attributes)
    for link in span.links or ():
        yield from _attribute_strings(link.attributes)
    if span.resource is not None:
        yield from _attribute_strings(span.resource.attributes)
    scope = span.instrumentation_scope
    if scope is not None:
        yield scope.name
        yield scope.version or ""
        yield from _attribute_strings(scope.attributes)


def _attribute_strings(attributes: Mapping[str, Any] | None) -> Iterator[str]:
    for key, value in (attributes or {}).items():
        yield key
        if isinstance(value, str):
            yield value
        elif isinstance(value, list | tuple):
            yield from (item for item in value if isinstance(item, str))
