"""Every fast path of the forwarding core writes the span attributes the langfuse SDK writes.

The builder hands the SDK pre-serialised text where the SDK would only serialise (``wire_value``),
joins a generation's input from texts the content memo serialised once, and writes metadata
attributes itself. Each is valid only because the SDK's own result is the same. Here the same
records (secrets, a lone surrogate, inline media, non-ASCII text, nested and odd metadata: ints
past 2**53, NaN, tuples, non-string keys; a failed call; a per-call override) go through two
cores: one with its fast paths, one with them switched off, where the SDK serialises every
value itself. The spans' attributes must be equal, key for key and byte for byte.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.core.forwarding.engine import Engine
from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings
from agent.core.privacy.redaction import RedactionPolicy
from agent.core.records import CallerContext, CallRecord
from agent.testing.fake_langfuse import FakeLangfuse

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": 'Sé breve. ☃ 𝄞 \u2028 "quoted" \\ </script>'},
    {"role": "user", "content": "token ghp_" + "a1B2" * 9 + " and a file b\udcff.txt"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "QUJD" * 50}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
        ],
    },
    # an int past 2**53: the SDK writes it as a string, so this message is not "plain"
    {"role": "tool", "tool_call_id": "c1", "content": "result ✓", "index": 2**60},
]
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}
]


def _records() -> list[CallRecord]:
    metadatas: list[dict[Any, Any]] = [
        {},
        {"team": "ml", "nested": {"a": [1, 2.5, None, True], "b": ("x", "y")}},
        {"big": 2**60, "ratio": float("nan")},  # the SDK's serializer turns both into strings
        {1: "a non-string key", "fine": "value"},
        {f"k{i}": i for i in range(40)},  # more keys than the fast path takes
    ]
    out = []
    for i, md in enumerate(metadatas):
        for failed in (False, True):
            out.append(
                CallRecord(
                    event_id=f"ev-{i}-{failed}",
                    kind="main",
                    session_id="s-1",
                    user_id="u-1",
                    turn_index=i,
                    trace_id=f"{i + 1:032x}",
                    observation_id=f"{i + 1:015x}{int(failed)}",
                    model="openai/gpt-4o-mini",
                    start_time=T0 + timedelta(seconds=i),
                    end_time=T0 + timedelta(seconds=i, milliseconds=500),
                    messages=tuple(HISTORY[: i + 1]),
                    tools=tuple(TOOLS),
                    model_parameters={"temperature": 0.2, "max_tokens": 64},
                    output=None if failed else {"role": "assistant", "content": f"reply {i} ✓"},
                    usage={} if failed else {"prompt_tokens": 10, "completion_tokens": 3},
                    cost_usd=None if failed else 0.0001,
                    error_type="RateLimitError" if failed else None,
                    error_message="rate limited" if failed else None,
                    metadata=md,
                    redact_override="tool_results=drop" if i == 3 else None,
                    caller=CallerContext(tags=("t1",), version="v1"),
                )
            )
    return out


def _spans(fast: bool) -> dict[str, dict[str, Any]]:
    """What reached a loopback LangFuse: generation attributes by span id and pass."""
    with FakeLangfuse() as sink:
        tag = uuid.uuid4().hex[:10]
        settings = LangfuseSettings(
            host=sink.url, public_key=f"pk-lf-{tag}", secret_key=f"sk-lf-{tag}"
        )
        engine = Engine(
            settings, policy=RedactionPolicy.from_spec(None), options=ForwarderOptions()
        )
        assert engine.builder.fast  # no SDK mask: the fast paths are on by default
        if not fast:
            engine.builder.fast = False
            engine.builder._texts = None
        records = _records()
        for _ in range(2):  # the second pass is served by the content memo
            engine.handle([("call", r) for r in records])
        assert engine.flush(time.monotonic() + 30)
        engine.shutdown(time.monotonic() + 10)
        spans = [s for s in sink.spans if s["name"].startswith("llm.")]
    assert len(spans) == 2 * len(records)
    out: dict[str, dict[str, Any]] = {}
    for span in spans:
        key = span["span_id"]
        out[key + ("-2" if key in out else "-1")] = span["attributes"]
    return out


def test_fast_paths_write_what_the_sdk_writes() -> None:
    fast, slow = _spans(fast=True), _spans(fast=False)
    assert fast.keys() == slow.keys()
    for key in fast:
        assert fast[key] == slow[key], key
    # The fast paths were taken: metadata keys of ours and the joined input are strings.
    some = next(iter(fast.values()))
    assert isinstance(some["langfuse.observation.input"], str)
