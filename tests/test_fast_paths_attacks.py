"""Adversarial tests of issue 13's performance changes (the content memo, the fast paths of the
builder, the hand-written OTLP encoder).

Each test states what it attacks. Failing ones are faults found; passing ones are attacks that
held (kept as coverage).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)

from agent.core.encodable import encodable
from agent.core.forwarding.build import item_wire_text
from agent.core.forwarding.engine import Engine
from agent.core.forwarding.otlp.protobuf import OTLPEncoder
from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings
from agent.core.privacy.memo import ContentMemo
from agent.core.privacy.redaction import RedactionPolicy, redact
from agent.core.records import CallerContext, CallRecord
from agent.testing.fake_langfuse import FakeLangfuse

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OPENAI_KEY = "sk-proj-" + "Ab3" * 16
GITHUB_TOKEN = "ghp_" + "x1Y2" * 9


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _record(i: int, messages: list[Any], **kw: Any) -> CallRecord:
    fields: dict[str, Any] = {
        "event_id": f"ev-{i}",
        "kind": "main",
        "session_id": "s-1",
        "user_id": "u-1",
        "turn_index": i,
        "trace_id": f"{i + 1:032x}",
        "observation_id": f"{i + 1:016x}",
        "model": "openai/gpt-4o-mini",
        "start_time": T0 + timedelta(seconds=i),
        "end_time": T0 + timedelta(seconds=i, milliseconds=500),
        "messages": tuple(messages),
        "tools": (),
        "model_parameters": {"temperature": 0.2},
        "output": {"role": "assistant", "content": f"reply {i}"},
        "usage": {"prompt_tokens": 10, "completion_tokens": 3},
        "cost_usd": 0.0001,
        "metadata": {},
        "caller": CallerContext(),
    }
    fields.update(kw)
    return CallRecord(**fields)


def _generations(batches: list[Any], *, memo_bytes: int, policy: RedactionPolicy) -> list[Any]:
    """Each batch (a list of records, or a callable run between batches) through one engine;
    the generations LangFuse got, in the order sent."""
    with FakeLangfuse() as sink:
        tag = uuid.uuid4().hex[:10]
        settings = LangfuseSettings(
            host=sink.url, public_key=f"pk-lf-{tag}", secret_key=f"sk-lf-{tag}"
        )
        engine = Engine(
            settings, policy=policy, options=ForwarderOptions(content_memo_bytes=memo_bytes)
        )
        n = 0
        for batch in batches:
            if callable(batch):
                batch()
                continue
            engine.handle([("call", r) for r in batch])
            n += len(batch)
        assert engine.flush(time.monotonic() + 30)
        engine.shutdown(time.monotonic() + 10)
        gens = [
            s
            for s in sink.spans
            if s["attributes"].get("langfuse.observation.type") == "generation"
        ]
    assert len(gens) == n
    gens.sort(key=lambda s: int(s["attributes"]["langfuse.observation.output"].split()[-1][:-2]))
    return [g["attributes"] for g in gens]


# -- faults --


def test_fast_otlp_encoder_groups_resources_as_encode_spans_does() -> None:
    """encode_spans groups spans by Resource in a dict (hash: JSON of the attributes), the fast
    encoder by ``==``. Resource({"x": 1}) == Resource({"x": True}) but their hashes differ, so
    encode_spans writes two ResourceSpans and the fast encoder one, with the first resource's
    attributes: the second span's resource is sent as x=1 (int) instead of x=True (bool)."""
    keep = _Keep()
    for attrs in ({"x": 1}, {"x": True}):
        provider = TracerProvider(resource=Resource(attrs), shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(keep))
        provider.get_tracer("s").start_span("r").end()
    expected = encode_spans(keep.spans).SerializeToString()
    assert OTLPEncoder()._encode(keep.spans) == expected


def test_content_memo_memory_stays_near_its_bound() -> None:
    """The memo's bound counts key and text lengths; the redacted item it also keeps (a Python
    object graph) is not counted. Structured content of many small dicts (a tool result as
    JSON records, a JSON schema) costs several times its pickle in memory: measured 4-6x the
    bound, about 8x with shared references (the pickle memoises them, the copy does not)."""
    bound = 1 << 20
    memo = ContentMemo(encodable, text_of=item_wire_text, max_bytes=bound)
    policy = RedactionPolicy.from_spec(None)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(60):
            rows = [{"a": i, "b": j} for j in range(2000)]
            redact(
                _record(i, [{"role": "tool", "tool_call_id": "c", "content": rows}]),
                policy,
                memo=memo,
            )
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert memo.stats()["bytes"] <= bound
    assert used <= 2 * bound, f"memo holds {used / bound:.1f}x its bound"


