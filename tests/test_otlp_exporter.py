"""HttpxOTLPSpanExporter at the wire: real sockets (FakeLangfuse on 127.0.0.1) and respx.

Covers the contract in agent/core/forwarding/otlp/: wire format and headers, retries with
backoff and Retry-After, auth failures that warn once and never leak the secret, 413 splitting,
garbage answers, refused and silent hosts, shutdown from another thread.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from importlib.metadata import version
from types import SimpleNamespace

import httpx
import pytest
import respx
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)

from agent.core.forwarding import otlp
from agent.core.forwarding.otlp import HttpxOTLPSpanExporter, parse_retry_after
from agent.testing.fake_langfuse import FakeLangfuse, Reply, closed_port
from agent.testing.otlp import decode_respx_calls
from tests.langfuse_helpers import fresh_keys

PK = "pk-lf-test-public"
SK = "sk-lf-TOPSECRET-0123456789"
LOGGER = "agent.telemetry"  # agent.core.guard's warn-once
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 3.0}


def settings(host: str, public_key: str = PK) -> SimpleNamespace:
    """What for_langfuse reads of the gate's LangfuseSettings."""
    return SimpleNamespace(host=host, public_key=public_key, secret_key=SK)


@pytest.fixture
def fake() -> Iterator[FakeLangfuse]:
    with FakeLangfuse() as server:
        yield server


@pytest.fixture
def make_exporter() -> Iterator[object]:
    made: list[HttpxOTLPSpanExporter] = []

    def make(base_url: str, **kwargs: object) -> HttpxOTLPSpanExporter:
        options = {**FAST, **kwargs}
        exporter = otlp.for_langfuse(settings(base_url), **options)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown(timeout_millis=100)


def spans(*names: str, **attributes: object) -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("otlp-test", "1.2.3")
    out = []
    for name in names:
        span = tracer.start_span(name, attributes={"name": name, **attributes})
        span.end()
        out.append(span)
    return out


def run_in_thread(fn) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def our_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def assert_no_secret(caplog: pytest.LogCaptureFixture, exporter: HttpxOTLPSpanExporter) -> None:
    token = base64.b64encode(f"{PK}:{SK}".encode()).decode()
    texts = [r.getMessage() for r in caplog.records] + [str(exporter.stats()), repr(exporter)]
    for text in texts:
        assert SK not in text and token not in text


# -- success and wire format --


def test_success_wire_format_headers_and_attributes(fake: FakeLangfuse, make_exporter) -> None:
    exporter = make_exporter(fake.url)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("ml_intern", "0.1")
    attributes = {
        "s": "text",
        "i": 42,
        "f": 1.5,
        "b": True,
        "ls": ["a", "b"],
        "li": [1, 2, 3],
        "lb": [True, False],
    }
    with tracer.start_as_current_span("turn") as parent:
        with tracer.start_as_current_span("llm.main", attributes=attributes) as child:
            child.set_attribute("late", "yes")
        parent_id = format(parent.get_span_context().span_id, "016x")

    assert fake.wait_for_spans(2, timeout=2)
    by_name = {s["name"]: s for s in fake.spans}
    llm = by_name["llm.main"]
    assert llm["attributes"] == {**attributes, "late": "yes"}
    assert llm["parent_span_id"] == parent_id
    assert llm["trace_id"] == by_name["turn"]["trace_id"] and len(llm["trace_id"]) == 32
    assert by_name["turn"]["parent_span_id"] is None
    assert llm["scope"] == "ml_intern" and llm["end_time_ns"] >= llm["start_time_ns"] > 0

    request = fake.otlp_requests[0]
    assert request.path == "/api/public/otel/v1/traces"  # LangFuse's path, not ours
    headers = request.headers
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["content-encoding"] == "gzip" and request.body[:2] == b"\x1f\x8b"
    assert headers["authorization"] == "Basic " + base64.b64encode(f"{PK}:{SK}".encode()).decode()
    assert headers["x-langfuse-ingestion-version"] == "4"
    assert headers["x-langfuse-public-key"] == PK
    assert headers["x-langfuse-sdk-name"] == "python"
    assert headers["x-langfuse-sdk-version"] == version("langfuse")

    stats = exporter.stats()
    assert stats["exported_spans"] == 2 and stats["dropped_spans"] == 0
    assert stats["requests"] == 2 and stats["retries"] == 0
    assert stats["bytes_sent"] == sum(len(r.body) for r in fake.otlp_requests)
    assert stats["last_error"] is None


