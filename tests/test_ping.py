"""`ml-intern observability check --ping`: one authenticated round trip to the configured host,
each failure told apart by its message and exit code (0 success, 1 failed check, 2 bad
configuration), against the loopback fake LangFuse. The CLI runs in process (``main(argv)``)
so a DNS failure can be injected without any resolver being asked."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from agent.main import main
from agent.testing.fake_langfuse import OTLP_PATH, PROJECTS_PATH, FakeLangfuse, Reply, closed_port
from tests.langfuse_helpers import use_langfuse

REGIONS = (
    "https://cloud.langfuse.com",
    "https://us.cloud.langfuse.com",
    "https://jp.cloud.langfuse.com",
    "https://hipaa.cloud.langfuse.com",
)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    return use_langfuse(monkeypatch, None, secret="PINGSECRET")


def check(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    host: str | None,
    *extra: str,
) -> tuple[int, str]:
    if host is not None:
        monkeypatch.setenv("LANGFUSE_HOST", host)
    code = main(["observability", "check", "--telemetry-dir", str(tmp_path), *extra])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())  # rich wraps long lines


def test_success_prints_the_project_and_never_the_secret(
    capsys, monkeypatch, tmp_path, keys, blocked_connections
) -> None:
    pk, sk = keys
    with FakeLangfuse(public_key=pk, secret_key=sk, project_name="ml-team") as fake:
        code, out = check(capsys, monkeypatch, tmp_path, fake.url, "--ping")
        paths = [(r.method, r.path) for r in fake.requests]
    assert code == 0, out
    assert "ping: OK" in out and "'ml-team'" in out
    assert ("GET", PROJECTS_PATH) in paths and ("GET", OTLP_PATH) in paths  # nothing posted
    assert sk not in out
    assert not blocked_connections


def test_json_output_carries_the_result(capsys, monkeypatch, tmp_path, keys) -> None:
    pk, sk = keys
    with FakeLangfuse(public_key=pk, secret_key=sk) as fake:
        monkeypatch.setenv("LANGFUSE_HOST", fake.url)
        code = main(
            ["observability", "check", "--ping", "--json", "--telemetry-dir", str(tmp_path)]
        )
        out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["ping"]["ok"] is True and out["ping"]["project"] == "fake project"
    assert sk not in json.dumps(out)


def test_without_ping_check_stays_offline(capsys, monkeypatch, tmp_path, keys) -> None:
    with FakeLangfuse() as fake:
        code, out = check(capsys, monkeypatch, tmp_path, fake.url)
        assert fake.requests == []
    assert code == 0 and "ping" not in out


def test_wrong_keys_401_names_the_other_cloud_regions(capsys, monkeypatch, tmp_path, keys) -> None:
    pk, sk = keys
    with FakeLangfuse(public_key=pk, secret_key="sk-lf-someone-else") as fake:
        code, out = check(capsys, monkeypatch, tmp_path, fake.url, "--ping")
    assert code == 1
    assert "FAILED (unauthorized)" in out and "401" in out
    assert "LANGFUSE_PUBLIC_KEY" in out and "LANGFUSE_SECRET_KEY" in out
    for region in REGIONS:
        assert region in out
    assert sk not in out


@pytest.mark.parametrize(
    ("reply", "problem", "fragment"),
    [
        (Reply(status=404, path=PROJECTS_PATH), "not_langfuse", "not a LangFuse API"),
        (
            Reply(status=200, body=b"<html>login</html>", path=PROJECTS_PATH),
            "not_langfuse",
            "not as LangFuse does",
        ),
        (Reply(status=403, path=PROJECTS_PATH), "forbidden", "403"),
        (Reply(status=404, path=OTLP_PATH), "no_otlp", "older than 3.22"),
    ],
    ids=["404", "not-langfuse", "403", "no-otlp"],
)
def test_wrong_host_or_old_server(
    capsys, monkeypatch, tmp_path, keys, reply: Reply, problem: str, fragment: str
) -> None:
    with FakeLangfuse() as fake:
        fake.script([reply])
        code, out = check(capsys, monkeypatch, tmp_path, fake.url, "--ping")
    assert code == 1, out
    assert f"FAILED ({problem})" in out and fragment in out


def test_refused(capsys, monkeypatch, tmp_path, keys) -> None:
    code, out = check(capsys, monkeypatch, tmp_path, f"http://127.0.0.1:{closed_port()}", "--ping")
    assert code == 1
    assert "FAILED (refused)" in out and "connection refused" in out


def test_tls_to_a_plain_http_port(capsys, monkeypatch, tmp_path, keys) -> None:
    with FakeLangfuse() as fake:
        code, out = check(
            capsys, monkeypatch, tmp_path, fake.url.replace("http://", "https://"), "--ping"
        )
    assert code == 1
    assert "FAILED (tls)" in out and "TLS handshake" in out


def test_silent_host_times_out_within_its_bound(capsys, monkeypatch, tmp_path, keys) -> None:
    with FakeLangfuse(mode="hang") as fake:
        started = time.monotonic()
        code, out = check(
            capsys, monkeypatch, tmp_path, fake.url, "--ping", "--ping-timeout", "0.5"
        )
        elapsed = time.monotonic() - started
    assert code == 1
    assert "FAILED (timeout)" in out and "within 0.5s" in out
    assert elapsed < 0.5 + 2.0  # the bound plus the CLI's own work


def test_dns_failure_is_named(capsys, monkeypatch, tmp_path, keys, blocked_connections) -> None:
    # Injected: resolving a real `.invalid` name would ask the system's resolver, off loopback.
    real = socket.getaddrinfo
    asked: list[str] = []

    def no_such_host(host, *args, **kwargs):
        if host == "langfuse.invalid":
            asked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    code, out = check(capsys, monkeypatch, tmp_path, "https://langfuse.invalid", "--ping")
    assert asked, "the name was never looked up"
    assert code == 1
    assert "FAILED (dns)" in out and "'langfuse.invalid'" in out
    assert not blocked_connections


def test_ping_without_settings_is_a_configuration_error(capsys, monkeypatch, tmp_path) -> None:
    code, out = check(capsys, monkeypatch, tmp_path, None, "--ping")
    assert code == 2
    assert "--ping needs LangFuse settings" in out and "LANGFUSE_HOST" in out
