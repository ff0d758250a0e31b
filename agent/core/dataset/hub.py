"""Pushing a telemetry directory to a Hub dataset repo: immutable parts, one commit per push.

Hub layout (``datasets.load_dataset("<repo id>")``)::

    README.md                                       the card (Parquet files, same features)
    data/<YYYY-MM-DD>/<shard>-<start>-<end>.parquet one immutable part per shard and push

Contracts:
- One push is one commit carrying one new Parquet part per shard with new complete lines: the
  lines since the last push, never a re-upload (at most ``MAX_PUSH_BYTES`` of JSON Lines per
  commit; the rest goes in the next). The card goes along when the Hub's copy differs.
- ``push(force=...)`` never raises; it returns a ``PushResult`` saying what happened: pushed
  (the Hub has every complete line), or not, and why (``RECENT``, ``BUSY``, ``WAITING``,
  ``FAILED``). Failures are counted and warned once; the rows stay on disk for the next push.
- Processes sharing a directory share one state file (``DIR/.hub_push_state.json``) under a
  lock (``DIR/.hub_push.lock``), kept per repository (processes of one directory pushing to two
  repositories each send every row once to each). Per repository it records the last commit
  and, after a 429, the time before which no process may commit (the Hub's ``Retry-After``, or
  the backoff when longer). So a directory is one pusher: a scheduled push finds the directory
  pushed by any of its processes within the last interval and is skipped (rescheduled one
  interval after that push), which bounds the directory to 3600 / interval commits per hour
  however many processes share it; every push, the one at exit included, waits out a 429 that
  any of them received. Each process's push at exit is the only one that does not wait for
  the interval.
- The state records a part as in flight before its commit and as pushed after; an in-flight
  part found later (a crash or a lost reply) is looked up on the Hub and re-sent identically
  only if it is not there: no row is lost or duplicated.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core import guard
from agent.core.dataset import card
from agent.core.dataset.parquet import to_parquet
from agent.core.dataset.schedule import PushSchedule, RateLimited, rate_limit
from agent.core.dataset.shards import SHARD_NAME, shard_paths

STATE_FILE = ".hub_push_state.json"
LOCK_FILE = ".hub_push.lock"
# One commit carries at most this much new JSON Lines (the rest goes in the next push).
MAX_PUSH_BYTES = 256 * 1024 * 1024

STATE_VERSION = 2
# A lock holder is waited for at most this long by a forced push (the one at exit).
FORCED_LOCK_WAIT_S = 10.0
# A recorded wait further ahead than this is not the Hub's (a clock set back, a damaged file):
# ignored, so it cannot stop the directory's pushes for good.
MAX_RECORDED_WAIT_S = 24 * 3600.0

Part = dict[str, Any]  # shard, start, end, path (+ lines while read, rows once converted)

# What a push did (``PushResult.reason``).
PUSHED = "pushed"  # committed, or nothing new: the Hub has every complete line
# A scheduled push skipped: a process of this directory pushed within the interval.
RECENT = "recent"
BUSY = "busy"  # another process holds the directory's push lock
WAITING = "waiting"  # a 429's wait (recorded by any process of the directory) is not over
FAILED = "failed"  # the Hub or the disk failed (counted and warned); retried later


@dataclass(frozen=True)
class PushResult:
    """What one push did. ``at``: the last push's wall time (``RECENT``), or the end of the wait
    the Hub asked for (``WAITING``)."""

    reason: str
    at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason == PUSHED


class _State:
    """The state file's content (every repository's) and this repository's entry in it."""

    def __init__(self, whole: dict[str, Any], repo: dict[str, Any]) -> None:
        self.whole = whole
        self.repo = repo


