"""One configuration path for LangFuse: argument > env > config file > default, validated by our
config before the SDK sees anything, and the SDK never reading LANGFUSE_* behind our back."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from pathlib import Path

import pytest

from agent.config import SDK_ENVIRONMENT, AgentConfig, ConfigError
from agent.core import llm
from agent.core.forwarding.gate import resolve_gate
from agent.core.observability import Observability
from agent.core.session import Session
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import fresh_keys

# field, its variable, its [langfuse] key, and a value for each layer: argument, env, file.
LAYERS = [
    (
        "langfuse_host",
        "LANGFUSE_HOST",
        "host",
        ("https://arg.example", "https://env.example", "https://file.example"),
    ),
    ("langfuse_public_key", "LANGFUSE_PUBLIC_KEY", "public_key", ("pk-lf-a", "pk-lf-e", "pk-lf-f")),
    ("langfuse_environment", "LANGFUSE_TRACING_ENVIRONMENT", "environment", ("a", "e", "f")),
    ("langfuse_release", "LANGFUSE_RELEASE", "release", ("1.0-a", "1.0-e", "1.0-f")),
    ("langfuse_sample_rate", "LANGFUSE_SAMPLE_RATE", "sample_rate", (0.25, 0.5, 0.75)),
    ("langfuse_timeout_s", "LANGFUSE_TIMEOUT", "timeout_s", (7, 8, 9)),
    (
        "langfuse_media_upload_thread_count",
        "LANGFUSE_MEDIA_UPLOAD_THREAD_COUNT",
        "media_upload_thread_count",
        (2, 3, 4),
    ),
]
DEFAULTS = {
    "langfuse_host": None,
    "langfuse_public_key": None,
    "langfuse_environment": None,
    "langfuse_release": None,
    "langfuse_sample_rate": 1.0,
    "langfuse_timeout_s": 5,
    "langfuse_media_upload_thread_count": 1,
}


def toml_value(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ml-intern.toml"
    path.write_text(body, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(("name", "var", "key", "values"), LAYERS, ids=[x[0] for x in LAYERS])
def test_each_layer_wins_over_the_ones_below(
    tmp_path: Path, name: str, var: str, key: str, values: tuple
) -> None:
    arg, env, in_file = values
    path = config_file(tmp_path, f"[langfuse]\n{key} = {toml_value(in_file)}\n")
    (tmp_path / "empty").mkdir()
    empty = config_file(tmp_path / "empty", "")

    default = AgentConfig.load(empty, env={})
    assert getattr(default, name) == DEFAULTS[name] and default.source(name) == "default"

    from_file = AgentConfig.load(path, env={})
    assert getattr(from_file, name) == in_file
    assert from_file.source(name) == f"{path} [langfuse] {key}"

    from_env = AgentConfig.load(path, env={var: str(env)})
    assert getattr(from_env, name) == env and from_env.source(name) == var

    from_arg = AgentConfig.load(path, env={var: str(env)}, **{name: arg})
    assert getattr(from_arg, name) == arg and from_arg.source(name) == "argument"


def test_secret_key_layers_and_never_shows(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[langfuse]\nsecret_key = "sk-lf-FROM-FILE"\n')
    env = {"LANGFUSE_SECRET_KEY": "sk-lf-FROM-ENV"}
    assert AgentConfig.load(path, env={}).langfuse_secret_key.get_secret_value() == (
        "sk-lf-FROM-FILE"
    )
    assert AgentConfig.load(path, env=env).langfuse_secret_key.get_secret_value() == (
        "sk-lf-FROM-ENV"
    )
    config = AgentConfig.load(path, env=env, langfuse_secret_key="sk-lf-FROM-ARG")
    assert config.langfuse_secret_key.get_secret_value() == "sk-lf-FROM-ARG"
    for text in (repr(config), str(config), config.model_dump_json()):
        assert "FROM-" not in text


def test_base_url_alias_in_env_and_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[langfuse]\nbase_url = "https://file.example"\n')
    assert AgentConfig.load(path, env={}).langfuse_host == "https://file.example"
    config = AgentConfig.load(path, env={"LANGFUSE_BASE_URL": "https://env.example"})
    assert config.langfuse_host == "https://env.example"
    assert config.source("langfuse_host") == "LANGFUSE_BASE_URL"
    # A top-level langfuse_ key is the same setting; giving it twice is an error.
    twice = config_file(tmp_path, 'langfuse_host = "https://a"\n[langfuse]\nhost = "https://b"\n')
    with pytest.raises(ConfigError, match=r"\[langfuse\] host is set twice"):
        AgentConfig.load(twice, env={})


def test_unknown_langfuse_key_is_named(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[langfuse]\nhots = "https://x"\n')
    with pytest.raises(ConfigError, match=r"unknown setting \[langfuse\] hots"):
        AgentConfig.load(path, env={})


def test_a_secret_in_a_readable_config_file_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = config_file(tmp_path, f'[langfuse]\nsecret_key = "sk-lf-{uuid.uuid4().hex}"\n')
    AgentConfig.load(path, env={})
    assert "readable by others" not in caplog.text
    path.chmod(0o644)
    AgentConfig.load(path, env={})
    assert "readable by others" in caplog.text and "chmod 600" in caplog.text
    assert "langfuse_secret_key" in caplog.text and "sk-lf-" not in caplog.text


def test_langfuse_is_configured_from_the_file_alone(tmp_path: Path) -> None:
    """The whole destination in ml-intern.toml, nothing in the environment: spans arrive with
    the file's environment and release."""
    pk, sk = fresh_keys()
    with FakeLangfuse() as fake:
        path = config_file(
            tmp_path,
            f'telemetry_dir = "{tmp_path / "t"}"\n[langfuse]\nhost = "{fake.url}"\n'
            f'public_key = "{pk}"\nsecret_key = "{sk}"\n'
            'environment = "from-file"\nrelease = "r-file"\n',
        )
        obs = Observability.from_config(AgentConfig.load(path, env={}))
        assert obs.forwarding and obs.gate.settings.host_var == f"{path} [langfuse] host"
        _one_call(obs)
        obs.shutdown(timeout=5)
        (gen,) = [s for s in fake.spans if s["name"] == "llm.main"]
    assert gen["resource"]["langfuse.environment"] == "from-file"
    assert gen["attributes"]["langfuse.release"] == "r-file"


