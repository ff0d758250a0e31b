"""The HF Dataset sink: crash-safe local rows, readable by DuckDB, pushed to a (mocked) Hub."""

from __future__ import annotations

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
import pytest
import respx

from agent.core.dataset.sink import HFDatasetSink
from agent.core.session import Event, new_id, utcnow
from agent.testing.fake_hub import FakeHub
from tests.rows import read_rows
from tests.waiting import wait_for

HUB = "https://huggingface.co"
REPO = "acme/ml-intern-telemetry"


def event(i: int = 0, **data) -> Event:
    # An event type of the application's own: its data is free-form (the declared types'
    # data keys are checked by tests/test_dataset_load.py).
    return Event(
        event_id=new_id(),
        event_type="test_event",
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
    for line in lines(tmp_path):
        json.loads(line)  # every line is a whole JSON object
    assert [r["data"]["i"] for r in read_rows(tmp_path)] == list(range(500))
    con = duckdb.connect()
    n, s = con.execute(
        "SELECT count(*), sum(CAST(data->>'i' AS BIGINT)) "
        f"FROM read_json_auto('{tmp_path}/data/*.jsonl')"
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
    assert read_rows(tmp_path)[0]["event_id"] == "a"
    assert len(lines(tmp_path)) == 2


def test_killed_writer_leaves_no_partial_line_and_the_dataset_continues(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from agent.core.dataset.sink import HFDatasetSink
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
    rows = read_rows(tmp_path)  # every line parses
    assert len(rows) > 100
    assert any(r["data"]["i"] == -1 for r in rows)


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
    assert [r["data"]["i"] for r in read_rows(tmp_path)] == list(range(50))


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
    assert [r["data"]["i"] for r in read_rows(tmp_path)] == [0, 1]


# -- a full disk --


class TinyDisk:
    """A disk that holds ``capacity`` bytes of the sink's shard: a write past it is short, then
    ENOSPC, as on a real full filesystem. Other file descriptors are untouched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sink: HFDatasetSink, capacity: int) -> None:
        self.capacity = capacity
        self.sink = sink
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            if fd != sink._shard.fd:
                return real_write(fd, data)
            free = self.capacity - os.fstat(fd).st_size
            if free <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, bytes(data[:free]))

        monkeypatch.setattr(os, "write", write)


def test_a_full_disk_keeps_the_rows_that_fit_and_resumes_as_soon_as_room_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = HFDatasetSink(tmp_path, max_pending=1_000)
    sink.export(event(-1))
    assert sink.flush(5)
    size = (tmp_path / "data").stat() and sum(
        p.stat().st_size for p in (tmp_path / "data").glob("*.jsonl")
    )
    row_bytes = size  # one row
    disk = TinyDisk(monkeypatch, sink, capacity=size + 10 * row_bytes + row_bytes // 2)
    for i in range(200):
        sink.export(event(i))
    assert sink.flush(0.5) is False  # not everything fits
    rows = read_rows(tmp_path)  # whole lines only, even mid-batch
    assert 5 <= len(rows) - 1 <= 10, len(rows)
    written_before = len(rows)
    # Room for a few more rows, far less than the backlog: some of it goes out at once.
    disk.capacity += 4 * row_bytes
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(read_rows(tmp_path)) < written_before + 3:
        time.sleep(0.02)
    assert len(read_rows(tmp_path)) >= written_before + 3
    disk.capacity = 10**9
    assert sink.flush(10)
    sink.shutdown(5)
    assert [r["data"]["i"] for r in read_rows(tmp_path)] == list(range(-1, 200))
    assert sink.stats.dropped == 0 and sink.stats.written == 201
    assert sink.stats.write_errors >= 1


def test_a_full_disk_beyond_the_bound_drops_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = HFDatasetSink(tmp_path, max_pending=30)
    sink.export(event(-1))
    assert sink.flush(5)
    TinyDisk(monkeypatch, sink, capacity=0)
    for i in range(100):
        sink.export(event(i))
    time.sleep(0.2)
    assert sink.stats.dropped == 70  # 30 kept pending, the rest counted
    assert len(read_rows(tmp_path)) == 1
    sink.shutdown(0.5)
    assert sink.stats.pending == 30


def test_unencodable_strings_are_replaced_counted_and_the_row_kept(tmp_path: Path) -> None:
    bad = os.fsdecode(b"notes-\xff.txt")  # a lone surrogate, as a non-UTF-8 file name gives
    sink = HFDatasetSink(tmp_path)
    sink.export(event(0))
    sink.export(
        Event(
            event_id=new_id(),
            event_type="tool_call",
            timestamp=utcnow(),
            data={"name": "run_python", "ok": False, "error": f"cannot open {bad}"},
            session_id=f"s-{bad}",
            user_id=bad,
            turn_index=0,
        )
    )
    sink.export(event(2))
    assert sink.shutdown(5)
    rows = read_rows(tmp_path)
    assert len(rows) == 3 and sink.stats.dropped == 0
    assert rows[1]["data"]["error"] == "cannot open notes-\ufffd.txt"
    assert rows[1]["session_id"] == "s-notes-\ufffd.txt"
    assert rows[1]["user_id"] == "notes-\ufffd.txt"
    assert sink.stats.replaced_strings == 3


def test_a_value_of_another_type_is_converted_when_lossless_else_null_and_counted(
    tmp_path: Path,
) -> None:
    sink = HFDatasetSink(tmp_path)
    sink.export(
        Event(
            event_id=new_id(),
            event_type="llm_call",
            timestamp=utcnow(),
            data={
                "model": 42,  # string declared: "42" (converted)
                "latency_ms": "fast",  # float declared: null
                "prompt_tokens": 12.0,  # int declared, a whole float: 12 (converted)
                "completion_tokens": 1e300,  # whole, but beyond int64: null
                "total_tokens": True,  # a bool is not an int: null
                "cost_usd": 3,  # float declared: 3.0
                "stream": 1,  # bool declared: null
            },
            session_id="s1",
            turn_index=2.0,  # type: ignore[arg-type]
        )
    )
    assert sink.shutdown(5)
    (row,) = read_rows(tmp_path)
    assert row["turn_index"] == 2
    assert row["data"] == {
        "model": "42",
        "latency_ms": None,
        "prompt_tokens": 12,
        "completion_tokens": None,
        "total_tokens": None,
        "cost_usd": 3.0,
        "stream": None,
    }
    # converted: model, prompt_tokens, completion_tokens (then out of range), turn_index;
    # null: latency_ms, completion_tokens, total_tokens, stream
    assert sink.stats.schema_repairs == 8 and sink.stats.dropped == 0
    (n,) = duckdb.sql(
        "SELECT count(*) FROM read_json('"
        + str(tmp_path / "data" / "*.jsonl")
        + "', format='newline_delimited', columns={'turn_index': 'BIGINT'})"
    ).fetchall()[0]
    assert n == 1


# -- Hub push --


def _sink(directory: Path, clock=None, **kw) -> HFDatasetSink:
    return HFDatasetSink(
        directory,
        repo_id=REPO,
        token="hf_test_token_not_real",
        push_thread=False,
        **({"clock": clock, "wall_clock": clock} if clock else {}),
        **kw,
    )


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


def test_push_sends_immutable_parquet_parts_and_the_card(tmp_path: Path, hub_env) -> None:
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO)
        sink = _sink(tmp_path)
        for i in range(10):
            sink.export(event(i))
        assert sink.flush(5)
        assert sink.push_now() is True
        assert sink.push_now() is True  # nothing new: no second commit
        assert len(hub.commits) == 1
        for i in range(10, 15):
            sink.export(event(i))
        assert sink.flush(5)
        assert sink.push_now() is True
        sink.shutdown(5)
    assert len(hub.commits) == 2
    first, second = (sorted(c.files) for c in hub.commits)
    assert "README.md" in first and "README.md" not in second
    (part1,) = [p for p in first if p.startswith("data/")]
    (part2,) = [p for p in second if p.startswith("data/")]
    day = utcnow().strftime("%Y-%m-%d")
    assert part1.startswith(f"data/{day}/events-") and part1.endswith(".parquet")
    assert part1 != part2
    assert set(hub.uploads.values()) == {1}  # nothing uploaded twice
    assert sorted(json.loads(r["data"])["i"] for r in hub.rows()) == list(range(15))
    assert sink.stats.rows_pushed == 15 and sink.stats.parts_pushed == 2


def test_push_failure_then_recovery_loses_and_duplicates_nothing(tmp_path: Path, hub_env) -> None:
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, fail_commits=1)
        sink = _sink(tmp_path)
        for i in range(5):
            sink.export(event(i))
        sink.flush(5)
        assert sink.push_now() is False  # the Hub answered 5xx
        assert sink.stats.push_failures == 1
        assert len(lines(tmp_path)) == 5  # every row still local
        for i in range(5, 8):
            sink.export(event(i))
        sink.flush(5)
        assert sink.push_now() is True
        sink.shutdown(5)
    assert hub.requests["commit"] == 2
    assert sorted(json.loads(r["data"])["i"] for r in hub.rows()) == list(range(8))


def test_a_commit_whose_reply_was_lost_is_not_sent_again(tmp_path: Path, hub_env) -> None:
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, lose_reply_of_commits=1)
        sink = _sink(tmp_path)
        for i in range(5):
            sink.export(event(i))
        sink.flush(5)
        assert sink.push_now() is False  # stored by the Hub, but the reply was a 500
        for i in range(5, 9):
            sink.export(event(i))
        sink.flush(5)
        # A new process on the same directory (the state file carries the part in flight).
        sink.shutdown(5)
        again = _sink(tmp_path)
        assert again.push_now() is True
        again.shutdown(5)
    assert set(hub.uploads.values()) == {1}
    assert sorted(json.loads(r["data"])["i"] for r in hub.rows()) == list(range(9))
    assert hub.requests["paths_info"] >= 1


def test_a_429_is_honoured_with_its_retry_after_and_backoff(tmp_path: Path, hub_env) -> None:
    now = [1000.0]
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, clock=lambda: now[0], commits_per_hour=1)
        sink = _sink(tmp_path, clock=lambda: now[0], push_interval_s=600, push_jitter=0)
        sink.export(event(0))
        now[0] += 600
        assert sink.schedule.due()
        assert sink.push_due() is True
        sink.export(event(1))
        now[0] += 600
        assert sink.push_due() is False  # 429: the hour's budget is spent
        (refused_at, retry_after, _) = hub.refused[0]
        assert retry_after == pytest.approx(3000, abs=1)
        assert sink.schedule.next_due >= refused_at + retry_after
        assert sink.stats.rate_limited == 1
        now[0] = sink.schedule.next_due
        assert sink.push_due() is True
        sink.shutdown(5)
    assert len(hub.refused) == 1
    assert sorted(json.loads(r["data"])["i"] for r in hub.rows()) == [0, 1]


def test_processes_sharing_a_directory_push_it_once(tmp_path: Path, hub_env) -> None:
    now = [1000.0]
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, clock=lambda: now[0])
        a = _sink(tmp_path, clock=lambda: now[0], push_interval_s=600, push_jitter=0)
        b = _sink(tmp_path, clock=lambda: now[0], push_interval_s=600, push_jitter=0)
        for i in range(6):
            (a if i % 2 else b).export(event(i))
        assert a.flush(5) and b.flush(5)
        now[0] += 600
        assert a.push_due() and b.push_due()
        assert len(hub.commits) == 1  # b found the directory pushed a moment ago
        (commit,) = hub.commits
        assert len([p for p in commit.files if p.startswith("data/")]) == 2  # both shards
        b.export(event(6))
        a.shutdown(5)
        b.shutdown(5)  # the final push is not skipped
    assert sorted(json.loads(r["data"])["i"] for r in hub.rows()) == list(range(7))
    assert set(hub.uploads.values()) == {1}


def test_retry_after_forms() -> None:
    from agent.core.dataset.schedule import retry_after_s

    assert retry_after_s({"Retry-After": "120"}) == 120
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412420.0) == 60
    assert retry_after_s({"RateLimit": '"api";r=0;t=55'}) == 55
    assert retry_after_s({}) is None


def test_a_day_change_mid_run_starts_a_new_shard_pushed_to_its_day(
    tmp_path: Path, hub_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from agent.core.dataset import shards

    today = [datetime(2026, 5, 31, 23, 59, 59, tzinfo=UTC)]

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return today[0]

    monkeypatch.setattr(shards, "datetime", Clock)
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO)
        sink = _sink(tmp_path)
        for i in range(3):
            sink.export(event(i))
        assert sink.flush(5)
        assert sink.push_now()  # part of day 1, still live
        sink.export(event(3))
        assert sink.flush(5)
        today[0] = datetime(2026, 6, 1, 0, 0, 1, tzinfo=UTC)
        for i in range(4, 7):
            sink.export(event(i))
        sink.shutdown(5)
    assert sorted(p.name[:15] for p in (tmp_path / "data").glob("*.jsonl")) == [
        "events-20260531",
        "events-20260601",
    ]
    days = sorted(p.split("/")[1] for p in hub.data_files())
    assert days == ["2026-05-31", "2026-05-31", "2026-06-01"]
    assert sorted(json.loads(r["data"])["i"] for r in hub.rows()) == list(range(7))
    assert set(hub.uploads.values()) == {1}


# -- the push thread (a BatchWorker driven by its tick) --


def test_the_push_thread_pushes_when_due_and_once_more_at_shutdown(tmp_path: Path, hub_env) -> None:
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO)
        sink = HFDatasetSink(
            tmp_path, repo_id=REPO, token="hf_test_token_not_real", push_interval_s=0.3
        )
        for i in range(3):
            sink.export(event(i))
        # Nobody calls push_*: the schedule's tick wakes the pusher.
        assert wait_for(lambda: len(hub.rows()) == 3)
        sink.export(event(3))
        assert sink.shutdown(10)  # the final push carries the last row
    assert sorted(json.loads(r["data"])["i"] for r in hub.rows()) == [0, 1, 2, 3]
    assert set(hub.uploads.values()) == {1}
    assert sink.stats.rows_pushed == 4


def test_shutdown_says_when_the_final_push_failed(tmp_path: Path, hub_env) -> None:
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, fail_commits=1)
        sink = HFDatasetSink(
            tmp_path, repo_id=REPO, token="hf_test_token_not_real", push_interval_s=3600
        )
        sink.export(event(0))
        assert sink.shutdown(10) is False  # on disk, but not on the Hub
        assert hub.requests["commit"] == 1 and not hub.rows()
        assert sink.stats.push_failures == 1 and sink.stats.written == 1
        again = _sink(tmp_path)  # the next process pushes what was left
        assert again.shutdown(10)
    assert [json.loads(r["data"])["i"] for r in hub.rows()] == [0]


@pytest.mark.internal_errors_expected
def test_a_push_that_raises_backs_off_instead_of_spinning(
    tmp_path: Path, hub_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ML_INTERN_STRICT_TELEMETRY")
    calls: list[float] = []
    with respx.mock(assert_all_called=False) as router:
        FakeHub(router, REPO)
        sink = HFDatasetSink(
            tmp_path, repo_id=REPO, token="hf_test_token_not_real", push_interval_s=0.1
        )

        def broken() -> bool:
            calls.append(time.monotonic())
            raise RuntimeError("a bug in the pusher")

        assert sink._hub is not None
        monkeypatch.setattr(sink._hub, "push_due", broken)
        assert wait_for(lambda: calls)
        time.sleep(0.5)
        assert len(calls) == 1  # the schedule moved on (backoff), the thread did not spin
        assert sink.schedule.failures == 1
        sink.shutdown(10)