def test_uncompressed_when_asked(fake: FakeLangfuse, make_exporter) -> None:
    exporter = make_exporter(fake.url, compression="none")
    assert exporter.export(spans("plain")) is SpanExportResult.SUCCESS
    request = fake.otlp_requests[0]
    assert "content-encoding" not in request.headers
    assert exporter.stats()["bytes_sent"] == len(request.body)
    assert [s["name"] for s in fake.spans] == ["plain"]


def test_helpers_and_validation() -> None:
    assert otlp.traces_endpoint("http://h:3000/") == "http://h:3000/api/public/otel/v1/traces"
    headers = otlp.langfuse_headers(settings("http://h"), sdk_version="9")
    assert (
        headers["x-langfuse-sdk-version"] == "9" and "x-langfuse-ingestion-version" not in headers
    )
    for bad in ({"compression": "brotli"}, {"timeout": 0}, {"max_retries": -1}):
        with pytest.raises(ValueError):
            HttpxOTLPSpanExporter(endpoint="http://127.0.0.1:1/x", headers={}, **bad)
    exporter = HttpxOTLPSpanExporter(endpoint="http://127.0.0.1:1/x", headers={})
    assert exporter.export([]) is SpanExportResult.SUCCESS
    assert exporter.force_flush() is True
    exporter.shutdown()


# -- retries --


@pytest.mark.parametrize("failures", [[500, 503], [502, 504], [429, 408]])
def test_transient_errors_then_recovery_deliver_once(
    fake: FakeLangfuse, make_exporter, failures: list[int]
) -> None:
    exporter = make_exporter(fake.url)
    fake.script([*failures, 200])
    assert exporter.export(spans("a", "b", "c")) is SpanExportResult.SUCCESS
    assert sorted(s["name"] for s in fake.spans) == ["a", "b", "c"]  # exactly once each
    stats = exporter.stats()
    assert stats["requests"] == 3 and stats["retries"] == 2
    assert stats["exported_spans"] == 3 and stats["dropped_spans"] == 0
    assert stats["last_error"] == f"HTTP {failures[-1]}"


def test_retry_after_seconds_is_honoured(fake: FakeLangfuse, make_exporter) -> None:
    exporter = make_exporter(fake.url, max_retry_after=5.0)
    fake.script([Reply(status=429, headers={"Retry-After": "1"}), 200])
    assert exporter.export(spans("r")) is SpanExportResult.SUCCESS
    first, second = fake.otlp_requests
    waited = second.received_at - first.received_at
    assert 1.0 <= waited < 1.5  # the header, not the 0.01 s backoff, and far below the cap


def test_retry_after_is_capped(fake: FakeLangfuse, make_exporter) -> None:
    exporter = make_exporter(fake.url, max_retry_after=0.2)
    fake.script([Reply(status=503, headers={"Retry-After": "3600"}), 200])
    started = time.monotonic()
    assert exporter.export(spans("r")) is SpanExportResult.SUCCESS
    first, second = fake.otlp_requests
    assert 0.2 <= second.received_at - first.received_at < 0.8
    assert time.monotonic() - started < 1.0


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(formatdate(now + 7, usegmt=True), now=now) == pytest.approx(7, abs=1)
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0
    for junk in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(junk) is None


