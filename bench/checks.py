"""Equivalence checks for the fast paths added for performance (run inside the (d) worker,
which has litellm, the SDK and a live forwarder loaded; outside any timed region).

- ``OTLPEncoder`` (agent/core/callbacks/otlp_httpx.py) must produce exactly the bytes of
  OpenTelemetry's ``encode_spans(spans).SerializeToString()`` for our generations (and the live
  exporter must still be on its fast path: it falls back for good if its first batch differs).
- ``_wire_value`` (agent/core/callbacks/langfuse.py) must make the SDK write exactly the span
  attributes it writes when handed the original object.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any


def run(fwd: Any) -> dict[str, bool]:
    from langfuse import LangfuseGeneration
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agent.core.callbacks.langfuse import _wire_value
    from agent.core.callbacks.otlp_httpx import OTLPEncoder
    from bench import workload
    from bench.redaction import realistic_record

    mem = InMemorySpanExporter()
    fwd._provider.add_span_processor(SimpleSpanProcessor(mem))
    base = realistic_record()
    for i in range(8):
        fwd._forward_call(
            dataclasses.replace(
                base,
                event_id=uuid.uuid4().hex,
                observation_id=f"{i + 1:016x}",
                error_type="RuntimeError" if i == 3 else None,
                error_message="boom" if i == 3 else None,
                output=None if i == 3 else base.output,
            )
        )
    spans = list(mem.get_finished_spans())
    encoder_ok = bool(spans) and (
        OTLPEncoder()._encode(spans) == encode_spans(spans).SerializeToString()
    )
    # ... and the live exporter kept its fast path after comparing its own first batch
    encoder_active = getattr(getattr(fwd.exporter, "_encoder", None), "_fast", None) is True

    tracer = fwd.client._otel_tracer
    wire_ok = True
    for payload in (
        {"messages": workload.MESSAGES, "tools": workload.TOOLS},
        [{"role": "user", "content": 'h\u00e9llo \u2603 \U0001d11e \u2028 "q" \\ </script>'}],
        {"a": [1, -2, 2**53 - 1, 1.5, -0.0, True, None, ""], "b": {}},
    ):
        attrs = []
        usage = {"input": 1500, "output": 70, "total": 1570}
        params = {"temperature": 0.2, "max_tokens": 512, "stop": ["\n\n"], "tool_choice": "auto"}
        for wire in (lambda v: v, lambda v: _wire_value(fwd.client, v)):
            span = tracer.start_span("bench-check")
            LangfuseGeneration(
                otel_span=span,
                langfuse_client=fwd.client,
                input=wire(payload),
                output=wire(payload),
                usage_details=wire(usage),
                cost_details=wire({"total": 0.00027}),
                model_parameters=wire(params),
            )
            attrs.append(dict(span.attributes or {}))
            # never ended: it is not exported
        wire_ok = (
            wire_ok and attrs[0] == attrs[1] and isinstance(_wire_value(fwd.client, payload), str)
        )
    return {
        "otlp_encoder_identical": encoder_ok,
        "otlp_fast_path_in_use": encoder_active,
        "wire_value_identical": wire_ok,
    }
