"""The HF Dataset sink: crash-safe local rows, readable by DuckDB, pushed to a (mocked) Hub."""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import httpx
import pytest
import respx

from agent.core.hf_dataset import HFDatasetSink
from agent.core.session import Event, new_id, utcnow

HUB = "https://huggingface.co"
REPO = "acme/ml-intern-telemetry"


def event(i: int = 0, **data) -> Event:
    return Event(
        event_id=new_id(),
        event_type="tool_call",
        timestamp=utcnow(),
        data={"i": i, **data},
        session_id="s1",
        user_id="u1",
        turn_index=0,
    )


def lines(directory: Path) -> list[str]:
    out: list[str] = []
    for p in sorted((directory / "data").glob("*.jsonl")):
        out.extend(p.read_text().splitlines())
    return out


def test_rows_are_whole_json_lines_readable_by_duckdb(tmp_path: Path) -> None:
    sink = HFDatasetSink(tmp_path)
    for i in range(500):
        sink.export(event(i))
    assert sink.shutdown(5)
    rows = [json.loads(line) for line in lines(tmp_path)]
    assert [r["data"]["i"] for r in rows] == list(range(500))
    con = duckdb.connect()
    n, s = con.execute(
        f"SELECT count(*), sum(CAST(data.i AS BIGINT)) FROM read_json_auto('{tmp_path}/data/*.jsonl')"
    ).fetchone()
    assert (n, s) == (500, sum(range(500)))


def test_secrets_never_reach_a_row(tmp_path: Path) -> None:
    sink = HFDatasetSink(tmp_path)
    token = "hf_" + "a1B2c3D4e5" * 4
    sink.export(event(0, error=f"auth failed for {token}", nested={"k": [f"Bearer {token}"]}))
    sink.shutdown(5)
    text = "".join(lines(tmp_path))
    assert token not in text
    assert "[REDACTED:hf_token]" in text


def test_partial_line_from_a_crash_is_repaired_at_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shard = data / "events-20260101-deadbeef.jsonl"
    shard.write_text('{"event_id": "a", "event_type": "x"}\n{"event_id": "b", "event_ty')
    sink = HFDatasetSink(tmp_path)
    sink.export(event(1))
    sink.shutdown(5)
    assert shard.read_text() == '{"event_id": "a", "event_type": "x"}\n'
    assert sink.stats.repaired_shards == 1
    assert json.loads(lines(tmp_path)[0])["event_id"] == "a"
    assert len(lines(tmp_path)) == 2


def test_killed_writer_leaves_no_partial_line_and_the_dataset_continues(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from agent.core.hf_dataset import HFDatasetSink
        from agent.core.session import Event, new_id, utcnow
        sink = HFDatasetSink({str(tmp_path)!r})
        i = 0
        print("ready", flush=True)
        while True:
            sink.export(Event(new_id(), "tool_call", utcnow(), {{"i": i, "pad": "x" * 3000}}))
            i += 1
            if i % 200 == 0:
                time.sleep(0.001)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    sink = HFDatasetSink(tmp_path)
    sink.export(event(-1))
    sink.shutdown(5)
    rows = [json.loads(line) for line in lines(tmp_path)]  # every line parses
    assert len(rows) > 100
    assert rows[-1]["data"]["i"] == -1 or any(r["data"]["i"] == -1 for r in rows)


def test_unwritable_directory_keeps_rows_in_memory_then_writes_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "data").write_text("a file where the data directory should be")
    sink = HFDatasetSink(tmp_path, max_pending=50)
    for i in range(80):
        sink.export(event(i))
    assert sink.flush(2) is False
    assert sink.stats.dropped == 30  # beyond the bound, counted
    assert sink.stats.write_errors >= 1
    assert any("cannot write" in r.getMessage() for r in caplog.records)
    (tmp_path / "data").unlink()
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and len(lines(tmp_path) if (tmp_path / "data").is_dir() else []) < 50
    ):
        time.sleep(0.1)
    sink.shutdown(5)
    assert [json.loads(x)["data"]["i"] for x in lines(tmp_path)] == list(range(50))


