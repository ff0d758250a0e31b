"""litellm's private internals (agent/core/internals/litellm.py): each one is there on the pinned
version, and when a litellm upgrade takes one away, the code carries on and one warning names
the protection that is lost."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import litellm
import pytest
from litellm.litellm_core_utils import logging_worker, thread_pool_executor

from agent.core import guard, internals, llm
from agent.core.internals import litellm as litellm_internals


@pytest.fixture
def fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget earlier misses and warnings, so this test's first miss warns."""
    monkeypatch.setattr(internals, "_lost", {})
    monkeypatch.setattr(guard, "_seen", set())


def test_every_litellm_internal_is_there_on_the_pinned_version(fresh_reports: None) -> None:
    for internal in (
        litellm_internals.LOGGING_WORKER,
        litellm_internals.SYNC_POOL,
        litellm_internals.ASYNC_SUCCESS_CALLBACKS,
        litellm_internals.ASYNC_FAILURE_CALLBACKS,
    ):
        assert internal.get() is not None, internal.path
    assert litellm_internals.watch_sync_pool() is True  # already watched since llm's import
    assert litellm_internals.pending_sync_callbacks() >= 0
    assert len(litellm_internals.callback_lists()) == 5
    assert internals.lost() == {}


def _without(owner: Any, name: str) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.delattr(owner, name)


def _replaced(owner: Any, name: str, value: Any) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.setattr(owner, name, value)


def _use_the_pool() -> None:
    # Watching it is refused; flush and shutdown carry on without waiting for it.
    assert litellm_internals.watch_sync_pool() is False
    assert llm.drain_callbacks(0.1) is True


def _use_the_worker() -> None:
    assert llm.pending_callbacks() == 0
    assert llm.drain_callbacks(0.1) is True


def _use_the_lists() -> None:
    # register/unregister still clean the public lists.
    lists = litellm_internals.callback_lists()
    assert litellm.callbacks in lists and litellm.success_callback in lists


@pytest.mark.parametrize(
    ("remove", "use", "name", "protection"),
    [
        (
            _without(logging_worker, "GLOBAL_LOGGING_WORKER"),
            _use_the_worker,
            "GLOBAL_LOGGING_WORKER",
            "waiting in flush and shutdown for litellm's queued async callbacks",
        ),
        (
            _without(thread_pool_executor, "executor"),
            _use_the_pool,
            "thread_pool_executor:executor",
            "waiting in flush and shutdown for litellm's sync callback thread pool",
        ),
        (
            _replaced(thread_pool_executor, "executor", object()),
            _use_the_pool,
            "thread_pool_executor:executor",
            "waiting in flush and shutdown for litellm's sync callback thread pool",
        ),
        (
            _without(litellm, "_async_success_callback"),
            _use_the_lists,
            "_async_success_callback",
            "keeping litellm's async callback lists to one forwarder of ours",
        ),
        (
            _without(litellm, "_async_failure_callback"),
            _use_the_lists,
            "_async_failure_callback",
            "keeping litellm's async callback lists to one forwarder of ours",
        ),
    ],
    ids=["logging-worker", "pool-gone", "pool-without-submit", "async-success", "async-failure"],
)
def test_a_missing_internal_warns_once_naming_the_lost_protection(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_reports: None,
    remove: Callable[[pytest.MonkeyPatch], None],
    use: Callable[[], None],
    name: str,
    protection: str,
) -> None:
    remove(monkeypatch)
    caplog.set_level(logging.WARNING)
    use()
    use()  # a second use does not warn again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert name in warnings[0] and protection in warnings[0] and "is lost" in warnings[0]
    assert any(name in path for path in internals.lost())
