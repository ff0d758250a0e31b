"""One rule for a value that cannot be a valid setting, as the user sees it (README,
"Configuration"): never used, named with its source (the variable, the config file and key, the
flag), exit 2 from the CLI; under ``auto`` a bad LangFuse value only turns forwarding off, with a
warning saying so. File values are taken as TOML typed them. And what ``demo`` prints when its
traces never reached LangFuse, the score warning's cause, ``--ping-timeout``'s bounds, and
``check`` refusing what a run refuses.

In-process (``tests.cli_helpers.run_cli``): an exception escaping ``main()`` fails the test.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.cli.output import console
from agent.cli.run import _print_trace_links
from agent.core import telemetry
from agent.core.session import Session
from agent.testing.fake_langfuse import FakeLangfuse, closed_port
from tests.cli_helpers import usage_error
from tests.langfuse_helpers import forwarding, fresh_keys, langfuse_env


def toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(body, encoding="utf-8")
    return path


# Complete LangFuse settings on a host nothing listens on (check is offline: nothing is sent).
def full_env() -> dict[str, str]:
    return langfuse_env(f"http://127.0.0.1:{closed_port()}", secret="SECRET")


# -- bad LangFuse values in the file: typed strictly, named by file and key --


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("sample_rate = true", "input should be a valid number"),
        ("sample_rate = 1.5", "less than or equal to 1"),
        ('debug = "yes"', "input should be a valid boolean"),
        ("media_upload_thread_count = 2.0", "input should be a valid integer"),
        ("timeout_s = 1.5", "input should be a valid integer"),
        ("queue_size = 0", "greater than or equal to 1"),
        ('environment = "Prod"', "is not a LangFuse environment name"),
    ],
)
def test_a_bad_langfuse_value_in_the_file_is_named_off_under_auto_error_under_langfuse(
    cli, tmp_path: Path, line: str, why: str
) -> None:
    path = toml(tmp_path, f"[langfuse]\n{line}\n")
    key = line.split(" = ")[0]
    named = f"{path} [langfuse] {key}"
    argv = ("observability", "check", "--config", str(path), "--telemetry-dir", str(tmp_path))
    env = full_env()

    auto = cli(*argv, "--json", env=env)
    assert auto.code == 0, auto
    out = json.loads(auto.out)
    assert out["enabled"] is False and named in out["reason"] and why in out["reason"]
    assert any(w.startswith("LangFuse forwarding is off: " + named) for w in out["warnings"])

    strict = cli(*argv, "--observability-backend", "langfuse", env=env)
    usage_error(strict, named, why)
    assert "SECRET" not in auto.text + strict.text


def test_demo_agrees_with_check_on_a_bad_value_in_the_file(cli, tmp_path: Path) -> None:
    path = toml(tmp_path, '[langfuse]\ndebug = "yes"\n')
    with FakeLangfuse() as fake:
        env = langfuse_env(fake.url, secret="SECRET")
        where = ("--config", str(path), "--telemetry-dir", str(tmp_path / "t"))
        demo = cli("demo", *where, env=env)
        assert demo.code == 0  # the agent runs; only forwarding is off
        assert f'LangFuse forwarding: off ({path} [langfuse] debug is "yes", not a valid' in (
            demo.text
        )
        assert fake.requests == []
        usage_error(cli("demo", *where, "--observability-backend", "langfuse", env=env), str(path))


def test_a_whole_number_is_a_valid_rate_in_the_file(cli, tmp_path: Path) -> None:
    # Strict, not pedantic: TOML's 1 is a number wherever a number is expected.
    path = toml(tmp_path, "[langfuse]\nsample_rate = 1\nflush_interval_s = 2\n")
    result = cli("observability", "check", "--json", "--config", str(path), env=full_env())
    assert result.code == 0
    destination = json.loads(result.out)["destination"]
    assert (destination["sample_rate"], destination["flush_interval_s"]) == (1.0, 2.0)


@pytest.mark.parametrize("key", ["[langfuse] host", "[langfuse] base_url", "langfuse_host"])
def test_an_empty_host_in_the_file_is_named_as_set_but_empty(cli, tmp_path: Path, key: str) -> None:
    # Named as the file spells it: the alias, or a top-level langfuse_ key.
    table, _, name = key.rpartition(" ")
    path = toml(tmp_path, f'{table}\n{name} = ""\n')
    env = {k: v for k, v in full_env().items() if k != "LANGFUSE_HOST"}
    argv = ("observability", "check", "--config", str(path))
    auto = cli(*argv, env=env)
    assert auto.code == 0
    assert f"{path} {key} is set but empty" in auto.text
    assert "LANGFUSE_HOST is not set" not in auto.text
    usage_error(
        cli(*argv, "--observability-backend", "langfuse", env=env),
        f"{path} {key} is set but empty",
    )


# -- general settings: an error as a flag or in the file, naming the source --


def test_a_bad_environment_value_warns_and_falls_back(
    cli, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The team's rule for the environment: warn naming the variable, then the next layer."""
    path = toml(tmp_path, "max_steps = 3\n")
    result = cli(
        "demo",
        "--config",
        str(path),
        "--telemetry-dir",
        str(tmp_path),
        env={"ML_INTERN_MAX_STEPS": "abc"},
    )
    assert result.code == 0, result.text
    warned = caplog.text  # the CLI's log handler prints warnings on stderr
    assert "ML_INTERN_MAX_STEPS is 'abc', not a valid value for max_steps" in warned
    assert "using the config file or the default" in warned
    assert "Traceback" not in result.text


