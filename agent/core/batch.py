"""One bounded batch worker: the queue every background pipeline of the agent goes through.

The HF Dataset writer, the LangFuse forwarder and the span exporter all have the same shape:
producers on the agent's threads hand over items that must never block them, and one daemon
thread works through the items in batches. ``BatchWorker`` is that shape, written once.

Contract:

- ``put`` never raises and, by default, never blocks: past ``capacity`` the item is dropped and
  counted in ``dropped["queue_full"]`` (after ``close``: ``dropped["closed"]``). A producer that
  may wait (a worker feeding the next stage) passes ``wait=seconds``: it blocks on a condition
  until there is room or the time is up. ``force=True`` ignores the capacity (control items
  such as a flush marker, which must not be lost to a full queue).
- The handler gets lists of at most ``max_batch`` items, in order, on the worker thread. After a
  quiet spell the worker lets a burst gather for ``gather_s`` (cut short by a full batch, by
  ``drain`` and by ``close``): one wake-up per burst instead of one per item. An exception in
  the handler is reported through ``agent.core.guard`` (logged once, raised under tests) and the
  batch counts as handled: retrying is the handler's business.
- ``tick`` (optional) says in how many seconds the handler wants to run even without new items
  (None: only for items); it is then called with an empty list. Timers of the handler (a retry
  after a failed write, a grace period that ends) ride on it. ``tick`` runs under the worker's
  lock: it must be cheap and must not call back into the worker. ``wake()`` asks for one such
  run now.
- ``drain(deadline)`` waits until every item put before the call has been handled; ``close``
  drains within its deadline, stops the thread, and counts what was left as
  ``dropped["not_processed_at_shutdown"]``. Both are bounded and idempotent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Generic, TypeVar

from agent.core import guard

T = TypeVar("T")

__all__ = ["BatchWorker"]


class BatchWorker(Generic[T]):
    """See the module docstring."""

    def __init__(
        self,
        name: str,
        handle: Callable[[list[T]], None],
        *,
        capacity: int,
        max_batch: int = 256,
        gather_s: float = 0.02,
        tick: Callable[[], float | None] | None = None,
    ) -> None:
        if capacity < 1 or max_batch < 1:
            raise ValueError(f"{name}: capacity and max_batch must be >= 1")
        self.name = name
        self.capacity = capacity
        self.max_batch = max_batch
        self.gather_s = gather_s
        self.dropped: Counter[str] = Counter()
        self.handled = 0
        self.high_water = 0
        self._handle = handle
        self._tick = tick
        self._queue: deque[T] = deque()
        # One lock, three conditions: the worker waits for items, producers for room, drainers
        # for progress. Why (performance): a put wakes the worker only when it is idle or a
        # batch is full, never once per item of a burst it is already gathering.
        self._lock = threading.Lock()
        self._items = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._idle = False
        self._waiting_for_room = 0
        self._put_seq = 0  # items accepted so far
        self._done_seq = 0  # items handled (or dropped at close) so far
        self._hurry = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- producers --

    def put(self, item: T, *, wait: float = 0.0, force: bool = False) -> bool:
        """Queue ``item``; False when it was dropped (and counted)."""
        with self._lock:
            if self._closed:
                self.dropped["closed"] += 1
                return False
            if not force and len(self._queue) >= self.capacity:
                if wait > 0:
                    self._wait_for_room(time.monotonic() + wait)
                if self._closed or len(self._queue) >= self.capacity:
                    self.dropped["closed" if self._closed else "queue_full"] += 1
                    return False
            self._queue.append(item)
            self._put_seq += 1
            n = len(self._queue)
            if n > self.high_water:
                self.high_water = n
            if self._idle or n >= self.max_batch:
                self._items.notify()
            return True

    def _wait_for_room(self, deadline: float) -> None:
        self._waiting_for_room += 1
        try:
            while len(self._queue) >= self.capacity and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._room.wait(remaining)
        finally:
            self._waiting_for_room -= 1

    def wake(self) -> None:
        """Run the handler soon even without new items (its ``tick`` has news)."""
        with self._lock:
            self._hurry = True
            self._items.notify()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- bounded waits --

    def drain(self, deadline: float) -> bool:
        """Wait until every item put before this call has been handled; False at the deadline."""
        with self._lock:
            target = self._put_seq
            if self._done_seq >= target:
                return True
            self._hurry = True
            self._items.notify()
            while self._done_seq < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                # Bounded slices: a worker that died mid-batch never notifies.
                self._progress.wait(min(remaining, 0.5))
            return True

    def close(self, deadline: float) -> bool:
        """Drain until ``deadline``, then stop. True when nothing was left behind."""
        drained = self.drain(deadline)
        with self._lock:
            already = self._closed
            self._closed = True
            left = len(self._queue)
            if left:
                self.dropped["not_processed_at_shutdown"] += left
                self._queue.clear()
                self._done_seq += left
            self._items.notify_all()
            self._room.notify_all()
            self._progress.notify_all()
        if not already:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return drained and not left

    # -- the worker thread --

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._handle(batch)
            except Exception as exc:
                guard.report(self.name, exc)
            with self._lock:
                self._done_seq += len(batch)
                self.handled += len(batch)
                self._progress.notify_all()

    def _next_batch(self) -> list[T] | None:
        """The next batch to handle (possibly empty: a tick), or None when closed."""
        with self._lock:
            waited = self._wait_for_work()
            if self._closed and not self._queue:
                return None
            if waited and self._queue and not self._hurry and self.gather_s > 0:
                self._gather()
            n = min(len(self._queue), self.max_batch)
            batch = [self._queue.popleft() for _ in range(n)]
            if not self._queue:
                self._hurry = False
            if self._waiting_for_room:
                self._room.notify_all()
            return batch

    def _wait_for_work(self) -> bool:
        """Under the lock: wait for an item, a hurry, a close or the handler's timer. True when
        it had to wait (the worker was idle)."""
        waited = False
        while not self._queue and not self._closed and not self._hurry:
            due = self._tick() if self._tick is not None else None
            if due is not None and due <= 0:
                break
            waited = True
            self._idle = True
            notified = self._items.wait(due)
            self._idle = False
            if not notified and due is not None:
                break  # the handler's timer is due
        return waited

    def _gather(self) -> None:
        """Under the lock: let the rest of a burst arrive.

        Why (performance): woken by the first item after a quiet spell, the worker waits a
        little for the rest of the burst, so a burst costs one wake-up and one hand-over of the
        GIL instead of one per item. A full batch, a drain or a close ends it early.
        """
        end = time.monotonic() + self.gather_s
        while len(self._queue) < self.max_batch and not self._hurry and not self._closed:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._items.wait(remaining)
