"""When a Hub push is due: the interval with random jitter, exponential backoff after a failure,
and the Hub's own word after a 429 (``Retry-After``, or the reset of its ``RateLimit`` header).

The budget these serve: the Hub allows 128 commits per hour per repository (and about 1,000 API
requests per 5 minutes per token). Each directory (however many processes share it) makes at
most one scheduled commit per interval, stretched by a random factor in [1, 1 + jitter] so a
fleet started together spreads out; a refusal is never retried sooner than the Hub asked.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

# Backoff after a failed push: BASE x 2^(failures - 1), at most MAX (and never less than a
# Retry-After the Hub named).
PUSH_BACKOFF_BASE_S, PUSH_BACKOFF_MAX_S = 30.0, 3600.0
_RATELIMIT_RESET = re.compile(r"(?:^|[;,\s])t=(\d+(?:\.\d+)?)")


class RateLimited(Exception):
    """The Hub answered 429; ``retry_after`` is the wait it named (None if it named none)."""

    def __init__(self, retry_after: float | None, message: str = "") -> None:
        super().__init__(message or f"429 Too Many Requests (retry after {retry_after}s)")
        self.retry_after = retry_after
        # Wall time before which no process of the directory may commit (set by the pusher).
        self.until = 0.0


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

    def defer(self, seconds: float) -> None:
        """The next push in ``seconds`` (another process of the directory pushed, or a 429's
        wait is not over), plus this process's jitter: ``interval x [0, jitter]``."""
        self.next_due = (
            self.clock() + max(0.0, seconds) + self.interval_s * self.rng.uniform(0.0, self.jitter)
        )

    def failed(self, retry_after: float | None = None) -> float:
        """Record a failed push; returns the wait before the next attempt."""
        self.failures += 1
        backoff = min(PUSH_BACKOFF_BASE_S * 2 ** (self.failures - 1), PUSH_BACKOFF_MAX_S)
        wait = max(retry_after or 0.0, backoff) * (1.0 + self.rng.uniform(0.0, self.jitter))
        self.next_due = self.clock() + wait
        return wait


def rate_limit(exc: BaseException) -> RateLimited | None:
    """A ``RateLimited`` for an HTTP 429 error (with the wait the Hub named), else None."""
    response = getattr(exc, "response", None)
    if getattr(response, "status_code", None) != 429:
        return None
    return RateLimited(retry_after_s(getattr(response, "headers", {}) or {}), str(exc)[:200])


def retry_after_s(headers: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds to wait from a 429's headers: ``Retry-After`` (seconds or an HTTP date), else
    the reset ``t=`` of the IETF ``RateLimit`` header the Hub sends; None if neither."""
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    value = lower.get("retry-after", "").strip()
    if value:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value))
        with contextlib.suppress(TypeError, ValueError):
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    m = _RATELIMIT_RESET.search(lower.get("ratelimit", ""))
    return float(m.group(1)) if m else None