def _one_call(obs: Observability) -> None:
    async def go() -> None:
        session = Session(user_id="u", observability=obs)
        await llm.complete(
            session,
            kind="main",
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            mock_response="ok",
        )
        await obs.adrain()

    asyncio.run(go())


def test_the_sdk_never_reads_langfuse_variables_behind_our_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values the SDK cannot parse sit in the environment while the settings come from
    arguments: the SDK would raise on each had it read them itself."""
    for var, bad in {
        "LANGFUSE_SAMPLE_RATE": "abc",
        "LANGFUSE_TIMEOUT": "soon",
        "LANGFUSE_MEDIA_UPLOAD_THREAD_COUNT": "two",
        "LANGFUSE_FLUSH_AT": "many",
        "LANGFUSE_FLUSH_INTERVAL": "often",
        "LANGFUSE_HOST": "https://never-used.example",
        "LANGFUSE_PUBLIC_KEY": "pk-lf-env-never-used",
        "LANGFUSE_SECRET_KEY": "sk-lf-env-never-used",
    }.items():
        monkeypatch.setenv(var, bad)
    pk, sk = fresh_keys()
    with FakeLangfuse() as fake:
        config = AgentConfig.load(
            telemetry_dir=tmp_path,
            langfuse_host=fake.url,
            langfuse_public_key=pk,
            langfuse_secret_key=sk,
            langfuse_sample_rate=1.0,
            langfuse_timeout_s=5,
            langfuse_media_upload_thread_count=1,
            langfuse_flush_at=64,
            langfuse_flush_interval_s=1.0,
        )
        obs = Observability.from_config(config)
        assert obs.forwarding, obs.gate
        _one_call(obs)
        obs.shutdown(timeout=5)
        assert [s["name"] for s in fake.spans if s["name"].startswith("llm.")] == ["llm.main"]
        assert {r.headers["x-langfuse-public-key"] for r in fake.requests} == {pk}


def test_every_variable_the_sdk_reads_is_accounted_for() -> None:
    """Scan the installed SDK for environment reads: a new one (an SDK upgrade) must be
    decided on and documented in agent.config.SDK_ENVIRONMENT."""
    import importlib

    import langfuse
    from langfuse._utils.environment import common_release_envs

    root = Path(langfuse.__file__).parent
    read = re.compile(
        r"os\.(?:environ\.get|getenv)\(\s*([A-Za-z_\"]+)"
        r"|os\.environ\[\s*([A-Za-z_\"]+)\s*\](?!\s*=)"  # a read, not a write
    )
    found: set[str] = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if "api" in relative.parts:
            continue
        module = None
        for match in read.finditer(path.read_text(encoding="utf-8")):
            token = match.group(1) or match.group(2)
            if token == "env":  # the loop over the CI commit variables
                found.add("CI commit variables")
            elif token.startswith('"'):
                found.add(token.strip('"'))
            else:  # a constant: resolve it in the module that reads it
                name = ".".join(("langfuse", *relative.with_suffix("").parts))
                module = module or importlib.import_module(name)
                found.add(getattr(module, token))
    assert "GITHUB_SHA" in common_release_envs
    assert found - set(SDK_ENVIRONMENT) == set(), "read by the SDK, not decided on"
    assert set(SDK_ENVIRONMENT) - found == set(), "listed, no longer read by the SDK"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LANGFUSE_SAMPLE_RATE", "abc"),
        ("LANGFUSE_SAMPLE_RATE", "1.5"),
        ("LANGFUSE_MEDIA_UPLOAD_THREAD_COUNT", "two"),
        ("LANGFUSE_TIMEOUT", "0"),
        ("LANGFUSE_TRACING_ENVIRONMENT", "Production"),
        ("LANGFUSE_TRACING_ENVIRONMENT", "   "),
        ("LANGFUSE_DEBUG", "maybe"),
        ("LANGFUSE_MAX_BATCH_SIZE_BYTES", "1MB"),
        ("LANGFUSE_PROMPT_CACHE_DEFAULT_TTL_SECONDS", "a minute"),
    ],
)
def test_a_bad_variable_is_named_error_under_langfuse_warning_and_off_under_auto(
    var: str, value: str
) -> None:
    env = {
        "LANGFUSE_HOST": "https://langfuse.example.com",
        "LANGFUSE_PUBLIC_KEY": "pk-lf-1",
        "LANGFUSE_SECRET_KEY": "sk-lf-1",
        var: value,
    }
    gate = resolve_gate(AgentConfig.load(env=env))
    assert not gate.enabled and gate.settings is None
    assert any(var in w and "off" in w for w in gate.warnings), gate.warnings
    with pytest.raises(ConfigError, match=var):
        resolve_gate(AgentConfig.load(env=env, observability_backend="langfuse"))
    # A bad argument is an error at construction, naming the setting.
    with pytest.raises(ConfigError, match="langfuse_sample_rate"):
        AgentConfig.load(env={}, langfuse_sample_rate=2)


def test_a_bad_value_in_the_file_is_named_with_the_file_and_key(tmp_path: Path) -> None:
    # A LangFuse value: like a bad variable, off with a warning under auto, an error under
    # langfuse, naming the file and the key. A general setting: an error at load.
    path = config_file(tmp_path, "[langfuse]\nsample_rate = 2\n")
    env = {
        "LANGFUSE_HOST": "https://langfuse.example.com",
        "LANGFUSE_PUBLIC_KEY": "pk-lf-1",
        "LANGFUSE_SECRET_KEY": "sk-lf-1",
    }
    config = AgentConfig.load(path, env=env)
    assert config.langfuse_sample_rate == 1.0  # never used
    named = f"{path} [langfuse] sample_rate is 2, not a valid value for langfuse_sample_rate"
    gate = resolve_gate(config)
    assert not gate.enabled and any(named in w for w in gate.warnings), gate.warnings
    with pytest.raises(ConfigError, match=re.escape(named)):
        resolve_gate(AgentConfig.load(path, env=env, observability_backend="langfuse"))
    path.write_text("max_steps = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{path} max_steps is 0, not a valid value")):
        AgentConfig.load(path, env={})


def test_a_bad_variable_falls_back_for_the_value_but_is_reported(tmp_path: Path) -> None:
    # An invalid env value falls back (for the value) but is still reported to the gate.
    path = config_file(tmp_path, "[langfuse]\nsample_rate = 0.5\n")
    config = AgentConfig.load(path, env={"LANGFUSE_SAMPLE_RATE": "lots"})
    assert config.langfuse_sample_rate == 0.5
    assert config.langfuse_problems and "LANGFUSE_SAMPLE_RATE" in config.langfuse_problems[0]


def test_nothing_leaks_into_os_environ() -> None:
    before = dict(os.environ)
    AgentConfig.load(env={"LANGFUSE_HOST": "https://x.example"})
    assert dict(os.environ) == before