class HubPusher:
    """Pushes ``directory``'s shards to ``repo_id``; thread-safe (one push at a time).

    ``count(**deltas)`` receives the push counters (``pushes``, ``push_failures``,
    ``rate_limited``, ``parts_pushed``, ``rows_pushed``, ``unpushable_lines``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        repo_id: str,
        token: str,
        schedule: PushSchedule,
        count: Callable[..., None],
        private: bool = True,
        api: Any = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.repo_id = repo_id
        self.token = token
        self.schedule = schedule
        self.private = private
        self._count = count
        self._api = api
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._repo_ready = False
        self._hub_card_ok = False

    # -- entry points --

    def push_due(self) -> bool:
        """One scheduled push; moves the schedule on. True when the Hub has everything, or
        another process of this directory pushed within the interval (this one then waits an
        interval after that push). A 429's wait, this process's or another's, moves the next
        attempt past it; other failures back off."""
        result = self.push(force=False)
        now = self._wall_clock()
        if result.reason == PUSHED:
            self.schedule.succeeded()
        elif result.reason == RECENT:
            self.schedule.defer(result.at + self.schedule.interval_s - now)
        elif result.reason == BUSY:
            self.schedule.succeeded()  # another process is pushing this directory right now
        elif result.reason == WAITING:
            self.schedule.defer(result.at - now)
        else:
            self.schedule.failed(None)
        return result.reason in (PUSHED, RECENT, BUSY)

    def push(self, *, force: bool, lock_wait_s: float = FORCED_LOCK_WAIT_S) -> PushResult:
        """Push every shard's new complete lines; never raises.

        ``force=False`` (scheduled) skips the push when a process of this directory pushed
        within the interval and does not wait for the lock; ``force=True`` waits up to
        ``lock_wait_s`` for it. Neither commits while a 429's wait is outstanding.
        """
        with self._lock:
            try:
                return self._push(force=force, lock_wait_s=lock_wait_s if force else 0.0)
            except RateLimited as exc:
                self._count(push_failures=1, rate_limited=1)
                guard.warn_once(
                    "hub-429",
                    "HF Dataset push to %s: the Hub is rate limiting (429); no process of %s "
                    "pushes for %.0fs, then backing off (rows stay local, nothing is lost)",
                    self.repo_id,
                    self.directory,
                    max(0.0, exc.until - self._wall_clock()),
                )
                return PushResult(WAITING, exc.until)
            except Exception as exc:
                self._count(push_failures=1)
                guard.warn_once(
                    f"hub-push-{type(exc).__name__}",
                    "HF Dataset push to %s failed (%s: %s); rows are kept locally and retried",
                    self.repo_id,
                    type(exc).__name__,
                    str(exc)[:200],
                )
                return PushResult(FAILED)

    def unpushed_rows(self) -> int:
        """Complete lines on disk that the Hub does not have yet (by the state file's record;
        read without the lock: a count for a report)."""
        shards_state = self._read_state().repo["shards"]
        n = 0
        for path in shard_paths(self.data_dir):
            try:
                with open(path, "rb") as fh:
                    fh.seek(int(shards_state.get(path.name, 0)))
                    while chunk := fh.read(1 << 20):
                        n += chunk.count(b"\n")
            except OSError:
                continue
        return n

    # -- one push --

    def _push(self, *, force: bool, lock_wait_s: float) -> PushResult:
        with _DirLock(self.directory / LOCK_FILE, wait_s=lock_wait_s) as locked:
            if not locked:
                return PushResult(BUSY)  # another process is pushing this directory right now
            state = self._read_state()
            repo = state.repo
            now = self._wall_clock()
            if now < repo["not_before"] <= now + MAX_RECORDED_WAIT_S:
                return PushResult(WAITING, repo["not_before"])
            if not force and 0.0 <= now - repo["last_push"] < self.schedule.interval_s:
                return PushResult(RECENT, repo["last_push"])
            try:
                self._send(self._hub_api(), state)
            except Exception as exc:
                limited = exc if isinstance(exc, RateLimited) else rate_limit(exc)
                if limited is None:
                    raise
                # Shared: every process of this directory waits until then, its exit push too.
                wait = self.schedule.failed(limited.retry_after)
                now = self._wall_clock()
                limited.until = now + wait
                if now < repo["not_before"] <= now + MAX_RECORDED_WAIT_S:
                    limited.until = max(limited.until, repo["not_before"])
                repo["not_before"] = limited.until
                with contextlib.suppress(OSError):
                    self._save_state(state)
                raise limited from exc
            return PushResult(PUSHED)

    def _send(self, api: Any, state: _State) -> None:
        repo = state.repo
        self._resolve_in_flight(api, repo)
        hub_card = self._hub_card(api)
        operations, in_flight = self._operations(self._new_parts(repo), hub_card)
        if operations:
            if not self._repo_ready:
                api.create_repo(
                    self.repo_id, repo_type="dataset", private=self.private, exist_ok=True
                )
                self._repo_ready = True
            repo["in_flight"] = in_flight
            self._save_state(state)  # raises (no commit) when the state cannot be written
            self._commit(api, operations, state)
            repo["last_push"] = self._wall_clock()
        for part in in_flight:
            _mark_pushed(repo, part)
        repo["in_flight"] = []
        if hub_card is not None:
            self._hub_card_ok = True
        if in_flight or operations:
            # A failure here leaves the parts recorded in flight: the next push asks the Hub
            # whether they landed, so nothing is sent twice.
            with contextlib.suppress(OSError):
                self._save_state(state)
        self._count(
            pushes=int(bool(operations)),
            parts_pushed=sum(1 for p in in_flight if p["rows"]),
            rows_pushed=sum(p["rows"] for p in in_flight),
        )

    def _commit(self, api: Any, operations: list[Any], state: _State) -> None:
        try:
            api.create_commit(
                self.repo_id,
                operations,
                commit_message=f"ml-intern telemetry: {len(operations)} file(s)",
                repo_type="dataset",
            )
        except Exception as exc:
            if rate_limit(exc) is not None:
                # A 429 is a refusal: nothing was committed, nothing is in flight.
                state.repo["in_flight"] = []
                with contextlib.suppress(OSError):
                    self._save_state(state)
            raise  # otherwise in flight stays recorded: the next push asks the Hub what landed

    def _hub_api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(token=self.token)
        return self._api

    # -- the state file: what the Hub has of each shard --

    def _read_state(self) -> _State:
        """The state file, every repository's entry kept; an older file (one repository at the
        top level) is read as that repository's entry."""
        whole: dict[str, Any] = {"version": STATE_VERSION, "repos": {}}
        path = self.directory / STATE_FILE
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            loaded = None
        except (OSError, ValueError) as exc:
            guard.warn_once(f"hub-state-{path}", "HF Dataset: ignoring %s (%s)", path, exc)
            loaded = None
        if isinstance(loaded, dict) and isinstance(loaded.get("repos"), dict):
            whole["repos"] = {k: v for k, v in loaded["repos"].items() if isinstance(v, dict)}
        elif isinstance(loaded, dict) and isinstance(loaded.get("repo_id"), str):
            whole["repos"] = {loaded["repo_id"]: loaded}  # version 1: one repository
        fresh: dict[str, Any] = {
            "last_push": 0.0,
            "not_before": 0.0,
            "shards": {},
            "in_flight": [],
        }
        repo = {**fresh, **whole["repos"].get(self.repo_id, {})}
        repo.pop("repo_id", None)
        for key in ("last_push", "not_before"):
            if not isinstance(repo[key], int | float) or repo[key] != repo[key]:
                repo[key] = 0.0
        whole["repos"][self.repo_id] = repo
        return _State(whole, repo)

    def _save_state(self, state: _State) -> None:
        path = self.directory / STATE_FILE
        tmp = path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(state.whole), encoding="utf-8")
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
        for part in in_flight:
            if part["path"] in present:
                _mark_pushed(state, part)
        state["in_flight"] = [p for p in in_flight if p["path"] not in present]

    # -- what to send --

    def _new_parts(self, state: dict[str, Any]) -> list[Part]:
        """Per shard: the part still in flight (re-sent byte for byte), then one new part with
        the complete lines beyond what the Hub has."""
        parts: list[Part] = []
        budget = MAX_PUSH_BYTES
        retry = {p["shard"]: p for p in state.get("in_flight") or []}
        for path in shard_paths(self.data_dir):
            for lo, hi in _ranges(int(state["shards"].get(path.name, 0)), retry.get(path.name)):
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

    def _read_part(self, path: Path, start: int, end: int) -> Part | None:
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
        if self._hub_card_ok:
            return None
        text = card.hub_card()
        try:
            (info,) = api.get_paths_info(self.repo_id, [card.CARD_FILE], repo_type="dataset") or [
                None
            ]
            self._repo_ready = True  # it answered: the repository exists (no create_repo)
        except ValueError:
            info = None
        except Exception as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) != 404:
                raise
            info = None  # the repository does not exist yet
        if info is not None and getattr(info, "blob_id", None) == _git_blob_sha1(text):
            self._hub_card_ok = True
            return None
        return text

    def _operations(
        self, parts: list[Part], hub_card: bytes | None
    ) -> tuple[list[Any], list[Part]]:
        """The commit's files (a Parquet file per part with rows, the card) and the parts'
        records for the state (a part without a valid row is marked pushed without a file)."""
        from huggingface_hub import CommitOperationAdd

        operations: list[Any] = []
        in_flight: list[Part] = []
        for part in parts:
            parquet, rows, bad = to_parquet(part["lines"])
            if bad:
                self._count(unpushable_lines=bad)
                guard.warn_once(
                    f"hub-bad-lines-{part['shard']}",
                    "HF Dataset: %d line(s) of %s are not valid rows and are not pushed",
                    bad,
                    part["shard"],
                )
            if rows:
                operations.append(
                    CommitOperationAdd(path_in_repo=part["path"], path_or_fileobj=parquet)
                )
            in_flight.append(
                {**{k: part[k] for k in ("shard", "start", "end", "path")}, "rows": rows}
            )
        if hub_card is not None:
            operations.append(
                CommitOperationAdd(path_in_repo=card.CARD_FILE, path_or_fileobj=hub_card)
            )
        return operations, in_flight


