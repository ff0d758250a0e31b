"""Bad destinations and keys are refused, never echoed; export failures name their cause;
counters count what the host acknowledged."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from agent.config import AgentConfig, ConfigError
from agent.core.forwarding import otlp
from agent.core.forwarding.gate import resolve_gate
from agent.core.observability import Observability
from agent.testing.fake_langfuse import FakeLangfuse, closed_port
from tests.cli_helpers import run_cli
from tests.langfuse_helpers import forwarding, langfuse_env

PASSWORD = "hunter2-" + uuid.uuid4().hex[:6]
SECRET = "sk-lf-" + uuid.uuid4().hex
FULL = {
    "LANGFUSE_HOST": "https://langfuse.example.com",
    "LANGFUSE_PUBLIC_KEY": "pk-lf-0123456789",
    "LANGFUSE_SECRET_KEY": SECRET,
}


def keys(host: str, public_key: str = "pk-lf-1") -> SimpleNamespace:
    """What otlp.for_langfuse reads of the gate's LangfuseSettings."""
    return SimpleNamespace(host=host, public_key=public_key, secret_key=SECRET)


def gate_messages(env: dict[str, str]) -> tuple[list[str], str]:
    """(warnings under auto, the error under langfuse); forwarding must be off under auto."""
    gate = resolve_gate(AgentConfig.load(env=env))
    assert not gate.enabled, gate
    with pytest.raises(ConfigError) as info:
        resolve_gate(AgentConfig.load(env=env, observability_backend="langfuse"))
    return gate.warnings, str(info.value)


@pytest.mark.parametrize(
    "host",
    [
        f"https://ops:{PASSWORD}@langfuse.example.com",
        f"http://ops:{PASSWORD}@127.0.0.1:3000",
        f"ops:{PASSWORD}@langfuse.example.com",  # no scheme either
    ],
)
def test_userinfo_in_the_host_is_refused_and_never_printed(
    host: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {**FULL, "LANGFUSE_HOST": host}
    warnings, error = gate_messages(env)
    assert any("LANGFUSE_HOST holds a user name or password" in w for w in warnings)
    assert "LANGFUSE_HOST" in error and "user name or password" in error
    config = AgentConfig.load(env=env)
    assert PASSWORD not in repr(config) + str(config)
    for argv in (("observability", "check"), ("observability", "check", "--json"), ("demo",)):
        result = run_cli(monkeypatch, capsys, *argv, "--telemetry-dir", str(tmp_path), env=env)
        assert result.code == 0 and PASSWORD not in result.out + result.err
    strict = run_cli(monkeypatch, capsys, "demo", "--observability-backend", "langfuse", env=env)
    assert strict.code == 2 and "user name or password" in strict.text
    assert PASSWORD not in strict.out + strict.err + caplog.text


def test_userinfo_in_the_traces_endpoint_override_is_refused_too() -> None:
    env = {
        **FULL,
        "ML_INTERN_OTLP_TRACES_ENDPOINT": f"http://ops:{PASSWORD}@127.0.0.1:4318/v1/traces",
    }
    warnings, error = gate_messages(env)
    assert "ML_INTERN_OTLP_TRACES_ENDPOINT holds a user name or password" in error
    assert PASSWORD not in error + " ".join(warnings)


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("https://langfuse.example.com/?tenant=a", "https://langfuse.example.com/"),
        ("https://langfuse.example.com/#frag", "https://langfuse.example.com/"),
        ("https://langfuse.example.com?", "https://langfuse.example.com"),
    ],
)
def test_a_host_with_a_query_or_fragment_is_refused(host: str, shown: str) -> None:
    _, error = gate_messages({**FULL, "LANGFUSE_HOST": host})
    assert "query or fragment" in error and "LANGFUSE_HOST" in error
    assert f"'{shown}'" in error and "tenant=a" not in error and "#frag" not in error


@pytest.mark.parametrize(
    ("env", "var", "fragment"),
    [
        ({"LANGFUSE_PUBLIC_KEY": SECRET}, "LANGFUSE_PUBLIC_KEY", "looks like a secret key"),
        ({"LANGFUSE_SECRET_KEY": "pk-lf-0123456789"}, "LANGFUSE_SECRET_KEY", "looks like a public"),
        ({"LANGFUSE_PUBLIC_KEY": "pk-lf-01\r\nX-Evil: 1"}, "LANGFUSE_PUBLIC_KEY", "line break"),
        ({"LANGFUSE_PUBLIC_KEY": "pk-lf-ünïcode"}, "LANGFUSE_PUBLIC_KEY", "non-ASCII"),
        ({"LANGFUSE_SECRET_KEY": SECRET + "é"}, "LANGFUSE_SECRET_KEY", "non-ASCII"),
    ],
)
def test_swapped_or_malformed_keys_are_refused_naming_the_variable(
    env: dict[str, str], var: str, fragment: str
) -> None:
    warnings, error = gate_messages({**FULL, **env})
    assert var in error and fragment in error
    assert SECRET not in error and all(SECRET not in w for w in warnings)


