"""``observability check`` says what a real run does: a bad LangFuse variable is an error naming
it under ``--observability-backend langfuse`` (exit 2 for both), a warning and forwarding off
under ``auto`` (exit 0 for both, nothing sent). The kill switches turn forwarding off entirely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.testing.fake_langfuse import FakeLangfuse
from tests.cli_helpers import run_cli
from tests.langfuse_helpers import langfuse_env


@pytest.fixture
def fake() -> FakeLangfuse:
    with FakeLangfuse() as server:
        yield server


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LANGFUSE_SAMPLE_RATE", "abc"),
        ("LANGFUSE_SAMPLE_RATE", "1.5"),
        ("LANGFUSE_MEDIA_UPLOAD_THREAD_COUNT", "two"),
    ],
)
def test_check_and_demo_agree_on_a_bad_variable(
    var: str,
    value: str,
    fake: FakeLangfuse,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {**langfuse_env(fake.url, secret="SECRET"), var: value}
    where = ("--telemetry-dir", str(tmp_path))

    check = run_cli(monkeypatch, capsys, "observability", "check", "--json", *where, env=env)
    assert check.code == 0
    out = json.loads(check.out)
    assert out["enabled"] is False and any(var in w for w in out["warnings"])
    demo = run_cli(monkeypatch, capsys, "demo", *where, env=env)
    assert demo.code == 0
    assert f"LangFuse forwarding: off ({var}" in demo.text
    assert fake.requests == []  # off means nothing is sent

    strict = ("--observability-backend", "langfuse")
    for argv in (("observability", "check", *strict), ("demo", *strict)):
        result = run_cli(monkeypatch, capsys, *argv, *where, env=env)
        assert result.code == 2, argv
        assert "ml-intern: error:" in result.err and var in result.text
        assert "SECRET" not in result.text


@pytest.mark.parametrize(
    ("var", "value"), [("LANGFUSE_TRACING_ENABLED", "false"), ("OTEL_SDK_DISABLED", "true")]
)
def test_the_kill_switches_turn_forwarding_off_entirely(
    var: str,
    value: str,
    fake: FakeLangfuse,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {**langfuse_env(fake.url, secret="SECRET"), var: value}
    where = ("--telemetry-dir", str(tmp_path))
    for backend in ("auto", "langfuse"):
        demo = run_cli(
            monkeypatch, capsys, "demo", "--observability-backend", backend, *where, env=env
        )
        assert demo.code == 0
        lines = [line for line in demo.err.splitlines() if "LangFuse forwarding" in line]
        assert lines == [f"LangFuse forwarding: off (disabled by {var}={value})"]
        assert "trace:" not in demo.out
    assert fake.requests == []  # no spans, and no scores either
    check = run_cli(monkeypatch, capsys, "observability", "check", "--json", *where, env=env)
    assert check.code == 0 and json.loads(check.out)["reason"] == f"disabled by {var}={value}"