def _ranges(pushed: int, in_flight: Part | None) -> list[tuple[int, int | None]]:
    """The byte ranges of a shard to send: the part in flight (exactly), then what follows."""
    if not in_flight:
        return [(pushed, None)]
    return [(int(in_flight["start"]), int(in_flight["end"])), (int(in_flight["end"]), None)]


def _mark_pushed(state: dict[str, Any], part: Part) -> None:
    shards = state["shards"]
    shards[part["shard"]] = max(int(shards.get(part["shard"], 0)), int(part["end"]))


def _part_path(shard: str, start: int, end: int) -> str:
    """``data/<YYYY-MM-DD>/<shard>-<start>-<end>.parquet``: one folder per day keeps every
    folder of the repository well under the Hub's per-folder file limit."""
    m = SHARD_NAME.match(shard)
    day = f"{m.group(1)}-{m.group(2)}-{m.group(3)}" if m else "undated"
    stem = shard[: -len(".jsonl")] if shard.endswith(".jsonl") else shard
    return f"data/{day}/{stem}-{start:010d}-{end:010d}.parquet"


def _git_blob_sha1(content: bytes) -> str:
    """The id the Hub gives a regular (non-LFS) file: git's blob hash."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


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
                # flock has no timeout: a short sleep between tries (a lock file, not a queue).
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
