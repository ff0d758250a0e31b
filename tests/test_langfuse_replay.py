"""Replays of the demo and of a direct-API session against the loopback fake LangFuse, checked
at the wire with the invariants a LangFuse user relies on (tests/wire_checks.py): every row's
ids resolve to an object that arrived; input keys sum to prompt tokens; each trace's tags are
written once and are the union of its kinds; every child lies within its parent; the feedback
score arrives whether the server takes score arrays or only single objects."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import litellm
import pytest

from agent.core import llm, telemetry
from agent.core.session import Session
from agent.main import main
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import forwarding, use_langfuse
from tests.rows import read_rows
from tests.wire_checks import (
    assert_children_within_parents,
    assert_ids_resolve,
    assert_token_sums,
    assert_trace_attributes_consistent,
    latest,
    meta,
    usage_of,
)

# What litellm hands back for an Anthropic call with prompt caching and extended thinking:
# prompt_tokens includes the cache reads and writes, completion_tokens the reasoning.
ANTHROPIC_CACHED = {
    "model": "claude-sonnet-4-5",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "cached"}, "finish_reason": "stop"}
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "total_tokens": 1280,
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 100},
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 100,
        "completion_tokens_details": {"reasoning_tokens": 30},
    },
}
# OpenAI: prompt_tokens_details.cached_tokens is part of prompt_tokens.
OPENAI_CACHED = {
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "also"}, "finish_reason": "stop"}
    ],
    "usage": {
        "prompt_tokens": 500,
        "completion_tokens": 20,
        "total_tokens": 520,
        "prompt_tokens_details": {"cached_tokens": 384},
    },
}


IMAGE = b"\x89PNG\r\n\x1a\n" + os.urandom(500 * 1024)
IMAGE_URI = "data:image/png;base64," + base64.b64encode(IMAGE).decode()


def _unzipped(body: bytes) -> bytes:
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def _assert_all(rows: list[dict], spans: list[dict], scores: list[dict]) -> None:
    assert_ids_resolve(rows, spans, scores)
    assert assert_token_sums(rows, spans) > 0
    assert_trace_attributes_consistent(rows, spans)
    assert_children_within_parents(spans)


@pytest.mark.parametrize("arrays", [True, False], ids=["server-takes-arrays", "objects-only"])
def test_direct_api_session_at_the_wire(
    arrays: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeLangfuse(accept_score_arrays=arrays) as fake:
        pk, sk = use_langfuse(monkeypatch, fake.url)
        fake.public_key, fake.secret_key = pk, sk
        obs, _ = forwarding(tmp_path)
        session = Session(user_id="direct-user", observability=obs)
        streamed: list[Any] = []

        async def go() -> None:
            messages = [{"role": "user", "content": "Summarise the report."}]
            telemetry.record_turn_start(session, user_message="Summarise the report.")
            await llm.complete(
                session,
                kind="main",
                model="anthropic/claude-sonnet-4-5",
                messages=messages,
                mock_response=ANTHROPIC_CACHED,
            )
            await llm.complete(
                session,
                kind="research",
                model="openai/gpt-4o-mini",
                messages=messages,
                mock_response=OPENAI_CACHED,
            )
            await llm.complete(
                session,
                kind="main",
                model="openai/gpt-4o-mini",
                messages=messages,
                stream=True,
                on_chunk=streamed.append,
                mock_response="a streamed answer in words",
                temperature=0.2,
                max_tokens=64,
                top_p=0.9,
                seed=7,
            )
            # A picture the user attached, as a base64 data URI (500 KB of noise).
            await llm.complete(
                session,
                kind="main",
                model="openai/gpt-4o-mini",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "And this chart?"},
                            {"type": "image_url", "image_url": {"url": IMAGE_URI}},
                        ],
                    }
                ],
                mock_response="a chart of costs",
            )
            with pytest.raises(litellm.RateLimitError):
                await llm.complete(
                    session,
                    kind="compaction",
                    model="openai/gpt-4o-mini",
                    messages=messages,
                    num_retries=0,
                    mock_response=litellm.RateLimitError(
                        message="slow down", llm_provider="openai", model="gpt-4o-mini"
                    ),
                )
            telemetry.record_tool_call(
                session,
                name="run_python",
                duration_ms=12.5,
                ok=False,
                tool_call_id="call_9",
                arguments={"code": "1/0"},
                error="ZeroDivisionError: division by zero",
            )
            telemetry.record_turn_complete(
                session, final_reply="done", duration_ms=50.0, steps=3, llm_calls=4
            )
            telemetry.record_feedback(session, value=0.5, comment="fine")
            await obs.adrain()

        asyncio.run(go())
        report = obs.shutdown(10)["langfuse"]
        spans, scores = fake.spans, fake.scores
        score_posts = [r for r in fake.requests if r.path == "/api/public/scores"]
        media_posts = [r for r in fake.requests if r.path.startswith("/api/public/media")]
        wire = b"".join(_unzipped(r.body) for r in fake.requests)
    rows = read_rows(tmp_path)
    assert streamed
    _assert_all(rows, spans, scores)
    # The image went out as a marker: no media request, no piece of it on the wire.
    assert not media_posts
    encoded = IMAGE_URI.split(",", 1)[1]
    for i in range(0, len(encoded) - 48, 4096):
        assert encoded[i : i + 48].encode() not in wire
    assert IMAGE[4096:4144] not in wire
    digest = hashlib.sha256(IMAGE).hexdigest()[:16]
    assert f"[MEDIA:image/png bytes={len(IMAGE)} sha256={digest}]".encode() in wire
    # The score landed, as one object per request, and is counted as sent only now.
    assert len(score_posts) == 1 and json.loads(score_posts[0].body)["name"] == "user_feedback"
    assert all(r.status == 200 for r in score_posts)
    assert report["scores"] == 1 and not report["dropped"], report
    (feedback,) = [r for r in rows if r["event_type"] == "feedback"]
    assert scores[0]["id"] == feedback["langfuse_observation_id"]
    (turn_row,) = [r for r in rows if r["event_type"] == "turn_start"]
    assert scores[0]["traceId"] == turn_row["langfuse_trace_id"]

    by_id = latest(spans)
    calls = {
        r["kind"] + ("-stream" if r["data"].get("stream") else ""): by_id[
            (r["langfuse_trace_id"], r["langfuse_observation_id"])
        ]
        for r in reversed(rows)  # the first call of a kind wins (the image call is a second main)
        if r["event_type"].startswith("llm_call")
    }
    # Anthropic-style cache: input without the cached parts, the parts beside it; reasoning as
    # an output detail.
    assert usage_of(calls["main"]) == {
        "input": 100,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 100,
        "output": 50,
        "output_reasoning_tokens": 30,
        "total": 1280,
    }
    assert usage_of(calls["research"]) == {
        "input": 116,
        "cache_read_input_tokens": 384,
        "output": 20,
        "total": 520,
    }
    # The streamed call: its model parameters, `stream` as metadata (not a model parameter),
    # and the time to first token.
    stream = calls["main-stream"]["attributes"]
    params = json.loads(stream["langfuse.observation.model.parameters"])
    assert params == {"temperature": 0.2, "max_tokens": 64, "top_p": 0.9, "seed": 7}
    assert meta(calls["main-stream"], "stream") is True
    assert stream.get("langfuse.observation.completion_start_time")
    # The failed call and the failed tool call are errors with their message.
    failed = calls["compaction"]["attributes"]
    assert failed["langfuse.observation.level"] == "ERROR"
    assert "slow down" in failed["langfuse.observation.status_message"]
    (tool,) = [s for s in spans if s["name"] == "tool.run_python"]
    assert tool["attributes"]["langfuse.observation.level"] == "ERROR"
    assert "ZeroDivisionError" in tool["attributes"]["langfuse.observation.status_message"]
    # One trace, one stable name, the turn index in metadata.
    (turn,) = [s for s in by_id.values() if s["name"] == "turn"]
    assert turn["attributes"]["langfuse.trace.name"] == "ml-intern turn"
    assert json.loads(turn["attributes"]["langfuse.trace.metadata.turn_index"]) == 0
    assert turn["attributes"][APP_ROOT] is True


APP_ROOT = "langfuse.internal.is_app_root"


def test_demo_replay_at_the_wire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The harder server: scores only as single objects (LangFuse up to at least 4.16).
    with FakeLangfuse(accept_score_arrays=False) as fake:
        pk, sk = use_langfuse(monkeypatch, fake.url)
        fake.public_key, fake.secret_key = pk, sk
        code = main(["demo", "--telemetry-dir", str(tmp_path), "--user-id", "replay-user"])
        out = capsys.readouterr()
        spans, scores = fake.spans, fake.scores
    assert code == 0, out.err
    rows = read_rows(tmp_path)
    _assert_all(rows, spans, scores)
    assert {r["event_type"] for r in rows} >= {
        "turn_start",
        "turn_complete",
        "llm_call",
        "llm_call_error",
        "tool_call",
        "hf_job_submit",
        "hf_job_complete",
        "sandbox_create",
        "sandbox_destroy",
        "feedback",
    }
    assert len(scores) == 1
    assert "1 scores" in " ".join(out.err.split())
    turns = [s for s in latest(spans).values() if s["name"] == "turn"]
    assert len(turns) == 3 and {t["attributes"]["langfuse.trace.name"] for t in turns} == {
        "ml-intern turn"
    }
    # The restore call of session 2 comes before its first turn starts; the sandbox of session
    # 1 is torn down after its last turn: both lie inside their turn's span all the same.
    restore = next(s for s in spans if s["name"] == "llm.restore")
    destroy = next(s for s in spans if s["name"] == "sandbox.destroy")
    for child in (restore, destroy):
        parent = latest(spans)[(child["trace_id"], child["parent_span_id"])]
        assert parent["name"] == "turn"
