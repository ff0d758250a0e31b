"""Waiting in tests for what a background thread does: a bounded poll of a condition the test
observes from outside (rows on a fake Hub, spans on the wire), never of a private queue."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(cond: Callable[[], object], timeout: float = 10.0) -> bool:
    """True as soon as ``cond()`` is true; its last value's truth after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())
