"""The langfuse SDK and the OpenTelemetry pieces around it, set up once per forwarder.

- A private ``TracerProvider``: never installed globally (other libraries' spans never reach
  our exporter), no exit hook of its own (our shutdown is the bounded one), sampling per trace
  with the linker's sampler, and span ids chosen by us (``ChosenIds``: the ids the linker
  handed out before the work happened).
- The SDK client, built with every setting passed explicitly (the SDK never reads
  ``LANGFUSE_*`` behind our back) and with its own tracing off: it builds the LangFuse
  observation attributes (``LangfuseGeneration`` ...) on spans of our tracer, which carries the
  SDK's instrumentation scope. Its own batch span processor would be a third queue, drained by
  polling; instead ``SpanHandOff`` hands every finished span to the exporter's ``BatchWorker``
  with blocking back-pressure: between litellm's hook and the socket there are two queues, the
  forwarder's and this one.
- Our httpx OTLP exporter (bounded retries, counted drops) and the score sender, with the
  headers the SDK would send.

``shutdown(deadline)`` is bounded even on a dead or silent host: at the deadline the exporter
is aborted (its in-flight export drops and counts its spans), what is still queued is counted
as ``not_exported_at_shutdown``, and the SDK's own threads get what is left of the time.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from opentelemetry import baggage
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from agent.core import guard
from agent.core.batch import BatchWorker
from agent.core.forwarding import otlp
from agent.core.forwarding.build import TRACE_CLAIM
from agent.core.forwarding.linker import make_sampler
from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings
from agent.core.internals import langfuse as sdk_internals

__all__ = ["ChosenIds", "SdkClient", "SpanHandOff", "bounded"]

SCORES_PATH = "/api/public/scores"
# OpenTelemetry's BatchSpanProcessor default, kept for the exporter's queue.
SPAN_QUEUE_SIZE = 2048
# How long the forwarder's worker waits for room in the exporter's queue before the span is
# dropped (counted): the exporter is stuck on a host that neither answers nor fails.
SPAN_QUEUE_WAIT_S = 30.0


class ChosenIds(IdGenerator):
    """An OpenTelemetry IdGenerator that returns the ids the worker chose for the next span.

    Our ids are handed out before the work happens (they go into the HF rows), so the span that
    describes the work must be created with exactly that id. Only the worker thread creates
    spans on our private provider; the chosen id is thread-local all the same.
    """

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._local = threading.local()

    def choose(self, *, trace_id: str | None = None, span_id: str | None = None) -> None:
        self._local.trace_id = int(trace_id, 16) if trace_id else None
        self._local.span_id = int(span_id, 16) if span_id else None

    def generate_span_id(self) -> int:
        chosen = getattr(self._local, "span_id", None)
        self._local.span_id = None
        return chosen or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        chosen = getattr(self._local, "trace_id", None)
        self._local.trace_id = None
        return chosen or self._random.generate_trace_id()


class SpanHandOff(SpanProcessor):
    """Finished spans -> the exporter's ``BatchWorker`` (batches of ``flush_at``, gathered for
    up to ``flush_interval_s``), with blocking back-pressure on the producing thread.

    ``on_start`` marks LangFuse's app root as the SDK's own processor does for spans of its
    tracer: every span whose parent context does not claim the trace (``TRACE_CLAIM`` baggage
    set by ``Builder``). Our spans never overlap, so no parent of ours is ever open.
    """

    def __init__(
        self,
        exporter: Any,
        *,
        abort: Callable[[], None],
        flush_at: int,
        flush_interval_s: float,
        capacity: int = SPAN_QUEUE_SIZE,
        wait_s: float = SPAN_QUEUE_WAIT_S,
    ) -> None:
        self.exporter = exporter
        self._abort = abort
        self._wait_s = wait_s
        self._app_root = sdk_internals.app_root_attribute()
        self.worker: BatchWorker[Any] = BatchWorker(
            "langfuse.export",
            self._export,
            capacity=capacity,
            max_batch=max(1, int(flush_at)),
            gather_s=max(0.0, float(flush_interval_s)),
        )

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        claim = baggage.get_baggage(TRACE_CLAIM, context=parent_context)
        if claim is None or str(claim).lower() != f"{span.context.trace_id:032x}":
            span.set_attribute(self._app_root, True)

    def on_end(self, span: Any) -> None:
        self.worker.put(span, wait=self._wait_s)

    def _export(self, spans: list[Any]) -> None:
        self.exporter.export(spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.worker.drain(time.monotonic() + timeout_millis / 1000)

    def close(self, deadline: float) -> bool:
        """Export what can be exported before ``deadline``, then abort and stop."""
        drained = self.worker.drain(deadline)
        # Abort the export in flight (a hung host): its spans, and every later export, drop and
        # count at once, so the rest of the queue unwinds within a short grace.
        self._abort()
        self.worker.close(time.monotonic() + (0.0 if drained else 0.5))
        return drained

    def shutdown(self) -> None:  # OpenTelemetry's contract; ours is close(deadline)
        self.close(time.monotonic() + 5.0)


class _QuietTracingOff(logging.Filter):
    """Drops the SDK's "tracing is explicitly disabled, no data will be sent" line: its own
    tracing is off because the spans are ours, and they are sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Configuration: Langfuse tracing is explicitly")


_QUIET = _QuietTracingOff()


def bounded(fn: Callable[[], Any], deadline: float, where: str) -> bool:
    """Run ``fn`` on a daemon thread and give up waiting at ``deadline`` (for SDK calls that take
    no timeout). True when it finished in time without raising."""
    done = threading.Event()
    ok: list[bool] = []

    def target() -> None:
        try:
            fn()
            ok.append(True)
        except Exception as exc:
            guard.report(where, exc)
        finally:
            done.set()

    threading.Thread(target=target, name=where, daemon=True).start()
    return done.wait(max(0.0, deadline - time.monotonic())) and bool(ok)


