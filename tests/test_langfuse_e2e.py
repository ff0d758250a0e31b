"""End to end: `ml-intern demo` as a subprocess against a fake LangFuse on loopback (real
sockets), and against hosts that are missing, dead or silent."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from agent.testing.fake_langfuse import FakeLangfuse, closed_port
from tests.cli_helpers import run_process
from tests.langfuse_helpers import fresh_keys, langfuse_env
from tests.rows import read_rows

KINDS = {"main", "research", "compaction", "effort_probe", "restore"}


def demo(
    telemetry: Path, env: dict[str, str], *extra: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    args = ("demo", "--telemetry-dir", str(telemetry), "--user-id", "e2e-user", *extra)
    proc = run_process(*args, env=env, timeout=timeout)
    return proc, time.monotonic() - started


def rows(telemetry: Path) -> list[dict]:
    return read_rows(telemetry)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> float:
    """The demo's own duration with forwarding off, to compare the faulty runs against."""
    proc, elapsed = demo(tmp_path_factory.mktemp("base") / "t", {})
    assert proc.returncode == 0, proc.stderr
    return elapsed


def test_demo_sends_one_trace_per_turn_and_every_row_joins(tmp_path: Path) -> None:
    with FakeLangfuse() as fake:
        proc, _ = demo(tmp_path / "t", langfuse_env(fake.url, secret="SECRET"))
        assert proc.returncode == 0, proc.stderr
        spans = fake.spans
        scores = fake.scores
        requests = fake.requests
    data = rows(tmp_path / "t")
    turns = [s for s in spans if s["name"] == "turn"]
    turn_rows = [r for r in data if r["event_type"] == "turn_start"]
    assert len(turns) == len(turn_rows) == 3
    assert len({t["trace_id"] for t in turns}) == 3  # one trace per turn
    gens = [s for s in spans if s["name"].startswith("llm.")]
    assert {g["name"].removeprefix("llm.") for g in gens} == KINDS
    tags = {t["trace_id"]: t["attributes"]["langfuse.trace.tags"] for t in turns}
    for g in gens:
        a = g["attributes"]
        kind = g["name"].removeprefix("llm.")
        assert kind in tags[g["trace_id"]]  # findable by tag (on the trace) and by name
        assert json.loads(a["langfuse.observation.metadata.kind"]) == kind
        assert a["user.id"] == "e2e-user"
        assert a["session.id"]
    arrived = {s["trace_id"] for s in spans}
    by_span = {s["span_id"]: s for s in gens}
    llm_rows = [r for r in data if r["event_type"] in ("llm_call", "llm_call_error")]
    assert llm_rows
    for r in llm_rows:
        assert r["langfuse_trace_id"] in arrived
        gen = by_span[r["langfuse_observation_id"]]
        assert gen["trace_id"] == r["langfuse_trace_id"]
        assert (
            json.loads(gen["attributes"]["langfuse.observation.metadata.hf_event_id"])
            == r["event_id"]
        )
    assert len(scores) == 1 and scores[0]["traceId"] in arrived
    # Trace URLs are printed; the secret key is printed nowhere.
    assert proc.stdout.count("trace: ") == 3
    assert "SECRET" not in proc.stdout + proc.stderr
    assert all(r.path.startswith("/api/public/") for r in requests)


def test_events_show_lists_a_traces_rows(tmp_path: Path) -> None:
    with FakeLangfuse() as fake:
        proc, _ = demo(tmp_path / "t", langfuse_env(fake.url, secret="SECRET"))
        assert proc.returncode == 0, proc.stderr
    trace_id = next(
        r["langfuse_trace_id"] for r in rows(tmp_path / "t") if r["event_type"] == "llm_call"
    )
    where = ("--telemetry-dir", str(tmp_path / "t"))
    show = run_process("events", "show", "--trace-id", trace_id, *where, "--json", timeout=60)
    assert show.returncode == 0, show.stderr
    listed = json.loads(show.stdout)
    assert listed and all(r["langfuse_trace_id"] == trace_id for r in listed)
    assert {"turn_start", "turn_complete", "llm_call"} <= {r["event_type"] for r in listed}


def test_keys_without_host_send_nothing_anywhere(tmp_path: Path) -> None:
    # The child process runs with a socket guard that records every connection it attempts.
    guard = tmp_path / "sitecustomize.py"
    log = tmp_path / "connections.log"
    guard.write_text(
        "import socket\n"
        "_real = socket.socket.connect\n"
        f"_log = {str(log)!r}\n"
        "def connect(self, addr):\n"
        "    open(_log, 'a').write(repr(addr) + '\\n')\n"
        "    return _real(self, addr)\n"
        "socket.socket.connect = connect\n"
    )
    pk, sk = fresh_keys("SECRET")
    env = {
        "LANGFUSE_PUBLIC_KEY": pk,
        "LANGFUSE_SECRET_KEY": sk,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    proc, _ = demo(tmp_path / "t", env)
    assert proc.returncode == 0, proc.stderr
    assert "LANGFUSE_HOST" in proc.stderr
    assert not log.exists() or log.read_text() == "", log.read_text()
    assert all(r["langfuse_trace_id"] is None for r in rows(tmp_path / "t"))


@pytest.mark.parametrize("mode", ["dead", "silent"])
def test_demo_exits_within_its_time_plus_the_flush_bound(
    tmp_path: Path, baseline: float, mode: str
) -> None:
    flush_bound = 2.0
    if mode == "dead":
        host = f"http://127.0.0.1:{closed_port()}"
        proc, elapsed = demo(
            tmp_path / "t",
            langfuse_env(host, secret="SECRET"),
            "--flush-timeout",
            str(flush_bound),
        )
    else:
        with FakeLangfuse(mode="hang") as fake:
            proc, elapsed = demo(
                tmp_path / "t",
                langfuse_env(fake.url, secret="SECRET"),
                "--flush-timeout",
                str(flush_bound),
            )
    assert proc.returncode == 0, proc.stderr
    # The run's own time (noisy: allow 2x the baseline and a few seconds) plus the flush bound.
    assert elapsed <= baseline * 2 + flush_bound + 5, (elapsed, baseline)
    assert "dropped" in proc.stderr
    llm_rows = [r for r in rows(tmp_path / "t") if r["event_type"] == "llm_call"]
    assert llm_rows and all(r["langfuse_trace_id"] for r in llm_rows)  # the local dataset is whole


def test_backend_none_sends_nothing_even_with_every_variable_set(tmp_path: Path) -> None:
    with FakeLangfuse() as fake:
        proc, _ = demo(
            tmp_path / "t",
            langfuse_env(fake.url, secret="SECRET"),
            "--observability-backend",
            "none",
        )
        assert proc.returncode == 0, proc.stderr
        assert fake.requests == []
    assert all(r["langfuse_trace_id"] is None for r in rows(tmp_path / "t"))
