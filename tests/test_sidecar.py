"""The forwarding sidecar: the forwarding core in a child process of the agent's own.

What a user (and an operator) observes: by default the spans reach LangFuse from another
process; that process holds no secret in its environment or command line; it never outlives its
parent nor a bounded shutdown; a child that cannot start or dies means forwarding from a thread,
with one warning, never a lost pipeline.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.core import llm
from agent.core.forwarding import sidecar
from agent.core.session import Session
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import forwarding, fresh_keys, langfuse_env
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
ENV_SECRET = "Zq8-" + "vT3kP9mW2xR7" * 3  # a provider key in the agent's environment


def _call(obs, user: str = "u") -> None:
    session = Session(user_id=user, observability=obs)
    llm.complete_sync(
        session,
        kind="main",
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": f"hello {ENV_SECRET}"}],
        mock_response="ok",
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_spans_leave_from_the_sidecar_which_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_SECRET)
    with FakeLangfuse() as fake:
        env = langfuse_env(fake.url)
        obs, _ = forwarding(tmp_path, langfuse_forwarder="sidecar", env=env)
        try:
            _call(obs)
            assert obs.flush(10)
            stats = obs.langfuse.stats()
            pid = stats["sidecar_pid"]
            assert stats["forwarder_mode"] == "sidecar" and pid != os.getpid()
            assert obs.langfuse.core.loopback_guarded  # the suite's guard holds there too
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
            for secret in (ENV_SECRET, env["LANGFUSE_SECRET_KEY"]):
                assert secret.encode() not in environ + cmdline
            (gen,) = [s for s in fake.spans if s["name"] == "llm.main"]
            # Redacted there by value, although its environment never held the value.
            assert ENV_SECRET not in str(gen) and "[REDACTED:known_secret]" in str(gen)
        finally:
            with caplog.at_level(logging.WARNING):
                report = obs.shutdown(5)["langfuse"]
        assert wait_for(lambda: not _alive(pid), 5)
        # Its exit after the shutdown's answer is no death: no fallback, no warning.
        assert report["forwarder_mode"] == "sidecar" and "sidecar" not in caplog.text


def test_shutdown_is_bounded_and_kills_a_stuck_sidecar(tmp_path: Path) -> None:
    with FakeLangfuse(mode="hang") as fake:
        obs, _ = forwarding(tmp_path, langfuse_forwarder="sidecar", env=langfuse_env(fake.url))
        _call(obs)
        assert wait_for(lambda: obs.langfuse.stats().get("sidecar_pid"), 10)
        pid = obs.langfuse.stats()["sidecar_pid"]
        started = time.monotonic()
        report = obs.shutdown(1.5)
        assert time.monotonic() - started < 4.0
        assert report["langfuse"]["completed_in_time"] is False
        assert report["langfuse"]["dropped"]  # what was not delivered is counted
        assert wait_for(lambda: not _alive(pid), 5)


def test_shutdown_is_bounded_when_the_sidecar_stops_reading(tmp_path: Path) -> None:
    """A child that no longer reads (stopped here; stuck in real life) fills the pipe: the
    intake worker blocks on it, yet shutdown still returns within its bound, counts what was
    lost and kills the child."""
    with FakeLangfuse() as fake:
        obs, _ = forwarding(tmp_path, langfuse_forwarder="sidecar", env=langfuse_env(fake.url))
        _call(obs)
        assert obs.flush(10)
        pid = obs.langfuse.stats()["sidecar_pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            session = Session(user_id="u", observability=obs)
            for i in range(12):  # 12 x 20 KB: more than a pipe holds (64 KB)
                llm.complete_sync(
                    session,
                    kind="main",
                    model="openai/gpt-4o-mini",
                    messages=[{"role": "user", "content": f"{i} " + "lorem ipsum " * 1700}],
                    mock_response="ok",
                )
            time.sleep(0.5)  # the intake worker writes until the pipe is full
            started = time.monotonic()
            report = obs.shutdown(1.5)["langfuse"]
            assert time.monotonic() - started < 4.0
            assert report["completed_in_time"] is False
            assert report["dropped"]  # what was not delivered is counted
            assert wait_for(lambda: not _alive(pid), 5)
        finally:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_sidecar_that_cannot_start_means_forwarding_from_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sidecar, "_CHILD_MODULE", "agent.core.forwarding.no_such_module")
    with FakeLangfuse() as fake:
        obs, _ = forwarding(tmp_path, langfuse_forwarder="sidecar", env=langfuse_env(fake.url))
        try:
            with caplog.at_level(logging.WARNING):
                _call(obs)
                assert obs.flush(10)
            assert obs.langfuse.stats()["forwarder_mode"] == "thread"
            assert [s for s in fake.spans if s["name"] == "llm.main"]
            assert "forwarding from a thread of this process" in caplog.text
        finally:
            obs.shutdown(5)


@pytest.mark.internal_errors_expected
def test_a_sidecar_that_dies_falls_back_and_counts_what_it_held(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeLangfuse() as fake:
        obs, _ = forwarding(tmp_path, langfuse_forwarder="sidecar", env=langfuse_env(fake.url))
        try:
            _call(obs, "before")
            assert obs.flush(10)
            pid = obs.langfuse.stats()["sidecar_pid"]
            with caplog.at_level(logging.WARNING):
                os.kill(pid, 9)
                assert wait_for(lambda: obs.langfuse.stats()["forwarder_mode"] == "thread", 10)
                _call(obs, "after")
                assert obs.flush(10)
            users = {s["attributes"].get("user.id") for s in fake.spans if s["name"] == "llm.main"}
            assert users == {"before", "after"}
            assert "exited unexpectedly" in caplog.text
        finally:
            obs.shutdown(5)


PARENT = """
import os, sys, time
from agent.testing import loopback
loopback.install("sidecar test parent")
from agent.config import AgentConfig
from agent.core import llm
from agent.core.observability import Observability
from agent.core.session import Session
obs = Observability.from_config(AgentConfig(telemetry_dir=sys.argv[1]))
session = Session(user_id="orphan", observability=obs)
llm.complete_sync(session, kind="main", model="openai/gpt-4o-mini",
                  messages=[{"role": "user", "content": "hi"}], mock_response="ok")