def test_a_failing_write_is_rolled_back_to_the_last_whole_line(tmp_path: Path, monkeypatch) -> None:
    sink = HFDatasetSink(tmp_path)
    sink.export(event(0))
    assert sink.flush(5)
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, data[: len(data) // 2])  # half a line hits the disk ...
            raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", flaky_write)
    sink.export(event(1))
    time.sleep(0.2)
    for line in lines(tmp_path):
        json.loads(line)  # never a partial line, even while the disk is full
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(lines(tmp_path)) < 2:
        time.sleep(0.05)
    sink.shutdown(5)
    assert [json.loads(x)["data"]["i"] for x in lines(tmp_path)] == [0, 1]


# -- Hub push --


def _mock_hub(router: respx.Router, commits: list[dict], fail_first: int = 0) -> dict[str, int]:
    state = {"commit_calls": 0}
    router.post(f"{HUB}/api/repos/create").mock(
        return_value=httpx.Response(200, json={"url": f"{HUB}/datasets/{REPO}", "name": REPO})
    )

    def preupload(request: httpx.Request) -> httpx.Response:
        files = json.loads(request.content)["files"]
        return httpx.Response(
            200,
            json={
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in files
                ]
            },
        )

    router.post(url__regex=rf"{HUB}/api/datasets/{REPO}/preupload/.*").mock(side_effect=preupload)

    def commit(request: httpx.Request) -> httpx.Response:
        state["commit_calls"] += 1
        if state["commit_calls"] <= fail_first:
            return httpx.Response(503, json={"error": "Service Unavailable"})
        files = {}
        for raw in request.content.decode().splitlines():
            item = json.loads(raw)
            if item.get("key") == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        commits.append(files)
        return httpx.Response(
            200,
            json={
                "success": True,
                "commitOid": "a" * 40,
                "commitUrl": f"{HUB}/datasets/{REPO}/commit/{'a' * 40}",
            },
        )

    router.post(url__regex=rf"{HUB}/api/datasets/{REPO}/commit/.*").mock(side_effect=commit)
    return state


def _pushed_rows(commits: list[dict]) -> list[int]:
    latest: dict[str, bytes] = {}
    for c in commits:
        latest.update(c)
    rows = []
    for content in latest.values():
        rows.extend(json.loads(x)["data"]["i"] for x in content.decode().splitlines())
    return sorted(rows)


def test_push_to_the_hub(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    commits: list[dict] = []
    with respx.mock(assert_all_called=False) as router:
        _mock_hub(router, commits)
        sink = HFDatasetSink(
            tmp_path, repo_id=REPO, token="hf_test_token_not_real", push_interval_s=3600
        )
        for i in range(10):
            sink.export(event(i))
        assert sink.flush(5)
        assert sink.push_now() is True
        assert sink.push_now() is True  # nothing new: no second commit
        sink.shutdown(5)
    assert len(commits) == 1
    (path,) = commits[0]
    assert path.startswith("data/events-") and path.endswith(".jsonl")
    assert _pushed_rows(commits) == list(range(10))


def test_push_failure_then_recovery_loses_and_duplicates_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    commits: list[dict] = []
    with respx.mock(assert_all_called=False) as router:
        state = _mock_hub(router, commits, fail_first=1)
        sink = HFDatasetSink(
            tmp_path, repo_id=REPO, token="hf_test_token_not_real", push_interval_s=3600
        )
        for i in range(5):
            sink.export(event(i))
        sink.flush(5)
        assert sink.push_now() is False  # the Hub answered 5xx (after the client's own retries)
        assert sink.stats.push_failures == 1
        assert len(lines(tmp_path)) == 5  # every row still local
        for i in range(5, 8):
            sink.export(event(i))
        sink.flush(5)
        assert sink.push_now() is True
        sink.shutdown(5)
    assert state["commit_calls"] >= 2
    assert _pushed_rows(commits) == list(range(8))  # none lost, none duplicated