def test_connection_refused_is_dropped_within_backoff_bounds(make_exporter, caplog) -> None:
    dropped: list[tuple[int, str]] = []
    exporter = make_exporter(
        f"http://127.0.0.1:{closed_port()}",
        max_retries=3,
        on_drop=lambda n, r: dropped.append((n, r)),
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert exporter.export(spans("x", "y")) is SpanExportResult.FAILURE
        assert exporter.export(spans("z")) is SpanExportResult.FAILURE
    # 2 batches x 3 waits of at most backoff_max * 1.2, plus connects to loopback (with
    # room for a loaded machine: this catches unbounded waits, not slowness).
    assert time.monotonic() - started < 3.0
    stats = exporter.stats()
    assert stats["requests"] == 8 and stats["retries"] == 6
    assert stats["dropped_by_reason"] == {"retries_exhausted": 3}
    assert stats["exported_spans"] == 0 and "ConnectError" in stats["last_error"]
    assert dropped == [(2, "retries_exhausted"), (1, "retries_exhausted")]
    assert len(our_warnings(caplog)) == 1  # one cause, one warning
    assert_no_secret(caplog, exporter)


@pytest.mark.parametrize("broken", ["nonhttp", "reset"])
def test_broken_answers_are_retried(fake: FakeLangfuse, make_exporter, broken: str) -> None:
    exporter = make_exporter(fake.url)
    fake.script([broken, 200])
    assert exporter.export(spans("b")) is SpanExportResult.SUCCESS
    assert [s["name"] for s in fake.spans] == ["b"]
    assert exporter.stats()["retries"] == 1


def test_garbage_body_on_200_is_success(fake: FakeLangfuse, make_exporter) -> None:
    exporter = make_exporter(fake.url)
    fake.mode = "garbage"
    assert exporter.export(spans("g1", "g2")) is SpanExportResult.SUCCESS
    stats = exporter.stats()
    assert stats["requests"] == 1 and stats["retries"] == 0 and stats["exported_spans"] == 2


def test_slow_host_times_out_then_retry_succeeds(fake: FakeLangfuse, make_exporter) -> None:
    exporter = make_exporter(fake.url, timeout=0.3)
    fake.respond(status=200, delay=1.0)  # the first answer comes after the client gave up
    started = time.monotonic()
    assert exporter.export(spans("slow")) is SpanExportResult.SUCCESS
    assert time.monotonic() - started < 0.9
    stats = exporter.stats()
    assert stats["requests"] == 2 and stats["retries"] == 1 and stats["exported_spans"] == 1
    assert "Timeout" in stats["last_error"]


def test_an_answer_trickling_in_is_bounded_by_the_attempts_timeout(make_exporter) -> None:
    # Each byte comes well within the per-read timeout, so only the bound on the attempt as a
    # whole ends it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 60:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.05)

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    try:
        exporter = make_exporter(
            f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5, max_retries=0
        )
        started = time.monotonic()
        result = exporter.export(spans("t"))
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert result is SpanExportResult.FAILURE and elapsed < 1.5
    stats = exporter.stats()
    assert stats["requests"] == 1 and "Timeout" in stats["last_error"]
    assert stats["dropped_by_reason"] == {"retries_exhausted": 1}


# -- answers that are not retried --


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_warns_once_without_secret_or_retry(
    fake: FakeLangfuse, make_exporter, caplog, status: int
) -> None:
    exporter = make_exporter(fake.url)
    fake.mode = "ok"
    fake.respond(status=status, times=3)
    with caplog.at_level(logging.DEBUG):
        for name in ("one", "two", "three"):
            assert exporter.export(spans(name)) is SpanExportResult.FAILURE
    stats = exporter.stats()
    assert stats["requests"] == 3 and stats["retries"] == 0  # one request per batch
    assert stats["dropped_by_reason"] == {"auth": 3}
    warnings = our_warnings(caplog)
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "LANGFUSE_PUBLIC_KEY" in message and "LANGFUSE_SECRET_KEY" in message
    assert str(status) in message
    assert_no_secret(caplog, exporter)
    assert fake.spans == []


def test_other_4xx_dropped_and_warned_once_per_status(fake: FakeLangfuse, make_exporter, caplog):
    exporter = make_exporter(fake.url)
    fake.script([400, 400, 404, 301])
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            assert exporter.export(spans("x")) is SpanExportResult.FAILURE
    stats = exporter.stats()
    assert stats["requests"] == 4 and stats["retries"] == 0
    assert stats["dropped_by_reason"] == {"http_400": 2, "http_404": 1, "http_301": 1}
    assert len(our_warnings(caplog)) == 3
    assert_no_secret(caplog, exporter)


def test_413_splits_and_drops_only_the_oversize_span(fake: FakeLangfuse, make_exporter, caplog):
    dropped: list[tuple[int, str]] = []
    exporter = make_exporter(
        fake.url, compression="none", on_drop=lambda n, r: dropped.append((n, r))
    )
    small = spans(*(f"small-{i}" for i in range(7)))
    huge = spans("huge", blob="x" * 20_000)
    fake.max_body_bytes = 5_000
    with caplog.at_level(logging.WARNING):
        result = exporter.export([*small[:3], *huge, *small[3:]])
    assert result is SpanExportResult.FAILURE
    assert sorted(s["name"] for s in fake.spans) == sorted(f"small-{i}" for i in range(7))
    stats = exporter.stats()
    assert stats["exported_spans"] == 7
    assert stats["dropped_by_reason"] == {"too_large": 1}
    assert dropped == [(1, "too_large")]
    assert len(our_warnings(caplog)) == 1
    assert all(len(r.body) <= 5_000 for r in fake.otlp_requests if r.status == 200)


# -- abort and shutdown --


def test_shutdown_from_another_thread_returns_promptly(fake: FakeLangfuse, make_exporter) -> None:
    exporter = make_exporter(fake.url, timeout=30.0)
    fake.mode = "hang"
    thread, result = run_in_thread(lambda: exporter.export(spans("h1", "h2")))
    assert fake.wait_for_requests(1, timeout=5)
    time.sleep(0.1)

    started = time.monotonic()
    exporter.shutdown(timeout_millis=30_000)
    assert time.monotonic() - started < 3.0
    thread.join(timeout=4)
    assert not thread.is_alive() and result == [SpanExportResult.FAILURE]
    # shutdown() waited for the aborted export, so its drop is already counted.
    assert exporter.stats()["dropped_by_reason"] == {"aborted": 2}

    assert exporter.export(spans("late")) is SpanExportResult.FAILURE
    assert exporter.stats()["dropped_by_reason"] == {"aborted": 2, "shutdown": 1}
    assert len(fake.requests) == 1
    exporter.shutdown()  # idempotent


def test_shutdown_interrupts_a_retry_wait(fake: FakeLangfuse, make_exporter) -> None:
    exporter = make_exporter(fake.url)
    fake.script([Reply(status=503, headers={"Retry-After": "20"})])
    thread, result = run_in_thread(lambda: exporter.export(spans("w")))
    assert fake.wait_for_requests(1, timeout=5)
    time.sleep(0.1)
    started = time.monotonic()
    exporter.shutdown(timeout_millis=5_000)
    thread.join(timeout=4)
    assert not thread.is_alive() and time.monotonic() - started < 2.5
    assert result == [SpanExportResult.FAILURE]
    assert len(fake.requests) == 1
    assert exporter.stats()["dropped_by_reason"] == {"aborted": 1}


def assert_shutdown_ends_a_blocked_export(
    exporter: HttpxOTLPSpanExporter, connected: Callable[[], bool] = lambda: True
) -> None:
    """An export blocked on the network ends at once when another thread shuts down."""
    thread, result = run_in_thread(lambda: exporter.export(spans("blocked")))
    time.sleep(0.3)
    assert connected() and thread.is_alive()
    started = time.monotonic()
    exporter.shutdown(timeout_millis=5_000)
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 2.5
    assert result == [SpanExportResult.FAILURE]
    assert exporter.stats()["dropped_by_reason"] == {"aborted": 1}


def test_shutdown_unblocks_a_connect_that_is_never_answered(make_exporter) -> None:
    # A listener that never accepts, with its accept queue full: further SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        with socket.socket() as probe:
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                pass
            else:
                pytest.skip("this kernel accepts connections beyond a full backlog")

        assert_shutdown_ends_a_blocked_export(
            make_exporter(f"http://127.0.0.1:{port}", timeout=30.0)
        )
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_shutdown_unblocks_a_tls_handshake_that_is_never_answered(make_exporter) -> None:
    # A host that accepts the connection and never says a word: the ClientHello goes unanswered,
    # so the export blocks inside the TLS handshake (not in an HTTP read).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    acceptor.start()
    try:
        exporter = make_exporter(f"https://127.0.0.1:{port}", timeout=30.0)
        assert_shutdown_ends_a_blocked_export(exporter, connected=lambda: bool(accepted))
    finally:
        for sock in accepted:
            sock.close()
        listener.close()


def test_batch_processor_shuts_down_promptly_when_exporter_goes_first(
    fake: FakeLangfuse, make_exporter
) -> None:
    # BatchSpanProcessor.shutdown() joins its worker for up to 30 s before it calls the
    # exporter's shutdown: whoever owns the pipeline shuts the exporter down first.
    exporter = make_exporter(fake.url, timeout=30.0)
    fake.mode = "hang"
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=10))
    provider.get_tracer("t").start_span("queued").end()
    assert fake.wait_for_requests(1, timeout=5)
    provider.get_tracer("t").start_span("behind").end()

    started = time.monotonic()
    exporter.shutdown(timeout_millis=1_000)
    provider.shutdown()
    assert time.monotonic() - started < 4.0
    assert exporter.stats()["dropped_spans"] == 2


