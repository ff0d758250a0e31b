"""The HF Dataset sink: every event as one declared row on disk, pushed to a Hub dataset repo.

Local layout (``datasets.load_dataset(DIR)``, DuckDB's ``read_json('DIR/data/*.jsonl', ...)``)::

    DIR/README.md                                   the dataset card, rewritten from the schema
    DIR/data/events-<UTC date>-<shard id>.jsonl     one shard per process and day, append-only
    DIR/.hub_push_state.json                        what is on the Hub (under DIR/.hub_push.lock)

Hub layout (``datasets.load_dataset("<repo id>")``)::

    README.md                                       the card (Parquet files, same features)
    data/<YYYY-MM-DD>/<shard>-<start>-<end>.parquet one immutable part per shard and push

Contracts:
- Every row is ``agent.core.dataset_schema.to_row(event)``: the declared columns, each typed or
  null. Unencodable strings (lone surrogates) are replaced, never a reason to drop the row; what
  had to be repaired is counted (``replaced_strings``, ``schema_repairs``).
- ``export`` never blocks on I/O: events go to a bounded in-memory queue; a daemon thread
  serialises them (every string scrubbed of named secrets) and appends whole lines. When the
  disk fills mid-batch, the whole lines that fit stay written, the rest is cut back to the last
  whole line and kept pending (bounded by ``max_pending``; drops counted), and writing resumes
  as soon as any room appears (retried at least every second). A crash never leaves a partial
  line; a shard found with one at start is repaired unless a live process holds its lock.
- With a repo id and a token, a second daemon thread pushes every ``push_interval_s`` (times a
  random factor in [1, 1 + ``push_jitter``]). One push is one commit carrying one new Parquet
  part per shard with new complete lines: the lines since the last push, never a re-upload.
  A 429 is honoured (``Retry-After`` or the ``RateLimit`` reset, whichever it names) with
  exponential backoff; other failures back off the same way. Processes sharing a directory
  share one state file under a lock, and a directory pushed by any of them in the last half
  interval is not pushed again, so a machine makes at most about one commit per interval
  however many agents write there. The state records a part as in flight before its commit and
  as pushed after; an in-flight part found later (a crash or a lost reply) is looked up on the
  Hub and re-sent identically only if it is not there: no row is lost or duplicated.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.core import dataset_schema as schema
from agent.core import guard
from agent.core.redact import scrub_obj
from agent.core.session import Event

logger = logging.getLogger(__name__)

SHARD_MAX_BYTES = 64 * 1024 * 1024
# How long the writer lets a burst of rows gather after a quiet spell (see _write_loop).
_GATHER_S = 0.02
# A failed write is retried after this much (doubling) and at least this often.
_RETRY_MIN_S, _RETRY_MAX_S = 0.05, 1.0
STATE_FILE = ".hub_push_state.json"
LOCK_FILE = ".hub_push.lock"
CARD_FILE = "README.md"
LOCAL_DATA_FILES = "data/**/*.jsonl"
HUB_DATA_FILES = "data/**/*.parquet"
# One commit carries at most this much new JSON Lines (the rest goes in the next push).
MAX_PUSH_BYTES = 256 * 1024 * 1024
# Backoff after a failed push: BASE x 2^(failures - 1), at most MAX (and never less than a
# Retry-After the Hub named).
PUSH_BACKOFF_BASE_S, PUSH_BACKOFF_MAX_S = 30.0, 3600.0
_SHARD_NAME = re.compile(r"^events-(\d{4})(\d{2})(\d{2})-")


@dataclass
class SinkStats:
    written: int = 0
    dropped: int = 0
    write_errors: int = 0
    repaired_shards: int = 0
    replaced_strings: int = 0
    schema_repairs: int = 0
    pushes: int = 0
    push_failures: int = 0
    rate_limited: int = 0
    parts_pushed: int = 0
    rows_pushed: int = 0
    unpushable_lines: int = 0
    pending: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class RateLimited(Exception):
    """The Hub answered 429; ``retry_after`` is the wait it named (None if it named none)."""

    def __init__(self, retry_after: float | None, message: str = "") -> None:
        super().__init__(message or f"429 Too Many Requests (retry after {retry_after}s)")
        self.retry_after = retry_after


class PushSchedule:
    """When the next push is due: the interval stretched by random jitter, pushed back by a
    failure (exponential backoff, never sooner than a ``Retry-After``)."""

    def __init__(
        self,
        interval_s: float,
        jitter: float = 0.2,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.jitter = jitter
        self.clock = clock
        self.rng = rng or random.Random()
        self.failures = 0
        self.next_due = clock() + self._wait()

    def _wait(self) -> float:
        return self.interval_s * (1.0 + self.rng.uniform(0.0, self.jitter))

    def due(self) -> bool:
        return self.clock() >= self.next_due

    def seconds_until_due(self) -> float:
        return max(0.0, self.next_due - self.clock())

    def succeeded(self) -> None:
        self.failures = 0
        self.next_due = self.clock() + self._wait()

    def failed(self, retry_after: float | None = None) -> float:
        """Record a failed push; returns the wait before the next attempt."""
        self.failures += 1
        backoff = min(PUSH_BACKOFF_BASE_S * 2 ** (self.failures - 1), PUSH_BACKOFF_MAX_S)
        wait = max(retry_after or 0.0, backoff) * (1.0 + self.rng.uniform(0.0, self.jitter))
        self.next_due = self.clock() + wait
        return wait


class HFDatasetSink:
    """See the module docstring. Thread-safe; ``export`` may be called from any thread.

    ``clock`` (monotonic seconds) and ``wall_clock`` (Unix seconds) drive the push schedule;
    ``push_thread=False`` leaves pushing to the caller (``push_due()`` / ``push_now()``), which
    is how tests simulate hours of a fleet without sleeping.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        repo_id: str | None = None,
        token: str | None = None,
        push_interval_s: float = 600.0,
        push_jitter: float = 0.2,
        max_pending: int = 100_000,
        private: bool = True,
        api: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        push_thread: bool = True,
        row_hook: Any = None,
    ) -> None:
        self.directory = Path(directory)
        self.data_dir = self.directory / "data"
        self.repo_id = repo_id
        self.token = token
        self.push_interval_s = push_interval_s
        self.max_pending = max_pending
        self.private = private
        self.stats = SinkStats()
        self.schedule = PushSchedule(push_interval_s, push_jitter, clock=clock, rng=rng)
        self._wall_clock = wall_clock
        self._api = api
        # Applied to each row before it is scrubbed (user / session pseudonyms, hf_user_id=hash).
        self._row_hook = row_hook
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
        self._hub_card_ok = False
        self._repair_existing()
        self._write_card()
        self._writer = threading.Thread(
            target=self._write_loop, name="hf-dataset-writer", daemon=True
        )
        self._writer.start()
        self._pusher: threading.Thread | None = None
        self._push_wake = threading.Event()
        if self.repo_id and self.token and push_thread:
            self._pusher = threading.Thread(
                target=self._push_loop, name="hf-dataset-push", daemon=True
            )
            self._pusher.start()
        elif self.repo_id and not self.token:
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
            # Rows a full or unwritable disk held back are retried by the writer (at least
            # every second): wait for them too, for one more retry when no timeout is given.
            held_until = time.monotonic() + 2 * _RETRY_MAX_S if deadline is None else deadline
            while self._written_seq < target or self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._written_seq >= target and time.monotonic() >= held_until:
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
        elif self.repo_id and self.token:
            pushed = self.push_now(force=True)  # push_thread=False: the last push, in line
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
            done = self._append(to_write) if to_write else 0
            with self._cond:
                # Whole lines that reached the disk leave the pending list, even when the disk
                # filled up before the rest (partial progress).
                self.stats.written += done
                for _ in range(done):
                    self._pending.popleft()
                ok = done == len(to_write)
                if ok:
                    backoff = 0.0
                else:
                    # The rest stays pending (bounded by max_pending) and is retried soon: the
                    # first write after some room appears makes progress.
                    backoff = min(max(backoff * 2, _RETRY_MIN_S), _RETRY_MAX_S)
                    retry_at = time.monotonic() + backoff
                self._written_seq += len(batch)
                self._cond.notify_all()
                if closing and not self._queue and (ok or not self._pending):
                    return
                if closing and done == 0:
                    return  # the directory is still unwritable: shutdown reports the rows

    def _serialise(self, event: Event) -> bytes | None:
        try:
            issues = schema.SchemaIssues()
            row = schema.to_row(event, issues)
            if self._row_hook is not None:
                row = self._row_hook(row)  # user / session pseudonyms (hf_user_id=hash)
            row = scrub_obj(row)
            line = json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
            if issues:
                self._count_issues(event, issues)
            return line.encode("utf-8")
        except Exception as exc:
            guard.report("hf_dataset.serialise", exc)
            with self._cond:
                self.stats.dropped += 1
            return None

    def _count_issues(self, event: Event, issues: schema.SchemaIssues) -> None:
        with self._cond:
            self.stats.replaced_strings += issues.replaced_strings
            repairs = len(issues.coerced) + len(issues.nulled)
            self.stats.schema_repairs += repairs
        if repairs or issues.undeclared:
            guard.warn_once(
                f"hf-schema-{event.event_type}-{issues.nulled}-{issues.undeclared}",
                "HF Dataset: a %s row did not match the declared schema (converted: %s; written "
                "as null: %s; keys not declared in agent/core/dataset_schema.py: %s)",
                event.event_type,
                issues.coerced,
                issues.nulled,
                issues.undeclared,
            )

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

    def _append(self, lines: list[bytes]) -> int:
        """Append ``lines``; returns how many whole lines (from the front) are on disk."""
        data = b"".join(lines)
        written = 0
        fd: int | None = None
        size = 0
        try:
            fd = self._open_shard()
            size = os.fstat(fd).st_size
            while written < len(data):
                n = os.write(fd, data[written:])
                if n <= 0:
                    raise OSError("short write")
                written += n
            return len(lines)
        except OSError as exc:
            done = 0
            if fd is not None:
                # Keep the whole lines known to be written, cut the rest (a partial line, or
                # bytes a failing write left behind): never a partial row.
                keep = data.rfind(b"\n", 0, written) + 1
                try:
                    os.ftruncate(fd, size + keep)
                    done = data.count(b"\n", 0, keep)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
            with self._cond:
                self.stats.write_errors += 1
            guard.warn_once(
                f"hf-sink-write-{type(exc).__name__}-{getattr(exc, 'errno', '')}",
                "HF Dataset sink cannot write to %s (%s); the agent continues and rows are kept "
                "in memory (up to %d) until there is room again",
                self.data_dir,
                exc,
                self.max_pending,
            )
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            return done

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

    def _write_card(self) -> None:
        """The dataset card of the local directory, rewritten when the schema changed."""
        text = schema.dataset_card(data_files=LOCAL_DATA_FILES, file_format="JSON Lines")
        _write_if_changed(self.directory / CARD_FILE, text.encode("utf-8"))

    # -- pushing to the Hub --

    def _push_loop(self) -> None:
        while True:
            self._push_wake.wait(self.schedule.seconds_until_due())
            self._push_wake.clear()
            if self._closed:
                self.flush(timeout=5.0)
                self.push_now(force=True)
                return
            if self.schedule.due():
                self.push_due()

    def push_due(self) -> bool:
        """One scheduled push: flush, push, and move the schedule on (backoff on failure)."""
        self.flush(timeout=5.0)
        try:
            ok = self._push_guarded(force=False)
        except RateLimited as exc:
            wait = self.schedule.failed(exc.retry_after)
            guard.warn_once(
                "hub-429",
                "HF Dataset push to %s: the Hub is rate limiting (429); waiting %.0fs and "
                "backing off (rows stay local, nothing is lost)",
                self.repo_id,
                wait,
            )
            return False
        if ok:
            self.schedule.succeeded()
        else:
            self.schedule.failed(None)
        return ok

    def push_now(self, *, force: bool = True) -> bool:
        """Push every shard's new complete lines now. True when the Hub has everything.

        ``force=False`` skips the push when another process pushed this directory recently.
        """
        try:
            return self._push_guarded(force=force)
        except RateLimited:
            return False  # counted; the rows stay local for the next push

    def _push_guarded(self, *, force: bool) -> bool:
        """``_push`` with its failures counted and reported; a 429 raises ``RateLimited``."""
        if not (self.repo_id and self.token):
            return False
        with self._push_lock:
            try:
                return self._push(force=force)
            except Exception as exc:
                limited = exc if isinstance(exc, RateLimited) else _rate_limit(exc)
                with self._cond:
                    self.stats.push_failures += 1
                    self.stats.rate_limited += limited is not None
                if limited is not None:
                    raise limited from exc
                guard.warn_once(
                    f"hub-push-{type(exc).__name__}",
                    "HF Dataset push to %s failed (%s: %s); rows are kept locally and retried",
                    self.repo_id,
                    type(exc).__name__,
                    str(exc)[:200],
                )
                return False

    def _push(self, *, force: bool) -> bool:
        with _DirLock(self.directory / LOCK_FILE, wait_s=10.0 if force else 0.0) as locked:
            if not locked:
                return True  # another process is pushing this directory right now
            state = self._read_state()
            if not force and self._wall_clock() - state["last_push"] < self.push_interval_s / 2:
                return True  # another process of this directory pushed a moment ago
            api = self._hub_api()
            self._resolve_in_flight(api, state)
            parts = self._new_parts(state)
            card = self._hub_card(api)
            operations, in_flight = self._operations(parts, card)
            if operations:
                if not self._repo_ready:
                    api.create_repo(
                        self.repo_id, repo_type="dataset", private=self.private, exist_ok=True
                    )
                    self._repo_ready = True
                state["in_flight"] = in_flight
                self._save_state(state)  # raises (no commit) when the state cannot be written
                self._commit(api, operations, state)
            for part in in_flight:
                shards = state["shards"]
                shards[part["shard"]] = max(int(shards.get(part["shard"], 0)), part["end"])
            state["in_flight"] = []
            if operations:
                state["last_push"] = self._wall_clock()
            if card is not None:
                self._hub_card_ok = True
            if in_flight or operations:
                # A failure here leaves the parts recorded in flight: the next push asks the
                # Hub whether they landed, so nothing is sent twice.
                with contextlib.suppress(OSError):
                    self._save_state(state)
            with self._cond:
                self.stats.pushes += bool(operations)
                self.stats.parts_pushed += sum(1 for p in in_flight if p["rows"])
                self.stats.rows_pushed += sum(p["rows"] for p in in_flight)
            return True

    def _commit(self, api: Any, operations: list[Any], state: dict[str, Any]) -> None:
        try:
            api.create_commit(
                self.repo_id,
                operations,
                commit_message=f"ml-intern telemetry: {len(operations)} file(s)",
                repo_type="dataset",
            )
        except Exception as exc:
            if _rate_limit(exc) is not None:
                # A 429 is a refusal: nothing was committed, nothing is in flight.
                state["in_flight"] = []
                with contextlib.suppress(OSError):
                    self._save_state(state)
            raise  # otherwise in flight stays recorded: the next push asks the Hub what landed

    def _hub_api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(token=self.token)
        return self._api

    def _read_state(self) -> dict[str, Any]:
        fresh: dict[str, Any] = {
            "repo_id": self.repo_id,
            "last_push": 0.0,
            "shards": {},
            "in_flight": [],
        }
        path = self.directory / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return fresh
        except (OSError, ValueError) as exc:
            guard.warn_once(f"hub-state-{path}", "HF Dataset: ignoring %s (%s)", path, exc)
            return fresh
        if not isinstance(state, dict) or state.get("repo_id") != self.repo_id:
            return fresh  # another repository's state (or an older format): start over
        return {**fresh, **state}

    def _save_state(self, state: dict[str, Any]) -> None:
        path = self.directory / STATE_FILE
        tmp = path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _resolve_in_flight(self, api: Any, state: dict[str, Any]) -> None:
        """Parts committed without a confirmation: pushed if the Hub has them, else re-sent."""
        in_flight = [p for p in state.get("in_flight") or [] if isinstance(p, dict)]
        if not in_flight:
            return
        present = {
            getattr(f, "path", None)
            for f in api.get_paths_info(
                self.repo_id, [p["path"] for p in in_flight], repo_type="dataset"
            )
        }
        keep = []
        for part in in_flight:
            if part["path"] in present:
                state["shards"][part["shard"]] = max(
                    int(state["shards"].get(part["shard"], 0)), int(part["end"])
                )
            else:
                keep.append(part)
        state["in_flight"] = keep

    def _new_parts(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        """Per shard: the part still in flight (re-sent byte for byte), then one new part with
        the complete lines beyond what the Hub has."""
        parts: list[dict[str, Any]] = []
        budget = MAX_PUSH_BYTES
        retry = {p["shard"]: p for p in state.get("in_flight") or []}
        shards = sorted(self.data_dir.glob("*.jsonl")) if self.data_dir.is_dir() else []
        for path in shards:
            start = int(state["shards"].get(path.name, 0))
            ranges: list[tuple[int, int | None]] = []
            again = retry.get(path.name)
            if again:
                ranges.append((int(again["start"]), int(again["end"])))
                start = int(again["end"])
            ranges.append((start, None))
            for lo, hi in ranges:
                if budget <= 0:
                    return parts
                part = self._read_part(path, lo, hi if hi is not None else lo + budget)
                if part is None:
                    break
                if hi is not None and part["end"] != hi:
                    guard.warn_once(
                        f"hub-shrunk-{path}",
                        "HF Dataset: %s is shorter than what was being pushed; pushing what "
                        "is left",
                        path,
                    )
                budget -= part["end"] - part["start"]
                parts.append(part)
        return parts

    def _read_part(self, path: Path, start: int, end: int) -> dict[str, Any] | None:
        """The complete lines of ``path`` in [start, end), or None if there are none."""
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                content = fh.read(max(0, end - start))
        except OSError as exc:
            guard.warn_once(f"hub-read-{path}", "HF Dataset: cannot read %s: %s", path, exc)
            return None
        cut = content.rfind(b"\n") + 1
        if cut <= 0:
            return None
        return {
            "shard": path.name,
            "start": start,
            "end": start + cut,
            "lines": content[:cut],
            "path": _part_path(path.name, start, start + cut),
        }

    def _hub_card(self, api: Any) -> bytes | None:
        """The card to include in this commit, or None when the Hub already has it."""
        text = schema.dataset_card(data_files=HUB_DATA_FILES, file_format="Parquet").encode()
        if self._hub_card_ok:
            return None
        try:
            (info,) = api.get_paths_info(self.repo_id, [CARD_FILE], repo_type="dataset") or [None]
        except ValueError:
            info = None
        except Exception as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                info = None  # the repository does not exist yet
            else:
                raise
        if info is not None and getattr(info, "blob_id", None) == _git_blob_sha1(text):
            self._hub_card_ok = True
            return None
        return text

    def _operations(
        self, parts: list[dict[str, Any]], card: bytes | None
    ) -> tuple[list[Any], list[dict[str, Any]]]:
        from huggingface_hub import CommitOperationAdd

        operations: list[Any] = []
        in_flight: list[dict[str, Any]] = []
        for part in parts:
            parquet, rows, bad = _to_parquet(part["lines"])
            if bad:
                with self._cond:
                    self.stats.unpushable_lines += bad
                guard.warn_once(
                    f"hub-bad-lines-{part['shard']}",
                    "HF Dataset: %d line(s) of %s are not valid rows and are not pushed",
                    bad,
                    part["shard"],
                )
            if rows == 0:
                # Nothing valid in the range: mark it pushed without a file.
                in_flight.append({**_part_meta(part), "rows": 0})
                continue
            operations.append(
                CommitOperationAdd(path_in_repo=part["path"], path_or_fileobj=parquet)
            )
            in_flight.append({**_part_meta(part), "rows": rows})
        if card is not None:
            operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card))
        return operations, in_flight