class SdkClient:
    """The SDK client, our provider and tracer, the exporter and the score sender."""

    def __init__(
        self,
        settings: LangfuseSettings,
        options: ForwarderOptions,
        *,
        span_exporter: Any,
        media_upload: bool,
        count: Callable[[str], None],
        on_exported: Callable[[Any], None],
        on_export_drop: Callable[[int, str], None],
        on_score_result: Callable[[str, int | None, str], None],
    ) -> None:
        from langfuse import Langfuse
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        from agent.core.forwarding.scores import ScoreSender

        self.settings = settings
        self.traces_endpoint = options.traces_endpoint or otlp.traces_endpoint(settings.host)
        self.exporter = span_exporter or otlp.for_langfuse(
            settings,
            traces_endpoint=self.traces_endpoint,
            timeout=min(10.0, max(1.0, options.flush_timeout_s)),
            on_drop=on_export_drop,
            on_exported=on_exported,
        )
        timeout = int(settings.timeout_s)
        self.http = httpx.Client(
            timeout=httpx.Timeout(float(timeout), connect=min(3.0, float(timeout))),
            trust_env=False,
        )
        self.scores = ScoreSender(
            url=settings.host + SCORES_PATH,
            headers=otlp.langfuse_headers(settings),
            client=self.http,
            on_result=on_score_result,
        )
        logging.getLogger("langfuse").addFilter(_QUIET)  # idempotent: one filter object
        self.client = Langfuse(
            public_key=settings.public_key,
            secret_key=settings.secret_key,
            base_url=settings.host,  # always explicit: the SDK would fall back to a cloud host
            httpx_client=self.http,
            environment=settings.environment,
            release=settings.release,
            flush_at=options.flush_at,
            flush_interval=options.flush_interval_s,
            # Every setting the SDK would otherwise read from LANGFUSE_* itself, explicitly:
            # validated by our config, so the SDK never parses the environment behind us.
            timeout=timeout,
            sample_rate=float(settings.sample_rate),  # our provider samples; the SDK validates
            media_upload_thread_count=int(settings.media_upload_thread_count),
            debug=bool(settings.debug),
            # The SDK's tracing (its provider and batch processor) stays off: spans are ours.
            tracing_enabled=False,
        )
        self.resources = sdk_internals.client_resources(self.client)
        if self.resources is not None:
            # The SDK's own exit hook flushes with no timeout; ours is bounded.
            atexit.unregister(self.resources.shutdown)
        manager = self._configure_media(media_upload, count)

        resource_attrs = {"service.name": "ml-intern"}
        if settings.environment:
            resource_attrs["langfuse.environment"] = settings.environment
        if settings.release:
            resource_attrs["langfuse.release"] = settings.release
        self.ids = ChosenIds()
        self.provider = TracerProvider(
            sampler=make_sampler(float(settings.sample_rate)),
            resource=Resource.create(resource_attrs),
            id_generator=self.ids,
            shutdown_on_exit=False,
        )
        exporter = self.exporter
        if media_upload and manager is not None:
            exporter = sdk_internals.transforming_exporter(exporter, manager)
        self.handoff = SpanHandOff(
            exporter,
            abort=self._abort_exporter,
            flush_at=options.flush_at,
            flush_interval_s=options.flush_interval_s,
        )
        self.provider.add_span_processor(self.handoff)
        # The SDK's tracer name and scope attributes, as its own tracer would carry them.
        self.tracer = self.provider.get_tracer(
            sdk_internals.tracer_name(),
            _sdk_version(),
            attributes={"public_key": settings.public_key},
        )

    def _abort_exporter(self) -> None:
        """Stop the exporter for good, aborting the export in flight (within 0.2 s)."""
        if isinstance(self.exporter, otlp.HttpxOTLPSpanExporter):
            self.exporter.shutdown(timeout_millis=200)
        else:  # an exporter given by the embedding application: OpenTelemetry's contract
            self.exporter.shutdown()

    def _configure_media(self, enabled: bool, count: Callable[[str], None]) -> Any:
        """LangFuse's own media upload: off unless the operator turned it on, then counted.

        By default redaction replaces inline media by a marker before the SDK sees it, and the
        SDK's media manager is switched off as well, so no media request is ever made."""
        manager = sdk_internals.media_manager(self.client)
        if manager is not None:
            sdk_internals.set_media_upload(
                manager,
                enabled=enabled,
                on_upload=lambda ok: count("media_uploads" if ok else "media_upload_failures"),
            )
        return manager

    def flush(self, deadline: float) -> bool:
        """Every score answered and every finished span exported (or dropped), by ``deadline``."""
        if not self.scores.drain(deadline):
            return False
        return self.handoff.worker.drain(deadline)

    def shutdown(self, deadline: float) -> tuple[bool, int]:
        """(finished in time, scores not sent). Bounded (see the module docstring)."""
        unsent = self.scores.close(deadline)
        exported = self.handoff.close(deadline)
        stopped = True
        if self.resources is not None:
            # The SDK's media and score threads (idle unless media upload is on).
            stopped = bounded(self.resources.shutdown, deadline, "langfuse.sdk_shutdown")
        self.http.close()
        # The SDK caches one client per public key for the process; a later setup with the
        # same key must not silently reuse this (shut down) one.
        sdk_internals.forget_client(self.settings.public_key, self.resources)
        return exported and stopped, unsent


def _sdk_version() -> str:
    # Package metadata, not `langfuse._version`: the same string, without a private import.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("langfuse")
    except PackageNotFoundError:
        return "unknown"