# -- concurrency, hooks, respx --


def test_concurrent_exports_keep_exact_counts(fake: FakeLangfuse, make_exporter) -> None:
    exporter = make_exporter(fake.url)
    threads = [
        threading.Thread(
            target=lambda t=t: [exporter.export(spans(f"{t}-{i}", "pair")) for i in range(5)]
        )
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    stats = exporter.stats()
    assert stats["exported_spans"] == 40 and stats["requests"] == 20
    assert len(fake.spans) == 40


def test_raising_on_drop_is_contained(fake: FakeLangfuse, make_exporter, caplog) -> None:
    def on_drop(count: int, reason: str) -> None:
        raise RuntimeError(f"hook broke on {reason}")

    exporter = make_exporter(fake.url, on_drop=on_drop)
    fake.script([400, 400])
    with caplog.at_level(logging.WARNING):
        assert exporter.export(spans("x")) is SpanExportResult.FAILURE
        assert exporter.export(spans("y")) is SpanExportResult.FAILURE
    assert exporter.stats()["dropped_by_reason"] == {"http_400": 2}
    assert sum("on_drop callback raised" in r.getMessage() for r in our_warnings(caplog)) == 1


def test_respx_sees_the_exporters_own_transport(make_exporter) -> None:
    base_url = "http://127.0.0.1:9"  # never contacted: respx answers
    exporter = make_exporter(base_url)
    with respx.mock(assert_all_called=True) as router:
        route = router.post(otlp.traces_endpoint(base_url)).mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(200)]
        )
        assert exporter.export(spans("r1", "r2")) is SpanExportResult.SUCCESS
    assert route.call_count == 3
    decoded = decode_respx_calls(route.calls)
    assert [s["name"] for s in decoded] == ["r1", "r2"] * 3  # the same batch, three attempts
    assert decoded[0]["attributes"] == {"name": "r1"}
    assert route.calls.last.request.headers["x-langfuse-ingestion-version"] == "4"


