"""The local shards: append-only JSON Lines files, one per writer process and UTC day.

``DIR/data/events-<YYYYMMDD>-<shard id>[-<n>].jsonl``: a process owns its shard for its lifetime
(an exclusive ``flock`` held on the open file tells other processes it is live) and starts a
new one at midnight UTC or past ``SHARD_MAX_BYTES``.

Contracts:
- ``ShardWriter.append`` writes whole lines only. When a write fails part-way (a full disk), the
  whole lines that reached the file stay, the rest is cut back to the last whole line, and the
  caller learns how many lines (from the front) are on disk: never a partial row.
- Before each append (one per written batch, not per row) the open file is checked against its
  path (one ``stat``): a shard deleted or replaced while open, or its whole directory deleted, is
  noticed and the rows go to a new shard (a new name: the Hub state's record of the old one
  must not apply to it), the directory recreated; ``reopened`` counts it and it is warned once.
  The rows written to the deleted file before are gone with it.
- ``repair_partial_lines`` cuts a partial last line (left by a crash mid-write) from the shards
  no live process holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from agent.core import guard

logger = logging.getLogger(__name__)

SHARD_MAX_BYTES = 64 * 1024 * 1024
SHARD_GLOB = "*.jsonl"
# events-<YYYY><MM><DD>-...: the UTC day a shard holds (its parts go to that day's Hub folder).
SHARD_NAME = re.compile(r"^events-(\d{4})(\d{2})(\d{2})-")


class ShardWriter:
    """This process's current shard; not thread-safe (one writer thread uses it)."""

    def __init__(self, data_dir: Path, shard_id: str) -> None:
        self.data_dir = data_dir
        self.shard_id = shard_id
        self.fd: int | None = None
        self.path: Path | None = None
        self.reopened = 0  # shards found deleted or replaced while open
        self._day: str | None = None
        self._generation = 0  # bumped when the open shard vanished: the next gets a new name

    def append(self, data: bytes) -> tuple[int, OSError | None]:
        """Append ``data`` (whole lines). Returns the bytes of whole lines now on disk (all of
        ``data`` unless the write failed) and the error, if any."""
        written = 0
        fd: int | None = None
        size = 0
        try:
            fd = self._open()
            size = os.fstat(fd).st_size
            while written < len(data):
                n = os.write(fd, data[written:])
                if n <= 0:
                    raise OSError("short write")
                written += n
            return len(data), None
        except OSError as exc:
            kept = 0
            if fd is not None:
                # Keep the whole lines known to be written, cut the rest (a partial line, or
                # bytes a failing write left behind): never a partial row.
                keep = data.rfind(b"\n", 0, written) + 1
                try:
                    os.ftruncate(fd, size + keep)
                    kept = keep
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
            self.close()  # reopened (maybe elsewhere, maybe a new day) by the next append
            return kept, exc

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def _open(self) -> int:
        day = datetime.now(UTC).strftime("%Y%m%d")
        if self.fd is not None and self._day == day:
            try:
                st = os.fstat(self.fd)
                if st.st_size < SHARD_MAX_BYTES and self._still_there(st):
                    return self.fd
            except OSError:
                pass
        self.close()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stem = f"events-{day}-{self.shard_id}" + (
            f"-r{self._generation}" if self._generation else ""
        )
        n = 0
        while True:
            suffix = f"-{n}" if n else ""
            path = self.data_dir / f"{stem}{suffix}.jsonl"
            if not path.exists() or path.stat().st_size < SHARD_MAX_BYTES:
                break
            n += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # Held for the process's lifetime: tells other processes this shard is live.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.fd, self._day, self.path = fd, day, path
        return fd

    def _still_there(self, st: os.stat_result) -> bool:
        """Whether the open file is still the one at its path (not deleted or replaced)."""
        assert self.path is not None
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            here = None
        if here is not None and (here.st_ino, here.st_dev) == (st.st_ino, st.st_dev):
            return True
        self.reopened += 1
        self._generation += 1
        guard.warn_once(
            f"shard-gone-{self.data_dir}",
            "HF Dataset: %s was deleted or replaced while in use (the rows written to it are "
            "gone with it); writing the next rows to a new shard in %s",
            self.path,
            self.data_dir,
        )
        return False


def shard_paths(data_dir: Path) -> list[Path]:
    """Every shard of ``data_dir``, sorted by name."""
    return sorted(data_dir.glob(SHARD_GLOB)) if data_dir.is_dir() else []


def repair_partial_lines(data_dir: Path) -> int:
    """Cut a partial last line from every shard no process holds; returns how many were cut."""
    repaired = 0
    for path in shard_paths(data_dir):
        try:
            with open(path, "rb+") as fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live process is writing it
                size = os.fstat(fh.fileno()).st_size
                if size == 0:
                    continue
                fh.seek(size - 1)
                if fh.read(1) == b"\n":
                    continue
                keep = _last_newline_end(fh, size)
                fh.truncate(keep)
                repaired += 1
                logger.warning(
                    "HF Dataset: removed a partial last line (%d bytes) from %s",
                    size - keep,
                    path,
                )
        except OSError as exc:
            guard.warn_once(f"repair-{path}", "HF Dataset: cannot check %s: %s", path, exc)
    return repaired


def _last_newline_end(fh: BinaryIO, size: int) -> int:
    """Offset just past the last newline in the file (0 if none)."""
    block = 64 * 1024
    pos = size
    while pos > 0:
        start = max(0, pos - block)
        fh.seek(start)
        chunk = fh.read(pos - start)
        idx = chunk.rfind(b"\n")
        if idx >= 0:
            return start + idx + 1
        pos = start
    return 0
