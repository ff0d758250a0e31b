"""Odd orders and partial turns, at the wire: a child that comes after its turn closed, a
turn whose turn_start never reached the forwarder, a turn cut short by shutdown, flushes in
the middle of a turn, sampled-out turns; and scores the server rejects or never answers."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from agent.core import llm, telemetry
from agent.core.session import InMemorySink, Session
from agent.testing.fake_langfuse import SCORES_PATH, FakeLangfuse, closed_port
from tests.langfuse_helpers import forwarding, use_langfuse
from tests.wire_checks import (
    assert_children_within_parents,
    assert_ids_resolve,
    assert_trace_attributes_consistent,
)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    with FakeLangfuse() as server:
        use_langfuse(monkeypatch, server.url)
        yield server


def _call(session: Session, kind: str = "main") -> None:
    llm.complete_sync(
        session,
        kind=kind,
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "hello"}],
        mock_response="hi",
    )


def _turn(session: Session, *, complete: bool = True) -> None:
    telemetry.record_turn_start(session, user_message="hi")
    _call(session)
    if complete:
        telemetry.record_turn_complete(
            session, final_reply="ok", duration_ms=3.0, steps=1, llm_calls=1
        )


def _check(fake: FakeLangfuse, sink: InMemorySink) -> list[dict[str, Any]]:
    rows = [e.to_row() for e in sink.events]
    spans = fake.spans
    assert_ids_resolve(rows, spans, fake.scores)
    assert_trace_attributes_consistent(rows, spans)
    assert_children_within_parents(spans)
    return spans


def test_a_child_after_the_turn_closed_reopens_it(fake: FakeLangfuse, tmp_path: Path) -> None:
    # The core's timers are tuned in this process: the core runs on a thread here.
    obs, sink = forwarding(tmp_path, langfuse_flush_interval_s=0.05, langfuse_forwarder="thread")
    obs.langfuse.engine.turns.grace_s = 0.05  # a short grace, so the turn closes on its own
    session = Session(user_id="u", observability=obs)
    _turn(session)
    obs.flush(5)
    assert fake.wait_for_spans(2, timeout=5)  # the generation and the turn
    first_turn = next(s for s in fake.spans if s["name"] == "turn")
    time.sleep(0.1)
    # Much later (an interactive session), the sandbox is torn down: it belongs to the turn.
    telemetry.record_sandbox_destroy(session, sandbox_id="sb-1", lifetime_s=9.0)
    report = obs.shutdown(10)["langfuse"]
    spans = _check(fake, sink)
    turns = [s for s in spans if s["name"] == "turn"]
    assert len(turns) == 2 and turns[0]["span_id"] == turns[1]["span_id"]  # sent again, wider
    assert turns[1]["end_time_ns"] > first_turn["end_time_ns"]
    assert report["traces"] == 1 and report["turns_resent"] == 1 and report["late_children"] == 1


def test_a_turn_whose_start_was_lost(
    fake: FakeLangfuse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    obs, sink = forwarding(tmp_path)
    forwarder = obs.langfuse
    real_export = forwarder.export
    monkeypatch.setattr(
        forwarder, "export", lambda e: None if e.event_type == "turn_start" else real_export(e)
    )
    session = Session(user_id="u", observability=obs)
    _turn(session)
    obs.shutdown(10)
    spans = _check(fake, sink)
    (turn,) = [s for s in spans if s["name"] == "turn"]
    assert turn["attributes"]["langfuse.trace.tags"] == ["main"]


def test_shutdown_mid_turn_closes_the_turn_as_cut_short(fake: FakeLangfuse, tmp_path: Path) -> None:
    obs, sink = forwarding(tmp_path)
    session = Session(user_id="u", observability=obs)
    _turn(session, complete=False)
    obs.shutdown(10)
    spans = _check(fake, sink)
    (turn,) = [s for s in spans if s["name"] == "turn"]
    assert turn["attributes"]["langfuse.observation.level"] == "WARNING"
    assert "mid-turn" in turn["attributes"]["langfuse.observation.status_message"]


def test_a_flush_mid_turn_leaves_the_turn_open(fake: FakeLangfuse, tmp_path: Path) -> None:
    obs, sink = forwarding(tmp_path)
    session = Session(user_id="u", observability=obs)
    _turn(session, complete=False)
    assert obs.flush(5)
    assert [s["name"] for s in fake.spans] == ["llm.main"]  # the turn is still running
    telemetry.record_turn_complete(session, final_reply="ok", duration_ms=3, steps=1, llm_calls=1)
    assert obs.flush(5)
    assert sorted(s["name"] for s in fake.spans) == ["llm.main", "turn"]
    obs.shutdown(5)
    _check(fake, sink)


def test_sampled_out_turns_leave_nothing_and_their_rows_name_nothing(
    fake: FakeLangfuse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGFUSE_SAMPLE_RATE", "0")
    obs, sink = forwarding(tmp_path)
    session = Session(user_id="u", observability=obs)
    _turn(session)
    telemetry.record_feedback(session, value=1.0)
    report = obs.shutdown(10)["langfuse"]
    assert fake.requests == []
    rows = [e.to_row() for e in sink.events]
    assert rows and all(r["langfuse_sampled"] is False for r in rows)
    assert all(
        r["langfuse_trace_id"] is None and r["langfuse_observation_id"] is None for r in rows
    )
    assert report["sampled_out_calls"] == 1 and report["sampled_out_events"] == 3


def test_rejected_scores_are_dropped_with_one_warning_naming_the_status(
    fake: FakeLangfuse, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fake.respond(400, times=2, path=SCORES_PATH)
    obs, _ = forwarding(tmp_path)
    session = Session(user_id="u", observability=obs)
    _turn(session)
    telemetry.record_feedback(session, value=1.0)
    telemetry.record_feedback(session, value=0.0)
    report = obs.shutdown(10)["langfuse"]
    assert report.get("scores", 0) == 0
    assert report["dropped"]["score_http_400"] == 2
    warnings = [r.getMessage() for r in caplog.records if "feedback score" in r.getMessage()]
    assert len(warnings) == 1 and "HTTP 400" in warnings[0]


def test_a_busy_server_is_retried_and_the_score_counted_once(
    fake: FakeLangfuse, tmp_path: Path
) -> None:
    fake.respond(503, path=SCORES_PATH)
    obs, _ = forwarding(tmp_path)
    session = Session(user_id="u", observability=obs)
    _turn(session)
    telemetry.record_feedback(session, value=1.0)
    report = obs.shutdown(10)["langfuse"]
    posts = [r for r in fake.requests if r.path == SCORES_PATH]
    assert [r.status for r in posts] == [503, 200]
    assert report["scores"] == 1 and not report["dropped"]
    assert len(fake.scores) == 1


def test_scores_to_a_dead_host_are_counted_as_dropped_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_langfuse(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    obs, _ = forwarding(tmp_path, flush_timeout_s=2.0)
    session = Session(user_id="u", observability=obs)
    _turn(session)
    telemetry.record_feedback(session, value=1.0)
    started = time.monotonic()
    report = obs.shutdown()["langfuse"]
    assert time.monotonic() - started < 2.0 + 2.0
    assert report.get("scores", 0) == 0
    dropped = report["dropped"]
    assert dropped.get("score_unreachable", 0) + dropped.get("score_not_sent_at_shutdown", 0) == 1


def test_a_call_long_before_the_turn_starts_stays_inside_it(
    fake: FakeLangfuse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.core.forwarding import turns

    # A restored session: the restore call comes first, the user's message much later (past
    # the idle close of a turn known from its calls only).
    monkeypatch.setattr(turns, "IMPLICIT_TURN_IDLE_S", 0.05)
    # (the constant is this process's: the core runs on a thread here)
    obs, sink = forwarding(tmp_path, langfuse_flush_interval_s=0.05, langfuse_forwarder="thread")
    session = Session(user_id="u", observability=obs)
    _call(session, kind="restore")
    assert fake.wait_for_spans(2, timeout=5)  # the call, and its turn closed on its own
    _turn(session)
    obs.shutdown(10)
    spans = _check(fake, sink)
    restore = next(s for s in spans if s["name"] == "llm.restore")
    turn = [s for s in spans if s["name"] == "turn"][-1]  # the last version sent wins
    assert restore["parent_span_id"] == turn["span_id"]
    assert turn["start_time_ns"] <= restore["start_time_ns"]