deadline = time.monotonic() + 20
while not obs.langfuse.stats().get("sidecar_pid") and time.monotonic() < deadline:
    time.sleep(0.05)
print(obs.langfuse.stats()["sidecar_pid"], flush=True)
time.sleep(0.3)  # the call reaches the pipe
os._exit(0)  # killed: no atexit, no shutdown
"""


def _program(
    source: str, fake: FakeLangfuse, tmp_path: Path, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a program of its own with forwarding to ``fake`` from the sidecar."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "ML_"))}
    env.update(
        langfuse_env(fake.url),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        ML_INTERN_LANGFUSE_FORWARDER="sidecar",
        **env_extra,
    )
    return subprocess.run(
        [sys.executable, "-c", source, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_sidecar_delivers_and_exits_when_its_parent_dies(tmp_path: Path) -> None:
    with FakeLangfuse() as fake:
        proc = _program(PARENT, fake, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        pid = int(proc.stdout.split()[-1])
        # Within the flush bound (5 s) it delivers what it holds, then exits.
        assert fake.wait_for_spans(1, timeout=10)
        assert [s for s in fake.spans if s["name"] == "llm.main"]
        assert wait_for(lambda: not _alive(pid), 10)


def test_the_childs_environment_holds_no_value_containing_a_known_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.core.privacy.known import KNOWN_SECRETS

    key = "sk-proj-" + "Qw7" * 12
    KNOWN_SECRETS.add(key)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("AUTH_HEADER", f"Bearer {key}")
    monkeypatch.setenv("DATABASE_URL", f"postgres://u:{key}@localhost/db")
    monkeypatch.setenv("HARMLESS", "plain value")
    env = sidecar.child_environment()
    assert not [k for k, v in env.items() if key in v]
    assert env["HARMLESS"] == "plain value"


def test_a_path_entry_holding_the_separator_is_left_out_of_the_childs_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    odd = f"/tmp/one{os.pathsep}two"
    monkeypatch.setattr(sys, "path", [*sys.path, odd])
    parts = sidecar.child_environment()["PYTHONPATH"].split(os.pathsep)
    assert (
        "/tmp/one" not in parts and "two" not in parts and not any(p.endswith("two") for p in parts)
    )
    assert os.path.abspath(sys.path[0] or ".") in parts


def test_the_report_has_its_counts_before_the_child_first_reports(tmp_path: Path) -> None:
    from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings
    from agent.core.privacy.redaction import RedactionPolicy

    with FakeLangfuse() as fake:
        pk, sk = fresh_keys()
        car = sidecar.Sidecar(
            LangfuseSettings(host=fake.url, public_key=pk, secret_key=sk),
            policy=RedactionPolicy.from_spec(None),
            options=ForwarderOptions(mode="sidecar"),
        )
        try:
            report = car.stats()  # at once: the child is still starting
            assert {k: report[k] for k in ("generations", "spans", "traces")} == dict.fromkeys(
                ("generations", "spans", "traces"), 0
            )
        finally:
            car.shutdown(time.monotonic() + 10)


def _pipes() -> int:
    return sum(
        os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    )


def test_setting_up_and_shutting_down_leaves_no_pipe_behind(tmp_path: Path) -> None:
    with FakeLangfuse() as fake:
        counts = []
        for _ in range(3):
            obs, _ = forwarding(tmp_path, langfuse_forwarder="sidecar", env=langfuse_env(fake.url))
            _call(obs)
            assert obs.shutdown(10)["langfuse"]["forwarder_mode"] == "sidecar"
            counts.append(_pipes())
    assert counts[2] == counts[0], counts


FORKED = """
import os, sys
from agent.testing import loopback
loopback.install("sidecar fork test")
from agent.config import AgentConfig
from agent.core import llm
from agent.core.observability import Observability
from agent.core.session import Session
obs = Observability.from_config(AgentConfig(telemetry_dir=sys.argv[1]))
call = dict(kind="main", model="openai/gpt-4o-mini", mock_response="ok",
            messages=[{"role": "user", "content": "hi"}])
