"""The never-raise contract, kept at each telemetry entry point.

Telemetry must never break the agent. Each entry point wraps its body in ``guarded(where)``:
an exception is logged once per distinct (where, type, message) at WARNING and swallowed, so
operators see it without a log flood. Under tests (``ML_INTERN_STRICT_TELEMETRY=1``) it is
re-raised instead, so bugs are not hidden.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("agent.telemetry")

_seen: set[tuple[str, str, str]] = set()
_lock = threading.Lock()
_counts: dict[str, int] = {}


def strict() -> bool:
    """True when internal telemetry errors should raise (the test suite sets this)."""
    return os.environ.get("ML_INTERN_STRICT_TELEMETRY", "") == "1"


def warn_once(key: str, message: str, *args: object) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process."""
    with _lock:
        if ("warn", key, "") in _seen:
            return
        _seen.add(("warn", key, ""))
    logger.warning(message, *args)


def report(where: str, exc: BaseException) -> None:
    """Count and log an internal error once per distinct failure."""
    key = (where, type(exc).__name__, str(exc)[:200])
    with _lock:
        _counts[where] = _counts.get(where, 0) + 1
        first = key not in _seen
        _seen.add(key)
    if first:
        logger.warning(
            "telemetry error in %s (further identical errors are counted, not logged): %s: %s",
            where,
            type(exc).__name__,
            exc,
            exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None,
        )


def count(where: str, n: int = 1) -> None:
    """Count ``n`` internal errors that were logged elsewhere (by the forwarding sidecar, in its
    own process: its warnings reach this process's logging on their own)."""
    with _lock:
        _counts[where] = _counts.get(where, 0) + n


def error_counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


@contextmanager
def guarded(where: str) -> Iterator[None]:
    """Swallow (and report) any exception raised in the block, unless under tests."""
    try:
        yield
    except Exception as exc:
        report(where, exc)
        if strict():
            raise
