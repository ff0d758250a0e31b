"""An OTLP/HTTP span exporter on httpx: bounded retries, counted drops, a shutdown that returns.

The langfuse SDK's default exporter is OpenTelemetry's ``OTLPSpanExporter``, which sends over
``requests``: respx cannot see it, and a dead or silent host holds ``flush()``/``shutdown()``
for as long as its timeouts and retries allow. ``HttpxOTLPSpanExporter`` is what we pass as the
SDK's ``span_exporter=`` instead; ``for_langfuse(settings, ...)`` builds one for a LangFuse host.

Contract:

- ``export(spans)`` POSTs one OTLP ``ExportTraceServiceRequest`` (protobuf, OpenTelemetry's own
  ``encode_spans``; gzip by default) and returns SUCCESS when every span was accepted, FAILURE
  otherwise. It never raises for network conditions or server answers. An unexpected internal
  error (a bug) is logged once at WARNING and swallowed; under tests
  (``ML_INTERN_STRICT_TELEMETRY=1``) it is re-raised, as everywhere in our telemetry.
- Answers are handled as ``retry.verdict`` says: 2xx is success; 408/429/5xx, connection errors
  and timeouts are retried up to ``max_retries`` times (``RetryPolicy``: backoff with jitter,
  or the server's ``Retry-After`` capped at ``max_retry_after``); 401/403 are not retried and
  warn once per exporter, naming LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY; 413 splits the
  batch in halves, recursively, and a span too large on its own is dropped; any other answer is
  dropped without retry and warned once per status. A span that cannot be encoded (a lone
  surrogate in a string ...) is dropped alone; the rest of its batch is sent.
- Every dropped span is counted in ``stats()["dropped_by_reason"]`` (reasons: ``auth``,
  ``too_large``, ``retries_exhausted``, ``aborted``, ``shutdown``, ``http_<status>``,
  ``encode_error``, ``internal_error``) and reported to ``on_drop(count, reason)``, whose own
  exceptions are logged once and swallowed. Each distinct cause is logged once per exporter at
  WARNING (through ``agent.core.guard``), naming the cause (``agent.core.forwarding.network``);
  no log line, ``stats()`` or ``repr`` ever holds the Authorization header or the secret key.
- ``shutdown(timeout_millis)`` (any thread) stops for good: an export in flight gives up at
  once, even one blocked on a host that accepted the connection and never answers (the
  transport shuts its socket down), a retry wait ends, later exports are refused; it returns
  within ``_SHUTDOWN_GRACE_S`` plus the client close. Aborted and refused spans are dropped and
  counted. With a caller-supplied ``client`` a shutdown takes effect between attempts only.

Thread-safe: an export may run on a worker while shutdown comes from another thread.
"""

from __future__ import annotations

import gzip
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agent.core import guard
from agent.core.forwarding.network import network_cause
from agent.core.forwarding.otlp import destination
from agent.core.forwarding.otlp.encoding import encode
from agent.core.forwarding.otlp.ledger import DropCallback, ExportedCallback, Ledger
from agent.core.forwarding.otlp.retry import RetryPolicy, parse_retry_after, verdict
from agent.core.forwarding.otlp.transport import Interrupter, InterruptibleTransport

logger = logging.getLogger(__name__)

__all__ = ["ExporterOptions", "HttpxOTLPSpanExporter", "for_langfuse"]

# The response body is never needed (2xx with garbage is success): read this much at most.
_MAX_RESPONSE_BYTES = 64 * 1024
# An aborted export unwinds at once; this only bounds what cannot be woken (a stuck DNS lookup,
# a caller-supplied client), so shutdown() still returns.
_SHUTDOWN_GRACE_S = 1.0
_CONNECT_TIMEOUT_MAX_S = 5.0

Compression = Literal["gzip", "none"]


