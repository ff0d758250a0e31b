"""The documented CLI, driven as a user would: exit codes and output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import run_process


def cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return run_process(*args, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("demo")
    proc = cli("demo", "--telemetry-dir", str(d / "telemetry"), "--user-id", "ops-1")
    assert proc.returncode == 0, proc.stderr
    assert "LLM calls per kind" in proc.stdout
    return d / "telemetry"


def test_demo_dataset_has_every_kind_with_tokens_and_cost(demo_dir: Path) -> None:
    proc = cli("events", "summary", "--telemetry-dir", str(demo_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    kinds = {r["kind"]: r for r in summary["llm_calls"]}
    assert set(kinds) == {"main", "research", "compaction", "effort_probe", "restore"}
    for row in kinds.values():
        assert row["calls"] >= 1
        assert row["total_tokens"] > 0
        assert row["cost_usd"] > 0
    types = {r["event_type"] for r in summary["events"]}
    assert {
        "sandbox_create",
        "sandbox_destroy",
        "tool_call",
        "turn_start",
        "turn_complete",
    } <= types
    assert summary["sessions"] == 2


def test_demo_rows_carry_user_and_null_langfuse_ids_when_forwarding_is_off(demo_dir: Path) -> None:
    proc = cli("events", "tail", "--telemetry-dir", str(demo_dir), "--json", "-n", "500")
    rows = json.loads(proc.stdout)
    assert rows and all(r["user_id"] == "ops-1" for r in rows)
    assert all(r["langfuse_trace_id"] is None for r in rows)


def test_events_summary_table(demo_dir: Path) -> None:
    proc = cli("events", "summary", "--telemetry-dir", str(demo_dir))
    assert proc.returncode == 0
    for word in ("main", "research", "compaction", "effort_probe", "restore", "tool_call"):
        assert word in proc.stdout


def test_events_tail_limits_rows(demo_dir: Path) -> None:
    proc = cli("events", "tail", "--telemetry-dir", str(demo_dir), "--json", "-n", "3")
    assert proc.returncode == 0
    assert len(json.loads(proc.stdout)) == 3


def test_events_on_an_empty_directory_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli("events", "summary", "--telemetry-dir", str(tmp_path / "nothing"))
    assert proc.returncode == 2
    assert "no events" in proc.stderr


def test_events_show_rejects_a_malformed_trace_id(demo_dir: Path) -> None:
    proc = cli("events", "show", "--telemetry-dir", str(demo_dir), "--trace-id", "xyz")
    assert proc.returncode == 2
    assert "--trace-id" in proc.stderr


def test_bad_flag_exits_2() -> None:
    proc = cli("demo", "--no-such-flag")
    assert proc.returncode == 2
    assert "unrecognized arguments" in proc.stderr


def test_bad_backend_choice_exits_2() -> None:
    proc = cli("demo", "--observability-backend", "datadog")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli(
        "run", "hello", "--model", "nosuchprovider/model-x", "--telemetry-dir", str(tmp_path)
    )
    assert proc.returncode == 2
    assert "unknown model" in proc.stderr


def test_model_without_its_key_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli("run", "hello", "--model", "openai/gpt-4o-mini", "--telemetry-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "OPENAI_API_KEY" in proc.stderr


def test_unwritable_telemetry_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = cli("demo", "--telemetry-dir", str(blocker / "sub"))
    assert proc.returncode == 2
    assert "--telemetry-dir" in proc.stderr


def test_run_offline_task(tmp_path: Path) -> None:
    proc = cli("run", "Count the words here", "--telemetry-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Done." in proc.stdout


def test_bad_config_value_names_the_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "ml-intern.toml"
    cfg.write_text('max_steps = "many"\n')
    proc = cli("run", "x", "--config", str(cfg), "--telemetry-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "max_steps" in proc.stderr


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "ml-intern.toml"
    cfg.write_text('telemetry_directory = "x"\n')
    proc = cli("run", "x", "--config", str(cfg))
    assert proc.returncode == 2
    assert "telemetry_directory" in proc.stderr


# -- observability check / preview --


def test_check_reports_off_without_settings(tmp_path: Path) -> None:
    proc = cli("observability", "check", "--json", "--telemetry-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["enabled"] is False and "destination" not in out
    assert out["policy"]["system_prompt"] == "scrub"


def test_check_prints_destination_and_policy_never_the_secret(tmp_path: Path) -> None:
    env = {
        "LANGFUSE_BASE_URL": "https://cloud.langfuse.com",
        "LANGFUSE_PUBLIC_KEY": "pk-lf-0123456789abcdef",
        "LANGFUSE_SECRET_KEY": "sk-lf-THE-SECRET-VALUE",
        "ML_INTERN_REDACT": "preset=no-tool-io",
    }
    proc = cli("observability", "check", "--json", "--telemetry-dir", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["enabled"] is True
    assert out["destination"]["host"] == "https://cloud.langfuse.com"
    assert out["destination"]["host_from"] == "LANGFUSE_BASE_URL"
    assert out["destination"]["forwarder"] == "thread"  # the default
    assert out["policy"]["tool_results"] == "drop"
    assert "THE-SECRET-VALUE" not in proc.stdout + proc.stderr
    text = cli("observability", "check", "--telemetry-dir", str(tmp_path), env=env)
    assert (
        "cloud.langfuse.com" in text.stdout and "THE-SECRET-VALUE" not in text.stdout + text.stderr
    )
    sidecar = {**env, "ML_INTERN_LANGFUSE_FORWARDER": "sidecar"}
    chosen = cli("observability", "check", "--telemetry-dir", str(tmp_path), env=sidecar)
    assert "forwarder: sidecar" in chosen.stdout


def test_check_explicit_backend_with_missing_settings_exits_2_naming_them(tmp_path: Path) -> None:
    proc = cli(
        "observability",
        "check",
        "--observability-backend",
        "langfuse",
        "--telemetry-dir",
        str(tmp_path),
        env={"LANGFUSE_PUBLIC_KEY": "pk-lf-1"},
    )
    assert proc.returncode == 2
    assert "LANGFUSE_HOST" in proc.stderr and "LANGFUSE_SECRET_KEY" in proc.stderr


def test_demo_with_explicit_backend_and_no_settings_is_a_startup_error(tmp_path: Path) -> None:
    proc = cli("demo", "--observability-backend", "langfuse", "--telemetry-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "LANGFUSE_HOST" in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing ran


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("preset=nope", "unknown preset 'nope'"),
        ("tool_results=shred", "unknown action 'shred'"),
        ("prompts=drop", "prompts"),
        ("user_messages=truncate:x", "truncate"),
        ("user_id=hash", "ML_INTERN_REDACT_HMAC_KEY"),
    ],
)
def test_bad_redact_specs_are_clear_errors(tmp_path: Path, spec: str, fragment: str) -> None:
    for args in (["observability", "check"], ["observability", "preview"], ["demo"]):
        proc = cli(*args, "--redact", spec, "--telemetry-dir", str(tmp_path))
        assert proc.returncode == 2, (args, proc.stdout)
        assert "redact" in proc.stderr and fragment in proc.stderr


def test_bad_redact_env_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli(
        "observability",
        "check",
        "--telemetry-dir",
        str(tmp_path),
        env={"ML_INTERN_REDACT": "preset=nope"},
    )
    assert proc.returncode == 2 and "preset" in proc.stderr


def test_preview_shows_original_and_what_is_sent(tmp_path: Path) -> None:
    proc = cli("observability", "preview", "--redact", "preset=metadata-only", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    original = json.dumps(out["original"])
    sent = json.dumps(out["redacted"])
    assert "hf_" in original
    for message in out["redacted"]["messages"]:
        content = message.get("content")
        assert content is None or "DROPPED" in json.dumps(content)
    assert "[REDACTED" not in sent or "DROPPED" in sent
    assert out["report"]["fields"]


def test_preview_of_a_saved_call(tmp_path: Path) -> None:
    call = tmp_path / "call.json"
    call.write_text(
        json.dumps(
            {
                "model": "openai/gpt-4o-mini",
                "messages": [
                    {"role": "user", "content": "my token hf_abcdefghijklmnopqrstuvwxyz123456"}
                ],
            }
        )
    )
    proc = cli("observability", "preview", "--file", str(call), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "[REDACTED:hf_token]" in out["redacted"]["messages"][0]["content"]
    assert "hf_abcdefghijklmnopqrstuvwxyz123456" in out["original"]["messages"][0]["content"]
    bad = cli("observability", "preview", "--file", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and "--file" in bad.stderr
