"""Decode OTLP/HTTP trace payloads into plain dicts, so tests assert on what went on the wire.

Contract:

- ``decode_otlp(body, content_encoding)`` takes the raw request body and its Content-Encoding
  (``gzip`` or none) and returns one dict per span, in payload order::

      {"trace_id": hex32, "span_id": hex16, "parent_span_id": hex16 | None, "name": str,
       "kind": "INTERNAL" | "SERVER" | ..., "start_time_ns": int, "end_time_ns": int,
       "attributes": {key: str | int | float | bool | bytes | list | dict | None},
       "status": {"code": "UNSET" | "OK" | "ERROR", "message": str},
       "events": [{"name", "time_ns", "attributes"}], "links": [{"trace_id", "span_id", "attributes"}],
       "scope": instrumentation scope name, "scope_version": str, "resource": {attrs}}

- A body that is not valid (gzip or protobuf) raises: a test must not pass on a broken payload.
- ``decode_respx_calls(calls)`` decodes every POST to an OTLP traces path among respx calls (or
  plain ``httpx.Request`` objects) and returns all their spans in call order.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

OTLP_TRACES_SUFFIX = "/v1/traces"

__all__ = ["OTLP_TRACES_SUFFIX", "decode_otlp", "decode_respx_calls"]


def decode_otlp(body: bytes, content_encoding: str | None = None) -> list[dict[str, Any]]:
    """The spans of one ``ExportTraceServiceRequest`` body, as plain dicts."""
    encoding = (content_encoding or "").strip().lower()
    if encoding == "gzip":
        body = gzip.decompress(body)
    elif encoding not in ("", "identity"):
        raise ValueError(f"unsupported Content-Encoding {content_encoding!r}")
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)

    spans: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                spans.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "name": span.name,
                        "kind": _enum_name(Span.SpanKind.Name(span.kind), "SPAN_KIND_"),
                        "start_time_ns": span.start_time_unix_nano,
                        "end_time_ns": span.end_time_unix_nano,
                        "attributes": _attributes(span.attributes),
                        "status": {
                            "code": _enum_name(
                                Status.StatusCode.Name(span.status.code), "STATUS_CODE_"
                            ),
                            "message": span.status.message,
                        },
                        "events": [
                            {
                                "name": event.name,
                                "time_ns": event.time_unix_nano,
                                "attributes": _attributes(event.attributes),
                            }
                            for event in span.events
                        ],
                        "links": [
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": _attributes(link.attributes),
                            }
                            for link in span.links
                        ],
                        "scope": scope.name,
                        "scope_version": scope.version,
                        "resource": resource,
                    }
                )
    return spans


def decode_respx_calls(
    calls: Iterable[Any], *, path_suffix: str = OTLP_TRACES_SUFFIX
) -> list[dict[str, Any]]:
    """All spans POSTed to a path ending in ``path_suffix`` among respx calls or httpx requests."""
    spans: list[dict[str, Any]] = []
    for call in calls:
        request = getattr(call, "request", call)  # a respx Call, or an httpx.Request itself
        if request.method != "POST" or not request.url.path.endswith(path_suffix):
            continue
        spans.extend(decode_otlp(request.read(), request.headers.get("content-encoding")))
    return spans


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)  # string_value, bool_value, int_value, double_value, bytes_value


def _enum_name(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)