@pytest.mark.parametrize(
    ("env", "body", "flags", "fragment"),
    [
        (
            {"ML_INTERN_HF_USER_ID": "hsah"},
            "",
            (),
            "ML_INTERN_HF_USER_ID is 'hsah', not a valid value for hf_user_id",
        ),
        ({}, 'max_steps = "8"\n', (), 'max_steps is "8", not a valid value for max_steps'),
        ({}, "hub_push_interval_s = nan\n", (), "hub_push_interval_s is nan, not a valid"),
        (
            {},
            "",
            ("--flush-timeout", "-1"),
            "--flush-timeout is -1.0, not a valid value for flush_timeout_s",
        ),
        (
            {},
            "",
            ("--flush-timeout", "inf"),
            "--flush-timeout is inf, not a valid value for flush_timeout_s",
        ),
        ({"ML_INTERN_REDACT": "bogus"}, "", (), "ML_INTERN_REDACT: redaction spec item 'bogus'"),
        ({}, "", ("--redact", "bogus"), "--redact: redaction spec item 'bogus'"),
        ({}, 'redact = "bogus"\n', (), "settings.toml redact: redaction spec item 'bogus'"),
    ],
)
def test_a_bad_general_setting_is_exit_2_naming_its_source(
    cli, tmp_path: Path, env: dict[str, str], body: str, flags: tuple[str, ...], fragment: str
) -> None:
    path = toml(tmp_path, body)
    for command in (("observability", "check"), ("demo",)):
        result = cli(
            *command, "--config", str(path), "--telemetry-dir", str(tmp_path), *flags, env=env
        )
        usage_error(result, fragment)
    assert not (tmp_path / "data").exists()  # refused before any work


def test_every_bad_setting_is_named_in_one_message(cli, tmp_path: Path) -> None:
    # Worded so the secret scrubber (which error messages pass) leaves a token-like name's
    # value alone: "context_token_budget = true" would read as a secret assignment.
    path = toml(tmp_path, "max_steps = 0\ncontext_token_budget = true\n")
    result = cli("observability", "check", "--config", str(path))
    usage_error(
        result,
        f"{path} max_steps is 0, not a valid value for max_steps",
        f"{path} context_token_budget is true, not a valid value for context_token_budget "
        "(input should be a valid integer)",
    )
    assert "REDACTED" not in result.text


# -- keys with line breaks --


def test_a_key_with_a_trailing_line_break_is_stripped_with_a_warning(cli) -> None:
    env = full_env()
    env["LANGFUSE_PUBLIC_KEY"] += "\r\n"
    result = cli("observability", "check", "--json", env=env)
    out = json.loads(result.out)
    assert result.code == 0 and out["enabled"] is True
    assert (
        "LANGFUSE_PUBLIC_KEY has leading or trailing whitespace; it was stripped"
        in (out["warnings"])
    )


