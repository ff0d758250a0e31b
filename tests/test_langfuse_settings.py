"""Exporter settings at the wire: batch size and flush interval (defaults as before), and a
traces endpoint override that routes spans through another OTLP receiver (a local
OpenTelemetry Collector) while scores still go to the LangFuse host."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.core import llm, telemetry
from agent.core.observability import Observability
from agent.core.session import Session
from agent.main import main
from agent.testing.fake_langfuse import OTLP_PATH, SCORES_PATH, FakeLangfuse
from agent.testing.otlp import decode_otlp
from tests.langfuse_helpers import forwarding, use_langfuse


def _calls(obs: Observability, n: int) -> Session:
    session = Session(user_id="u", observability=obs)
    for i in range(n):
        llm.complete_sync(
            session,
            kind="main",
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": f"m{i}"}],
            mock_response="ok",
        )
    return session


def test_defaults_are_unchanged() -> None:
    config = AgentConfig()
    assert config.langfuse_flush_at == 64 and config.langfuse_flush_interval_s == 1.0
    assert config.langfuse_traces_endpoint is None
    assert config.langfuse_trace_name == "ml-intern turn"
    assert config.langfuse_nest_in_caller_trace is True


def test_batch_size_from_the_sdks_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGFUSE_FLUSH_AT", "2")
    with FakeLangfuse() as fake:
        use_langfuse(monkeypatch, fake.url)
        obs, _ = forwarding(tmp_path)
        _calls(obs, 5)
        obs.shutdown(10)
        posts = fake.otlp_requests
        spans = fake.spans
    assert len([s for s in spans if s["name"] == "llm.main"]) == 5
    sizes = [len(decode_otlp(r.body, r.headers.get("content-encoding"))) for r in posts]
    assert len(sizes) >= 3 and max(sizes) <= 2, sizes


def test_flush_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeLangfuse() as fake:
        use_langfuse(monkeypatch, fake.url)
        slow, _ = forwarding(tmp_path, langfuse_flush_interval_s=30.0)
        _calls(slow, 2)
        assert not fake.wait_for_spans(1, timeout=0.6)  # held for the interval ...
        assert slow.flush(5) and fake.wait_for_spans(2, timeout=2)  # ... or until a flush
        slow.shutdown(5)
    with FakeLangfuse() as fake:
        use_langfuse(monkeypatch, fake.url)
        quick, _ = forwarding(tmp_path, langfuse_flush_interval_s=0.1)
        _calls(quick, 2)
        started = time.monotonic()
        assert fake.wait_for_spans(2, timeout=5)  # no flush: the interval alone sends them
        assert time.monotonic() - started < 5
        quick.shutdown(5)


def test_traces_endpoint_override_routes_spans_through_a_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeLangfuse() as langfuse, FakeLangfuse() as collector:
        use_langfuse(monkeypatch, langfuse.url)
        monkeypatch.setenv("ML_INTERN_OTLP_TRACES_ENDPOINT", collector.url + OTLP_PATH)
        obs, _ = forwarding(tmp_path)
        session = _calls(obs, 1)
        telemetry.record_feedback(session, value=1.0)
        obs.shutdown(10)
        at_langfuse: list[Any] = langfuse.requests
        at_collector = collector.requests
        collector_spans = collector.spans
    assert [s["name"] for s in collector_spans].count("llm.main") == 1
    assert all(r.path != OTLP_PATH for r in at_langfuse)  # no span went to the host directly
    assert [r.path for r in at_langfuse] == [SCORES_PATH]  # scores are LangFuse's API
    assert all(r.path == OTLP_PATH for r in at_collector)
    # The collector gets LangFuse's headers, to forward or to replace with its own.
    assert at_collector[0].headers["authorization"].startswith("Basic ")


def test_check_shows_the_overridden_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_langfuse(monkeypatch, "https://langfuse.example.test")
    monkeypatch.setenv("ML_INTERN_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    assert main(["observability", "check", "--json", "--telemetry-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["destination"]["otlp_endpoint"] == "http://127.0.0.1:4318/v1/traces"
    assert out["destination"]["trace_name"] == "ml-intern turn"


def test_a_bad_endpoint_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.config import ConfigError

    with pytest.raises(ConfigError, match="langfuse_traces_endpoint"):
        AgentConfig.load(langfuse_traces_endpoint="localhost:4318")
