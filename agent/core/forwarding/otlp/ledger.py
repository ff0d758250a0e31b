"""The span exporter's books: what it sent and dropped, and what it says about it, once.

Contract:

- ``stats()`` is a snapshot: ``exported_spans``, ``dropped_spans``, ``dropped_by_reason``,
  ``requests``, ``retries``, ``bytes_sent`` (as sent: compressed), ``last_error``.
- ``drop(count, reason)`` counts and calls the owner's ``on_drop(count, reason)``;
  ``exported(spans)`` counts and calls ``on_exported(spans)``. A hook that raises is logged
  once and swallowed: a user hook must not break exports, and re-raising would turn one drop
  into two.
- ``warn(key, message, *args)`` logs at WARNING through ``agent.core.guard``, once per ledger
  and key; every string (arguments and ``last_error``) is scrubbed of the credentials first, so
  no log line or stat ever holds the Authorization header, its token or the secret key.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from agent.core import guard

__all__ = ["DropCallback", "ExportedCallback", "Ledger"]

DropCallback = Callable[[int, str], None]
ExportedCallback = Callable[[Sequence[ReadableSpan]], None]

_serials = itertools.count(1)  # one warn-once namespace per ledger


class Ledger:
    def __init__(
        self,
        *,
        where: str,
        secrets: Sequence[str],
        on_drop: DropCallback | None = None,
        on_exported: ExportedCallback | None = None,
    ) -> None:
        self._where = where
        self._secrets = list(secrets)  # longest first (destination.secret_values)
        self._on_drop = on_drop
        self._on_exported = on_exported
        self._prefix = f"otlp-exporter-{next(_serials)}"
        self._lock = threading.Lock()
        self._counts = {"exported_spans": 0, "dropped_spans": 0, "requests": 0, "retries": 0}
        self._bytes_sent = 0
        self._dropped_by_reason: dict[str, int] = {}
        self._last_error: str | None = None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self._counts,
                "dropped_by_reason": dict(self._dropped_by_reason),
                "bytes_sent": self._bytes_sent,
                "last_error": self._last_error,
            }

    def request(self, size: int) -> None:
        with self._lock:
            self._counts["requests"] += 1
            self._bytes_sent += size

    def retry(self) -> None:
        with self._lock:
            self._counts["retries"] += 1

    def exported(self, spans: Sequence[ReadableSpan]) -> None:
        with self._lock:
            self._counts["exported_spans"] += len(spans)
        self._call_hook("on_exported", self._on_exported, spans)

    def drop(self, count: int, reason: str) -> None:
        with self._lock:
            self._counts["dropped_spans"] += count
            self._dropped_by_reason[reason] = self._dropped_by_reason.get(reason, 0) + count
        if reason == "shutdown":
            self.warn(
                "shutdown",
                "Span export to %s called after shutdown; spans dropped and counted.",
                self._where,
            )
        self._call_hook("on_drop", self._on_drop, count, reason)

    def note_error(self, text: str) -> None:
        text = self.scrub(text)[:200]
        with self._lock:
            self._last_error = text

    def warn(self, key: str, message: str, *args: object) -> None:
        scrubbed = tuple(self.scrub(a) if isinstance(a, str) else a for a in args)
        guard.warn_once(f"{self._prefix}:{key}", message, *scrubbed)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    def _call_hook(self, name: str, hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception as exc:
            self.warn(
                f"{name}:{type(exc).__name__}",
                "%s callback raised %s: %s",
                name,
                type(exc).__name__,
                str(exc),
            )
