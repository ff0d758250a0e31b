"""Every CLI error is a message and exit code 2 (or 0 with a notice for an empty result), never
a traceback; --verbose and --debug raise the log level, --debug with a warning.

Run in-process (``tests.cli_helpers.run_cli``): an exception escaping ``main()`` fails the test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.core.session import Event, new_id, utcnow
from tests.cli_helpers import run_process, usage_error

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A small dataset written by the HF sink, plus a row from elsewhere with a cost of "free"
    and a corrupt line."""
    from agent.core.dataset.sink import HFDatasetSink

    directory = tmp_path / "telemetry"
    sink = HFDatasetSink(directory)
    for i in range(3):
        sink.export(
            Event(
                event_id=new_id(),
                event_type="llm_call",
                timestamp=utcnow(),
                data={"model": "m", "prompt_tokens": 10, "cost_usd": 0.5},
                session_id="s1",
                user_id="u",
                turn_index=i,
                kind="main",
            )
        )
    sink.shutdown(5)
    (shard,) = sorted((directory / "data").rglob("*.jsonl"))
    row = json.loads(shard.read_text().splitlines()[0])
    row.update(event_id=new_id(), data=json.dumps({"model": "m", "cost_usd": "free"}))
    with open(shard, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.write('{"event_id": "cut-sh\n')  # a line cut short
    return directory


# -- configuration files --


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("max_steps = 3\n".encode("utf-16"), "is UTF-16 text: save it as UTF-8"),
        ('redact = "caf\xe9"\n'.encode("latin-1"), "is not UTF-8 text"),
        (b"max_steps = = 3\n", "config file"),
        (b"[langfuse]\nhots = 1\n", "unknown setting [langfuse] hots"),
        (b"langfuse = 3\n", "langfuse must be a table"),
    ],
)
def test_a_bad_config_file_is_a_message(cli, tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "ml-intern.toml"
    path.write_bytes(content)
    for argv in (("demo",), ("observability", "check"), ("events", "summary")):
        usage_error(cli(*argv, "--config", str(path), "--telemetry-dir", str(tmp_path)), fragment)


def test_config_naming_a_directory_says_so(cli, tmp_path: Path) -> None:
    usage_error(cli("demo", "--config", str(tmp_path)), "is a directory, not a file")
    usage_error(cli("demo", "--config", str(tmp_path / "nope.toml")), "does not exist")


def test_ml_intern_toml_in_the_working_directory_is_checked_too(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ml-intern.toml").write_bytes("x = 1\n".encode("utf-16"))
    monkeypatch.chdir(tmp_path)
    usage_error(cli("observability", "check"), "ml-intern.toml is UTF-16 text")


# -- events --


def test_summary_with_a_bad_value_and_a_corrupt_line_gives_notices(cli, dataset: Path) -> None:
    result = cli("events", "summary", "--telemetry-dir", str(dataset), "--json")
    assert result.code == 0
    summary = json.loads(result.out)
    assert summary["total_events"] == 4  # the corrupt line is not an event
    assert summary["llm_calls"][0]["cost_usd"] == pytest.approx(1.5)  # "free" counted as 0
    assert "notice: 1 line in" in result.text and "was skipped" in result.text
    assert "notice: 1 row in" in result.text and "not a number; counted as 0" in result.text


def test_a_directory_named_like_a_glob_reads(cli, dataset: Path, tmp_path: Path) -> None:
    globby = tmp_path / "a[b]*"
    dataset.rename(globby)
    result = cli("events", "summary", "--telemetry-dir", str(globby), "--json")
    assert result.code == 0 and json.loads(result.out)["total_events"] == 4


@pytest.mark.parametrize("limit", ["0", "-3", "100000000000000000000", "1000001"])
def test_tail_limit_out_of_range(cli, dataset: Path, limit: str) -> None:
    result = cli("events", "tail", "-n", limit, "--telemetry-dir", str(dataset))
    usage_error(result, "--limit must be between 1 and 1,000,000")


def test_tail_limit_that_is_not_a_number(cli, dataset: Path) -> None:
    with pytest.raises(SystemExit) as info:  # argparse's own message, exit 2
        cli("events", "tail", "-n", "lots", "--telemetry-dir", str(dataset))
    assert info.value.code == 2


def test_show_an_unknown_trace_is_an_empty_answer(cli, dataset: Path) -> None:
    result = cli("events", "show", "--trace-id", "0" * 32, "--telemetry-dir", str(dataset))
    assert result.code == 0 and f"notice: no events of trace {'0' * 32}" in result.text
    as_json = cli(
        "events", "show", "--trace-id", "0" * 32, "--telemetry-dir", str(dataset), "--json"
    )
    assert as_json.code == 0 and json.loads(as_json.out) == []


def test_events_without_data_is_a_message(cli, tmp_path: Path) -> None:
    usage_error(cli("events", "tail", "--telemetry-dir", str(tmp_path)), "no events in")


# -- preview --


@pytest.mark.parametrize(
    "body",
    [
        '{"model": "m", "messages": [{"role": "user", "content": '
        + "[" * 50_000
        + "]" * 50_000
        + "}]}",
        '{"model": "m", "messages": [{"role": "user", "content": '
        + '{"a": ' * 3000
        + "1"
        + "}" * 3000
        + "}]}",
    ],
    ids=["lists", "objects"],
)
def test_preview_of_a_deeply_nested_call(cli, tmp_path: Path, body: str) -> None:
    path = tmp_path / "deep.json"
    path.write_text(body)
    usage_error(cli("observability", "preview", "--file", str(path)), "nested too deeply")


def test_preview_of_a_file_that_is_not_json(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"\xff\xfe not json")
    usage_error(cli("observability", "preview", "--file", str(path)), "--file")


# -- run --


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_provider_key_is_caught_before_the_run(cli, tmp_path: Path, value: str) -> None:
    result = cli(
        "run",
        "hello",
        "--model",
        "openai/gpt-4o-mini",
        "--telemetry-dir",
        str(tmp_path),
        env={"OPENAI_API_KEY": value},
    )
    usage_error(result, "OPENAI_API_KEY, which is set but empty")
    assert not (tmp_path / "data").exists()  # nothing ran


def test_restore_from_a_missing_file(cli, tmp_path: Path) -> None:
    result = cli(
        "run", "x", "--restore", str(tmp_path / "s.json"), "--telemetry-dir", str(tmp_path)
    )
    usage_error(result, "--restore", "no such file")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "is a directory, not a session file"),
        (b"\xff\xfe not text", "is not a session file"),
        (b'{"session_id": "s"}', "is not a session file (one --save wrote): it has no messages"),
    ],
)
def test_restore_from_what_is_not_a_saved_session_says_what_it_is(
    cli, tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    target = tmp_path / "saved"
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)
    result = cli("run", "x", "--restore", str(target), "--telemetry-dir", str(tmp_path / "t"))
    usage_error(result, "--restore", fragment)
    assert not (tmp_path / "t" / "data").exists()  # nothing ran


# -- logging --


def _ml_intern(*argv: str) -> subprocess.CompletedProcess:
    return run_process(*argv, cwd=ROOT)


def test_verbose_and_debug_raise_the_log_level(tmp_path: Path) -> None:
    where = ("--telemetry-dir", str(tmp_path))
    quiet = _ml_intern("observability", "check", *where)
    assert quiet.returncode == 0 and "INFO agent.main" not in quiet.stderr
    verbose = _ml_intern("observability", "check", "--verbose", *where)
    assert "INFO agent.main: ml-intern observability (log level INFO)" in verbose.stderr
    assert "DEBUG" not in verbose.stderr
    debug = _ml_intern("--debug", "observability", "check", *where)
    assert debug.returncode == 0
    text = " ".join(debug.stderr.split())
    assert "--debug: DEBUG logs of litellm and the provider SDKs" in text
    assert "prompts, replies and request headers" in text
    assert "DEBUG agent.main: where each setting came from" in debug.stderr