@dataclass(frozen=True)
class ExporterOptions:
    """The exporter's numbers, validated once (``ValueError`` naming the bad one)."""

    timeout: float = 10.0
    compression: Compression = "gzip"
    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.compression not in ("gzip", "none"):
            raise ValueError(f"compression must be 'gzip' or 'none', got {self.compression!r}")
        for name in ("timeout", "backoff_base", "backoff_max", "max_retry_after"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {self.max_retries!r}")

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_retries, self.backoff_base, self.backoff_max, self.max_retry_after
        )


@dataclass(frozen=True)
class _Answer:
    """One POST's outcome: the status (None: no answer), Retry-After seconds, and the cause."""

    status: int | None
    retry_after: float | None
    cause: str


class HttpxOTLPSpanExporter(SpanExporter):
    """OTLP/HTTP protobuf span exporter over httpx. See the module docstring for the contract."""

    def __init__(
        self,
        *,
        endpoint: str,
        headers: Mapping[str, str],
        timeout: float = 10.0,
        compression: Compression = "gzip",
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 30.0,
        client: httpx.Client | None = None,
        on_drop: DropCallback | None = None,
        on_exported: ExportedCallback | None = None,
    ) -> None:
        self.options = ExporterOptions(
            timeout, compression, max_retries, backoff_base, backoff_max, max_retry_after
        )
        destination.check_headers(headers)
        self._retry = self.options.retry
        self._endpoint = endpoint
        self._where = destination.display_url(endpoint)
        self._host = _hostname(endpoint)
        self._headers = {
            k: v
            for k, v in headers.items()
            if k.lower() not in ("content-type", "content-encoding")
        }
        self._headers["Content-Type"] = "application/x-protobuf"
        if compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, _CONNECT_TIMEOUT_MAX_S))
        self._ledger = Ledger(
            where=self._where,
            secrets=destination.secret_values(headers),
            on_drop=on_drop,
            on_exported=on_exported,
        )

        # The lock guards the in-flight count; the condition lets retry waits and shutdown()
        # sleep until something changes. The interrupter wakes sockets blocked in an export.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._interrupter = Interrupter()
        self._inflight = 0
        self._local = threading.local()  # per export: the cause it is failing with

        self._owns_client = client is None
        self._client = client or httpx.Client(
            transport=InterruptibleTransport(self._interrupter),
            timeout=self._timeout,
            trust_env=False,  # no env proxies or netrc: traces go where the operator said
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        # Never the headers: they hold the credentials.
        return f"{type(self).__name__}(endpoint={self._where!r})"

    # -- SpanExporter --

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        batch = list(spans)
        if not batch:
            return SpanExportResult.SUCCESS
        with self._lock:
            # Checked under the lock shutdown() waits on, so it either sees this export in
            # flight (and waits for it) or this export sees it stopped.
            stopped = self._interrupter.stopped
            if not stopped:
                self._inflight += 1
        if stopped:
            self._ledger.drop(len(batch), "shutdown")
            return SpanExportResult.FAILURE
        self._local.cause = None
        try:
            return SpanExportResult.SUCCESS if self._send(batch) else SpanExportResult.FAILURE
        except Exception as exc:
            # A bug, not a network condition (those never reach here).
            self._ledger.note_error(f"internal error: {type(exc).__name__}")
            self._ledger.warn(
                f"internal:{type(exc).__name__}",
                "OTLP span export to %s failed with an internal error; %d span(s) dropped: %s: %s",
                self._where,
                len(batch),
                type(exc).__name__,
                str(exc),
            )
            self._ledger.drop(len(batch), "internal_error")
            if guard.strict():
                raise
            return SpanExportResult.FAILURE
        finally:
            with self._changed:
                self._inflight -= 1
                self._changed.notify_all()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: every export is sent before it returns."""
        return True

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Stop for good: abort what is in flight, refuse later exports, close our client.

        Returns within ``min(timeout_millis, _SHUTDOWN_GRACE_S)`` plus the client close.
        """
        try:
            self._interrupter.stop()
            grace = min(max(float(timeout_millis), 0.0) / 1000.0, _SHUTDOWN_GRACE_S)
            with self._changed:
                self._changed.notify_all()  # ends retry waits
                # Let aborted exports count their drops, so stats() is final when we return.
                self._changed.wait_for(lambda: self._inflight == 0, timeout=grace)
            if self._owns_client:
                self._client.close()
        except Exception as exc:
            self._ledger.warn(
                f"shutdown:{type(exc).__name__}",
                "OTLP span exporter shutdown for %s hit an internal error: %s: %s",
                self._where,
                type(exc).__name__,
                str(exc),
            )
            if guard.strict():
                raise

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (spans, requests, retries, compressed bytes sent)."""
        return self._ledger.stats()

    # -- sending --

    def _send(self, spans: list[ReadableSpan]) -> bool:
        """Deliver ``spans``, splitting on 413. True when every span was accepted."""
        all_encodable = True
        try:
            body = encode(spans)
        except Exception as exc:
            # One span that cannot be encoded must cost only itself: find it, drop and count
            # it, and send the others.
            spans, encoded = self._encodable_only(spans, exc)
            if encoded is None:
                return False
            body, all_encodable = encoded, False
        if self.options.compression == "gzip":
            body = gzip.compress(body, compresslevel=6, mtime=0)

        outcome = self._post_with_retries(body)
        if outcome == "ok":
            self._ledger.exported(spans)
            return all_encodable
        if outcome == "too_large" and len(spans) > 1:
            middle = len(spans) // 2
            first = self._send(spans[:middle])
            second = self._send(spans[middle:])
            return first and second
        if outcome == "too_large":
            self._ledger.warn(
                "too_large",
                "%s rejected a single span as too large (HTTP 413, %d bytes encoded); "
                "dropped. Further oversize spans are counted in stats(), not logged.",
                self._where,
                len(body),
            )
        self._ledger.drop(len(spans), outcome)
        return False

    def _encodable_only(
        self, spans: list[ReadableSpan], exc: Exception
    ) -> tuple[list[ReadableSpan], bytes | None]:
        """The spans that encode on their own and the encoded batch of them (None when none
        does). Each span that does not is dropped and counted as ``encode_error``."""
        good = [span for span in spans if _encodes(span)]
        bad = len(spans) - len(good)
        # The exception's text may quote the attribute value: name its type and the count only.
        self._ledger.note_error(f"encode error: {type(exc).__name__}")
        self._ledger.warn(
            f"encode:{type(exc).__name__}",
            "Could not encode %d of %d span(s) as OTLP protobuf (%s); those were dropped and "
            "counted, the others sent. Further encode errors are counted in stats(), not logged.",
            bad or len(spans),
            len(spans),
            type(exc).__name__,
        )
        if not good or not bad:
            # Nothing encodes, or each span does alone but not together: drop the batch.
            self._ledger.drop(len(spans), "encode_error")
            return [], None
        self._ledger.drop(bad, "encode_error")
        try:
            return good, encode(good)
        except Exception:
            self._ledger.drop(len(good), "encode_error")
            return [], None

    def _post_with_retries(self, payload: bytes) -> str:
        """``"ok"``, ``"too_large"``, or the drop reason after retries (warned once per cause)."""
        attempt = 0
        while True:
            if self._interrupter.stopped:
                return self._aborted()
            with self._interrupter.attempt(self.options.timeout):
                answer = self._attempt(payload)
            outcome = verdict(answer.status)
            if outcome != "ok" and self._interrupter.stopped:
                return self._aborted()
            if outcome != "retry":
                self._warn_outcome(outcome, answer.status)
                return outcome
            if attempt >= self._retry.max_retries:
                self._ledger.warn(
                    f"exhausted:{answer.cause}",
                    "Span export to %s failed %d time(s) (last: %s); spans dropped. Further "
                    "drops for this cause are counted in stats(), not logged.",
                    self._where,
                    attempt + 1,
                    answer.cause,
                )
                return "retries_exhausted"
            delay = self._retry.delay(attempt, answer.retry_after)
            attempt += 1
            self._ledger.retry()
            logger.debug(
                "span export to %s: %s, retry %d in %.2fs",
                self._where,
                answer.cause,
                attempt,
                delay,
            )
            if self._wait(delay):
                return self._aborted()

    def _warn_outcome(self, outcome: str, status: int | None) -> None:
        if outcome == "auth":
            # One warning per exporter for 401 and 403: either way the key pair is wrong.
            self._ledger.warn(
                "auth",
                "LangFuse at %s rejected the span export with HTTP %d: check "
                "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (the pair must belong to a "
                "project on this host). Spans are dropped and counted until this is fixed; "
                "this is logged once.",
                self._where,
                status,
            )
        elif outcome.startswith("http_"):
            self._ledger.warn(
                f"status:{status}",
                "%s answered the span export with HTTP %d; spans dropped without retry. "
                "Further drops for this status are counted in stats(), not logged.",
                self._where,
                status,
            )

    def _attempt(self, payload: bytes) -> _Answer:
        """One POST: its status (None on a transport error), Retry-After and cause."""
        self._ledger.request(len(payload))
        try:
            with self._client.stream(
                "POST", self._endpoint, content=payload, headers=self._headers
            ) as response:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                _drain(response)
        except httpx.HTTPError as exc:
            name = type(exc).__name__
            self._ledger.note_error(f"{name}: {exc}" if str(exc) else name)
            cause = network_cause(exc, host=self._host, timeout_s=self.options.timeout).text
            return self._failed(f"{cause} ({name})")
        except RuntimeError:
            # httpx refuses a closed client with RuntimeError; anything else is a bug.
            if not self._client.is_closed:
                raise
            self._ledger.note_error("client closed")
            return _Answer(None, None, "client closed")
        if not 200 <= status < 300:
            self._ledger.note_error(f"HTTP {status}")
            self._failed(f"HTTP {status}")
        return _Answer(status, retry_after, f"HTTP {status}")

    def _failed(self, cause: str) -> _Answer:
        # What the export was failing with, for the warning if it is cut short; a failure that
        # the shutdown itself caused is not the cause.
        if not self._interrupter.stopped:
            self._local.cause = cause
        return _Answer(None, None, cause)

    def _aborted(self) -> str:
        # Name what the export was struggling with when it was cut short: "aborted" alone says
        # nothing about a refused connection, a TLS handshake to a plain-HTTP port ...
        cause = getattr(self._local, "cause", None)
        self._ledger.note_error(f"aborted after: {cause}" if cause else "aborted")
        self._ledger.warn(
            f"aborted:{cause}",
            "Span export to %s was aborted (shutdown or flush deadline)%s; its spans were "
            "dropped. Further aborted exports are counted in stats(), not logged.",
            self._where,
            f" while failing with: {cause}" if cause else "",
        )
        return "aborted"

    def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` seconds unless shut down first; True when shut down."""
        with self._changed:
            return self._changed.wait_for(lambda: self._interrupter.stopped, timeout=delay)


def _drain(response: httpx.Response) -> None:
    """Read a little of the body so a healthy connection can be reused (the content is unused)."""
    try:
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > _MAX_RESPONSE_BYTES:
                break
    except httpx.HTTPError:
        if not 200 <= response.status_code < 300:
            raise
        # The server said 2xx before the body broke: the spans were taken.


def _hostname(url: str) -> str:
    try:
        return httpx.URL(url).host or "the host"
    except Exception:
        return "the host"


def _encodes(span: ReadableSpan) -> bool:
    try:
        encode([span])
    except Exception:
        return False
    return True


def for_langfuse(
    settings: destination.LangfuseKeys, *, traces_endpoint: str | None = None, **options: Any
) -> HttpxOTLPSpanExporter:
    """An exporter for a LangFuse host: its traces endpoint (or the operator's override) and
    the headers the SDK's own exporter sends. ``options`` are the exporter's keywords."""
    return HttpxOTLPSpanExporter(
        endpoint=traces_endpoint or destination.traces_endpoint(settings.host),
        headers={**destination.langfuse_headers(settings), **destination.OTLP_HEADERS},
        **options,
    )