# -- attacks that held (coverage) --


def test_fast_otlp_encoder_on_kinds_links_limits_trace_state_and_odd_values() -> None:
    keep = _Keep()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "x"}),
        span_limits=SpanLimits(
            max_attributes=3,
            max_events=1,
            max_links=1,
            max_event_attributes=1,
            max_link_attributes=1,
        ),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("s", "1", schema_url="https://example.invalid/s")
    remote = SpanContext(
        trace_id=2**128 - 1,
        span_id=2**64 - 1,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("a", "b"), ("c", "d")]),
    )
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    for kind in SpanKind:
        span = tracer.start_span(
            f"k{kind}",
            context=ctx,
            kind=kind,
            attributes={"a": b"\x00\xff", "b": [], "c": 2**63 - 1, "d": [None, "x"]},
            links=[Link(remote, {"x": 1, "y": 2}), Link(remote)],
        )
        span.add_event("e1", {"p": 1, "q": 2})
        span.add_event("", {})
        span.end()
    values: list[Any] = [
        -(2**63),
        0,
        -0.0,
        float("inf"),
        float("nan"),
        "",
        "x" * 100_000,
        [1.5, -0.0],
        (),
        [b"a", b""],
        ["\u2028", "\U0001d11e"],
    ]
    for v in values:
        tracer.start_span("v", attributes={"v": v}).end()
    expected = encode_spans(keep.spans).SerializeToString()
    assert OTLPEncoder()._encode(keep.spans) == expected


def test_message_mutated_in_place_between_calls_is_redacted_anew() -> None:
    """The agent changes a message it already sent (same dict object): the next call must send
    the new content, redacted, not the remembered redaction of the old one."""
    message: dict[str, Any] = {"role": "user", "content": "nothing secret here"}
    system = {"role": "system", "content": "be brief"}

    def mutate() -> None:
        message["content"] = f"now with {OPENAI_KEY} and {GITHUB_TOKEN}"

    def mutate_back() -> None:
        message["content"] = "nothing secret here"

    batches = [
        [_record(0, [system, message])],
        mutate,
        [_record(1, [system, message])],
        mutate_back,
        [_record(2, [system, message])],
    ]
    policy = RedactionPolicy.from_spec(None)
    with_memo = _generations(batches, memo_bytes=8 << 20, policy=policy)
    mutate_back()
    without = _generations(batches, memo_bytes=0, policy=policy)
    inputs = [g["langfuse.observation.input"] for g in with_memo]
    assert "nothing secret here" in inputs[0] and "nothing secret here" in inputs[2]
    assert OPENAI_KEY not in inputs[1] and GITHUB_TOKEN not in inputs[1]
    assert "now with" in inputs[1] and inputs[1].count("[REDACTED:") == 2
    assert with_memo == without


def test_memo_under_overrides_hash_and_pattern_switches_equals_no_memo() -> None:
    """The same history under per-call overrides (hash with the HMAC key, drop, truncate,
    pii patterns on) interleaved with the base policy: with the memo and without, the same
    generations (input and the redaction report)."""
    email = "alice.smith@example.com"
    history = [
        {"role": "system", "content": "be brief " * 10},
        {"role": "user", "content": f"key {OPENAI_KEY}, mail me at {email}"},
        {"role": "tool", "tool_call_id": "c", "content": f"token {GITHUB_TOKEN} " + "z" * 50},
    ]
    overrides = [
        None,
        "user_messages=hash",
        None,
        "tool_results=truncate:5",
        "patterns.on=pii",
        None,
        "user_messages=drop",
        "user_messages=hash",
        None,
    ]
    records = [_record(i, history, redact_override=o) for i, o in enumerate(overrides)]
    policy = RedactionPolicy.from_spec(None, hmac_key="h" * 32)
    with_memo = _generations([records, records[::-1]], memo_bytes=8 << 20, policy=policy)
    without = _generations([records, records[::-1]], memo_bytes=0, policy=policy)
    assert with_memo == without
    wire = " ".join(str(g) for g in with_memo)
    assert OPENAI_KEY not in wire and GITHUB_TOKEN not in wire