def test_a_key_with_a_line_break_inside_is_refused(cli, tmp_path: Path) -> None:
    env = full_env()
    public = env.pop("LANGFUSE_PUBLIC_KEY")
    path = toml(tmp_path, f'[langfuse]\npublic_key = "{public[:8]}\\r\\n{public[8:]}"\n')
    argv = ("observability", "check", "--config", str(path))
    auto = cli(*argv, env=env)
    assert auto.code == 0 and "OFF" in auto.text
    assert f"{path} [langfuse] public_key holds a line break" in auto.text
    usage_error(
        cli(*argv, "--observability-backend", "langfuse", env=env),
        f"{path} [langfuse] public_key holds a line break",
    )
    assert public[8:] not in auto.text  # the key is never repeated


# -- check refuses what a run refuses --


def test_check_refuses_hf_user_id_hash_without_a_key_as_demo_does(cli, tmp_path: Path) -> None:
    env = {"ML_INTERN_HF_USER_ID": "hash"}
    where = ("--telemetry-dir", str(tmp_path))
    check = cli("observability", "check", *where, env=env)
    demo = cli("demo", *where, env=env)
    usage_error(check, "hf_user_id=hash", "ML_INTERN_REDACT_HMAC_KEY")
    usage_error(demo)
    assert check.err == demo.err
    ok = cli("observability", "check", *where, env={**env, "ML_INTERN_REDACT_HMAC_KEY": "k" * 32})
    assert ok.code == 0


@pytest.mark.parametrize("seconds", ["inf", "1e300", "nan", "0", "-1", "301"])
def test_ping_timeout_must_be_finite_positive_and_bounded(cli, seconds: str) -> None:
    result = cli("observability", "check", "--ping", "--ping-timeout", seconds, env=full_env())
    usage_error(result, "--ping-timeout", "above 0 and at most 300")


# -- what demo prints when LangFuse never got the traces --


def test_demo_with_the_host_down_prints_no_trace_link_as_delivered(cli, tmp_path: Path) -> None:
    result = cli("demo", "--telemetry-dir", str(tmp_path), "--flush-timeout", "1", env=full_env())
    assert result.code == 0
    assert "trace: " not in result.out
    assert result.out.count("trace (not delivered): http://127.0.0.1:") == 3
    assert "LangFuse acknowledged none of the 3 traces below" in result.text


class _Links:
    def trace_url(self, trace_id: str) -> str:
        return f"https://lf.example/trace/{trace_id}"


@pytest.mark.parametrize(
    ("acknowledged", "label"),
    [
        (3, None),
        (5, None),
        (2, "maybe not delivered"),
        (0, "not delivered"),
        (None, "delivery unknown"),
    ],
)
def test_trace_links_say_whether_the_host_acknowledged_them(
    acknowledged: int | None, label: str | None
) -> None:
    with console.capture() as captured:
        _print_trace_links(_Links(), ["a", "b", "c"], acknowledged)
    lines = captured.get().splitlines()
    prefix = "trace: " if label is None else f"trace ({label}): "
    assert lines == [f"{prefix}https://lf.example/trace/{t}" for t in "abc"]


# -- the score warning names the network cause --


def test_a_score_to_a_refused_host_names_the_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pk, sk = fresh_keys()
    env = {"LANGFUSE_HOST": f"http://127.0.0.1:{closed_port()}", "LANGFUSE_PUBLIC_KEY": pk}
    env["LANGFUSE_SECRET_KEY"] = sk
    obs, _ = forwarding(tmp_path, env=env)
    session = Session(user_id="u", observability=obs)
    with caplog.at_level(logging.WARNING):
        telemetry.record_feedback(session, value=1.0, turn_index=0)
        obs.shutdown(timeout=5)
    (line,) = [r.getMessage() for r in caplog.records if "feedback score" in r.getMessage()]
    assert line.startswith(
        "LangFuse did not accept a feedback score: connection refused by 127.0.0.1: nothing "
        "listens on that port (ConnectError); it is dropped"
    ), line
