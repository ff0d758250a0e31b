"""Spans to an OTLP/HTTP receiver (a LangFuse host, or a local OpenTelemetry Collector).

``exporter`` (retries, Retry-After, 413 splits), ``ledger`` (drop accounting, warn-once),
``retry`` (what each answer means), ``transport`` (httpx sockets that a shutdown wakes at
once), ``encoding`` (OpenTelemetry's protobuf encoder, strict about strings), ``destination``
(the LangFuse traces path and headers, defined once). The forwarder calls
``for_langfuse(settings, ...)``.
"""

from __future__ import annotations

from agent.core.forwarding.otlp.destination import (
    OTLP_HEADERS,
    TRACES_PATH,
    langfuse_headers,
    traces_endpoint,
)
from agent.core.forwarding.otlp.exporter import ExporterOptions, HttpxOTLPSpanExporter, for_langfuse
from agent.core.forwarding.otlp.retry import parse_retry_after

__all__ = [
    "OTLP_HEADERS",
    "TRACES_PATH",
    "ExporterOptions",
    "HttpxOTLPSpanExporter",
    "for_langfuse",
    "langfuse_headers",
    "parse_retry_after",
    "traces_endpoint",
]
