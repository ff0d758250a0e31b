"""The fake LangFuse host itself: answers, recording, fault injection, a stop that returns."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider

from agent.testing.fake_langfuse import OTLP_PATH, SCORES_PATH, FakeLangfuse, Reply, closed_port
from agent.testing.otlp import decode_otlp, decode_respx_calls


def _otlp_body(*names: str, gzip_it: bool = False) -> bytes:
    tracer = TracerProvider().get_tracer("fake-test")
    spans = []
    for name in names:
        span = tracer.start_span(name, attributes={"n": name, "flag": True, "xs": [1, 2]})
        span.end()
        spans.append(span)
    body = encode_spans(spans).SerializeToString()
    return gzip.compress(body) if gzip_it else body


@pytest.fixture
def fake():
    with FakeLangfuse() as server:
        yield server


@pytest.fixture
def client():
    with httpx.Client(trust_env=False, timeout=5.0) as c:
        yield c


def test_answers_like_langfuse_and_records(fake: FakeLangfuse, client: httpx.Client) -> None:
    assert fake.url.startswith("http://127.0.0.1:")
    response = client.post(
        fake.url + OTLP_PATH,
        content=_otlp_body("a", "b", gzip_it=True),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert response.content == b""  # an empty ExportTraceServiceResponse

    assert [s["name"] for s in fake.spans] == ["a", "b"]
    assert fake.spans[0]["attributes"] == {"n": "a", "flag": True, "xs": [1, 2]}
    assert fake.spans[0]["scope"] == "fake-test"
    (recorded,) = fake.requests
    assert recorded.method == "POST" and recorded.path == OTLP_PATH and recorded.status == 200
    assert recorded.headers["content-encoding"] == "gzip"
    assert recorded.body[:2] == b"\x1f\x8b"  # raw, as received

    # SDK v5 batches scores as a JSON list and expects 202; a single object gets an id.
    batch = client.post(fake.url + SCORES_PATH, json=[{"name": "x", "value": 1}])
    assert batch.status_code == 202 and batch.json() == {"message": "Accepted"}
    single = client.post(fake.url + SCORES_PATH, json={"name": "y", "value": 0})
    assert single.status_code == 200 and "id" in single.json()
    assert [s["name"] for s in fake.scores] == ["x", "y"]

    projects = client.get(fake.url + "/api/public/projects").json()
    assert projects == {"data": [{"id": "fake-project-id", "name": "fake project"}]}
    assert client.get(fake.url + "/api/public/health").json() == {}
    assert client.get(fake.url + "/elsewhere").status_code == 404
    assert fake.wait_for_spans(2, timeout=0.1)
    assert not fake.wait_for_spans(3, timeout=0.05)


def test_undecodable_otlp_gets_400_and_is_noted(fake: FakeLangfuse, client: httpx.Client) -> None:
    response = client.post(
        fake.url + OTLP_PATH, content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert fake.spans == []
    assert fake.errors and "invalid OTLP payload" in fake.errors[0]


def test_script_then_mode(fake: FakeLangfuse, client: httpx.Client) -> None:
    fake.script([503, 429, 200])
    fake.respond(status=429, headers={"Retry-After": "7"}, times=2)
    statuses = [client.post(fake.url + OTLP_PATH, content=_otlp_body("s")) for _ in range(6)]
    assert [r.status_code for r in statuses] == [503, 429, 200, 429, 429, 200]
    assert statuses[3].headers["retry-after"] == "7"
    # Only 2xx answers ingest: two deliveries, two spans.
    assert len(fake.spans) == 2
    assert [r.status for r in fake.requests] == [503, 429, 200, 429, 429, 200]


def test_script_entries_can_target_a_path(fake: FakeLangfuse, client: httpx.Client) -> None:
    fake.script([500], path=OTLP_PATH)
    assert client.post(fake.url + SCORES_PATH, json=[]).status_code == 202
    assert client.post(fake.url + OTLP_PATH, content=_otlp_body("p")).status_code == 500


def test_max_body_bytes_answers_413(fake: FakeLangfuse, client: httpx.Client) -> None:
    fake.max_body_bytes = 50
    assert client.post(fake.url + OTLP_PATH, content=_otlp_body("x" * 200)).status_code == 413
    assert fake.spans == []


def test_garbage_is_200_with_random_bytes(fake: FakeLangfuse, client: httpx.Client) -> None:
    fake.mode = "garbage"
    response = client.post(fake.url + OTLP_PATH, content=_otlp_body("g"))
    assert response.status_code == 200 and len(response.content) == 64
    assert [s["name"] for s in fake.spans] == ["g"]


@pytest.mark.parametrize("mode", ["nonhttp", "reset"])
def test_broken_connections(fake: FakeLangfuse, client: httpx.Client, mode: str) -> None:
    fake.script([mode])
    with pytest.raises(httpx.TransportError):
        client.post(fake.url + OTLP_PATH, content=_otlp_body("r"))
    assert client.post(fake.url + OTLP_PATH, content=_otlp_body("r")).status_code == 200
    assert [r.status for r in fake.requests] == [None, 200]


def test_slow_answers_after_delay(fake: FakeLangfuse, client: httpx.Client) -> None:
    fake.respond(status=200, delay=0.3)
    started = time.monotonic()
    assert client.post(fake.url + OTLP_PATH, content=_otlp_body("s")).status_code == 200
    assert 0.3 <= time.monotonic() - started < 2.0


def test_hang_then_stop_returns_promptly() -> None:
    fake = FakeLangfuse(mode="hang").start()
    outcome: list[object] = []

    def call() -> None:
        try:
            with httpx.Client(trust_env=False, timeout=30.0) as c:
                outcome.append(c.post(fake.url + OTLP_PATH, content=_otlp_body("h")))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    assert fake.wait_for_requests(1, timeout=5.0)
    time.sleep(0.1)
    assert thread.is_alive()  # really hanging

    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2.5
    thread.join(timeout=2.0)
    assert not thread.is_alive()
    assert isinstance(outcome[0], httpx.TransportError)  # the client saw the connection end
    fake.stop()  # idempotent


def test_closed_port_refuses() -> None:
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", closed_port()))


def test_bad_script_entries_are_rejected(fake: FakeLangfuse) -> None:
    with pytest.raises(ValueError):
        fake.script(["teapot"])
    with pytest.raises(ValueError):
        fake.respond(action="explode")  # type: ignore[arg-type]
    fake.script([Reply(status=201)])


def test_decode_respx_calls_filters_otlp_posts() -> None:
    body = _otlp_body("one", gzip_it=True)
    requests = [
        httpx.Request(
            "POST",
            "http://127.0.0.1/api/public/otel/v1/traces",
            content=body,
            headers={"Content-Encoding": "gzip"},
        ),
        httpx.Request(
            "POST", "http://127.0.0.1/api/public/scores", content=json.dumps([]).encode()
        ),
    ]
    assert [s["name"] for s in decode_respx_calls(requests)] == ["one"]
    with pytest.raises(ValueError):
        decode_otlp(body, "br")


def test_servers_before_score_arrays_answer_400_to_the_sdks_batch(client: httpx.Client) -> None:
    # LangFuse servers up to at least 4.16 take one score object per request; SDK 5.0.4 posts
    # a JSON array, which they reject: nothing is stored.
    with FakeLangfuse(accept_score_arrays=False) as fake:
        batch = client.post(fake.url + SCORES_PATH, json=[{"name": "x", "value": 1}])
        assert batch.status_code == 400
        assert fake.scores == []
        single = client.post(fake.url + SCORES_PATH, json={"id": "s1", "name": "y", "value": 0})
        assert single.status_code == 200 and single.json() == {"id": "s1"}
        assert [s["id"] for s in fake.scores] == ["s1"]
        bad = client.post(fake.url + SCORES_PATH, json={"value": 0})
        assert bad.status_code == 400 and len(fake.scores) == 1


def test_keys_are_checked_when_the_fake_has_them(client: httpx.Client) -> None:
    with FakeLangfuse(public_key="pk-lf-a", secret_key="sk-lf-b", project_name="P") as fake:
        good = httpx.BasicAuth("pk-lf-a", "sk-lf-b")
        ok = client.get(fake.url + "/api/public/projects", auth=good)
        assert ok.status_code == 200 and ok.json()["data"][0]["name"] == "P"
        wrong = client.get(fake.url + "/api/public/projects", auth=("pk-lf-a", "sk-lf-x"))
        assert wrong.status_code == 401 and "Invalid credentials" in wrong.json()["message"]
        none = client.post(fake.url + SCORES_PATH, json={"name": "y", "value": 0})
        assert none.status_code == 401 and fake.scores == []
