"""litellm's private internals, and the protections of ours that ride on them.

Declared here and nowhere else (see ``agent.core.internals``); each one, when a litellm upgrade
moves it, warns once naming the protection that is lost, and the code that uses it carries on
without it:

- ``LOGGING_WORKER`` (``GLOBAL_LOGGING_WORKER``: litellm runs async success/failure callbacks
  from its queue): ``flush``/``shutdown`` wait for the async callbacks litellm has queued.
- ``SYNC_POOL`` (the thread pool litellm runs sync callbacks on; ``watch_sync_pool()`` wraps its
  ``submit`` to count the tasks it has not finished): ``flush``/``shutdown`` wait, on a
  condition, for the sync callbacks of the last calls.
- ``ASYNC_SUCCESS_CALLBACKS`` / ``ASYNC_FAILURE_CALLBACKS`` (the private lists litellm copies
  ``litellm.callbacks`` entries into at call time): registering the forwarder removes any
  other forwarder of ours and litellm's own LangFuse callbacks from them too.

Contract: every accessor here returns a safe default when its internal is gone (0 pending, no
worker, no list) and never raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from agent.core.internals import Internal, check_version

__all__ = [
    "ASYNC_FAILURE_CALLBACKS",
    "ASYNC_SUCCESS_CALLBACKS",
    "LOGGING_WORKER",
    "SYNC_POOL",
    "callback_lists",
    "logging_worker",
    "pending_async_callbacks",
    "pending_sync_callbacks",
    "wait_sync_pool",
    "watch_sync_pool",
]

# The range pinned in pyproject.toml.
check_version("litellm", "1.110", "1.111")

_LAST_ASYNC_CALLS = (
    "waiting in flush and shutdown for litellm's queued async callbacks (the last calls of a "
    "program that leaves its event loop right away)"
)
_LAST_SYNC_CALLS = (
    "waiting in flush and shutdown for litellm's sync callback thread pool (the callbacks of "
    "the last sync calls, complete_sync then shutdown, may then be lost)"
)
_ONE_FORWARDER = (
    "keeping litellm's async callback lists to one forwarder of ours and free of litellm's own "
    "LangFuse callbacks (duplicate spans, or spans sent to LangFuse Cloud)"
)

LOGGING_WORKER = Internal(
    "litellm", "litellm.litellm_core_utils.logging_worker:GLOBAL_LOGGING_WORKER", _LAST_ASYNC_CALLS
)
SYNC_POOL = Internal(
    "litellm", "litellm.litellm_core_utils.thread_pool_executor:executor", _LAST_SYNC_CALLS
)
ASYNC_SUCCESS_CALLBACKS = Internal("litellm", "litellm:_async_success_callback", _ONE_FORWARDER)
ASYNC_FAILURE_CALLBACKS = Internal("litellm", "litellm:_async_failure_callback", _ONE_FORWARDER)

# litellm's public callback lists (documented: litellm.callbacks, success_callback ...).
_PUBLIC_CALLBACK_LISTS = ("callbacks", "success_callback", "failure_callback")


def logging_worker() -> Any:
    """litellm's async logging worker (``pending_count``, ``flush()``), or None."""
    return LOGGING_WORKER.get()


def pending_async_callbacks() -> int:
    """Async callbacks litellm has queued and not run yet (0 when unknown)."""
    worker = logging_worker()
    if worker is None:
        return 0
    try:
        return int(worker.pending_count)
    except Exception as exc:
        LOGGING_WORKER.report(f"pending_count: {type(exc).__name__}: {exc}")
        return 0


class _PoolWatch:
    """The tasks submitted to litellm's sync callback pool and not finished yet, counted by
    wrapping the pool's ``submit``, so a drain waits on a condition instead of polling."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.pending = 0
        self.installed: Callable[..., Future[Any]] | None = None  # the wrapper on the pool

    def wrap(self, submit: Callable[..., Future[Any]]) -> Callable[..., Future[Any]]:
        def counted(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            # Counted before the task can start, so a drain never misses one in flight; the
            # done callback (run at once for a task the pool dropped) takes it off again.
            with self._cond:
                self.pending += 1
            try:
                future = submit(fn, *args, **kwargs)
            except BaseException:
                self._finished(None)
                raise
            future.add_done_callback(self._finished)
            return future

        self.installed = counted
        return counted

    def _finished(self, _future: Future[Any] | None) -> None:
        with self._cond:
            self.pending -= 1
            if self.pending <= 0:
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.pending <= 0, timeout=max(0.0, timeout))


_watch = _PoolWatch()


def watch_sync_pool() -> bool:
    """Count the tasks of litellm's sync callback pool from now on (idempotent). False, with
    one warning naming the lost protection, when the pool is not where it was."""
    pool = SYNC_POOL.get()
    if pool is None:
        return False
    submit = getattr(pool, "submit", None)
    if submit is not None and submit is _watch.installed:
        return True
    if not callable(submit):
        SYNC_POOL.report("it has no submit()")
        return False
    try:
        pool.submit = _watch.wrap(submit)  # shadows the method on this one object
    except Exception as exc:
        SYNC_POOL.report(f"submit cannot be wrapped: {type(exc).__name__}: {exc}")
        return False
    return True


def pending_sync_callbacks() -> int:
    """Tasks litellm's sync callback pool has queued or is running (counted since
    ``watch_sync_pool``; 0 when the pool could not be watched)."""
    return max(_watch.pending, 0)


def wait_sync_pool(timeout: float) -> bool:
    """Wait (at most ``timeout`` s) until the sync callback pool has finished every task."""
    return _watch.wait_idle(timeout)


def callback_lists() -> list[list[Any]]:
    """Every list litellm takes callbacks from: the public ones and the private async ones."""
    import litellm

    found = [getattr(litellm, name, None) for name in _PUBLIC_CALLBACK_LISTS]
    for internal in (ASYNC_SUCCESS_CALLBACKS, ASYNC_FAILURE_CALLBACKS):
        value = internal.get()
        if value is not None and not isinstance(value, list):
            internal.report(f"it is a {type(value).__name__}, not a list")
        found.append(value)
    return [lst for lst in found if isinstance(lst, list)]
