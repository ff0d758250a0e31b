"""Hourly prices of Hugging Face hardware flavors, for the cost estimates of jobs and sandboxes.

The one place these prices live. They are list prices in USD per hour, as published on the Hub's
Jobs pricing page on ``PRICES_AS_OF``; HF bills by the minute while a job is starting or running.
Override or extend them with the ``hf_hardware_prices`` setting (a ``[hf_hardware_prices]``
table in ``ml-intern.toml``, e.g. ``"a10g-small" = 1.05``; a negative, NaN or non-number price is
refused when the config loads); the session carries them to every job and sandbox row, the
agent's tools' and ``telemetry.record_*`` calls of your own code alike. ``local`` (this machine)
costs 0.
An unknown flavor has no price: its estimate is null, never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PRICES_AS_OF = "2026-11-30"
PRICES_SOURCE = "https://huggingface.co/docs/hub/jobs-pricing"

HF_HARDWARE_USD_PER_HOUR: Mapping[str, float] = {
    "local": 0.0,
    # CPU
    "cpu-basic": 0.01,
    "cpu-upgrade": 0.03,
    "cpu-xl": 1.00,
    "cpu-performance": 1.90,
    # GPU
    "t4-small": 0.40,
    "t4-medium": 0.60,
    "l4x1": 0.80,
    "l4x4": 3.80,
    "l40sx1": 1.80,
    "l40sx4": 8.30,
    "l40sx8": 23.50,
    "a10g-small": 1.00,
    "a10g-large": 1.50,
    "a10g-largex2": 3.00,
    "a10g-largex4": 5.00,
    "a100-large": 2.50,
    "a100x4": 10.00,
    "a100x8": 20.00,
    "h200": 5.00,
    "h200x2": 10.00,
    "h200x4": 20.00,
    "h200x8": 40.00,
    "rtx-pro-6000": 2.75,
    "rtx-pro-6000x2": 5.50,
    "rtx-pro-6000x4": 11.00,
    "rtx-pro-6000x8": 22.00,
}


def hourly_price(
    hardware: str | None, overrides: Mapping[str, float] | None = None
) -> float | None:
    """USD per hour for ``hardware``; None when it is unknown."""
    if not hardware:
        return None
    if overrides and hardware in overrides:
        price = overrides[hardware]
        # The config refuses such prices at load; one handed to record_* in code gives no
        # estimate (null) rather than a wrong one.
        if isinstance(price, bool) or not isinstance(price, int | float):
            return None
        return float(price) if math.isfinite(price) and price >= 0 else None
    return HF_HARDWARE_USD_PER_HOUR.get(hardware)


def estimate_cost(
    hardware: str | None,
    seconds: float | None,
    overrides: Mapping[str, float] | None = None,
    *,
    per_started_minute: bool = True,
) -> float | None:
    """Estimated USD for ``seconds`` on ``hardware`` (None if the price or time is unknown).

    ``per_started_minute``: billed like HF Jobs, every started minute in full.
    """
    price = hourly_price(hardware, overrides)
    if price is None or seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    billed = math.ceil(seconds / 60.0) * 60.0 if per_started_minute else seconds
    return round(price * billed / 3600.0, 8)
