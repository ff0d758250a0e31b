"""``ml-intern events`` on directories with what a real one can hold: a line past DuckDB's line
size, bytes that are not UTF-8, a Parquet file cut short by an interrupted download, a
directory whose own path is not UTF-8. Each is an answer (exit 0) and a notice, never a
traceback after the answer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.core.dataset.parquet import to_parquet
from agent.core.dataset.sink import HFDatasetSink
from agent.core.session import Event, new_id, utcnow
from tests.cli_helpers import run_cli


def _write(directory: Path, n: int = 4) -> Path:
    sink = HFDatasetSink(directory)
    for i in range(n):
        sink.export(
            Event(new_id(), "tool_call", utcnow(), {"name": f"t{i}", "ok": True}, session_id="s1")
        )
    assert sink.shutdown(5)
    (shard,) = (directory / "data").glob("*.jsonl")
    return shard


def _summary(monkeypatch, capsys, directory: Path):
    res = run_cli(
        monkeypatch, capsys, "events", "summary", "--json", "--telemetry-dir", str(directory)
    )
    assert res.code == 0, res.err
    return json.loads(res.out), res


def test_a_line_past_duckdbs_line_size_and_one_not_utf8_are_an_answer_and_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = _write(tmp_path)
    long_row = json.loads(shard.read_bytes().splitlines()[0])
    long_row.update(event_id="long", user_id="u" * 3_000_000)
    with open(shard, "ab") as fh:
        fh.write(json.dumps(long_row).encode() + b"\n")
        fh.write(b'{"event_id":"zz","session_id":"s\xff"}\n')
    summary, res = _summary(monkeypatch, capsys, tmp_path)
    assert summary["total_events"] == 5  # the 4 rows and the long one; not the non-UTF-8 line
    assert "1 line in" in res.text and "was skipped" in res.text
    assert len(res.err) < 2000  # the long line is not echoed
    for command in (("tail", "-n", "2"), ("show", "--session-id", "s1")):
        res = run_cli(monkeypatch, capsys, "events", *command, "--telemetry-dir", str(tmp_path))
        assert res.code == 0 and "was skipped" in res.text


def test_a_parquet_file_cut_short_is_skipped_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = _write(tmp_path)
    parquet, rows, _ = to_parquet(shard.read_bytes())
    day = tmp_path / "data" / "2026-11-30"
    day.mkdir()
    (day / "whole.parquet").write_bytes(parquet)
    (day / "cut.parquet").write_bytes(parquet[: len(parquet) // 2])  # an interrupted download
    summary, res = _summary(monkeypatch, capsys, tmp_path)
    assert summary["total_events"] == 4 + rows
    assert "1 Parquet file in" in res.text and "not whole" in res.text
    for command in (("tail", "-n", "2"), ("show", "--session-id", "s1")):
        res = run_cli(monkeypatch, capsys, "events", *command, "--telemetry-dir", str(tmp_path))
        assert res.code == 0 and "not whole" in res.text


def test_a_directory_whose_path_is_not_utf8_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / os.fsdecode(b"tel\xff")
    shard = _write(directory, n=3)
    parquet, rows, _ = to_parquet(shard.read_bytes())
    for day in ("2026-11-29", "2026-11-30"):  # a Hub snapshot's day folders beside the shards
        (directory / "data" / day).mkdir()
        (directory / "data" / day / "part.parquet").write_bytes(parquet)
    summary, _ = _summary(monkeypatch, capsys, directory)
    assert summary["total_events"] == 3 + 2 * rows
    res = run_cli(monkeypatch, capsys, "events", "tail", "--telemetry-dir", str(directory))
    assert res.code == 0 and "t2" in res.text
