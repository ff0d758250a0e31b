"""Spans to an OTLP/HTTP receiver (a LangFuse host, or a local OpenTelemetry Collector).

``exporter`` (retries, Retry-After, 413 splits), ``ledger`` (drop accounting, warn-once),
``retry`` (what each answer means), ``transport`` (httpx sockets that a shutdown wakes at
once), ``encoding`` (OpenTelemetry's protobuf encoder, strict about strings), ``destination``
(the LangFuse traces path and headers, defined once). The forwarder calls
``for_langfuse(settings, ...)``.

The exporter needs OpenTelemetry's SDK, which only the ``langfuse`` extra installs, while the
gate needs ``destination`` on every start (a base install included): so the exporter's names
are imported on first use (PEP 562), and importing this package imports no OpenTelemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.core.forwarding.otlp.destination import (
    OTLP_HEADERS,
    TRACES_PATH,
    langfuse_headers,
    traces_endpoint,
)
from agent.core.forwarding.otlp.retry import parse_retry_after

if TYPE_CHECKING:
    from agent.core.forwarding.otlp.exporter import (
        ExporterOptions,
        HttpxOTLPSpanExporter,
        for_langfuse,
    )

_FROM_EXPORTER = ("ExporterOptions", "HttpxOTLPSpanExporter", "for_langfuse")


def __getattr__(name: str) -> object:
    if name in _FROM_EXPORTER:
        from agent.core.forwarding.otlp import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
