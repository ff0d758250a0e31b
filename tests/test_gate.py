"""The gate: forwarding only on an explicit, complete choice; clear errors otherwise."""

from __future__ import annotations

import pytest

from agent.config import AgentConfig, ConfigError
from agent.core.forwarding.gate import GateDecision, resolve_gate

FULL = {
    "LANGFUSE_HOST": "https://langfuse.example.com",
    "LANGFUSE_PUBLIC_KEY": "pk-lf-1234567890",
    "LANGFUSE_SECRET_KEY": "sk-lf-abcdef-very-secret",
}


def cfg(backend: str = "auto", env: dict | None = None, **overrides) -> AgentConfig:
    return AgentConfig.load(env=env or {}, observability_backend=backend, **overrides)


def decide(env: dict, backend: str = "auto", **overrides) -> GateDecision:
    return resolve_gate(cfg(backend, env, **overrides))


def test_auto_with_everything_set_is_on() -> None:
    gate = decide(FULL)
    assert gate.enabled
    assert gate.settings is not None and gate.settings.host == "https://langfuse.example.com"


def test_base_url_alias() -> None:
    env = {**FULL}
    env["LANGFUSE_BASE_URL"] = env.pop("LANGFUSE_HOST") + "/"
    gate = decide(env)
    assert gate.enabled and gate.settings.host == "https://langfuse.example.com"
    assert gate.settings.host_var == "LANGFUSE_BASE_URL"


def test_both_host_names_differing_prefers_langfuse_host_and_warns() -> None:
    gate = decide({**FULL, "LANGFUSE_BASE_URL": "https://other.example.com"})
    assert gate.settings.host == "https://langfuse.example.com"
    assert any("differ" in w for w in gate.warnings)


@pytest.mark.parametrize("missing", sorted(FULL))
def test_auto_with_one_variable_missing_is_off(missing: str) -> None:
    env = {k: v for k, v in FULL.items() if k != missing}
    gate = decide(env)
    assert not gate.enabled
    assert any(missing in w for w in gate.warnings), gate.warnings


def test_keys_without_host_warn_naming_langfuse_host() -> None:
    env = {k: v for k, v in FULL.items() if k != "LANGFUSE_HOST"}
    gate = decide(env)
    assert not gate.enabled
    (warning,) = gate.warnings
    assert "LANGFUSE_HOST" in warning


def test_nothing_set_is_silently_off() -> None:
    gate = decide({})
    assert not gate.enabled and gate.warnings == []


@pytest.mark.parametrize("missing", sorted(FULL))
def test_explicit_langfuse_with_a_setting_missing_is_an_error_naming_it(missing: str) -> None:
    env = {k: v for k, v in FULL.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        decide(env, "langfuse")


def test_none_is_off_whatever_the_env() -> None:
    gate = decide(FULL, "none")
    assert not gate.enabled and gate.warnings == []


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("langfuse.example.com", "no scheme"),
        ("ftp://langfuse.example.com", "scheme must be http or https"),
        ("https://", "not a valid URL"),
        ("https://exa mple.com:99999", "not a valid URL"),
    ],
)
def test_malformed_host(host: str, fragment: str) -> None:
    env = {**FULL, "LANGFUSE_HOST": host}
    gate = decide(env)
    assert not gate.enabled
    assert any(fragment in w and "LANGFUSE_HOST" in w for w in gate.warnings), gate.warnings
    with pytest.raises(ConfigError, match="LANGFUSE_HOST"):
        decide(env, "langfuse")


def test_plain_http_to_a_remote_host_warns_about_clear_text() -> None:
    gate = decide({**FULL, "LANGFUSE_HOST": "http://langfuse.internal.example"})
    assert gate.enabled
    assert any("clear text" in w for w in gate.warnings)


@pytest.mark.parametrize(
    "host", ["http://localhost:3000", "http://127.0.0.1:3000", "http://[::1]:3000"]
)
def test_plain_http_to_loopback_is_fine(host: str) -> None:
    gate = decide({**FULL, "LANGFUSE_HOST": host})
    assert gate.enabled and not any("clear text" in w for w in gate.warnings)


def test_whitespace_padded_keys_are_stripped_with_a_warning() -> None:
    env = {**FULL, "LANGFUSE_PUBLIC_KEY": "  pk-lf-1234567890\n"}
    gate = decide(env)
    assert gate.enabled and gate.settings.public_key == "pk-lf-1234567890"
    assert any("LANGFUSE_PUBLIC_KEY" in w and "whitespace" in w for w in gate.warnings)


def test_empty_key_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match="LANGFUSE_SECRET_KEY"):
        decide({**FULL, "LANGFUSE_SECRET_KEY": "   "}, "langfuse")


def test_bad_sample_rate_is_off_under_auto_and_an_error_under_langfuse() -> None:
    # The SDK would raise on it (it re-reads the variable): never let it get that far.
    gate = decide({**FULL, "LANGFUSE_SAMPLE_RATE": "2"})
    assert not gate.enabled and gate.settings is None
    assert any("LANGFUSE_SAMPLE_RATE" in w and "off" in w for w in gate.warnings)
    with pytest.raises(ConfigError, match="LANGFUSE_SAMPLE_RATE"):
        decide({**FULL, "LANGFUSE_SAMPLE_RATE": "half"}, "langfuse")


def test_environment_and_release_are_read() -> None:
    gate = decide({**FULL, "LANGFUSE_TRACING_ENVIRONMENT": "staging", "LANGFUSE_RELEASE": "v1.2"})
    assert (gate.settings.environment, gate.settings.release) == ("staging", "v1.2")


def test_settings_repr_never_shows_the_secret_key() -> None:
    gate = decide(FULL)
    assert FULL["LANGFUSE_SECRET_KEY"] not in repr(gate.settings)
    assert FULL["LANGFUSE_SECRET_KEY"] not in repr(gate)


def test_langfuse_not_installed_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_langfuse(name, *args, **kwargs):
        if name == "langfuse" or name.startswith("langfuse."):
            raise ImportError("No module named 'langfuse'")
        return real_import(name, *args, **kwargs)

    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(builtins, "__import__", no_langfuse)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "langfuse" else real_find_spec(name, *a),
    )
    # Both forwarder modes: the thread's (the default: imported here) and the sidecar's (the
    # SDK is looked up here, imported in the child).
    for env in (FULL, {**FULL, "ML_INTERN_LANGFUSE_FORWARDER": "sidecar"}):
        with pytest.raises(ConfigError, match=r"pip install 'ml-intern-observability\[langfuse\]'"):
            decide(env, "langfuse")
        gate = decide(env)
        assert not gate.enabled
        assert any("pip install" in w for w in gate.warnings)


@pytest.mark.parametrize(
    "env",
    [
        {**FULL, "LANGFUSE_HOST": "langfuse.example.com"},
        {**FULL, "LANGFUSE_HOST": "ftp://x"},
        {k: v for k, v in FULL.items() if k != "LANGFUSE_HOST"},
        {**FULL, "LANGFUSE_SAMPLE_RATE": "nope"},
    ],
)
def test_the_secret_key_is_never_in_an_error_or_warning(
    env: dict, caplog: pytest.LogCaptureFixture
) -> None:
    secret = FULL["LANGFUSE_SECRET_KEY"]
    try:
        decide(env, "langfuse")
    except ConfigError as exc:
        assert secret not in str(exc)
    gate = decide(env)
    assert all(secret not in w for w in gate.warnings)
    assert secret not in caplog.text
