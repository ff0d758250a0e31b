"""Rows the telemetry hook writes, as a user of the dataset sees them."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger

from agent.config import AgentConfig
from agent.core import llm, telemetry
from agent.core.agent_loop import Agent
from agent.core.dataset.sink import HFDatasetSink
from agent.core.session import InMemorySink, Session
from tests.rows import read_rows

MODEL = "openai/gpt-4o-mini"
BASE_KEYS = {
    "event_id",
    "event_type",
    "timestamp",
    "session_id",
    "user_id",
    "turn_index",
    "kind",
    "data",
    "langfuse_trace_id",
    "langfuse_observation_id",
    "langfuse_sampled",
}


@pytest.fixture
def hf(tmp_path: Path):
    sink = HFDatasetSink(tmp_path)
    yield sink
    sink.shutdown(5)


async def test_llm_call_row_has_usage_cost_and_kind(hf: HFDatasetSink, tmp_path: Path) -> None:
    session = Session(user_id="u1", sinks=[hf])
    reply = await llm.complete(
        session,
        kind="research",
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        mock_response="hello",
    )
    assert reply.choices[0].message.content == "hello"
    assert hf.flush(5)
    (row,) = read_rows(tmp_path)
    assert set(row) == BASE_KEYS
    assert row["event_type"] == "llm_call"
    assert row["kind"] == "research"
    assert row["user_id"] == "u1"
    assert row["session_id"] == session.session_id
    assert row["turn_index"] == 0
    assert row["langfuse_trace_id"] is None and row["langfuse_observation_id"] is None
    data = row["data"]
    assert data["model"] == MODEL
    assert data["prompt_tokens"] > 0 and data["completion_tokens"] > 0
    assert data["total_tokens"] == data["prompt_tokens"] + data["completion_tokens"]
    assert data["cache_read_tokens"] == 0 and data["cache_creation_tokens"] == 0
    assert data["cost_usd"] > 0
    assert data["latency_ms"] >= 0
    assert data["finish_reason"] == "stop"
    assert row["timestamp"].endswith("+00:00")


async def test_failed_call_row_is_scrubbed_and_error_reraised(
    hf: HFDatasetSink, tmp_path: Path
) -> None:
    session = Session(user_id="u1", sinks=[hf])
    secret = "sk-proj-" + "A1b2C3d4" * 5
    with pytest.raises(Exception, match="boom"):
        await llm.complete(
            session,
            kind="main",
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            mock_response=Exception(f"boom with key {secret}"),
        )
    assert hf.flush(5)
    (row,) = read_rows(tmp_path)
    assert row["event_type"] == "llm_call_error"
    assert row["kind"] == "main"
    assert row["data"]["error_type"]
    assert "boom" in row["data"]["error_message"]
    assert secret not in json.dumps(row)
    assert "[REDACTED:openai_key]" in row["data"]["error_message"]


async def test_streamed_call_is_recorded_once_with_tokens(
    hf: HFDatasetSink, tmp_path: Path
) -> None:
    session = Session(sinks=[hf])
    chunks = []
    reply = await llm.complete(
        session,
        kind="main",
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        on_chunk=chunks.append,
        mock_response="a streamed reply",
    )
    assert chunks
    assert reply.choices[0].message.content == "a streamed reply"
    assert hf.flush(5)
    (row,) = read_rows(tmp_path)
    assert row["data"]["stream"] is True
    assert row["data"]["completion_tokens"] > 0
    assert row["data"]["cost_usd"] > 0


def test_sync_call_is_recorded(hf: HFDatasetSink, tmp_path: Path) -> None:
    session = Session(sinks=[hf])
    llm.complete_sync(
        session,
        kind="compaction",
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        mock_response="summary",
    )
    assert hf.flush(5)
    (row,) = read_rows(tmp_path)
    assert (row["event_type"], row["kind"]) == ("llm_call", "compaction")


async def test_context_reaches_litellm_under_one_namespaced_key() -> None:
    seen: list[dict] = []

    class Capture(CustomLogger):
        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            seen.append(kwargs["litellm_params"]["metadata"])

    cap = Capture()
    litellm.callbacks = [*litellm.callbacks, cap]
    try:
        sink = InMemorySink()
        session = Session(user_id="alice", sinks=[sink])
        await llm.complete(
            session,
            kind="effort_probe",
            model=MODEL,
            messages=[{"role": "user", "content": "p"}],
            mock_response="pong",
            metadata={"team": "ml"},
        )
        (event,) = sink.of_type("llm_call")
        for _ in range(200):
            if any(m.get("ml_intern", {}).get("event_id") == event.event_id for m in seen):
                break
            await asyncio.sleep(0.02)
    finally:
        litellm.callbacks = [c for c in litellm.callbacks if c is not cap]
    # litellm's logging worker may also deliver a previous test's pending call here.
    (md,) = [m for m in seen if m.get("ml_intern", {}).get("event_id") == event.event_id]
    ours = md["ml_intern"]
    assert md["team"] == "ml"
    assert "session_id" not in md and "trace_id" not in md and "tags" not in md
    assert ours["event_id"] == event.event_id
    assert ours["kind"] == "effort_probe"
    assert ours["user_id"] == "alice"
    assert ours["session_id"] == session.session_id


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown call kind"):
        telemetry.CallContext.new(Session(), "chat")


class ExplodingSink:
    def __init__(self) -> None:
        self.calls = 0

    def export(self, event):
        self.calls += 1
        raise RuntimeError("disk on fire")

    def flush(self, timeout=None):
        return True

    def shutdown(self, timeout=None):
        return True


async def test_raising_sink_does_not_break_a_turn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = InMemorySink()
    bad = ExplodingSink()
    session = Session(user_id="u", sinks=[bad, good])
    agent = Agent(session, AgentConfig(telemetry_dir=tmp_path))
    with caplog.at_level(logging.WARNING):
        reply = await agent.run_turn("Count the words in this request.")
        reply2 = await agent.run_turn("And again please.")
    agent.close()
    assert reply.startswith("Done.") and reply2.startswith("Done.")
    assert bad.calls == len(good.events) > 5
    warnings = [r for r in caplog.records if "disk on fire" in r.getMessage()]
    assert len(warnings) == 1, "a repeated sink failure is logged once"


async def test_agent_turn_rows_cover_all_event_shapes(hf: HFDatasetSink, tmp_path: Path) -> None:
    session = Session(user_id="u2", sinks=[hf])
    config = AgentConfig(telemetry_dir=tmp_path, context_token_budget=256)
    agent = Agent(session, config, reasoning_effort="high")
    await agent.run_turn("Count the words in this request, then research background.")
    await agent.run_turn("Now submit a quick training job.")
    telemetry.record_feedback(session, value=0.5, comment="ok", turn_index=0)
    saved = agent.save(tmp_path / "s.json")
    agent.close()
    session2 = Session(user_id="u2", sinks=[hf])
    agent2 = Agent(session2, config)
    summary = await agent2.restore(saved)
    assert summary
    agent2.close()
    assert hf.flush(5)
    rows = read_rows(tmp_path)
    for row in rows:
        assert set(row) == BASE_KEYS, row
    kinds = {r["kind"] for r in rows if r["event_type"] == "llm_call"}
    assert kinds == {"main", "research", "compaction", "effort_probe", "restore"}
    by_type: dict[str, list[dict]] = {}
    for r in rows:
        by_type.setdefault(r["event_type"], []).append(r)
    assert {
        "turn_start",
        "turn_complete",
        "tool_call",
        "sandbox_create",
        "sandbox_destroy",
        "hf_job_submit",
        "hf_job_complete",
        "feedback",
        "llm_call_error",
    } <= set(by_type)
    tool = by_type["tool_call"][0]["data"]
    assert set(tool) >= {"name", "duration_ms", "ok"}
    assert {t["data"]["name"] for t in by_type["tool_call"]} >= {"run_python", "research", "hf_job"}
    done = by_type["turn_complete"][0]["data"]
    assert done["ok"] is True and done["llm_calls"] >= 2
    assert by_type["sandbox_destroy"][0]["data"]["lifetime_s"] >= 0
    assert by_type["hf_job_complete"][0]["data"]["status"] == "completed"
    assert by_type["feedback"][0]["data"]["value"] == 0.5
    # Content (tool arguments, results, messages) never lands in the HF rows.
    assert "Count the words" not in json.dumps(rows)
    err = by_type["llm_call_error"][0]
    assert err["kind"] == "main" and "reasoning_effort" in err["data"]["error_message"]
