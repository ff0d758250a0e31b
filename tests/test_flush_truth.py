"""flush() and shutdown() tell the truth.

litellm runs a sync call's callbacks on a thread pool of its own, after ``litellm.completion``
has returned; with a long history that takes a while. A short-lived program (``complete_sync``,
then ``shutdown()`` or just exit) must still deliver its last call, and when the bound is too
short to wait for litellm, the report must say what was lost and why, never ``dropped {}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger

from agent.core import llm, telemetry
from agent.core.observability import Observability
from agent.core.session import Session
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import forwarding, langfuse_env

ROOT = Path(__file__).resolve().parents[1]
RUNS = 20


def test_a_short_lived_sync_program_delivers_its_last_call_every_time(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "ML_INTERN_"))}
    with FakeLangfuse() as fake:
        # Both variants at once (two cores): shutdown() then exit, and exit alone (atexit).
        procs = {
            mode: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.short_lived_program",
                    fake.url,
                    mode,
                    str(RUNS),
                    str(tmp_path / mode),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for mode in ("shutdown", "atexit")
        }
        for mode, proc in procs.items():
            _, errors = proc.communicate(timeout=240)
            assert proc.returncode == 0, (mode, errors[-3000:])
        spans = fake.spans
    for mode in procs:
        delivered = sorted(
            int(s["attributes"]["session.id"].rsplit("-", 1)[1])
            for s in spans
            if s["name"] == "llm.main" and s["attributes"]["session.id"].startswith(f"short-{mode}")
        )
        assert delivered == list(range(RUNS)), (mode, delivered)
    for index in range(RUNS):
        report = json.loads((tmp_path / "shutdown" / f"report-{index}.json").read_text())
        assert report["dropped"] == {} and report["completed_in_time"] is True, report


class _SlowLogger(CustomLogger):
    """A sync callback that holds litellm's pool thread, as a long history's payload does."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.done = threading.Event()

    def log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        time.sleep(self.seconds)
        self.done.set()


def _forwarding(tmp_path: Path, fake: FakeLangfuse) -> Observability:
    return forwarding(tmp_path, env=langfuse_env(fake.url))[0]


def _call(obs: Observability) -> None:
    session = Session(user_id="u", observability=obs)
    llm.complete_sync(
        session,
        kind="main",
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        mock_response="ok",
    )


@pytest.fixture
def slow_pool() -> _SlowLogger:
    slow = _SlowLogger(1.5)
    # Ahead of the forwarder: litellm runs a call's sync callbacks one after the other.
    litellm.callbacks.insert(0, slow)
    yield slow
    slow.done.wait(5)
    # litellm copies callbacks into its other lists at call time: take it out of every one.
    for name in ("callbacks", "success_callback", "_async_success_callback"):
        lst = getattr(litellm, name)
        lst[:] = [cb for cb in lst if cb is not slow]


def test_flush_waits_for_litellms_thread_pool(tmp_path: Path, slow_pool: _SlowLogger) -> None:
    with FakeLangfuse() as fake:
        obs = _forwarding(tmp_path, fake)
        _call(obs)
        assert obs.flush(timeout=0.3) is False  # the pool still holds the callback
        assert obs.flush(timeout=5) is True
        assert [s["name"] for s in fake.spans if s["name"].startswith("llm.")] == ["llm.main"]
        report = obs.shutdown(timeout=5)["langfuse"]
    assert report["dropped"] == {} and report["completed_in_time"] is True


def test_shutdown_too_short_for_litellm_reports_the_call_as_dropped(
    tmp_path: Path, slow_pool: _SlowLogger
) -> None:
    with FakeLangfuse() as fake:
        obs = _forwarding(tmp_path, fake)
        _call(obs)
        report = obs.shutdown(timeout=0.4)["langfuse"]
        slow_pool.done.wait(5)
        time.sleep(0.2)
        spans = fake.spans
    assert [s for s in spans if s["name"].startswith("llm.")] == []
    assert report["dropped"] == {"litellm_callback_pending": 1}, report
    assert report["completed_in_time"] is False


def test_a_call_litellm_never_hands_over_is_counted(tmp_path: Path) -> None:
    # litellm's pool drops tasks past its backlog cap; the call's row exists, its callback never
    # comes. Simulated by recording a call that was never made through litellm.
    with FakeLangfuse() as fake:
        obs = _forwarding(tmp_path, fake)
        session = Session(user_id="u", observability=obs)
        ctx = telemetry.CallContext.new(session, "main")
        telemetry.record_llm_call(session, ctx, None, model="m", latency_ms=1.0)
        assert obs.flush(timeout=2) is False
        _call(obs)
        assert obs.flush(timeout=2) is True  # counted once, not at every flush
        report = obs.shutdown(timeout=2)["langfuse"]
    assert report["dropped"] == {"no_litellm_callback": 1}, report
