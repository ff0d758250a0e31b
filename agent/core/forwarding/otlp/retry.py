"""What the span exporter does with each answer: deliver, split, retry, or drop and say why.

Contract:

- ``verdict(status)`` classifies one answer (``None``: the request never got one): ``"ok"``
  (2xx, whatever the body holds), ``"too_large"`` (413: split the batch), ``"auth"`` (401/403:
  the key pair is wrong, never retried), ``"retry"`` (408/429/500/502/503/504 and every
  transport failure), else ``"http_<status>"`` (dropped without retry).
- ``RetryPolicy.delay(attempt, retry_after)`` is how long to wait before retry ``attempt + 1``:
  the server's ``Retry-After`` capped at ``max_retry_after``, else exponential backoff from
  ``backoff_base`` capped at ``backoff_max``, with +-20% jitter so clients that failed together
  drift apart.
- ``parse_retry_after(value)`` reads a ``Retry-After`` header (delay-seconds or HTTP-date).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after", "verdict"]

# 408 is as transient as the gateway errors; OpenTelemetry's own list omits 500, we retry it.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_VERDICTS = {413: "too_large", 401: "auth", 403: "auth"}


def verdict(status: int | None) -> str:
    if status is None or status in RETRYABLE_STATUSES:
        return "retry"
    if 200 <= status < 300:
        return "ok"
    return _VERDICTS.get(status, f"http_{status}")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_base: float
    backoff_max: float
    max_retry_after: float

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        backoff = min(self.backoff_max, self.backoff_base * (2**attempt))
        return backoff * random.uniform(0.8, 1.2)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), else None."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are GMT; parsedate_to_datetime returns naive for "-0000".
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)