def test_caller_supplied_client_is_used_and_left_open(make_exporter) -> None:
    base_url = "http://127.0.0.1:9"
    with respx.mock() as router, httpx.Client(trust_env=False) as client:
        route = router.post(otlp.traces_endpoint(base_url)).respond(200, content=b"\x00junk")
        exporter = make_exporter(base_url, client=client)
        assert exporter.export(spans("c")) is SpanExportResult.SUCCESS
        exporter.shutdown()
        assert not client.is_closed  # the caller owns it
        assert decode_respx_calls(route.calls)[0]["name"] == "c"


def test_langfuse_sdk_exports_through_our_exporter(fake: FakeLangfuse) -> None:
    from langfuse import Langfuse

    public_key, _ = fresh_keys()
    exporter = otlp.for_langfuse(settings(fake.url, public_key), **FAST)
    client = Langfuse(
        public_key=public_key,
        secret_key=SK,
        base_url=fake.url,
        span_exporter=exporter,
        tracer_provider=TracerProvider(),
    )
    try:
        generation = client.start_observation(name="llm.main", as_type="generation", model="m")
        generation.update(input="hi", output="hello")
        generation.end()
        client.create_score(name="feedback", value=1.0, trace_id=generation.trace_id)
        client.flush()
        assert fake.wait_for_spans(1, timeout=5)
    finally:
        client.shutdown()
    (span,) = fake.spans
    assert span["name"] == "llm.main"
    assert span["attributes"]["langfuse.observation.type"] == "generation"
    assert [s["name"] for s in fake.scores] == ["feedback"]
    assert exporter.stats()["exported_spans"] == 1
