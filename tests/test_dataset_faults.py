"""The HF Dataset's edges: a line that does not fit the schema, a shard or directory deleted
under a live sink, and the card on a full disk or over a directory."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import respx

from agent.core.dataset import card
from agent.core.dataset.sink import HFDatasetSink
from agent.testing.fake_hub import FakeHub
from tests.rows import read_rows
from tests.test_hf_dataset import REPO, event

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "misfit",
    [
        {"event_id": "bad", "timestamp": "yesterday"},
        {"event_id": "bad", "turn_index": "abc"},
        {"event_id": "bad", "langfuse_sampled": {"no": 1}},
    ],
)
def test_a_line_that_does_not_fit_the_schema_is_left_out_and_counted_never_blocking_the_push(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    misfit: dict,
) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    data = tmp_path / "data"
    data.mkdir()
    ok = {
        "event_id": "ok1",
        "event_type": "tool_call",
        "timestamp": "2026-11-29T10:00:00.000000+00:00",
        "session_id": "s",
        "data": "{}",
    }
    # Another writer's shard (one name per case: the warning is once per shard and process).
    shard = f"events-20261129-{zlib.crc32(json.dumps(misfit).encode()):012x}.jsonl"
    (data / shard).write_text(
        json.dumps(ok)
        + "\n"
        + json.dumps(misfit)
        + "\n"
        + json.dumps({**ok, "event_id": "ok2"})
        + "\n"
    )
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO)
        sink = HFDatasetSink(tmp_path, repo_id=REPO, token="hf_x_not_real", push_thread=False)
        for i in range(3):
            sink.export(event(i))
        assert sink.flush(5)
        with caplog.at_level(logging.WARNING):
            assert sink.push_now() is True
        sink.export(event(3))
        assert sink.shutdown(5) is True  # the next push is not blocked either
    ids = [r["event_id"] for r in hub.rows()]
    assert "bad" not in ids and {"ok1", "ok2"} <= set(ids) and len(ids) == 6
    assert sink.stats.unpushable_lines == 1
    assert f"1 line(s) of {shard} are not valid rows and are not pushed" in caplog.text
    assert set(hub.uploads.values()) == {1}


@pytest.mark.parametrize("deleted", ["directory", "shard"])
def test_rows_written_after_the_shard_or_directory_was_deleted_reach_a_new_shard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, deleted: str
) -> None:
    directory = tmp_path / "telemetry"
    sink = HFDatasetSink(directory)
    for i in range(5):
        sink.export(event(i))
    assert sink.flush(5)
    if deleted == "directory":
        shutil.rmtree(directory)
    else:
        for shard in (directory / "data").glob("*.jsonl"):
            shard.unlink()
    with caplog.at_level(logging.WARNING):
        for i in range(5, 10):
            sink.export(event(i))
        assert sink.flush(5)
        assert sink.shutdown(5)
    assert [r["data"]["i"] for r in read_rows(directory)] == list(range(5, 10))
    assert sink.stats.reopened_shards == 1 and sink.stats.written == 10
    assert "was deleted or replaced while in use" in caplog.text
    assert (directory / "README.md").read_bytes() == card.local_card()


def test_the_card_leaves_no_temporary_file_when_readme_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "README.md").mkdir()
    for _ in range(2):
        card.write_local_card(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_the_card_leaves_no_partial_temporary_file_on_a_full_disk(tmp_path: Path) -> None:
    """A file-size limit below the card's size: the write fails part-way (EFBIG), as on a disk
    with a few KB left."""
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from agent.core.dataset import card
        assert len(card.local_card()) > 4096
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        for _ in range(3):  # three starts
            card.write_local_card(Path({str(tmp_path)!r}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cannot write the dataset card" in proc.stderr
    assert list(tmp_path.iterdir()) == []
