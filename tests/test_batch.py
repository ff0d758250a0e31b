"""BatchWorker: the one bounded queue behind the HF writer, the forwarder and the exporter."""

from __future__ import annotations

import threading
import time

import pytest

from agent.core.batch import BatchWorker


def _collect(**kw):
    batches: list[list[int]] = []
    worker = BatchWorker("test.batch", batches.append, **kw)
    return worker, batches


def test_items_are_handled_in_order_in_bounded_batches() -> None:
    worker, batches = _collect(capacity=1000, max_batch=7, gather_s=0.01)
    for i in range(50):
        assert worker.put(i)
    assert worker.drain(time.monotonic() + 5)
    items = [x for b in batches for x in b]
    assert items == list(range(50))
    assert all(len(b) <= 7 for b in batches)
    assert worker.close(time.monotonic() + 1)


def test_a_burst_gathers_into_few_batches() -> None:
    worker, batches = _collect(capacity=1000, max_batch=500, gather_s=0.2)
    for i in range(100):
        worker.put(i)
    assert worker.drain(time.monotonic() + 5)
    assert len([b for b in batches if b]) <= 2  # one wake-up for the burst, not 100
    worker.close(time.monotonic() + 1)


def test_past_capacity_items_are_dropped_and_counted_without_blocking() -> None:
    release = threading.Event()
    worker = BatchWorker("test.batch", lambda b: release.wait(5), capacity=3, max_batch=1)
    worker.put(0)
    time.sleep(0.1)  # the worker holds item 0 in the blocked handler
    results = [worker.put(i) for i in range(1, 10)]
    assert results[:3] == [True, True, True]
    assert not any(results[3:])
    assert worker.dropped["queue_full"] == 6
    release.set()
    assert worker.drain(time.monotonic() + 5)
    worker.close(time.monotonic() + 1)


def test_put_with_wait_blocks_until_room_then_succeeds() -> None:
    gate = threading.Event()
    handled: list[int] = []

    def handle(batch: list[int]) -> None:
        gate.wait(5)
        handled.extend(batch)

    worker = BatchWorker("test.batch", handle, capacity=1, max_batch=1, gather_s=0)
    worker.put(0)
    time.sleep(0.05)
    worker.put(1)  # fills the queue
    threading.Timer(0.2, gate.set).start()
    started = time.monotonic()
    assert worker.put(2, wait=5)  # waits on a condition for room, not dropped
    assert 0.1 < time.monotonic() - started < 4
    assert worker.drain(time.monotonic() + 5)
    assert handled == [0, 1, 2]
    assert not worker.dropped
    worker.close(time.monotonic() + 1)


def test_put_with_wait_gives_up_at_its_bound() -> None:
    worker = BatchWorker("test.batch", lambda b: time.sleep(2), capacity=1, max_batch=1)
    worker.put(0)
    time.sleep(0.05)
    worker.put(1)
    started = time.monotonic()
    assert not worker.put(2, wait=0.2)
    assert time.monotonic() - started < 1.5
    assert worker.dropped["queue_full"] == 1
    worker.close(time.monotonic() + 0.1)


def test_force_ignores_capacity() -> None:
    release = threading.Event()
    worker = BatchWorker("test.batch", lambda b: release.wait(5), capacity=1, max_batch=1)
    worker.put(0)
    time.sleep(0.05)
    worker.put(1)
    assert worker.put(2, force=True)
    release.set()
    assert worker.drain(time.monotonic() + 5)
    worker.close(time.monotonic() + 1)


def test_drain_is_bounded_and_close_counts_what_was_left() -> None:
    worker = BatchWorker("test.batch", lambda b: time.sleep(0.5), capacity=100, max_batch=1)
    for i in range(10):
        worker.put(i)
    started = time.monotonic()
    assert not worker.drain(time.monotonic() + 0.3)
    assert time.monotonic() - started < 1.0
    assert not worker.close(time.monotonic() + 0.2)
    assert worker.dropped["not_processed_at_shutdown"] >= 7
    assert not worker.put(99)
    assert worker.dropped["closed"] == 1


def test_tick_runs_the_handler_without_items() -> None:
    calls: list[int] = []
    due = [0.05]

    def tick() -> float | None:
        return due[0]

    def handle(batch: list[int]) -> None:
        calls.append(len(batch))
        if len(calls) >= 3:
            due[0] = None  # type: ignore[call-overload]

    worker = BatchWorker("test.batch", handle, capacity=10, tick=tick)
    time.sleep(0.5)
    assert calls[:3] == [0, 0, 0] and len(calls) == 3
    worker.wake()
    time.sleep(0.1)
    assert len(calls) == 4
    worker.close(time.monotonic() + 1)


@pytest.mark.internal_errors_expected
def test_a_failing_handler_does_not_stop_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ML_INTERN_STRICT_TELEMETRY")
    seen: list[int] = []

    def handle(batch: list[int]) -> None:
        if 0 in batch:
            raise RuntimeError("boom")
        seen.extend(batch)

    worker = BatchWorker("test.batch", handle, capacity=10, max_batch=1, gather_s=0)
    worker.put(0)
    worker.put(1)
    assert worker.drain(time.monotonic() + 5)
    assert seen == [1]
    worker.close(time.monotonic() + 1)


def test_high_water_mark() -> None:
    release = threading.Event()
    worker = BatchWorker("test.batch", lambda b: release.wait(5), capacity=100, max_batch=1)
    for i in range(20):
        worker.put(i)
    assert worker.high_water >= 19
    release.set()
    assert worker.drain(time.monotonic() + 5)
    worker.close(time.monotonic() + 1)
