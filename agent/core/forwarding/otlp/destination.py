"""A LangFuse host as an OTLP destination: its traces path and the headers, defined once.

The forwarder (spans and scores), ``observability check --ping`` and the tests all reach
LangFuse with what is defined here, so the path and the credentials travel one way:

- ``traces_endpoint(host)``: ``{host}/api/public/otel/v1/traces``.
- ``langfuse_headers(settings)``: what the langfuse SDK sends on every API call (HTTP Basic auth
  with the key pair, the SDK's name and version, the public key), so ingestion treats us as it
  treats the SDK. ``OTLP_HEADERS`` are added to span exports only. ``settings`` is anything with
  ``public_key`` and ``secret_key`` (a plain string or a pydantic ``SecretStr``): the gate's
  ``LangfuseSettings``.
- ``check_headers(headers)`` raises ``ValueError`` for a value that cannot be sent as a header
  (non-ASCII, a line break), naming the variable it came from and never the value.
- ``secret_values(headers)`` lists every string of the credential headers (the header value,
  its token, the decoded ``public:secret`` pair and the secret) for scrubbing log lines;
  ``display_url(url)`` is an endpoint fit for a log line (no userinfo, no query).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping
from importlib import metadata
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = [
    "OTLP_HEADERS",
    "TRACES_PATH",
    "LangfuseKeys",
    "check_headers",
    "display_url",
    "langfuse_headers",
    "secret_key",
    "secret_values",
    "traces_endpoint",
]

TRACES_PATH = "/api/public/otel/v1/traces"
# What the SDK's own span exporter adds: the ingestion pipeline LangFuse uses for OTLP spans.
OTLP_HEADERS: Mapping[str, str] = {"x-langfuse-ingestion-version": "4"}

_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})

# Where a LangFuse header's value comes from, for messages about a bad one.
_HEADER_SOURCES = {
    "x-langfuse-public-key": " (it is LANGFUSE_PUBLIC_KEY)",
    "authorization": " (it is built from LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY)",
}


class LangfuseKeys(Protocol):
    """Where and as whom: what the gate's ``LangfuseSettings`` provides."""

    @property
    def host(self) -> str: ...
    @property
    def public_key(self) -> str: ...
    @property
    def secret_key(self) -> Any: ...  # str, or a pydantic SecretStr


def secret_key(settings: LangfuseKeys) -> str:
    """The secret key as a plain string (unwrapping a ``SecretStr``)."""
    value = settings.secret_key
    reveal = getattr(value, "get_secret_value", None)
    return str(reveal() if callable(reveal) else value)


def traces_endpoint(host: str) -> str:
    """The OTLP traces endpoint of a LangFuse host."""
    return host.rstrip("/") + TRACES_PATH


def langfuse_headers(settings: LangfuseKeys, *, sdk_version: str | None = None) -> dict[str, str]:
    """The headers the langfuse SDK sends with every API call (add ``OTLP_HEADERS`` for spans)."""
    pair = f"{settings.public_key}:{secret_key(settings)}"
    return {
        "Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii"),
        "x-langfuse-sdk-name": "python",
        "x-langfuse-sdk-version": sdk_version or _langfuse_version(),
        "x-langfuse-public-key": settings.public_key,
    }


def _langfuse_version() -> str:
    # Package metadata, not `import langfuse`: importing the SDK is slow and has side effects.
    try:
        return metadata.version("langfuse")
    except metadata.PackageNotFoundError:
        return "unknown"


def _header_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value, or None."""
    if not value.isascii():
        return "holds a non-ASCII character"
    if any(c in value for c in "\r\n\0") or not value.isprintable():
        return "holds a line break or control character"
    return None


def check_headers(headers: Mapping[str, str]) -> None:
    """Raise ``ValueError`` naming the first header that cannot be sent (never its value)."""
    for name, value in headers.items():
        problem = _header_problem(value)
        if problem:
            raise ValueError(f"header {name} {problem}{_HEADER_SOURCES.get(name.lower(), '')}")


def secret_values(headers: Mapping[str, str]) -> list[str]:
    """Every string that must never appear in a log line or in stats, longest first (so a value
    is replaced whole before any of its parts)."""
    found: set[str] = set()
    for name, value in headers.items():
        if name.lower() in _SENSITIVE_HEADERS and value:
            found.update(_credential_parts(value))
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def _credential_parts(value: str) -> set[str]:
    parts = {value}
    scheme, _, token = value.partition(" ")
    if token:
        parts.add(token)
    if scheme.lower() == "basic" and token:
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            decoded = base64.b64decode(token, validate=True).decode()
            parts.add(decoded)
            parts.add(decoded.partition(":")[2])
    return parts


def display_url(url: str) -> str:
    """``url`` without userinfo, query or fragment, fit for a message or a log line (a URL
    that does not parse, or has a bad port, still shows its host and port as written)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host_and_port = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host_and_port}{parts.path}" if parts.scheme else "<no scheme>"
