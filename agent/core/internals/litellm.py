"""litellm's private internals, and the protections of ours that ride on them.

Declared here and nowhere else (see ``agent.core.internals``); each one, when a litellm upgrade
moves it, warns once naming the protection that is lost, and the code that uses it carries on
without it:

- ``LOGGING_WORKER`` (``GLOBAL_LOGGING_WORKER``: litellm runs async success/failure callbacks
  from its queue): ``flush``/``shutdown`` wait for the async callbacks litellm has queued.
- ``SYNC_POOL_SLOTS`` and ``SYNC_POOL_SIZE`` (the sync callback thread pool's backlog semaphore
  and its size): ``flush``/``shutdown`` wait for the sync callbacks of the last calls.
- ``ASYNC_SUCCESS_CALLBACKS`` / ``ASYNC_FAILURE_CALLBACKS`` (the private lists litellm copies
  ``litellm.callbacks`` entries into at call time): registering the forwarder removes any
  other forwarder of ours and litellm's own LangFuse callbacks from them too.

Contract: every accessor here returns a safe default when its internal is gone (0 pending, no
worker, no list) and never raises.
"""

from __future__ import annotations

from typing import Any

from agent.core.internals import Internal, check_version

__all__ = [
    "ASYNC_FAILURE_CALLBACKS",
    "ASYNC_SUCCESS_CALLBACKS",
    "LOGGING_WORKER",
    "SYNC_POOL_SIZE",
    "SYNC_POOL_SLOTS",
    "callback_lists",
    "logging_worker",
    "pending_async_callbacks",
    "pending_sync_callbacks",
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
SYNC_POOL_SLOTS = Internal(
    "litellm",
    "litellm.litellm_core_utils.thread_pool_executor:executor._pending_slots",
    _LAST_SYNC_CALLS,
)
SYNC_POOL_SIZE = Internal(
    "litellm",
    "litellm.litellm_core_utils.thread_pool_executor:executor._max_pending_tasks",
    _LAST_SYNC_CALLS,
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


def pending_sync_callbacks() -> int:
    """Tasks litellm's sync callback pool has queued or is running (0 when unknown): the pool's
    semaphore holds one slot per queued-or-running task."""
    slots = SYNC_POOL_SLOTS.get()
    size = SYNC_POOL_SIZE.get()
    if slots is None or size is None:
        return 0
    try:
        return int(size) - int(slots._value)  # threading.Semaphore's count (CPython)
    except Exception as exc:
        SYNC_POOL_SLOTS.report(f"the semaphore's count: {type(exc).__name__}: {exc}")
        return 0


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
