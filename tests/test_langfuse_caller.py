"""The caller's own context at the wire: litellm's LangFuse metadata keys on `llm.complete`
(tags, trace and generation names, trace metadata, version, a prompt link, other keys through
redaction), nesting under the caller's OpenTelemetry span or LangFuse observation (on by
default, with a switch), and `existing_trace_id` / `parent_observation_id`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from agent.core import llm, telemetry
from agent.core.agent_loop import Agent
from agent.core.observability import Observability
from agent.core.session import InMemorySink, Session
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import forwarding, use_langfuse
from tests.wire_checks import (
    APP_ROOT,
    assert_children_within_parents,
    assert_ids_resolve,
    assert_trace_attributes_consistent,
    latest,
    meta,
)

HF_TOKEN = "hf_" + "Qx7" * 12


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    with FakeLangfuse() as server:
        use_langfuse(monkeypatch, server.url)
        yield server


def _call(session: Session, **kwargs: Any) -> Any:
    return llm.complete_sync(
        session,
        kind=kwargs.pop("kind", "main"),
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "hello"}],
        mock_response="hi",
        **kwargs,
    )


def _rows(sink: InMemorySink) -> list[dict[str, Any]]:
    return [e.to_row() for e in sink.events]


def _attr(span: dict[str, Any], key: str) -> Any:
    raw = span["attributes"].get(key)
    return json.loads(raw) if isinstance(raw, str) and raw[:1] in '{["0123456789' else raw


@pytest.mark.parametrize("prompt_as", ["client", "mapping"])
def test_litellm_metadata_keys_reach_the_wire(
    prompt_as: str, fake: FakeLangfuse, tmp_path: Path
) -> None:
    from langfuse.api import Prompt_Text
    from langfuse.model import TextPromptClient

    prompt: Any = {"name": "summary-prompt", "version": 4}
    if prompt_as == "client":
        prompt = TextPromptClient(
            Prompt_Text(
                name="summary-prompt", version=4, prompt="Sum {{x}}", config={}, labels=[], tags=[]
            )
        )
    obs, sink = forwarding(tmp_path)
    session = Session(user_id="u1", observability=obs)
    telemetry.record_turn_start(session, user_message="hi")
    _call(
        session,
        metadata={
            "tags": ["team-a", "exp-7"],
            "trace_name": "nightly-eval",
            "generation_name": "summarise",
            "trace_metadata": {"customer": "acme", "run": 3},
            "version": "v2",
            "prompt": prompt,
            "request_id": "r-123",
            "note": f"token {HF_TOKEN}",
        },
    )
    _call(session, kind="research", metadata={"tags": ["team-b"]})
    telemetry.record_turn_complete(session, final_reply="ok", duration_ms=5, steps=1, llm_calls=2)
    obs.shutdown(10)
    spans = fake.spans
    rows = _rows(sink)
    by_id = latest(spans)
    assert_ids_resolve(rows, spans, fake.scores)
    assert_children_within_parents(spans)
    trace_id = rows[0]["langfuse_trace_id"]
    assert_trace_attributes_consistent(
        rows, spans, extra_tags={trace_id: {"team-a", "exp-7", "team-b"}}
    )
    (gen,) = [s for s in spans if s["name"] == "summarise"]  # the caller's generation name
    a = gen["attributes"]
    assert meta(gen, "kind") == "main"  # the kind stays findable by tag and metadata
    assert a["langfuse.version"] == "v2"
    assert a["langfuse.observation.prompt.name"] == "summary-prompt"
    assert a["langfuse.observation.prompt.version"] == 4
    assert meta(gen, "request_id") == "r-123"
    assert meta(gen, "note") == "token [REDACTED:hf_token]"  # other keys: through redaction
    for steering in ("tags", "trace_name", "generation_name", "prompt", "trace_metadata"):
        assert f"langfuse.observation.metadata.{steering}" not in a
    assert "langfuse.trace.tags" not in a  # written once, on the turn
    (turn,) = [s for s in by_id.values() if s["name"] == "turn"]
    t = turn["attributes"]
    assert t["langfuse.trace.name"] == "nightly-eval"
    assert sorted(t["langfuse.trace.tags"]) == ["exp-7", "main", "research", "team-a", "team-b"]
    assert json.loads(t["langfuse.trace.metadata.customer"]) == "acme"
    assert json.loads(t["langfuse.trace.metadata.run"]) == 3
    assert json.loads(t["langfuse.trace.metadata.turn_index"]) == 0
    assert t["langfuse.version"] == "v2"
    assert HF_TOKEN.encode() not in b"".join(r.body for r in fake.requests)


def test_caller_content_follows_the_redaction_policy(fake: FakeLangfuse, tmp_path: Path) -> None:
    obs, _ = forwarding(tmp_path, redact="preset=metadata-only")
    session = Session(user_id="u1", observability=obs)
    telemetry.record_turn_start(session, user_message="hi")
    _call(
        session,
        metadata={
            "tags": ["team-a"],
            "trace_name": "nightly-eval",
            "trace_metadata": {"customer": "ACME-CONFIDENTIAL"},
            "ticket_text": "CONFIDENTIAL-TICKET-BODY",
        },
    )
    telemetry.record_turn_complete(session, final_reply="ok", duration_ms=5, steps=1, llm_calls=1)
    obs.shutdown(10)
    wire = b"".join(r.body for r in fake.requests)
    spans = fake.spans
    assert b"CONFIDENTIAL" not in wire and spans
    (turn,) = [s for s in latest(spans).values() if s["name"] == "turn"]
    # Names and labels steer where things are filed: they stay (secret-scrubbed).
    assert turn["attributes"]["langfuse.trace.name"] == "nightly-eval"
    assert "team-a" in turn["attributes"]["langfuse.trace.tags"]


def _otel_span(scope: str = "my-app", **attributes: Any):
    tracer = TracerProvider().get_tracer(scope)  # private: never the global provider
    return tracer.start_as_current_span("app.request", attributes=attributes or None)


def _agent_turn(obs: Observability, session: Session, task: str) -> str:
    async def go() -> str:
        agent = Agent(session, obs.config)
        try:
            return await agent.run_turn(task)
        finally:
            agent.close()
            await obs.adrain()

    return asyncio.run(go())


def test_a_turn_nests_under_the_callers_opentelemetry_span(
    fake: FakeLangfuse, tmp_path: Path
) -> None:
    obs, sink = forwarding(tmp_path)
    session = Session(user_id="u1", observability=obs)
    with _otel_span() as app:
        _agent_turn(obs, session, "Count the words in this request.")
        app_trace = f"{app.get_span_context().trace_id:032x}"
        app_span = f"{app.get_span_context().span_id:016x}"
    obs.shutdown(10)
    spans, rows = fake.spans, _rows(sink)
    # The caller's trace id wins, and the HF rows carry it.
    assert {r["langfuse_trace_id"] for r in rows if r["langfuse_trace_id"]} == {app_trace}
    assert {s["trace_id"] for s in spans} == {app_trace}
    (turn,) = [s for s in latest(spans).values() if s["name"] == "turn"]
    assert turn["parent_span_id"] == app_span
    # A plain OpenTelemetry caller writes no LangFuse trace attributes: ours go on the turn,
    # which is the top of what LangFuse receives.
    assert turn["attributes"]["langfuse.trace.name"] == "ml-intern turn"
    assert turn["attributes"][APP_ROOT] is True
    assert_ids_resolve(rows, spans, fake.scores)
    assert_trace_attributes_consistent(rows, spans)
    assert_children_within_parents(spans, external_parents={app_span})


def test_nesting_can_be_turned_off(fake: FakeLangfuse, tmp_path: Path) -> None:
    obs, sink = forwarding(tmp_path, langfuse_nest_in_caller_trace=False)
    session = Session(user_id="u1", observability=obs)
    with _otel_span() as app:
        _agent_turn(obs, session, "Count the words in this request.")
        app_trace = f"{app.get_span_context().trace_id:032x}"
    obs.shutdown(10)
    (turn,) = [s for s in latest(fake.spans).values() if s["name"] == "turn"]
    assert turn["trace_id"] != app_trace and turn["parent_span_id"] is None
    assert app_trace not in {r["langfuse_trace_id"] for r in _rows(sink)}


def test_under_a_langfuse_observation_the_callers_trace_attributes_are_left_alone(
    fake: FakeLangfuse, tmp_path: Path
) -> None:
    obs, sink = forwarding(tmp_path)
    session = Session(user_id="u1", observability=obs)
    # What `@observe` / `start_as_current_observation` leave in the OpenTelemetry context: a
    # span of the langfuse SDK's tracer.
    with _otel_span("langfuse-sdk", **{"langfuse.observation.type": "span"}) as app:
        _agent_turn(obs, session, "Count the words in this request.")
        app_span = f"{app.get_span_context().span_id:016x}"
        app_trace = f"{app.get_span_context().trace_id:032x}"
    obs.shutdown(10)
    spans, rows = fake.spans, _rows(sink)
    assert {s["trace_id"] for s in spans} == {app_trace}
    for span in spans:
        a = span["attributes"]
        assert not any(k.startswith("langfuse.trace.") for k in a), span["name"]
        assert "user.id" not in a and "session.id" not in a
        assert not a.get(APP_ROOT), span["name"]  # the caller's own root stays the only one
    (turn,) = [s for s in latest(spans).values() if s["name"] == "turn"]
    assert turn["parent_span_id"] == app_span
    assert_ids_resolve(rows, spans, fake.scores)
    assert_children_within_parents(spans, external_parents={app_span})


def test_a_call_outside_any_turn_nests_directly_under_the_callers_span(
    fake: FakeLangfuse, tmp_path: Path
) -> None:
    obs, sink = forwarding(tmp_path)
    session = Session(user_id="u1", observability=obs)
    with _otel_span() as app:
        _call(session)
        app_trace = f"{app.get_span_context().trace_id:032x}"
        app_span = f"{app.get_span_context().span_id:016x}"
    obs.shutdown(10)
    (row,) = sink.of_type("llm_call")
    (gen,) = [s for s in fake.spans if s["name"] == "llm.main"]
    assert (row.langfuse_trace_id, row.langfuse_observation_id) == (gen["trace_id"], gen["span_id"])
    assert gen["trace_id"] == app_trace and gen["parent_span_id"] == app_span
    assert not gen["attributes"].get(APP_ROOT)


@pytest.mark.parametrize(
    ("given_trace", "given_parent"),
    [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
        ("0AF76519-16CD-43DD-8448-EB211C80319C", None),  # a UUID, no parent
        ("my-app-request-42", "my-step-7"),  # not hex: hashed, as litellm's callback does
    ],
    ids=["hex", "uuid-no-parent", "free-form"],
)
def test_existing_trace_id_files_the_generation_in_the_callers_trace(
    given_trace: str, given_parent: str | None, fake: FakeLangfuse, tmp_path: Path
) -> None:
    obs, sink = forwarding(tmp_path)
    session = Session(user_id="u1", observability=obs)
    telemetry.record_turn_start(session, user_message="hi")
    md = {"existing_trace_id": given_trace, "tags": ["not-for-their-trace"]}
    if given_parent:
        md["parent_observation_id"] = given_parent
    _call(session, metadata=md)
    telemetry.record_turn_complete(session, final_reply="ok", duration_ms=5, steps=1, llm_calls=1)
    obs.shutdown(10)
    (row,) = sink.of_type("llm_call")
    (gen,) = [s for s in fake.spans if s["name"] == "llm.main"]
    assert len(row.langfuse_trace_id) == 32 and int(row.langfuse_trace_id, 16) >= 0
    if given_trace.startswith("0"):
        assert row.langfuse_trace_id == given_trace.lower().replace("-", "")
    assert (gen["trace_id"], gen["span_id"]) == (row.langfuse_trace_id, row.langfuse_observation_id)
    if given_parent is None:
        assert gen["parent_span_id"] is None
    elif given_parent.isalnum():
        assert gen["parent_span_id"] == given_parent
    else:
        assert gen["parent_span_id"] and len(gen["parent_span_id"]) == 16
    a = gen["attributes"]
    # The trace is the caller's: none of its attributes are overwritten, and we add no root.
    assert not any(k.startswith("langfuse.trace.") for k in a)
    assert "user.id" not in a and not a.get(APP_ROOT)
    # The turn itself still arrives on the session's own trace, without this call's kind.
    (turn,) = [s for s in latest(fake.spans).values() if s["name"] == "turn"]
    assert turn["trace_id"] != row.langfuse_trace_id
    assert "main" not in turn["attributes"].get("langfuse.trace.tags", [])