def _part_meta(part: dict[str, Any]) -> dict[str, Any]:
    return {k: part[k] for k in ("shard", "start", "end", "path")}


def _part_path(shard: str, start: int, end: int) -> str:
    """``data/<YYYY-MM-DD>/<shard>-<start>-<end>.parquet``: one folder per day keeps every
    folder of the repository well under the Hub's per-folder file limit."""
    m = _SHARD_NAME.match(shard)
    day = f"{m.group(1)}-{m.group(2)}-{m.group(3)}" if m else "undated"
    stem = shard[: -len(".jsonl")] if shard.endswith(".jsonl") else shard
    return f"data/{day}/{stem}-{start:010d}-{end:010d}.parquet"


def _to_parquet(lines: bytes) -> tuple[bytes, int, int]:
    """JSON Lines rows as Parquet with the declared types: (bytes, rows, invalid lines)."""
    import duckdb

    bad = 0
    with tempfile.TemporaryDirectory(prefix="ml-intern-push-") as tmp:
        src, dst = Path(tmp) / "part.jsonl", Path(tmp) / "part.parquet"
        src.write_bytes(lines)
        con = duckdb.connect(config={"threads": 1})
        try:
            try:
                rows = _copy_parquet(con, src, dst)
            except duckdb.Error:
                # A line that is not a row (written by hand, or by something else): push the
                # others, count it.
                good = []
                for line in lines.splitlines():
                    try:
                        if isinstance(json.loads(line), dict):
                            good.append(line)
                            continue
                    except ValueError:
                        pass
                    bad += 1
                src.write_bytes(b"".join(x + b"\n" for x in good))
                rows = _copy_parquet(con, src, dst) if good else 0
        finally:
            con.close()
        return (dst.read_bytes() if rows else b""), rows, bad


