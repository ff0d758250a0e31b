"""The fast OTLP encoder (agent.core.forwarding.otlp.protobuf) writes the bytes OpenTelemetry's
encode_spans writes, on any span: generated spans of every attribute type, several resources
and scopes, parents, events and statuses; and what the exporter sends (encoding.encode) is the
same."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from agent.core.forwarding.otlp import encoding
from agent.core.forwarding.otlp.protobuf import OTLPEncoder

scalars = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
)
values = st.one_of(
    scalars,
    st.lists(st.text(max_size=10), max_size=4),
    st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=4),
    st.lists(st.booleans(), max_size=3),
    st.lists(st.floats(allow_nan=False), max_size=3),
)
attrs = st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=8)


class Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list = []

    def export(self, spans):
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


@settings(max_examples=150, deadline=None)
@given(
    spans=st.lists(
        st.tuples(
            st.text(max_size=20),
            attrs,
            st.sampled_from(["scope-a", "scope-b"]),
            st.sampled_from([{"service.name": "x"}, {"service.name": "y", "v": 1}]),
            st.booleans(),
            st.lists(st.tuples(st.text(max_size=8), attrs), max_size=2),
            st.sampled_from([None, StatusCode.OK, StatusCode.ERROR]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_fast_encoder_matches_opentelemetry(spans) -> None:
    keep = Keep()
    providers = {}
    for name, attributes, scope, resource, child, events, status in spans:
        key = tuple(sorted(resource.items()))
        if key not in providers:
            p = TracerProvider(resource=Resource.create(resource), shutdown_on_exit=False)
            p.add_span_processor(SimpleSpanProcessor(keep))
            providers[key] = p
        tracer = providers[key].get_tracer(scope, "1.0", attributes={"public_key": "pk"})
        parent = tracer.start_span("parent") if child else None
        ctx = None
        if parent is not None:
            from opentelemetry import trace

            ctx = trace.set_span_in_context(parent)
        span = tracer.start_span(name, context=ctx, attributes=attributes)
        for ev_name, ev_attrs in events:
            span.add_event(ev_name, ev_attrs)
        if status is not None:
            span.set_status(Status(status, "bad" if status == StatusCode.ERROR else None))
        span.end()
        if parent is not None:
            parent.end()
    expected = encode_spans(keep.spans).SerializeToString()
    encoder = OTLPEncoder()
    assert encoder.encode(keep.spans) == expected
    assert encoder._encode(keep.spans) == expected  # the fast path itself, not its fallback
    assert encoding.encode(keep.spans) == expected
