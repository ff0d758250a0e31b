"""Feedback scores: one JSON object per request, counted only when the server accepted them.

Why not the SDK: langfuse 5.0.4 posts scores as a JSON array, which LangFuse servers up to at
least 4.16 answer with 400 (and the SDK counted nothing either way). One object per request is
what every server since the OTLP endpoint (3.22) accepts.

``ScoreSender`` posts from a ``BatchWorker`` (started with the first score: most runs send
none). A score counts as sent only on a 2xx answer; a 4xx is final (dropped,
``score_http_<status>``); 408/429/5xx and network errors are retried a few times, then dropped
(``score_http_<status>`` / ``score_unreachable``, whose text names the network cause as the
span exporter does: refused, DNS, TLS, timeout). The queue is bounded (``submit`` returns
False when full); ``close(deadline)`` stops within the deadline and says how many were not sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent.core import guard
from agent.core.batch import BatchWorker
from agent.core.forwarding.network import network_cause
from agent.core.records import ScoreRecord

__all__ = ["ScoreSender", "score_body"]

# (outcome: "accepted" | a drop reason, HTTP status or None, a short text)
ResultCallback = Callable[[str, "int | None", str], None]


def score_body(red: ScoreRecord, score_id: str, environment: str | None) -> dict[str, Any]:
    """The request body for a redacted score. ``score_id`` is the id the feedback row holds, so
    the row names the score LangFuse stores (and a retried post updates the same score)."""
    body: dict[str, Any] = {
        "id": score_id,
        "traceId": red.trace_id,
        "name": red.name,
        "value": red.value,
        "dataType": "NUMERIC",
    }
    if red.comment is not None:
        body["comment"] = red.comment
    if environment:
        body["environment"] = environment
    return body


class ScoreSender:
    """See the module docstring."""

    RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(
        self,
        *,
        url: str,
        headers: Mapping[str, str],
        client: httpx.Client,
        on_result: ResultCallback,
        capacity: int = 1000,
        attempts: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self._url = url
        self._host = urlsplit(url).hostname or "the LangFuse host"
        read = client.timeout.read
        self._timeout_s = read if isinstance(read, int | float) else None
        self._headers = {**headers, "Content-Type": "application/json"}
        self._client = client
        self._on_result = on_result
        self._capacity = capacity
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._lock = threading.Lock()
        self._worker: BatchWorker[dict[str, Any]] | None = None
        self._stop = threading.Event()
        self._in_flight = False
        self._abandoned = False  # close() gave up on the score in flight (counted unsent)

    def submit(self, body: dict[str, Any]) -> bool:
        """Queue one score; False when the queue is full or the sender is closed."""
        with self._lock:
            if self._stop.is_set():
                return False
            if self._worker is None:
                # One score per batch: close() then knows exactly which one was in flight.
                self._worker = BatchWorker(
                    "langfuse.scores", self._handle, capacity=self._capacity, max_batch=1
                )
            worker = self._worker
        return worker.put(body)

    def drain(self, deadline: float) -> bool:
        """Wait until every submitted score has been answered (or ``deadline``)."""
        worker = self._worker
        return True if worker is None else worker.drain(deadline)

    def close(self, deadline: float) -> int:
        """Send what can be sent before ``deadline``, then stop; returns how many were not."""
        worker = self._worker
        if worker is not None:
            worker.drain(deadline)
        with self._lock:
            self._stop.set()  # ends a retry's backoff at once
            self._abandoned = self._in_flight
            abandoned = self._in_flight
        if worker is None:
            return 0
        worker.close(deadline)
        return worker.dropped["not_processed_at_shutdown"] + (1 if abandoned else 0)

    def _handle(self, batch: list[dict[str, Any]]) -> None:
        for body in batch:
            with self._lock:
                self._in_flight = True
            try:
                result = self._send(body)
            except Exception as exc:  # a bug: counted as a drop, reported (raised under tests)
                guard.report("langfuse.scores", exc)
                result = ("internal_error", None, "")
            with self._lock:
                self._in_flight = False
                abandoned, self._abandoned = self._abandoned, False
            if not abandoned:
                self._on_result(*result)

    def _send(self, body: dict[str, Any]) -> tuple[str, int | None, str]:
        payload = json.dumps(body).encode()
        reason, status, text = "unreachable", None, ""
        for attempt in range(self._attempts):
            if attempt and self._stop.wait(self._backoff_s * 2 ** (attempt - 1)):
                break
            try:
                response = self._client.post(self._url, content=payload, headers=self._headers)
            except httpx.HTTPError as exc:
                # Named as the span exporter names it: refused, DNS, TLS, timeout ...
                cause = network_cause(exc, host=self._host, timeout_s=self._timeout_s).text
                reason, status, text = "unreachable", None, f"{cause} ({type(exc).__name__})"
                continue
            status = response.status_code
            if 200 <= status < 300:
                return "accepted", status, ""
            reason, text = f"http_{status}", response.text[:200]
            if status not in self.RETRYABLE:
                break
        return reason, status, text