def _copy_parquet(con: Any, src: Path, dst: Path) -> int:
    path = str(src).replace("'", "''")
    out = str(dst).replace("'", "''")
    cols = ", ".join(f'"{c}"' for c in schema.COLUMN_NAMES)
    result = con.execute(
        f"COPY (SELECT {cols} FROM read_json('{path}', format='newline_delimited', "
        f"columns={schema.duckdb_columns_sql()})) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    ).fetchall()
    return int(result[0][0]) if result else 0


def _rate_limit(exc: BaseException) -> RateLimited | None:
    """A ``RateLimited`` for an HTTP 429 error (with the wait the Hub named), else None."""
    response = getattr(exc, "response", None)
    if getattr(response, "status_code", None) != 429:
        return None
    return RateLimited(retry_after_s(getattr(response, "headers", {}) or {}), str(exc)[:200])


def retry_after_s(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait from a 429's headers: ``Retry-After`` (seconds or an HTTP date), else
    the reset ``t=`` of the IETF ``RateLimit`` header the Hub sends; None if neither."""

    def get(name: str) -> str | None:
        for key in headers:
            if key.lower() == name:
                return str(headers[key])
        return None

    value = get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - (time.time() if now is None else now))
    ratelimit = get("ratelimit")
    if ratelimit:
        m = re.search(r"(?:^|[;,\s])t=(\d+(?:\.\d+)?)", ratelimit)
        if m:
            return float(m.group(1))
    return None


def _git_blob_sha1(content: bytes) -> str:
    """The id the Hub gives a regular (non-LFS) file: git's blob hash."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


def _write_if_changed(path: Path, content: bytes) -> None:
    try:
        if path.is_file() and path.read_bytes() == content:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(content)
        os.replace(tmp, path)
    except OSError as exc:
        guard.warn_once(
            f"card-{path}", "HF Dataset: cannot write the dataset card %s: %s", path, exc
        )


class _DirLock:
    """An exclusive ``flock`` on a lock file, waiting at most ``wait_s`` for it."""

    def __init__(self, path: Path, wait_s: float) -> None:
        self.path = path
        self.wait_s = wait_s
        self.fd: int | None = None

    def __enter__(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return True  # no lock file possible (read-only dir): push without one
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    return False
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


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
