"""The HF Dataset sink: every event as one JSON line on disk, pushed to a Hub dataset repo.

Layout (readable by ``datasets.load_dataset("json", data_dir=DIR / "data")`` and by DuckDB's
``read_json_auto('DIR/data/*.jsonl')``)::

    DIR/data/events-<UTC date>-<shard id>.jsonl   one shard per process and day, append-only
    DIR/.hub_state.json                           bytes of each shard already on the Hub

Contracts:
- ``export`` never blocks on I/O: events go to a bounded in-memory queue; a daemon thread
  serialises them (every string scrubbed of named secrets) and appends whole lines with one
  ``write`` per batch. A write that fails or is cut short is rolled back to the last whole line
  and retried later, so a crash or a full disk never leaves a partial line. A shard found with
  a partial last line at start (a crash mid-write) is repaired; its lock says whether a live
  process still owns it.
- When the queue is full or the directory cannot be written for long, rows are held in memory
  up to ``max_pending`` and then dropped; every drop is counted and reported at shutdown.
- With a repo id and a token, a second daemon thread pushes each shard's complete lines with
  ``HfApi.create_commit`` every ``push_interval_s``. A shard is uploaded whole to the same path
  each time, so a failed push loses nothing and a retried one duplicates nothing; the state file
  only advances after the Hub confirms the commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.core import guard
from agent.core.redact import scrub_obj
from agent.core.session import Event

logger = logging.getLogger(__name__)

SHARD_MAX_BYTES = 64 * 1024 * 1024
# How long the writer lets a burst of rows gather after a quiet spell (see _write_loop).
_GATHER_S = 0.02
STATE_FILE = ".hub_state.json"


@dataclass
class SinkStats:
    written: int = 0
    dropped: int = 0
    write_errors: int = 0
    repaired_shards: int = 0
    pushes: int = 0
    push_failures: int = 0
    pending: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class HFDatasetSink:
    """See the module docstring. Thread-safe; ``export`` may be called from any thread."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        repo_id: str | None = None,
        token: str | None = None,
        push_interval_s: float = 60.0,
        max_pending: int = 100_000,
        private: bool = True,
        api: Any = None,
    ) -> None:
        self.directory = Path(directory)
        self.data_dir = self.directory / "data"
        self.repo_id = repo_id
        self.token = token
        self.push_interval_s = push_interval_s
        self.max_pending = max_pending
        self.private = private
        self.stats = SinkStats()
        self._api = api
        self._shard_id = uuid.uuid4().hex[:12]
        self._queue: deque[Event] = deque()
        self._pending: deque[bytes] = deque()  # serialised lines awaiting a successful write
        self._cond = threading.Condition()
        self._push_lock = threading.Lock()
        self._written_seq = 0
        self._enqueued_seq = 0
        self._closed = False
        self._idle = False
        self._hurry = threading.Event()
        self._fd: int | None = None
        self._shard_path: Path | None = None
        self._shard_day: str | None = None
        self._repo_ready = False
        self._repair_existing()
        self._writer = threading.Thread(
            target=self._write_loop, name="hf-dataset-writer", daemon=True
        )
        self._writer.start()
        self._pusher: threading.Thread | None = None
        self._push_wake = threading.Event()
        if self.repo_id and self.token:
            self._pusher = threading.Thread(
                target=self._push_loop, name="hf-dataset-push", daemon=True
            )
            self._pusher.start()
        elif self.repo_id:
            guard.warn_once(
                "hub-no-token",
                "HF Dataset push to %s is off: no token (set HF_TOKEN); rows stay local in %s",
                self.repo_id,
                self.data_dir,
            )

    # -- the sink contract --

    def export(self, event: Event) -> None:
        with self._cond:
            if self._closed:
                self.stats.dropped += 1
                return
            if len(self._queue) + len(self._pending) >= self.max_pending:
                self.stats.dropped += 1
                guard.warn_once(
                    "hf-sink-full",
                    "HF Dataset sink: %d rows waiting to be written; dropping new rows (counted)",
                    self.max_pending,
                )
                return
            self._queue.append(event)
            self._enqueued_seq += 1
            if self._idle:
                self._cond.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row exported so far is on disk. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._hurry.set()
        with self._cond:
            target = self._enqueued_seq
            self._cond.notify_all()
            while self._written_seq < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._writer.is_alive():
                    return False
                self._cond.wait(timeout=0.05 if remaining is None else min(0.05, remaining))
            return not self._pending

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, push once more if configured, stop the threads. Bounded by ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._hurry.set()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._writer.join(remaining)
        pushed = True
        if self._pusher is not None:
            self._push_wake.set()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._pusher.join(remaining)
            pushed = not self._pusher.is_alive()
        with self._cond:
            self.stats.pending = len(self._pending) + len(self._queue)
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
        if self.stats.dropped or self.stats.pending:
            logger.warning(
                "HF Dataset sink: %d rows dropped, %d rows not written at shutdown (dir %s)",
                self.stats.dropped,
                self.stats.pending,
                self.data_dir,
            )
        return flushed and pushed

    # -- writing --

    def _write_loop(self) -> None:
        backoff = 0.0
        retry_at = 0.0
        while True:
            with self._cond:
                waited = False
                while not self._queue and not self._closed:
                    waited = True
                    self._idle = True
                    if self._pending:
                        wait = retry_at - time.monotonic()
                        if wait <= 0:
                            self._idle = False
                            break
                        self._cond.wait(timeout=wait)
                    else:
                        self._cond.wait()
                    self._idle = False
                gather = waited and bool(self._queue) and not self._closed
            if gather:
                # Why (performance): woken by the first row after a quiet spell, let the rows of
                # a burst gather (flush and shutdown cut this short), then serialise and write
                # them with one write. export() only wakes an idle writer, so a burst costs one
                # wake-up and one hand-over of the GIL instead of one per row, each of which
                # stalls the agent's thread.
                self._hurry.wait(_GATHER_S)
                self._hurry.clear()
            with self._cond:
                batch = list(self._queue)
                self._queue.clear()
                closing = self._closed
            lines = [self._serialise(e) for e in batch]
            with self._cond:
                self._pending.extend(line for line in lines if line is not None)
                to_write = list(self._pending)
            ok = self._append(to_write) if to_write else True
            with self._cond:
                if ok:
                    self.stats.written += len(to_write)
                    for _ in range(len(to_write)):
                        self._pending.popleft()
                    backoff = 0.0
                else:
                    # Rows stay pending (bounded by max_pending) and are retried with backoff.
                    backoff = min(max(backoff * 2, 0.25), 5.0)
                    retry_at = time.monotonic() + backoff
                self._written_seq += len(batch)
                self._cond.notify_all()
                if closing and not self._queue and (ok or not self._pending):
                    return
                if closing and not ok:
                    return  # the directory is still unwritable: shutdown reports the rows

    def _serialise(self, event: Event) -> bytes | None:
        try:
            row = scrub_obj(event.to_row())
            return (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        except Exception as exc:
            guard.report("hf_dataset.serialise", exc)
            with self._cond:
                self.stats.dropped += 1
            return None

    def _open_shard(self) -> int:
        day = datetime.now(UTC).strftime("%Y%m%d")
        if self._fd is not None and self._shard_day == day and self._shard_path is not None:
            try:
                if os.fstat(self._fd).st_size < SHARD_MAX_BYTES:
                    return self._fd
            except OSError:
                pass
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        n = 0
        while True:
            suffix = f"-{n}" if n else ""
            path = self.data_dir / f"events-{day}-{self._shard_id}{suffix}.jsonl"
            if not path.exists() or path.stat().st_size < SHARD_MAX_BYTES:
                break
            n += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # Held for the process's lifetime: tells other processes this shard is live.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd, self._shard_path, self._shard_day = fd, path, day
        return fd

    def _append(self, lines: list[bytes]) -> bool:
        data = b"".join(lines)
        try:
            fd = self._open_shard()
            size = os.fstat(fd).st_size
            written = 0
            try:
                while written < len(data):
                    n = os.write(fd, data[written:])
                    if n <= 0:
                        raise OSError("short write")
                    written += n
            except OSError:
                # Roll back to the last whole line we had: never leave a partial row.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
            return True
        except OSError as exc:
            with self._cond:
                self.stats.write_errors += 1
            guard.warn_once(
                f"hf-sink-write-{type(exc).__name__}-{getattr(exc, 'errno', '')}",
                "HF Dataset sink cannot write to %s (%s); the agent continues and rows are kept "
                "in memory (up to %d) until the directory is writable again",
                self.data_dir,
                exc,
                self.max_pending,
            )
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            return False

    def _repair_existing(self) -> None:
        """Cut a partial last line (left by a crash mid-write) from shards no process owns."""
        if not self.data_dir.is_dir():
            return
        for path in sorted(self.data_dir.glob("*.jsonl")):
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
                    self.stats.repaired_shards += 1
                    logger.warning(
                        "HF Dataset: removed a partial last line (%d bytes) from %s",
                        size - keep,
                        path,
                    )
            except OSError as exc:
                guard.warn_once(f"repair-{path}", "HF Dataset: cannot check %s: %s", path, exc)

    # -- pushing to the Hub --

    def _push_loop(self) -> None:
        while True:
            woke = self._push_wake.wait(self.push_interval_s)
            self._push_wake.clear()
            if woke or not self._closed:
                self.flush(timeout=5.0)
                self.push_now()
            if self._closed:
                return

    def push_now(self) -> bool:
        """Push every shard with new complete lines. True when the Hub has everything."""
        if not (self.repo_id and self.token):
            return False
        with self._push_lock:
            try:
                return self._push()
            except Exception as exc:
                with self._cond:
                    self.stats.push_failures += 1
                guard.warn_once(
                    f"hub-push-{type(exc).__name__}",
                    "HF Dataset push to %s failed (%s: %s); rows are kept locally and retried",
                    self.repo_id,
                    type(exc).__name__,
                    str(exc)[:200],
                )
                return False

    def _push(self) -> bool:
        from huggingface_hub import CommitOperationAdd, HfApi

        api = self._api or HfApi(token=self.token)
        state_path = self.directory / STATE_FILE
        state: dict[str, int] = {}
        if state_path.is_file():
            with contextlib.suppress(OSError, ValueError):
                state = {str(k): int(v) for k, v in json.loads(state_path.read_text()).items()}
        operations = []
        new_state = dict(state)
        for path in sorted(self.data_dir.glob("*.jsonl")) if self.data_dir.is_dir() else []:
            content = path.read_bytes()
            end = content.rfind(b"\n") + 1
            if end <= state.get(path.name, 0):
                continue
            operations.append(
                CommitOperationAdd(path_in_repo=f"data/{path.name}", path_or_fileobj=content[:end])
            )
            new_state[path.name] = end
        if not operations:
            return True
        if not self._repo_ready:
            api.create_repo(self.repo_id, repo_type="dataset", private=self.private, exist_ok=True)
            self._repo_ready = True
        api.create_commit(
            self.repo_id,
            operations,
            commit_message=f"ml-intern telemetry: {len(operations)} shard(s)",
            repo_type="dataset",
        )
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(new_state))
        os.replace(tmp, state_path)
        with self._cond:
            self.stats.pushes += 1
        return True


def _last_newline_end(fh: Any, size: int) -> int:
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