def test_keys_from_the_config_file_are_named_by_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "ml-intern.toml"
    path.write_text(f'[langfuse]\npublic_key = "{SECRET}"\n', encoding="utf-8")
    path.chmod(0o600)
    env = {k: v for k, v in FULL.items() if k != "LANGFUSE_PUBLIC_KEY"}
    with pytest.raises(ConfigError, match=r"\[langfuse\] public_key looks like a secret key"):
        resolve_gate(AgentConfig.load(path, env=env, observability_backend="langfuse"))


def test_an_exporter_refuses_a_header_it_cannot_send_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="LANGFUSE_PUBLIC_KEY") as info:
        otlp.for_langfuse(keys("http://127.0.0.1:1", "pk-lf-1\r\nX-Evil: 1"))
    assert "X-Evil" not in str(info.value) and SECRET not in str(info.value)


# -- export failures name their cause --


def _spans(n: int = 2) -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("t")
    out = []
    for i in range(n):
        span = tracer.start_span(f"s{i}")
        span.end()
        out.append(span)
    return out


def _export_once(base_url: str, caplog: pytest.LogCaptureFixture, **options) -> str:
    caplog.set_level(logging.WARNING, logger="agent.telemetry")
    exporter = otlp.for_langfuse(keys(base_url), **{"max_retries": 0, "timeout": 2.0, **options})
    try:
        exporter.export(_spans())
    finally:
        exporter.shutdown(timeout_millis=100)
    text = caplog.text
    assert SECRET not in text
    return text


def test_a_refused_connection_is_named(caplog: pytest.LogCaptureFixture) -> None:
    text = _export_once(f"http://127.0.0.1:{closed_port()}", caplog)
    assert "connection refused" in text


def test_tls_to_a_plain_http_port_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with FakeLangfuse() as fake:
        text = _export_once(fake.url.replace("http://", "https://"), caplog)
    assert "TLS handshake failed" in text and "use http://" in text


def test_a_name_that_does_not_resolve_is_named(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_such_name(*args, **kwargs):  # no real DNS query leaves the test
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    text = _export_once("https://langfuse.invalid", caplog)
    assert "DNS lookup failed" in text


def test_a_silent_host_is_named_a_timeout(caplog: pytest.LogCaptureFixture) -> None:
    with FakeLangfuse(mode="hang") as fake:
        text = _export_once(fake.url, caplog, timeout=0.5)
    assert "timed out (no answer within 0.5s)" in text


def test_an_http_status_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with FakeLangfuse() as fake:
        fake.script([404])
        text = _export_once(fake.url, caplog)
    assert "HTTP 404" in text


def test_an_export_cut_short_by_shutdown_names_what_it_was_failing_with(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    caplog.set_level(logging.WARNING, logger="agent.telemetry")
    exporter = otlp.for_langfuse(
        keys(f"http://127.0.0.1:{closed_port()}"), max_retries=50, backoff_base=0.2
    )
    worker = threading.Thread(target=exporter.export, args=(_spans(),))
    worker.start()
    import time

    time.sleep(0.4)
    exporter.shutdown(timeout_millis=1000)
    worker.join(5)
    assert exporter.stats()["dropped_by_reason"] == {"aborted": 2}
    assert "aborted (shutdown or flush deadline) while failing with: connection refused" in (
        caplog.text
    )


# -- counters: acknowledged, not queued --


def _forwarding(url: str, tmp_path: Path) -> Observability:
    return forwarding(tmp_path, env=langfuse_env(url), flush_timeout_s=2.0)[0]


def _turn(obs: Observability) -> None:
    import asyncio

    from agent.core.agent_loop import Agent
    from agent.core.session import Session

    async def go() -> None:
        session = Session(user_id="u", observability=obs)
        agent = Agent(session, obs.config)
        try:
            await agent.run_turn("Count the words in this request.")
        finally:
            agent.close()
            await obs.adrain()

    asyncio.run(go())


def test_counters_count_what_the_host_acknowledged(tmp_path: Path) -> None:
    with FakeLangfuse() as fake:
        obs = _forwarding(fake.url, tmp_path)
        _turn(obs)
        report = obs.shutdown(timeout=5)["langfuse"]
        spans = fake.spans
    generations = [
        s for s in spans if s["attributes"].get("langfuse.observation.type") == "generation"
    ]
    assert report["generations"] == len(generations) > 0
    assert report["traces"] == len([s for s in spans if s["name"] == "turn"]) == 1
    assert report["spans"] == len(spans) - len(generations) - 1


def test_nothing_acknowledged_counts_nothing_sent(tmp_path: Path) -> None:
    with FakeLangfuse() as fake:
        fake.mode = "ok"
        fake.script([500] * 50)
        obs = _forwarding(fake.url, tmp_path)
        _turn(obs)
        report = obs.shutdown(timeout=2)["langfuse"]
    assert (report["generations"], report["spans"], report["traces"]) == (0, 0, 0)
    assert sum(report["dropped"].values()) > 0
    assert json.dumps(report)  # the report is plain data
