"""LangFuse forwarding, asserted on the OTLP bytes that reach a respx-mocked LangFuse API.

Real litellm calls against a respx-mocked OpenAI-compatible provider, over the matrix
sync/async x streamed/not x success/failure x the five kinds.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC
from pathlib import Path
from typing import Any

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger

from agent.config import AgentConfig
from agent.core import llm, telemetry
from agent.core.agent_loop import Agent
from agent.core.session import Session
from tests.langfuse_helpers import (
    LANGFUSE,
    PROVIDER,
    PROVIDER_KEY,
    attr_json,
    forwarding,
    meta,
    mocked_world,
    scores_of,
    spans_of,
    use_langfuse,
    wire_bytes,
)
from tests.waiting import wait_for

KINDS = ("main", "research", "compaction", "effort_probe", "restore")


class TimingCapture(CustomLogger):
    """What litellm itself says the call's start and end were."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[str, tuple[Any, Any]] = {}

    def _keep(self, kwargs: Any, start: Any, end: Any) -> None:
        md = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        ours = md.get("ml_intern") or {}
        if ours.get("event_id"):
            self.times[ours["event_id"]] = (start, end)

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._keep(kwargs, start_time, end_time)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._keep(kwargs, start_time, end_time)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._keep(kwargs, start_time, end_time)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._keep(kwargs, start_time, end_time)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp, mocked_world() as router:
        pk, sk = use_langfuse(mp, LANGFUSE)
        obs, sink = forwarding(tmp_path_factory.mktemp("tel"))
        # litellm's async provider calls default to an aiohttp transport, which respx cannot see.
        mp.setattr(litellm, "disable_aiohttp_transport", True)
        timing = TimingCapture()
        litellm.callbacks = [*litellm.callbacks, timing]
        try:
            yield {"obs": obs, "router": router, "sink": sink, "timing": timing, "sk": sk, "pk": pk}
        finally:
            litellm.callbacks = [c for c in litellm.callbacks if c is not timing]
            obs.shutdown(5)


CASES = [
    (mode, stream, outcome, kind)
    for mode in ("sync", "async")
    for stream in (False, True)
    for outcome in ("success", "failure")
    for kind in KINDS
]


