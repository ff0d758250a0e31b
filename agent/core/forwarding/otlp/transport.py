"""An httpx transport whose requests give up at once when their exporter stops.

httpx has no cancellation for sync requests, and closing a client from another thread does not
wake a thread blocked in ``recv()``. What does: ``shutdown(SHUT_RDWR)`` of the socket from
another thread, which ends a blocked ``connect``, TLS handshake, ``send`` or ``recv`` at once
(the kernel wakes the waiter; ``recv`` returns EOF). So every socket operation of this transport
registers its socket with the exporter's ``Interrupter`` while it blocks, and
``Interrupter.stop()`` shuts every registered socket down. No operation polls a flag.

Contract:

- ``Interrupter.stop()`` (any thread, idempotent, never blocks on the network) makes every
  socket operation in flight fail at once with an httpcore error whose text says "aborted", and
  every later one fail before it starts.
- ``Interrupter.attempt(seconds)`` bounds one request as a whole (httpx's timeouts bound each
  operation alone): an operation past the attempt's end fails as a timeout of its kind.
- ``InterruptibleTransport`` is a plain ``httpcore.ConnectionPool`` with its own network backend,
  so respx, which patches the pool, still sees every request. DNS resolution is the one step
  that cannot be interrupted (the resolver has no cancel); the system resolver bounds it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpcore
import httpx

__all__ = ["Interrupter", "InterruptibleTransport"]

R = TypeVar("R")

# (timeout error, failure error) of each kind of socket operation.
_CONNECT = (httpcore.ConnectTimeout, httpcore.ConnectError)
_READ = (httpcore.ReadTimeout, httpcore.ReadError)
_WRITE = (httpcore.WriteTimeout, httpcore.WriteError)

_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


class Interrupter:
    """The sockets blocked on behalf of one exporter, and the switch that wakes them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocked: set[socket.socket] = set()
        self._stopped = False
        self._local = threading.local()  # the end of the current attempt, per exporting thread

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for sock in self._blocked:
                # The plain socket's shutdown, even for an SSLSocket: its own would drop the
                # TLS state under the thread that is using it.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    @contextlib.contextmanager
    def attempt(self, seconds: float) -> Iterator[None]:
        """Bound every socket operation of the block (in this thread) to ``seconds`` in all."""
        self._local.end = time.monotonic() + seconds
        try:
            yield
        finally:
            self._local.end = None

    def call(
        self,
        sock: socket.socket,
        operation: Callable[[], R],
        timeout: float | None,
        errors: tuple[type[Exception], type[Exception]],
    ) -> R:
        """Run one blocking ``operation`` on ``sock``, within ``timeout`` and the attempt's end;
        ``stop()`` wakes it. Failures are raised as ``errors`` (timeout, failure)."""
        timeout_error, failure_error = errors
        end = getattr(self._local, "end", None)
        if end is not None:
            left = end - time.monotonic()
            if left <= 0:
                raise timeout_error("span export attempt exceeded its timeout")
            timeout = left if timeout is None else min(timeout, left)
        with self._lock:
            if self._stopped:
                raise failure_error("span export aborted")
            self._blocked.add(sock)
        try:
            sock.settimeout(timeout)
            result = operation()
        except TimeoutError as exc:
            raise timeout_error("timed out") from exc
        except OSError as exc:  # ssl.SSLError included
            if self._stopped:
                raise failure_error("span export aborted") from exc
            raise failure_error(str(exc)) from exc
        finally:
            with self._lock:
                self._blocked.discard(sock)
        if self._stopped:  # woken by stop(): a recv "succeeded" with EOF
            raise failure_error("span export aborted")
        return result


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _HTTPCORE_TO_HTTPX:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class InterruptibleTransport(httpx.BaseTransport):
    def __init__(self, interrupter: Interrupter) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=4,
            max_keepalive_connections=2,
            keepalive_expiry=30.0,
            network_backend=_Backend(interrupter),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]  # httpx's streams iterate bytes
            extensions=request.extensions,
        )
        with _mapped_errors():
            response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _mapped_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _Backend(httpcore.NetworkBackend):
    def __init__(self, interrupter: Interrupter) -> None:
        self._interrupter = interrupter

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        last: Exception | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if local_address is not None:
                    sock.bind((local_address, 0))
                # A SYN that is never answered (a firewalled host, a full accept queue) is
                # bounded by the timeout and ended by stop().
                self._interrupter.call(
                    sock, lambda s=sock, a=address: s.connect(a), timeout, _CONNECT
                )
                return _Stream(sock, self._interrupter)
            except httpcore.ConnectTimeout:
                sock.close()
                raise
            except (httpcore.ConnectError, OSError) as exc:
                sock.close()
                if self._interrupter.stopped:
                    raise
                last = exc  # the next address may work (IPv6 first, then IPv4 ...)
        raise httpcore.ConnectError(str(last) if last else f"no address for {host!r}") from last

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not supported by this exporter")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _Stream(httpcore.NetworkStream):
    def __init__(self, sock: socket.socket, interrupter: Interrupter) -> None:
        self._sock = sock
        self._interrupter = interrupter

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._interrupter.call(
            self._sock, lambda: self._sock.recv(max_bytes), timeout, _READ
        )

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._interrupter.call(self._sock, lambda: self._sock.sendall(buffer), timeout, _WRITE)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            tls = ssl_context.wrap_socket(
                self._sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
            self._interrupter.call(tls, tls.do_handshake, timeout, _CONNECT)
        except (httpcore.ConnectTimeout, httpcore.ConnectError):
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return _Stream(tls, self._interrupter)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            # SSLSocket has the SSLObject methods httpcore asks for (selected_alpn_protocol).
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return _is_readable(self._sock)
        return None


def _is_readable(sock: socket.socket) -> bool:
    """True when an idle pooled socket has data or EOF waiting: the pool must not reuse it."""
    if sock.fileno() < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