llm.complete_sync(Session(user_id="parent-1", observability=obs), **call)
assert obs.flush(20)
pid = os.fork()
if pid == 0:
    obs.shutdown(5)  # what a forked worker's atexit does: must not stop the parent's sidecar
    os._exit(0)
os.waitpid(pid, 0)
llm.complete_sync(Session(user_id="parent-2", observability=obs), **call)
report = obs.shutdown(20)["langfuse"]
print(report["forwarder_mode"], sum(report["dropped"].values()), flush=True)
"""


def test_a_forked_copy_does_not_stop_the_parents_sidecar(tmp_path: Path) -> None:
    with FakeLangfuse() as fake:
        proc = _program(FORKED, fake, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        users = {s["attributes"].get("user.id") for s in fake.spans if s["name"] == "llm.main"}
    assert proc.stdout.split() == ["sidecar", "0"], (proc.stdout, proc.stderr[-2000:])
    assert users == {"parent-1", "parent-2"}
    assert "died" not in proc.stderr


SHORT_LIVED = """
import sys
from agent.testing import loopback
loopback.install("sidecar slow start test")
from agent.config import AgentConfig
from agent.core import llm
from agent.core.observability import Observability
from agent.core.session import Session
obs = Observability.from_config(AgentConfig(telemetry_dir=sys.argv[1]))
llm.complete_sync(Session(user_id="last-call", observability=obs), kind="main",
                  model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                  mock_response="ok")
report = obs.shutdown(8)["langfuse"]
print(report["forwarder_mode"], report["completed_in_time"], sum(report["dropped"].values()))
"""

# Loaded by every interpreter started with this directory on its path: it makes the
# sidecar's start-up slow (as on a loaded machine), and leaves other processes alone.
SLOW_START = """
import time
with open("/proc/self/cmdline", "rb") as f:
    if b"forwarding.child" in f.read():
        time.sleep(30)
"""


def test_a_short_lived_program_delivers_when_the_sidecar_starts_too_slowly(
    tmp_path: Path,
) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SLOW_START)
    with FakeLangfuse() as fake:
        started = time.monotonic()
        proc = _program(
            SHORT_LIVED, fake, tmp_path, PYTHONPATH=os.pathsep.join([str(shim), str(ROOT)])
        )
        took = time.monotonic() - started
        users = [s["attributes"].get("user.id") for s in fake.spans if s["name"] == "llm.main"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The core ran here instead, within the shutdown's bound, and lost nothing.
    assert proc.stdout.split() == ["thread", "True", "0"], (proc.stdout, proc.stderr[-2000:])
    assert users == ["last-call"]
    assert took < 25  # the bound (8 s) held: the slow child was not waited for
