"""Loopback-only sockets for a whole process: the guard of the test suite and the benchmarks.

Contract: after ``install(label)``, every ``socket.connect`` / ``connect_ex`` in the process to an
address that is not loopback (``127.0.0.0/8``, ``::1``, ``localhost``) or a Unix socket path is
refused: ``connect`` raises ``ConnectionRefusedError`` naming ``label`` and the address,
``connect_ex`` returns ``ECONNREFUSED``, and the address is appended to ``BLOCKED`` (a test can
assert that nothing tried to leave the machine). Nothing is resolved here: a name other than
``localhost`` is refused before any DNS lookup could reach the network. ``install`` is
idempotent; the guard stays for the life of the process.

Used by ``tests/conftest.py`` (the suite never contacts anything but loopback) and by the
benchmark worker processes (``bench/overhead.py``), and by the forwarding sidecar of a process
that has it (``installed()``), so a child process is held to its parent's guard.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading

__all__ = ["BLOCKED", "install", "installed", "is_loopback"]

# Every refused address, in order (refusals of all threads).
BLOCKED: list[object] = []

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_lock = threading.Lock()
_label: list[str] = []


def is_loopback(address: object) -> bool:
    """True for a loopback ``(host, port, ...)`` tuple or an ``AF_UNIX`` path."""
    if isinstance(address, tuple) and address:
        host = address[0]
        if not isinstance(host, str):
            return False
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False
    return isinstance(address, str | bytes)


def _refused(address: object) -> bool:
    if is_loopback(address):
        return False
    with _lock:
        BLOCKED.append(address)
    return True


def _connect(self: socket.socket, address: object) -> object:
    if _refused(address):
        raise ConnectionRefusedError(f"{_label[0]}: refused connection to non-loopback {address!r}")
    return _real_connect(self, address)


def _connect_ex(self: socket.socket, address: object) -> int:
    if _refused(address):
        return errno.ECONNREFUSED
    return _real_connect_ex(self, address)


def install(label: str) -> None:
    """Refuse every non-loopback connection in this process from now on (``label`` names who
    refused, in the error message)."""
    with _lock:
        if _label:
            return
        _label.append(label)
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]


def installed() -> bool:
    """True when this process refuses non-loopback connections."""
    with _lock:
        return bool(_label)
