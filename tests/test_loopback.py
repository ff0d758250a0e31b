"""The loopback guard the suite and the benchmarks share (agent/testing/loopback.py)."""

from __future__ import annotations

import errno
import socket

import pytest

from agent.testing import loopback


@pytest.mark.parametrize(
    "address",
    [("192.0.2.1", 80), ("2001:db8::1", 443, 0, 0), ("example.com", 443), ("10.0.0.1", 4318)],
)
def test_non_loopback_is_refused_and_recorded(address: tuple) -> None:
    start = len(loopback.BLOCKED)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with (
        socket.socket(family, socket.SOCK_STREAM) as sock,
        pytest.raises(ConnectionRefusedError, match="test suite: refused"),
    ):
        sock.connect(address)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(address) == errno.ECONNREFUSED
    assert loopback.BLOCKED[start:] == [address, address]


def test_loopback_is_let_through() -> None:
    start = len(loopback.BLOCKED)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        for host in ("127.0.0.1", "localhost"):
            with socket.socket() as client:
                client.connect((host, server.getsockname()[1]))
                server.accept()[0].close()
    assert loopback.BLOCKED[start:] == []
    assert loopback.is_loopback(("::1", 1)) and loopback.is_loopback("/tmp/a.sock")
    assert not loopback.is_loopback(("127.0.0.1.example.com", 1))