@pytest.mark.parametrize(
    ("mode", "stream", "outcome", "kind"), CASES, ids=["-".join(map(str, c)) for c in CASES]
)
def test_every_call_becomes_a_generation(
    world, mode: str, stream: bool, outcome: str, kind: str
) -> None:
    obs, router, sink, timing = world["obs"], world["router"], world["sink"], world["timing"]
    session = Session(user_id="alice", observability=obs)
    session.turn_index = 3
    prompt = "please FAIL now" if outcome == "failure" else "tell me something"
    messages = [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": prompt},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "run_python",
                "description": "run code",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    kwargs = dict(
        kind=kind,
        model="openai/gpt-4o-mini",
        messages=messages,
        tools=tools,
        stream=stream,
        api_base=PROVIDER,
        api_key=PROVIDER_KEY,
        temperature=0.3,
        max_tokens=50,
        num_retries=0,
    )
    error: BaseException | None = None
    try:
        if mode == "sync":
            reply = llm.complete_sync(session, **kwargs)
        else:
            reply = asyncio.run(llm.complete(session, **kwargs))
    except Exception as exc:  # the provider's failure reaches the caller unchanged
        error = exc
    if outcome == "failure":
        assert error is not None
    else:
        assert error is None, error
        assert reply.choices[0].message.content == "provider reply number one"

    row_type = "llm_call_error" if outcome == "failure" else "llm_call"
    (row,) = [e for e in sink.of_type(row_type) if e.session_id == session.session_id]
    assert row.kind == kind
    expected_trace = hashlib.sha256(f"{session.session_id}:3".encode()).digest()[:16].hex()
    assert row.langfuse_trace_id == expected_trace
    assert row.langfuse_observation_id and len(row.langfuse_observation_id) == 16
    assert row.langfuse_sampled is True

    assert obs.flush(10)

    def generation() -> dict | None:
        for s in spans_of(router):
            if s["span_id"] == row.langfuse_observation_id:
                return s
        return None

    assert wait_for(lambda: generation() is not None), "the generation never reached LangFuse"
    span = generation()
    a = span["attributes"]
    assert span["trace_id"] == expected_trace
    assert span["name"] == f"llm.{kind}"
    assert a["langfuse.observation.type"] == "generation"
    assert a["langfuse.observation.model.name"] == "gpt-4o-mini"  # as LangFuse model prices name it
    assert meta(span, "kind") == kind
    assert meta(span, "hf_event_id") == row.event_id
    assert a["user.id"] == "alice"
    assert a["session.id"] == session.session_id
    # Trace attributes are written once, on the turn span (here a turn known from its calls
    # only, closed by a flush once its generation went out), never on the generation.
    assert "langfuse.trace.tags" not in a and "langfuse.trace.name" not in a
    assert span["parent_span_id"] is not None
    assert obs.flush(10)
    assert wait_for(
        lambda: any(
            s["span_id"] == span["parent_span_id"] and s["trace_id"] == expected_trace
            for s in spans_of(router)
        )
    )
    (turn,) = {
        s["span_id"]: s
        for s in spans_of(router)
        if s["span_id"] == span["parent_span_id"] and s["trace_id"] == expected_trace
    }.values()
    assert turn["name"] == "turn" and turn["parent_span_id"] is None
    assert kind in turn["attributes"]["langfuse.trace.tags"]
    assert turn["attributes"]["langfuse.trace.name"] == "ml-intern turn"
    assert turn["start_time_ns"] <= span["start_time_ns"] <= span["end_time_ns"]
    assert span["end_time_ns"] <= turn["end_time_ns"]
    params = attr_json(span, "langfuse.observation.model.parameters")
    assert params["temperature"] == 0.3 and params["max_tokens"] == 50
    gen_input = attr_json(span, "langfuse.observation.input")
    assert gen_input["messages"][0]["role"] == "system"
    assert gen_input["messages"][1]["content"] == prompt
    assert gen_input["tools"][0]["function"]["name"] == "run_python"

    # True start and end times: litellm's own, within a millisecond.
    assert wait_for(lambda: row.event_id in timing.times)
    start, end = timing.times[row.event_id]
    assert abs(span["start_time_ns"] - int(start.astimezone(UTC).timestamp() * 1e9)) <= 1_000_000
    assert abs(span["end_time_ns"] - int(end.astimezone(UTC).timestamp() * 1e9)) <= 1_000_000

    if outcome == "success":
        output = attr_json(span, "langfuse.observation.output")
        assert output["content"] == "provider reply number one"
        usage = attr_json(span, "langfuse.observation.usage_details")
        assert usage["output"] == 7 and usage["total"] == 49
        # LangFuse adds up every key containing "input": the sum is the call's prompt tokens.
        assert sum(v for k, v in usage.items() if "input" in k) == 42
        if not stream:
            assert usage["cache_read_input_tokens"] == 12 and usage["input"] == 30
        else:
            assert usage["input"] == 42
        cost = attr_json(span, "langfuse.observation.cost_details")
        assert cost["total"] > 0
        assert "langfuse.observation.level" not in a or a["langfuse.observation.level"] != "ERROR"
        if stream:
            assert a.get("langfuse.observation.completion_start_time")
    else:
        assert a["langfuse.observation.level"] == "ERROR"
        assert (
            "exploded" in a["langfuse.observation.status_message"]
            or a["langfuse.observation.status_message"]
        )
        assert "langfuse.observation.output" not in a

    # The provider's key, api_base and headers never leave the process.
    raw = wire_bytes(router)
    assert PROVIDER_KEY.encode() not in raw
    assert b"provider.example.test" not in raw
    assert (
        world["sk"].encode()
        not in raw.replace(b"Authorization", b"")[:0] + raw.split(b"authorization")[0]
    )


def test_basic_auth_and_ingestion_headers(world) -> None:
    import base64

    router = world["router"]
    calls = [c for c in router.calls if c.request.url.path.endswith("/otel/v1/traces")]
    assert calls
    h = calls[-1].request.headers
    expected = base64.b64encode(f"{world['pk']}:{world['sk']}".encode()).decode()
    assert h["authorization"] == f"Basic {expected}"
    assert h["x-langfuse-ingestion-version"] == "4"
    assert h["x-langfuse-public-key"] == world["pk"]
    assert h["content-type"] == "application/x-protobuf"
    assert h["content-encoding"] == "gzip"


def test_a_turn_is_one_trace_with_spans_and_a_score(world, tmp_path: Path) -> None:
    obs, router, sink = world["obs"], world["router"], world["sink"]
    session = Session(user_id="bob", observability=obs)
    agent = Agent(session, AgentConfig(telemetry_dir=tmp_path), reasoning_effort="high")
    reply = asyncio.run(
        agent.run_turn("Count the words in this request, then research background.")
    )
    telemetry.record_feedback(session, value=0.75, comment="nice work", turn_index=0)
    agent.close()
    assert obs.flush(10)
    trace_id = hashlib.sha256(f"{session.session_id}:0".encode()).digest()[:16].hex()
    assert wait_for(
        lambda: any(s["name"] == "turn" and s["trace_id"] == trace_id for s in spans_of(router))
    )
    spans = [s for s in spans_of(router) if s["trace_id"] == trace_id]
    (turn,) = [s for s in spans if s["name"] == "turn"]
    assert turn["parent_span_id"] is None
    ta = turn["attributes"]
    assert ta["langfuse.trace.name"] == "ml-intern turn"
    assert attr_json(turn, "langfuse.trace.metadata.turn_index") == 0
    assert ta["user.id"] == "bob" and ta["session.id"] == session.session_id
    assert (
        attr_json(turn, "langfuse.observation.input")
        == "Count the words in this request, then research background."
    )
    assert attr_json(turn, "langfuse.observation.output") == reply
    assert set(ta["langfuse.trace.tags"]) >= {"main", "research", "effort_probe"}
    gens = [s for s in spans if s["name"].startswith("llm.")]
    assert {g["name"] for g in gens} >= {"llm.main", "llm.research", "llm.effort_probe"}
    assert all(g["parent_span_id"] == turn["span_id"] for g in gens)
    tools = [s for s in spans if s["name"].startswith("tool.")]
    assert {t["name"] for t in tools} >= {"tool.run_python", "tool.research"}
    for t in tools:
        assert t["parent_span_id"] == turn["span_id"]
        assert t["end_time_ns"] >= t["start_time_ns"]
    sandbox = [s for s in spans if s["name"].startswith("sandbox.")]
    assert sandbox
    # Every HF llm_call row of the turn names a generation that arrived.
    rows = [e for e in sink.of_type("llm_call") if e.session_id == session.session_id]
    arrived = {(s["trace_id"], s["span_id"]) for s in gens}
    assert rows and all((r.langfuse_trace_id, r.langfuse_observation_id) in arrived for r in rows)
    # Feedback is a score on the trace.
    assert wait_for(lambda: any(sc.get("traceId") == trace_id for sc in scores_of(router)), 10)
    (score,) = [sc for sc in scores_of(router) if sc.get("traceId") == trace_id]
    assert score["value"] == 0.75 and score["comment"] == "nice work"


def test_calls_without_our_context_are_not_forwarded(world) -> None:
    router = world["router"]
    before = len(spans_of(router))
    litellm.completion(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "foreign call"}],
        mock_response="x",
    )
    world["obs"].flush(5)
    assert b"foreign call" not in wire_bytes(router)
    assert len(spans_of(router)) == before
