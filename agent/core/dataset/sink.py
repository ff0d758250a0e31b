"""The HF Dataset sink: every event as one declared row on disk, pushed to a Hub dataset repo.

Local layout (``datasets.load_dataset(DIR, download_mode="force_redownload",
verification_mode="no_checks")``: README.md says why; DuckDB's ``read_json('DIR/data/*.jsonl')``)::

    DIR/README.md                                   the dataset card, rewritten from the schema
    DIR/data/events-<UTC date>-<shard id>.jsonl     one shard per process and day, append-only
    DIR/.hub_push_state.json                        what is on the Hub (under DIR/.hub_push.lock)

Contracts:
- Every row is ``agent.core.dataset.rows.to_row(event)``: the declared columns, each typed or
  null. Unencodable strings (lone surrogates) are replaced, never a reason to drop the row; what
  had to be repaired is counted (``replaced_strings``, ``schema_repairs``).
- ``export`` never blocks on I/O and never raises: events go to a ``BatchWorker`` (its thread
  serialises them, every string scrubbed of named secrets, and appends whole lines). At most
  ``max_pending`` rows are accepted and not yet on disk; past that a row is dropped and counted.
- When the disk fills mid-batch, the whole lines that fit stay written, the rest is cut back to
  the last whole line and kept pending, and writing resumes as soon as any room appears: the
  worker's ``tick`` retries the write after a failure (backing off from 50 ms to at most every
  second). A crash never leaves a partial line; a shard found with one at start is repaired
  unless a live process holds its lock (``agent.core.dataset.shards``).
- With a repo id and a token, a second ``BatchWorker`` (no items, only its ``tick``) pushes
  every ``push_interval_s`` times a random factor in [1, 1 + ``push_jitter``]; at shutdown it
  makes one last push, unless a 429's wait (any process's of the directory) is outstanding or
  another process holds the push lock past the bound: then ``shutdown`` returns False, counts
  the rows on disk the Hub lacks (``not_pushed``) and says why in a warning; the next push
  from the directory, by any process, sends them. What a push sends, and how a 429 or a fleet
  is handled: ``agent.core.dataset.hub`` and ``agent.core.dataset.schedule``.
- A shard (or the whole directory) deleted while the sink runs is noticed at the next write:
  the rows go to a new shard, the directory and card are recreated (``reopened_shards``).
- ``flush(timeout)`` and ``shutdown(timeout)`` are bounded; ``stats`` counts what was written,
  dropped, pushed, and left behind (``pending``) at shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.core import guard
from agent.core.batch import BatchWorker
from agent.core.dataset import card, shards
from agent.core.dataset import hub as hub_push
from agent.core.dataset.hub import HubPusher, PushResult
from agent.core.dataset.rows import SchemaIssues, to_row
from agent.core.dataset.schedule import PushSchedule
from agent.core.privacy.scrubber import scrub_obj
from agent.core.session import Event

logger = logging.getLogger(__name__)

# A failed write is retried after this much (doubling) and at least this often.
_RETRY_MIN_S, _RETRY_MAX_S = 0.05, 1.0
# "No timeout" as a deadline: flush(None) waits for the writer as long as it lives.
_FOREVER_S = 10.0**9
_FINAL_PUSH = "final push"


@dataclass
class SinkStats:
    written: int = 0
    dropped: int = 0
    write_errors: int = 0
    repaired_shards: int = 0
    reopened_shards: int = 0
    replaced_strings: int = 0
    schema_repairs: int = 0
    pushes: int = 0
    push_failures: int = 0
    rate_limited: int = 0
    parts_pushed: int = 0
    rows_pushed: int = 0
    unpushable_lines: int = 0
    pending: int = 0
    not_pushed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to counters from any thread."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


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
        row_hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.data_dir = self.directory / "data"
        self.repo_id = repo_id
        self.push_interval_s = push_interval_s
        self.max_pending = max_pending
        self.stats = SinkStats()
        self.schedule = PushSchedule(push_interval_s, push_jitter, clock=clock, rng=rng)
        # Applied to each row before it is scrubbed (user / session pseudonyms, hf_user_id=hash).
        self._row_hook = row_hook
        self._shard = shards.ShardWriter(self.data_dir, uuid.uuid4().hex[:12])
        # Rows accepted and not yet on disk (queued, being serialised, or pending): the bound.
        self._backlog = 0
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)  # notified after every write attempt
        # Serialised lines awaiting a successful write; touched by the writer thread only (and
        # by shutdown once that thread has stopped).
        self._pending: deque[bytes] = deque()
        self._retry_at: float | None = None
        self._backoff = 0.0
        self.stats.add(repaired_shards=shards.repair_partial_lines(self.data_dir))
        card.write_local_card(self.directory)
        self._writer: BatchWorker[Event] = BatchWorker(
            "hf_dataset.writer",
            self._write,
            capacity=max_pending,
            # Why (performance): everything queued is one batch and one write, as a burst is
            # gathered for 20 ms (BatchWorker's default): a producer's burst then costs it no
            # wake-ups and no GIL hand-overs to a writer serialising half of it.
            max_batch=max_pending,
            tick=self._retry_due,
        )
        self._hub: HubPusher | None = None
        self._pusher: BatchWorker[str] | None = None
        self._final_push: PushResult | None = None
        self._final_deadline = 0.0
        if repo_id and token:
            self._hub = HubPusher(
                self.directory,
                repo_id=repo_id,
                token=token,
                schedule=self.schedule,
                count=self.stats.add,
                private=private,
                api=api,
                wall_clock=wall_clock,
            )
            if push_thread:
                self._pusher = BatchWorker(
                    "hf_dataset.push",
                    self._push_handler,
                    capacity=1,
                    gather_s=0.0,
                    tick=self.schedule.seconds_until_due,
                )
        elif repo_id:
            guard.warn_once(
                "hub-no-token",
                "HF Dataset push to %s is off: no token (set HF_TOKEN); rows stay local in %s",
                repo_id,
                self.data_dir,
            )

    # -- the sink contract --

    def export(self, event: Event) -> None:
        with self._lock:
            full = self._backlog >= self.max_pending
            if not full:
                self._backlog += 1
        if full:
            self.stats.add(dropped=1)
            guard.warn_once(
                "hf-sink-full",
                "HF Dataset sink: %d rows waiting to be written; dropping new rows (counted)",
                self.max_pending,
            )
        elif not self._writer.put(event):  # shut down
            self._settled(dropped=1)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row exported so far is on disk. False on timeout."""
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        if not self._writer.drain(now + _FOREVER_S if deadline is None else deadline):
            return False
        # Rows a full or unwritable disk held back are retried by the writer's tick (at least
        # every second): wait for them too, for one more retry when no timeout is given.
        until = time.monotonic() + 2 * _RETRY_MAX_S if deadline is None else deadline
        with self._lock:
            while self._pending and self._writer.alive:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self._written.wait(remaining)
            return not self._pending

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, push once more if configured, stop the workers. Bounded by ``timeout``.
        True when every row is on disk and, with a Hub repo, on the Hub."""
        deadline = time.monotonic() + (_FOREVER_S if timeout is None else timeout)
        flushed = self.flush(timeout)
        self._writer.close(deadline)
        if not self._writer.alive:
            # One last try for rows a full disk held back, while it makes progress.
            while self._pending and self._write_pending():
                pass
            self._shard.close()
        pushed = self._last_push(deadline)
        with self._lock:
            self.stats.pending = self._backlog
        if self.stats.dropped or self.stats.pending:
            logger.warning(
                "HF Dataset sink: %d rows dropped, %d rows not written at shutdown (dir %s)",
                self.stats.dropped,
                self.stats.pending,
                self.data_dir,
            )
        return flushed and pushed

    # -- writing (on the writer's thread) --

    def _write(self, batch: list[Event]) -> None:
        """BatchWorker handler: serialise the batch, then write everything pending. An empty
        batch is the retry tick after a failed write."""
        lines = [self._serialise(e) for e in batch]
        self._pending.extend(line for line in lines if line is not None)
        unwritable = sum(1 for line in lines if line is None)
        if unwritable:
            self._settled(dropped=unwritable)
        if self._pending:
            self._write_pending()
        elif not batch:
            self._retry_at = None

    def _write_pending(self) -> int:
        """Write the pending lines; returns how many are now on disk (from the front)."""
        lines = list(self._pending)
        data = b"".join(lines)
        reopened = self._shard.reopened
        kept, error = self._shard.append(data)
        if self._shard.reopened != reopened:
            # The shard (or the whole directory) was deleted under us: rows go to a new shard;
            # the card goes back too if the directory went.
            self.stats.add(reopened_shards=self._shard.reopened - reopened)
            card.write_local_card(self.directory)
        # Whole lines that reached the disk leave the pending list, even when the disk filled
        # up before the rest (partial progress).
        done = len(lines) if error is None else data.count(b"\n", 0, kept)
        for _ in range(done):
            self._pending.popleft()
        if error is None:
            self._backoff, self._retry_at = 0.0, None
        else:
            self._write_failed(error)
        self._settled(written=done)
        return done

    def _write_failed(self, error: OSError) -> None:
        # The rest stays pending (bounded by max_pending) and is retried soon: the first write
        # after some room appears makes progress.
        self._backoff = min(max(self._backoff * 2, _RETRY_MIN_S), _RETRY_MAX_S)
        self._retry_at = time.monotonic() + self._backoff
        self.stats.add(write_errors=1)
        guard.warn_once(
            f"hf-sink-write-{type(error).__name__}-{getattr(error, 'errno', '')}",
            "HF Dataset sink cannot write to %s (%s); the agent continues and rows are kept "
            "in memory (up to %d) until there is room again",
            self.data_dir,
            error,
            self.max_pending,
        )

    def _retry_due(self) -> float | None:
        """The writer's tick: seconds until the pending rows are retried (None: nothing held)."""
        retry_at = self._retry_at
        return None if retry_at is None else retry_at - time.monotonic()

    def _settled(self, *, written: int = 0, dropped: int = 0) -> None:
        """Rows that left the backlog: on disk, or dropped (counted)."""
        if written or dropped:
            self.stats.add(written=written, dropped=dropped)
        with self._lock:
            self._backlog -= written + dropped
            self._written.notify_all()

    def _serialise(self, event: Event) -> bytes | None:
        try:
            issues = SchemaIssues()
            row = to_row(event, issues)
            if self._row_hook is not None:
                row = self._row_hook(row)  # user / session pseudonyms (hf_user_id=hash)
            row = scrub_obj(row)
            line = json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
            if issues:
                self._count_issues(event, issues)
            return line.encode("utf-8")
        except Exception as exc:
            guard.report("hf_dataset.serialise", exc)
            return None

    def _count_issues(self, event: Event, issues: SchemaIssues) -> None:
        repairs = len(issues.coerced) + len(issues.nulled)
        self.stats.add(replaced_strings=issues.replaced_strings, schema_repairs=repairs)
        if repairs or issues.undeclared:
            guard.warn_once(
                f"hf-schema-{event.event_type}-{issues.nulled}-{issues.undeclared}",
                "HF Dataset: a %s row did not match the declared schema (converted: %s; written "
                "as null: %s; keys not declared in agent/core/dataset/schema.py: %s)",
                event.event_type,
                issues.coerced,
                issues.nulled,
                issues.undeclared,
            )

    # -- pushing to the Hub --

    def push_due(self) -> bool:
        """One scheduled push: flush, push, and move the schedule on (backoff on failure)."""
        if self._hub is None:
            return False
        self.flush(timeout=5.0)
        return self._hub.push_due()

    def push_now(self, *, force: bool = True) -> bool:
        """Push every shard's new complete lines now. True when the Hub has everything.

        ``force=False`` skips the push when another process pushed this directory within the
        interval. No push is made while a 429's wait (any process's) is outstanding.
        """
        return self._push_now(force=force).ok

    def _push_now(
        self, *, force: bool, lock_wait_s: float = hub_push.FORCED_LOCK_WAIT_S
    ) -> PushResult:
        if self._hub is None:
            return PushResult(hub_push.FAILED)
        return self._hub.push(force=force, lock_wait_s=lock_wait_s)

    def _push_handler(self, batch: list[str]) -> None:
        """The pusher's BatchWorker handler: its tick (an empty batch) when the schedule is due,
        ``_FINAL_PUSH`` at shutdown."""
        if batch:
            self.flush(timeout=5.0)
            self._final_push = self._push_now(force=True, lock_wait_s=self._lock_wait())
            return
        try:
            if self.schedule.due():
                self.push_due()
        finally:
            if self.schedule.due():
                self.schedule.failed(None)  # never a hot loop on a push that raised

    def _lock_wait(self) -> float:
        """How long the final push may wait for another process's push: within the bound."""
        left = self._final_deadline - time.monotonic()
        return max(0.0, min(hub_push.FORCED_LOCK_WAIT_S, left - 0.5))

    def _last_push(self, deadline: float) -> bool:
        if self._hub is None:
            return True
        self._final_deadline = deadline
        self._final_push = None
        if self._pusher is not None:
            self._pusher.put(_FINAL_PUSH, force=True)
            closed = self._pusher.close(deadline)
        else:
            self._final_push = self._push_now(force=True, lock_wait_s=self._lock_wait())
            closed = True
        result = self._final_push
        if closed and result is not None and result.ok:
            return True
        return self._report_not_pushed(result) == 0

    def _report_not_pushed(self, result: PushResult | None) -> int:
        """Rows on disk the final push did not get to the Hub: counted, and said why."""
        assert self._hub is not None
        n = self._hub.unpushed_rows()
        self.stats.not_pushed = n
        if not n:
            return 0
        reason = {
            hub_push.WAITING: "the Hub asked to wait (429) until "
            + time.strftime("%H:%M:%S UTC", time.gmtime(result.at if result else 0)),
            hub_push.BUSY: "another process was pushing this directory",
            hub_push.FAILED: "the push failed (see the warning above)",
        }.get(result.reason if result else "", "the push did not finish in time")
        logger.warning(
            "HF Dataset: %d row(s) not pushed to %s at exit (%s); they stay in %s and the "
            "next push of any process using this directory sends them",
            n,
            self.repo_id,
            reason,
            self.data_dir,
        )
        return n
