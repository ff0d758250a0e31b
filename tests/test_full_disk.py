"""demo and run on a full disk: warnings, never a traceback; the session file whole or absent.

The disk is a 64 KiB tmpfs filled to the brim (when the suite runs as root and may mount), else
a file-size limit of 0 bytes on the child process (every write to a file then fails, EFBIG).
(The HF sink's own partial progress on a full disk belongs to tests/test_hf_dataset.py.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.core.agent_loop import Agent
from agent.core.session import Session
from tests.cli_helpers import run_process

ROOT = Path(__file__).resolve().parents[1]

FullDisk = tuple[Path, Callable[[], None] | None]


def _mount_full_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True
    )
    if proc.returncode != 0:
        return False
    with contextlib.suppress(OSError), open(where / "filler", "wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    return True


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[FullDisk]:
    where = tmp_path / "full"
    where.mkdir()
    if _mount_full_tmpfs(where):
        try:
            yield where, None
        finally:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
        return

    def no_file_writes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    yield where, no_file_writes


def cli(disk: FullDisk, *args: str) -> subprocess.CompletedProcess:
    return run_process(*args, cwd=ROOT, preexec_fn=disk[1])


def test_demo_survives_a_full_disk_with_warnings(full_disk: FullDisk) -> None:
    telemetry = full_disk[0] / "telemetry"
    proc = cli(full_disk, "demo", "--telemetry-dir", str(telemetry))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    text = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "could not save the session to" in text
    assert "session 2 starts without restoring it" in text
    assert "HF Dataset sink cannot write to" in text
    assert "rows not written" in text or "not written" in text
    # No partial session file, no temporary file left behind.
    sessions = telemetry / "sessions"
    assert not sessions.exists() or list(sessions.iterdir()) == []


def test_run_save_on_a_full_disk_is_a_message_and_exit_1(full_disk: FullDisk) -> None:
    save = full_disk[0] / "session.json"
    proc = cli(
        full_disk,
        "run",
        "Count the words here",
        "--telemetry-dir",
        str(full_disk[0] / "telemetry"),
        "--save",
        str(save),
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Done." in proc.stdout  # the reply was printed before the save failed
    assert f"could not save the session to {save}" in " ".join(proc.stderr.split())
    assert not save.exists()


def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = Agent(Session(user_id="u"), AgentConfig(telemetry_dir=tmp_path))
    try:
        path = agent.save(tmp_path / "s.json")
        before = path.read_bytes()
        agent.messages.append({"role": "user", "content": "more"})

        def enospc(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr("agent.core.agent_loop.os.fsync", enospc)
        with pytest.raises(OSError, match="No space left"):
            agent.save(path)
    finally:
        agent.close()
    assert path.read_bytes() == before and json.loads(before)["session_id"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["s.json"]


def test_no_usable_temporary_directory_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # litellm calls tempfile.gettempdir() at import; on a full disk that raises.
    import tempfile

    from agent.cli.common import tolerate_no_temp_dir

    def full() -> str:
        raise FileNotFoundError(errno.ENOENT, "No usable temporary directory found")

    monkeypatch.setattr(tempfile, "gettempdir", full)
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv("TMPDIR", "/somewhere/tmp")
    tolerate_no_temp_dir()
    assert tempfile.tempdir == "/somewhere/tmp"
    assert "no usable temporary directory" in capsys.readouterr().err
