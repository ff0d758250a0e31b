"""Every way the LangFuse host can fail, on loopback: turns complete, nothing blocks the agent,
drops are counted, shutdown stays within its bound, and the secret key is never logged.

Bounds here are deliberately generous (they catch blocking, not slowness): speed is measured by
the benchmarks under bench/.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import string
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.core import llm
from agent.core.agent_loop import Agent
from agent.core.observability import Observability
from agent.core.session import InMemorySink, Session
from agent.testing.fake_langfuse import FakeLangfuse, Reply, closed_port
from tests.langfuse_helpers import forwarding, use_langfuse

FLUSH_BOUND = 2.0
SLACK = 2.0


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    return use_langfuse(monkeypatch, None, secret="TOPSECRET")[1]


def setup(
    host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config
) -> tuple[Observability, InMemorySink]:
    monkeypatch.setenv("LANGFUSE_HOST", host)
    return forwarding(tmp_path, **{"flush_timeout_s": FLUSH_BOUND, **config})


def run_turns(obs: Observability, n: int = 1) -> tuple[list[str], float]:
    async def go() -> list[str]:
        session = Session(user_id="u", observability=obs)
        agent = Agent(session, obs.config)
        try:
            return [await agent.run_turn(f"Count the words in request {i}.") for i in range(n)]
        finally:
            agent.close()
            await obs.adrain()

    started = time.monotonic()
    replies = asyncio.run(go())
    return replies, time.monotonic() - started


def shutdown_within_bound(obs: Observability) -> dict:
    started = time.monotonic()
    report = obs.shutdown()
    elapsed = time.monotonic() - started
    assert elapsed <= FLUSH_BOUND + SLACK, f"shutdown took {elapsed:.2f}s"
    return report["langfuse"]


def no_secret_in_logs(caplog: pytest.LogCaptureFixture, secret: str) -> None:
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert secret not in str(record.args)
        if record.exc_info:
            assert secret not in logging.Formatter().formatException(record.exc_info)


@pytest.mark.parametrize("mode", ["refused", "hang", "slow", "nonhttp", "reset"])
def test_unreachable_or_broken_host_never_blocks_the_agent(
    mode: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    if mode == "refused":
        obs, sink = setup(f"http://127.0.0.1:{closed_port()}", tmp_path, monkeypatch)
        fake = None
    else:
        fake = FakeLangfuse(mode=mode, delay=10.0).start()
        obs, sink = setup(fake.url, tmp_path, monkeypatch)
    try:
        replies, elapsed = run_turns(obs, 2)
        assert all(r.startswith("Done.") for r in replies)
        assert elapsed < 30, "the agent was blocked by the LangFuse host"
        lf = shutdown_within_bound(obs)
    finally:
        if fake:
            fake.stop()
    assert lf["completed_in_time"] is False or lf["exporter"]["dropped_spans"] > 0 or mode == "slow"
    dropped = sum(lf["dropped"].values()) + lf["exporter"]["dropped_spans"]
    assert dropped > 0, lf  # what did not leave is counted
    assert len(sink.of_type("llm_call")) >= 2  # the local dataset is whole
    no_secret_in_logs(caplog, secret)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_warns_once_naming_the_keys_without_retry_storm(
    status: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with FakeLangfuse() as fake:
        fake.script([Reply(status=status, path="/api/public/otel")] * 50)
        obs, _ = setup(fake.url, tmp_path, monkeypatch)
        run_turns(obs, 2)
        lf = shutdown_within_bound(obs)
        otlp = fake.otlp_requests
    assert lf["exporter"]["dropped_by_reason"].get("auth", 0) > 0
    assert lf["exporter"]["retries"] == 0
    assert len(otlp) == lf["exporter"]["requests"]  # one request per batch, never retried
    warnings = [r.getMessage() for r in caplog.records if "LANGFUSE_PUBLIC_KEY" in r.getMessage()]
    assert len(warnings) == 1 and "LANGFUSE_SECRET_KEY" in warnings[0]
    no_secret_in_logs(caplog, secret)


def test_429_with_retry_after_is_honoured_then_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    with FakeLangfuse() as fake:
        fake.script([Reply(status=429, headers={"Retry-After": "1"}, path="/api/public/otel")])
        obs, _ = setup(fake.url, tmp_path, monkeypatch, flush_timeout_s=8.0)
        run_turns(obs, 1)
        report = obs.shutdown(8.0)["langfuse"]
        reqs = fake.otlp_requests
        spans = fake.spans
    assert reqs[0].status == 429
    assert reqs[1].received_at - reqs[0].received_at >= 0.95
    assert report["exporter"]["dropped_spans"] == 0
    assert any(s["name"] == "llm.main" for s in spans)


def test_5xx_then_recovery_delivers_every_span_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    with FakeLangfuse() as fake:
        fake.script(
            [Reply(status=500, path="/api/public/otel"), Reply(status=503, path="/api/public/otel")]
        )
        obs, sink = setup(fake.url, tmp_path, monkeypatch, flush_timeout_s=10.0)
        run_turns(obs, 2)
        report = obs.shutdown(10.0)["langfuse"]
        spans = fake.spans
    ids = Counter(s["span_id"] for s in spans)
    assert ids and max(ids.values()) == 1, "a span was delivered twice"
    assert report["exporter"]["retries"] >= 2 and report["exporter"]["dropped_spans"] == 0
    rows = sink.of_type("llm_call")
    assert {r.langfuse_observation_id for r in rows} <= set(ids)


def test_413_splits_the_batch_and_counts_what_is_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    rnd = random.Random(7)
    huge = "".join(rnd.choice(string.ascii_letters) for _ in range(60_000))  # does not compress
    with FakeLangfuse() as fake:
        fake.max_body_bytes = 20_000
        obs, sink = setup(fake.url, tmp_path, monkeypatch, flush_timeout_s=8.0)
        session = Session(user_id="u", observability=obs)
        for text in ("small one", huge, "small two"):
            llm.complete_sync(
                session,
                kind="main",
                model="openai/gpt-4o-mini",
                messages=[{"role": "user", "content": text}],
                mock_response="ok",
            )
        report = obs.shutdown(8.0)["langfuse"]
        spans = fake.spans
    rows = sink.of_type("llm_call")
    arrived = {s["span_id"] for s in spans}
    assert rows[0].langfuse_observation_id in arrived and rows[2].langfuse_observation_id in arrived
    assert rows[1].langfuse_observation_id not in arrived
    assert report["exporter"]["dropped_by_reason"].get("too_large") == 1


def test_garbage_success_bodies_are_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    with FakeLangfuse(mode="garbage") as fake:
        obs, _ = setup(fake.url, tmp_path, monkeypatch)
        replies, _ = run_turns(obs, 1)
        lf = shutdown_within_bound(obs)
    assert replies[0].startswith("Done.")
    assert lf["exporter"]["exported_spans"] > 0 and lf["exporter"]["dropped_spans"] == 0


def test_dns_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    real = socket.getaddrinfo

    def no_such_host(host, *args, **kwargs):
        if host == "langfuse.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    obs, sink = setup("https://langfuse.invalid", tmp_path, monkeypatch)
    replies, _ = run_turns(obs, 1)
    lf = shutdown_within_bound(obs)
    assert replies[0].startswith("Done.")
    assert lf["exporter"]["dropped_spans"] > 0 or sum(lf["dropped"].values()) > 0
    assert sink.of_type("llm_call")


def test_queue_is_bounded_and_drops_are_counted_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with FakeLangfuse(mode="hang") as fake:
        obs, sink = setup(fake.url, tmp_path, monkeypatch, langfuse_queue_size=20)
        # Stall the worker so the queue fills: every item waits on a hung export.
        session = Session(user_id="u", observability=obs)
        for i in range(300):
            llm.complete_sync(
                session,
                kind="main",
                model="openai/gpt-4o-mini",
                messages=[{"role": "user", "content": f"m{i}"}],
                mock_response="ok",
            )
        assert obs.langfuse.stats()["queued"] <= 20
        report = obs.shutdown()["langfuse"]
    total = sum(report["dropped"].values()) + report["exporter"]["dropped_spans"]
    assert total > 0
    assert any("dropped" in r.getMessage() for r in caplog.records)
    assert len(sink.of_type("llm_call")) == 300  # the HF dataset lost nothing


def test_sampling_keeps_or_drops_whole_turns_and_rows_say_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("LANGFUSE_SAMPLE_RATE", "0.5")
    with FakeLangfuse() as fake:
        obs, sink = setup(fake.url, tmp_path, monkeypatch)
        run_turns(obs, 12)
        obs.shutdown(5)
        spans = fake.spans
    kept = {r.langfuse_trace_id for r in sink.events if r.langfuse_sampled}
    dropped = [r for r in sink.events if r.langfuse_sampled is False]
    # 12 turns at 50%: both happen (deterministic trace ids per session)
    assert kept and {r.turn_index for r in dropped if r.event_type == "turn_start"}
    # A row of a turn sampling left out names nothing: no LangFuse object exists for it.
    assert all(r.langfuse_trace_id is None and r.langfuse_observation_id is None for r in dropped)
    arrived = {s["trace_id"] for s in spans}
    assert arrived == kept
    for trace_id in kept:  # whole: the turn span and its generations
        names = {s["name"] for s in spans if s["trace_id"] == trace_id}
        assert "turn" in names and "llm.main" in names


def test_setup_is_idempotent_one_forwarder_registered_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    import litellm

    from agent.core.forwarding.logger import LangfuseForwardingLogger

    with FakeLangfuse() as fake:
        obs1, _ = setup(fake.url, tmp_path, monkeypatch)
        obs2, _ = setup(fake.url, tmp_path, monkeypatch)
        ours = [c for c in litellm.callbacks if isinstance(c, LangfuseForwardingLogger)]
        assert len(ours) == 1 and obs1.langfuse is obs2.langfuse
        assert "langfuse" not in litellm.callbacks and "langfuse_otel" not in litellm.callbacks
        obs1.shutdown(2)
        assert [c for c in litellm.callbacks if isinstance(c, LangfuseForwardingLogger)] == ours
        obs2.shutdown(2)
        assert not [c for c in litellm.callbacks if isinstance(c, LangfuseForwardingLogger)]


def test_secret_key_never_in_cli_output(tmp_path: Path, secret: str) -> None:
    import subprocess
    import sys

    env = {**os.environ, "LANGFUSE_HOST": "http://langfuse.internal.example"}
    for args in (
        ["observability", "check"],
        ["observability", "check", "--json"],
        ["observability", "check", "--observability-backend", "langfuse"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "agent.main", *args, "--telemetry-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert secret not in proc.stdout + proc.stderr
        assert "clear text" in proc.stdout + proc.stderr


def test_environment_and_release_reach_the_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("LANGFUSE_TRACING_ENVIRONMENT", "staging")
    monkeypatch.setenv("LANGFUSE_RELEASE", "v1.2.3")
    with FakeLangfuse() as fake:
        obs, _ = setup(fake.url, tmp_path, monkeypatch)
        run_turns(obs, 1)
        obs.shutdown(5)
        spans = fake.spans
    assert spans
    for span in spans:
        assert span["attributes"].get("langfuse.environment") == "staging"
        assert span["attributes"].get("langfuse.release") == "v1.2.3"


def test_shutdown_called_inside_the_event_loop_still_delivers_the_last_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    # The README's public-API pattern: obs.shutdown() from inside `async def main()`, right
    # after the last call, while litellm's callbacks for it are still queued on this loop.
    with FakeLangfuse() as fake:
        obs, sink = setup(fake.url, tmp_path, monkeypatch)

        async def main() -> dict:
            session = Session(user_id="u1", observability=obs)
            for _ in range(3):
                await llm.complete(
                    session,
                    kind="main",
                    model="openai/gpt-4o-mini",
                    messages=[{"role": "user", "content": "hi"}],
                    mock_response="hi",
                )
            return obs.shutdown(timeout=5)

        report = asyncio.run(main())["langfuse"]
        spans = fake.spans
    assert report["generations"] == 3 and not report["dropped"]
    rows = sink.of_type("llm_call")
    assert {r.langfuse_observation_id for r in rows} <= {s["span_id"] for s in spans}
