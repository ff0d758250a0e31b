"""What went wrong on the way to a host, named once for every caller.

The span exporter's warnings ("span export failed ... (last: connection refused by ...)") and
``ml-intern observability check --ping`` ("FAILED (refused): connection refused by ...") name a
failed connection the same way, from this one function.

Contract: ``network_cause(exc, host=..., timeout_s=...)`` never raises and returns a
``NetworkCause``: ``kind`` is one of ``dns``, ``refused``, ``tls``, ``timeout``, ``reset``,
``not_http``, ``connection`` (anything else), and ``text`` says it in words an operator can act
on, naming the host (never a URL's userinfo or query: pass a host name) and, for a timeout, the
bound. The exception's own text is not quoted: it can hold a URL or a header.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

import httpx

__all__ = ["NetworkCause", "network_cause"]

# What an SSL error says when https:// was spoken to a plain-HTTP port.
_PLAIN_HTTP_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL"}
)


@dataclass(frozen=True)
class NetworkCause:
    kind: str
    text: str


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it was raised from, outermost first (cycles cut)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _tls(error: ssl.SSLError, host: str) -> NetworkCause:
    reason = getattr(error, "reason", None) or type(error).__name__
    hint = (
        "is that port plain HTTP? then use http://"
        if reason in _PLAIN_HTTP_REASONS
        else "a certificate the system does not trust, a TLS-intercepting proxy, or https:// "
        "to a plain-http port"
    )
    return NetworkCause("tls", f"TLS handshake failed with {host} ({reason}): {hint}")


def _is_refused(error: BaseException) -> bool:
    return isinstance(error, ConnectionRefusedError) or (
        isinstance(error, OSError) and error.errno == errno.ECONNREFUSED
    )


def network_cause(
    exc: BaseException, *, host: str = "the host", timeout_s: float | None = None
) -> NetworkCause:
    """Name the failure behind ``exc`` (an httpx/httpcore error, an OSError ...)."""
    chain = _chain(exc)
    for error in chain:
        if isinstance(error, socket.gaierror):
            return _dns(host)
        if isinstance(error, ssl.SSLError):
            return _tls(error, host)
        if _is_refused(error):
            return _refused(host)
        if isinstance(error, ConnectionResetError):
            return NetworkCause("reset", f"connection reset by {host}")
    if isinstance(exc, httpx.TimeoutException):
        within = f" within {timeout_s:g}s" if timeout_s else ""
        return NetworkCause(
            "timeout",
            f"timed out (no answer{within}): a firewall dropping packets, a proxy needed, or a "
            "host that accepts connections and never answers",
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        return NetworkCause("not_http", f"{host} did not answer with HTTP")
    # Some resolvers and proxies only say it in words.
    text = " ".join(str(error) for error in chain).lower()
    if "name or service not known" in text or "nodename nor servname" in text:
        return _dns(host)
    if "connection refused" in text:
        return _refused(host)
    return NetworkCause("connection", f"the connection to {host} failed ({type(exc).__name__})")


def _dns(host: str) -> NetworkCause:
    return NetworkCause("dns", f"DNS lookup failed: the host name {host!r} does not resolve")


def _refused(host: str) -> NetworkCause:
    return NetworkCause("refused", f"connection refused by {host}: nothing listens on that port")
