"""A fake LangFuse host on 127.0.0.1 for tests: records what arrives, answers like LangFuse, and
injects faults on demand.

Contract:

- A real HTTP/1.1 server (keep-alive) on an ephemeral loopback port, served by daemon threads.
  ``start()``/``stop()`` or ``with FakeLangfuse() as fake:``; ``fake.url`` is the base URL.
  ``stop()`` returns promptly (well under a second) even while handlers hang: it wakes them and
  shuts their sockets down.
- Every request is recorded (``fake.requests``: method, path, lower-cased headers, raw body as
  received, the status answered or None). OTLP trace posts answered with 2xx are decoded into
  ``fake.spans`` (see ``agent.testing.otlp.decode_otlp``), score posts into ``fake.scores``.
  Both are recorded before the answer is written, so they are visible when the client returns.
- Answers, as LangFuse gives them: OTLP ``POST /api/public/otel/v1/traces`` -> 200 with an empty
  ``ExportTraceServiceResponse``; ``POST /api/public/scores`` with one JSON object -> 200
  ``{"id": ...}`` (the object's own ``id`` when it has one), with a JSON list (SDK v5 batches)
  -> 202 ``{"message": "Accepted"}`` when ``accept_score_arrays`` (newer servers), else 400
  like servers up to at least 4.16, which take one object per request; a score without
  ``name`` or ``value`` -> 400. ``GET /api/public/projects`` -> 200 ``{"data": [{"id": ...,
  "name": project_name}]}``; anything else under ``/api/public`` -> 200 ``{}``; other paths ->
  404. An OTLP body that does not decode gets 400 and is noted in ``fake.errors``: a broken
  payload must not look delivered. Only what was answered 2xx lands in ``spans`` / ``scores``.
- Keys: with ``public_key`` and ``secret_key`` set, every ``/api/public`` request must carry
  them as HTTP Basic auth, else 401 ``{"message": "Invalid credentials ..."}`` (as LangFuse
  answers wrong keys, or keys of another Cloud region). Without them, any auth is accepted.
- Faults, consumed in this order per request: ``max_body_bytes`` (413 above it, by raw body
  size); then the script (``script([503, 503, 200])`` replaces it, ``respond(...)`` appends,
  each entry answers one request); then ``mode``: ``"ok"``, ``"hang"`` (read the request,
  never answer until stop), ``"slow"`` (answer after ``delay`` seconds), ``"garbage"`` (200
  with random bytes), ``"nonhttp"`` (random bytes instead of an HTTP response), ``"reset"``
  (close the connection with a TCP reset, no answer). Script entries may be a status, a mode
  name, or a ``Reply``.
- All accessors are thread-safe and return copies.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from agent.testing.otlp import decode_otlp

OTLP_PATH = "/api/public/otel/v1/traces"
SCORES_PATH = "/api/public/scores"
PROJECTS_PATH = "/api/public/projects"

Headers = dict[str, str]  # names lower-cased
Answer = tuple[int, str, bytes]  # status, content type, body
Mode = Literal["ok", "hang", "slow", "garbage", "nonhttp", "reset"]
_MODES: frozenset[str] = frozenset({"ok", "hang", "slow", "garbage", "nonhttp", "reset"})

__all__ = [
    "OTLP_PATH",
    "PROJECTS_PATH",
    "SCORES_PATH",
    "FakeLangfuse",
    "RecordedRequest",
    "Reply",
    "closed_port",
]


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``status=None`` means the LangFuse-like default for the path."""

    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: the default body for the path and status
    delay: float = 0.0  # seconds to wait before answering (the request is read first)
    action: Mode = "ok"
    path: str | None = None  # only requests whose path starts with this consume the entry


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes  # raw, as received (still compressed if it was sent so)
    status: int | None  # what the fake answered; None when it hung, reset or sent garbage
    received_at: float  # time.monotonic()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released): connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeLangfuse:
    """See the module docstring."""

    def __init__(
        self,
        *,
        mode: Mode = "ok",
        delay: float = 1.0,
        accept_score_arrays: bool = True,
        public_key: str | None = None,
        secret_key: str | None = None,
        project_name: str = "fake project",
    ) -> None:
        self.mode: Mode = mode
        self.delay = delay  # used by mode "slow"
        self.max_body_bytes: int | None = None
        self.accept_score_arrays = accept_score_arrays
        self.public_key = public_key
        self.secret_key = secret_key
        self.project_name = project_name

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._script: list[Reply] = []
        self._requests: list[RecordedRequest] = []
        self._spans: list[dict[str, Any]] = []
        self._scores: list[Any] = []
        self._errors: list[str] = []
        self._connections: set[socket.socket] = set()
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> FakeLangfuse:
        if self._server is not None:
            raise RuntimeError("FakeLangfuse already started")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits at most one poll
            name="FakeLangfuse",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and wake every handler, hanging ones included. Idempotent."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            # shutdown() (not close()) wakes a thread blocked reading this socket on Linux.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> FakeLangfuse:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeLangfuse is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeLangfuse is not running")
        return int(self._server.server_address[1])

    # -- fault injection --

    def script(self, entries: Iterable[int | str | Reply], *, path: str | None = None) -> None:
        """Replace the script: each entry answers one request (status, mode name or Reply)."""
        replies = [_as_reply(entry, path) for entry in entries]
        with self._lock:
            self._script = replies

    def respond(
        self,
        status: int | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        delay: float = 0.0,
        action: Mode = "ok",
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Append ``times`` identical answers to the script."""
        if action not in _MODES:
            raise ValueError(f"unknown action {action!r}; expected one of {sorted(_MODES)}")
        reply = Reply(status, dict(headers or {}), body, delay, action, path)
        with self._lock:
            self._script.extend([reply] * times)

    # -- what arrived --

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def otlp_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == OTLP_PATH]

    @property
    def spans(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._spans)

    @property
    def scores(self) -> list[Any]:
        with self._lock:
            return list(self._scores)

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def wait_for_spans(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` spans arrived; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._spans) >= n, timeout=timeout)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests arrived (answered or not); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= n, timeout=timeout)

    # -- serving (handler threads) --

    def _next_reply(self, path: str, size: int) -> Reply:
        with self._lock:
            if self.max_body_bytes is not None and size > self.max_body_bytes:
                return Reply(status=413)
            for index, reply in enumerate(self._script):
                if reply.path is None or path.startswith(reply.path):
                    del self._script[index]
                    return reply
            mode = self.mode
        if mode not in _MODES:
            raise ValueError(f"unknown FakeLangfuse mode {mode!r}")
        return Reply(action=mode, delay=self.delay if mode == "slow" else 0.0)

    def _serve(self, handler: _Handler, body: bytes) -> None:
        path, _, query = handler.path.partition("?")
        headers = {name.lower(): value for name, value in handler.headers.items()}
        reply = self._next_reply(path, len(body))

        def record(status: int | None) -> None:
            with self._changed:
                received = time.monotonic()
                self._requests.append(
                    RecordedRequest(handler.command, path, query, headers, body, status, received)
                )
                self._changed.notify_all()

        if reply.delay > 0 and self._stopping.wait(reply.delay):
            record(None)
            handler.close_connection = True
            return
        if reply.action in ("hang", "reset", "nonhttp"):
            record(None)
            handler.close_connection = True
            if reply.action == "hang":
                self._stopping.wait()  # stop() sets this and shuts the socket down
            elif reply.action == "reset":
                # SO_LINGER 0: close() sends RST, the client sees a reset, not a clean EOF.
                handler.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                handler.connection.close()
            else:
                handler.wfile.write(os.urandom(256) + b"\r\n\r\n")
            return

        status, content_type, payload = self._answer(handler.command, path, headers, body, reply)
        record(status)
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(
        self, method: str, path: str, headers: Headers, body: bytes, reply: Reply
    ) -> Answer:
        """Status, content type and body for a request; ingests it when the status is 2xx."""
        if reply.action == "garbage":
            status: int = reply.status or 200
            if 200 <= status < 300 and method == "POST" and path == OTLP_PATH:
                self._ingest_otlp(body, headers)  # the server took it; only its answer is broken
            return status, _PROTOBUF, reply.body or os.urandom(64)
        if not path.startswith("/api/public"):
            return reply.status or 404, _JSON, reply.body or b'{"message": "Not Found"}'
        if reply.status is None and not self._authorized(headers):
            return 401, _JSON, _UNAUTHORIZED
        status = reply.status or 200
        if not 200 <= status < 300:
            error = json.dumps({"message": f"fake LangFuse answered {status}"}).encode()
            return status, _JSON, _given(reply, error)
        route = _ROUTES.get((method, path), FakeLangfuse._any_other)
        return route(self, status, headers, body, reply)

    # -- one answer per LangFuse endpoint (_ROUTES) --

    def _projects(self, status: int, headers: Headers, body: bytes, reply: Reply) -> Answer:
        projects = {"data": [{"id": "fake-project-id", "name": self.project_name}]}
        return status, _JSON, _given(reply, json.dumps(projects).encode())

    def _otlp(self, status: int, headers: Headers, body: bytes, reply: Reply) -> Answer:
        if not self._ingest_otlp(body, headers):
            return 400, _JSON, b'{"message": "invalid OTLP payload"}'
        # An empty ExportTraceServiceResponse (no partial_success) serializes to zero bytes.
        return status, _PROTOBUF, _given(reply, b"")

    def _scores(self, status: int, headers: Headers, body: bytes, reply: Reply) -> Answer:
        try:
            data = json.loads(body or b"null")
        except ValueError as exc:
            with self._lock:
                self._errors.append(f"invalid score JSON: {exc}")
            return 400, _JSON, b'{"message": "invalid JSON"}'
        problem = self._score_problem(data)
        if problem:
            return 400, _JSON, _invalid(problem)
        items = data if isinstance(data, list) else [data]
        with self._changed:
            self._scores.extend(items)
            self._changed.notify_all()
        if isinstance(data, list):
            return reply.status or 202, _JSON, reply.body or b'{"message": "Accepted"}'
        score_id = data.get("id") or f"score-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        return status, _JSON, reply.body or json.dumps({"id": score_id}).encode()

    def _score_problem(self, data: Any) -> str | None:
        if isinstance(data, list) and not self.accept_score_arrays:
            # Servers up to at least 4.16: the body must be one score object.
            return "expected object, received array"
        items = data if isinstance(data, list) else [data]
        if not all(isinstance(i, dict) and "name" in i and "value" in i for i in items):
            return "a score needs a name and a value"
        return None

    def _any_other(self, status: int, headers: Headers, body: bytes, reply: Reply) -> Answer:
        return status, _JSON, _given(reply, b"{}")

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.public_key is None or self.secret_key is None:
            return True
        expected = base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        return headers.get("authorization") == f"Basic {expected}"

    def _ingest_otlp(self, body: bytes, headers: dict[str, str]) -> bool:
        try:
            spans = decode_otlp(body, headers.get("content-encoding"))
        except Exception as exc:
            with self._lock:
                self._errors.append(f"invalid OTLP payload: {type(exc).__name__}: {exc}")
            return False
        with self._changed:
            self._spans.extend(spans)
            self._changed.notify_all()
        return True


_JSON = "application/json"
_PROTOBUF = "application/x-protobuf"
_UNAUTHORIZED = (
    b'{"message": "Invalid credentials. Confirm that you\'ve configured the correct host."}'
)
# (method, path) -> the answer of that LangFuse endpoint; anything else under /api/public: {}.
_ROUTES = {
    ("GET", PROJECTS_PATH): FakeLangfuse._projects,
    ("POST", OTLP_PATH): FakeLangfuse._otlp,
    ("POST", SCORES_PATH): FakeLangfuse._scores,
}


def _given(reply: Reply, default: bytes) -> bytes:
    """The scripted body when the script gave one, else the endpoint's own."""
    return reply.body if reply.body is not None else default


def _invalid(message: str) -> bytes:
    return json.dumps({"message": "Invalid request data", "error": [message]}).encode()


def _as_reply(entry: int | str | Reply, path: str | None) -> Reply:
    if isinstance(entry, Reply):
        return entry if path is None or entry.path is not None else replace(entry, path=path)
    if isinstance(entry, bool):
        raise TypeError(f"script entry must be a status, a mode name or a Reply, got {entry!r}")
    if isinstance(entry, int):
        return Reply(status=entry, path=path)
    if entry in _MODES:
        return Reply(action=entry, path=path)  # type: ignore[arg-type]
    raise ValueError(
        f"unknown script entry {entry!r}; expected a status, a Reply or {sorted(_MODES)}"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # ThreadingMixIn joins handler threads in server_close() unless told not to; hanging
    # handlers are woken by stop() instead.
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeLangfuse
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the fault injection may have closed the socket already
        finally:
            with self.server.fake._lock:
                self.server.fake._connections.discard(self.connection)

    def handle_one_request(self) -> None:
        if self.server.fake._stopping.is_set():
            self.close_connection = True
            return
        try:
            super().handle_one_request()
        except OSError:
            self.close_connection = True  # the client went away, or stop() shut the socket

    def _handle(self) -> None:
        body = self._read_body()
        self.server.fake._serve(self, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()  # the blank line after the last chunk
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read .requests; stderr noise helps nobody
