"""A bad string costs at most itself.

A lone surrogate (``os.fsdecode(b"notes-\\xff.txt")``: a non-UTF-8 file name, as any sandbox
meets) cannot be encoded as UTF-8, so protobuf (OTLP) and JSON writers reject it. Among clean
sessions, a surrogate in message content, in a tool error, in a user id and in a session id must
lose nothing but the bad code points: at the wire of a loopback LangFuse and in the HF rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import uuid
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider

from agent.core import llm, telemetry
from agent.core.encodable import REPLACEMENT, encodable, id_bytes
from agent.core.forwarding import otlp
from agent.core.forwarding.linker import trace_id_for, turn_span_id
from agent.core.observability import Observability
from agent.core.records import ScoreRecord
from agent.core.session import Session
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import forwarding, langfuse_env
from tests.rows import read_rows

BAD = os.fsdecode(b"notes-\xff.txt")  # 'notes-\udcff.txt'
FIXED = "notes-" + REPLACEMENT + ".txt"


# -- the helpers --


def test_encodable_replaces_every_surrogate_in_values_and_keys() -> None:
    value = {"a": [BAD, ("x", BAD)], BAD: {"deep": [{"k": BAD}]}, "n": 1, "f": None}
    out, replaced = encodable(value)
    assert replaced == 4
    assert out == {"a": [FIXED, ("x", FIXED)], FIXED: {"deep": [{"k": FIXED}]}, "n": 1, "f": None}
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # encodes now
    assert value["a"][0] == BAD  # the input is not mutated


def test_encodable_returns_a_clean_value_untouched() -> None:
    value = {"text": "héllo wörld ✓ 🤖", "list": ["a", 1, 2.5, None, True]}
    out, replaced = encodable(value)
    assert out is value and replaced == 0


def test_encodable_walks_frozen_records() -> None:
    record = ScoreRecord(event_id="e", trace_id="t", name="n", value=1.0, comment=BAD, user_id=BAD)
    out, replaced = encodable(record)
    assert replaced == 2 and (out.comment, out.user_id) == (FIXED, FIXED)
    assert dataclasses.replace(record) == record


def test_ids_hash_like_the_sdk_and_never_raise() -> None:
    from langfuse import Langfuse

    for session_id in ("s-1", "0f3a" * 8, "héllo ✓ 🤖"):
        assert trace_id_for(session_id, 3) == Langfuse.create_trace_id(seed=f"{session_id}:3")
        assert id_bytes(session_id) == session_id.encode("utf-8")
    # A surrogate: the SDK raises; we do not, and two ids that differ only there stay apart.
    other = os.fsdecode(b"notes-\xfe.txt")
    with pytest.raises(UnicodeEncodeError):
        Langfuse.create_trace_id(seed=f"{BAD}:0")
    assert len(trace_id_for(BAD, 0)) == 32 and trace_id_for(BAD, 0) != trace_id_for(other, 0)
    assert len(turn_span_id(BAD, 0)) == 16


# -- the exporter: one bad span never costs its batch --


def test_exporter_drops_only_the_span_it_cannot_encode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    tracer = TracerProvider().get_tracer("t")
    batch = []
    for i in range(5):
        span = tracer.start_span(f"s{i}", attributes={"v": BAD if i == 2 else f"ok {i}"})
        span.end()
        batch.append(span)
    with FakeLangfuse() as fake:
        keys = SimpleNamespace(host=fake.url, public_key="pk-lf-x", secret_key="sk-lf-x")
        exporter = otlp.for_langfuse(keys, timeout=3.0)
        try:
            exporter.export(batch)
            stats = exporter.stats()
        finally:
            exporter.shutdown(timeout_millis=100)
        arrived = sorted(s["name"] for s in fake.spans)
    assert arrived == ["s0", "s1", "s3", "s4"]
    assert stats["exported_spans"] == 4
    assert stats["dropped_by_reason"] == {"encode_error": 1}
    assert "1 of 5 span(s)" in caplog.text and "UnicodeEncodeError" in caplog.text


# -- end to end: surrogates among clean sessions --

CASES = ("clean-a", "content", "tool_error", "user_id", "session_id", "clean-b")


async def _session(obs: Observability, case: str) -> Session:
    session = Session(
        user_id=f"user-{BAD}" if case == "user_id" else "user-ok",
        session_id=f"sess-{BAD}" if case == "session_id" else f"sess-{case}-{uuid.uuid4().hex}",
        observability=obs,
    )
    text = f"please read {BAD}" if case == "content" else f"please read file of {case}"
    telemetry.record_turn_start(session, user_message=text)
    await llm.complete(
        session,
        kind="main",
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": text}],
        mock_response=f"reading {BAD}" if case == "content" else "reading",
    )
    failed = case == "tool_error"
    telemetry.record_tool_call(
        session,
        name="read_file",
        duration_ms=2.0,
        ok=not failed,
        arguments={"path": BAD if failed else "ok.txt"},
        result=f"No such file: {BAD}" if failed else "contents",
        error=f"FileNotFoundError: {BAD}" if failed else None,
    )
    telemetry.record_turn_complete(
        session, final_reply="done", duration_ms=5.0, steps=1, llm_calls=1
    )
    return session


@pytest.fixture(scope="module")
def surrogate_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    telemetry_dir = tmp_path_factory.mktemp("surrogates")
    with FakeLangfuse() as fake:
        obs, _ = forwarding(telemetry_dir, env=langfuse_env(fake.url))

        async def go() -> list[Session]:
            sessions = [await _session(obs, case) for case in CASES]
            await obs.adrain()
            return sessions

        sessions = asyncio.run(go())
        report = obs.shutdown(timeout=5)
        spans = fake.spans
    return {
        "sessions": dict(zip(CASES, sessions, strict=True)),
        "spans": spans,
        "report": report,
        "rows": read_rows(telemetry_dir),
    }


def test_every_span_of_every_session_arrives(surrogate_run: dict) -> None:
    spans = surrogate_run["spans"]
    lf = surrogate_run["report"]["langfuse"]
    assert lf["dropped"] == {} and lf["exporter"]["dropped_by_reason"] == {}
    for case, session in surrogate_run["sessions"].items():
        trace = trace_id_for(session.session_id, 0)
        names = sorted(s["name"] for s in spans if s["trace_id"] == trace)
        assert names == ["llm.main", "tool.read_file", "turn"], case
    assert len(spans) == 3 * len(CASES)


def test_only_the_bad_code_points_are_replaced_on_the_wire(surrogate_run: dict) -> None:
    spans = surrogate_run["spans"]
    by = {
        case: [s for s in spans if s["trace_id"] == trace_id_for(session.session_id, 0)]
        for case, session in surrogate_run["sessions"].items()
    }

    def attrs(case: str, name: str) -> dict:
        (span,) = [s for s in by[case] if s["name"] == name]
        return span["attributes"]

    gen = attrs("content", "llm.main")
    assert json.loads(gen["langfuse.observation.input"])[0]["content"] == f"please read {FIXED}"
    assert json.loads(gen["langfuse.observation.output"])["content"] == f"reading {FIXED}"
    redaction = json.loads(gen["langfuse.observation.metadata.redaction"])
    assert redaction["unencodable"] == 2
    tool = attrs("tool_error", "tool.read_file")
    assert json.loads(tool["langfuse.observation.input"]) == {"path": FIXED}
    assert tool["langfuse.observation.output"] == f"No such file: {FIXED}"
    assert tool["langfuse.observation.level"] == "ERROR"
    assert FIXED in tool["langfuse.observation.status_message"]
    assert attrs("user_id", "llm.main")["user.id"] == f"user-{FIXED}"
    assert attrs("session_id", "llm.main")["session.id"] == f"sess-{FIXED}"
    # Clean sessions carry no redaction note about it.
    clean = json.loads(attrs("clean-a", "llm.main")["langfuse.observation.metadata.redaction"])
    assert "unencodable" not in clean


def test_every_session_has_all_its_rows_with_their_trace_ids(surrogate_run: dict) -> None:
    rows = surrogate_run["rows"]
    for case, session in surrogate_run["sessions"].items():
        session_id = session.session_id.replace(BAD, FIXED)  # as the HF row holds it
        mine = [r for r in rows if r["session_id"] == session_id]
        assert sorted(r["event_type"] for r in mine) == [
            "llm_call",
            "tool_call",
            "turn_complete",
            "turn_start",
        ], case
        assert {r["langfuse_trace_id"] for r in mine} == {trace_id_for(session.session_id, 0)}


def test_rows_with_bad_ids_or_errors_are_written_with_the_replacement(surrogate_run: dict) -> None:
    rows = surrogate_run["rows"]
    tool_rows = [
        r for r in rows if r["event_type"] == "tool_call" and not r["data"].get("ok", True)
    ]
    assert len(tool_rows) == 1 and FIXED in tool_rows[0]["data"]["error"]
    assert len([r for r in rows if r["user_id"] == f"user-{FIXED}"]) == 4
    assert len([r for r in rows if r["session_id"] == f"sess-{FIXED}"]) == 4
