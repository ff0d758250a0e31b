"""Test-suite wide settings: strict telemetry, offline litellm, loopback-only sockets."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ["ML_INTERN_STRICT_TELEMETRY"] = "1"
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "0")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
for _name in (
    "LANGFUSE_HOST",
    "LANGFUSE_BASE_URL",
    "LANGFUSE_PUBLIC_KEY",
    "LANGFUSE_SECRET_KEY",
    "ML_INTERN_REDACT",
    "ML_INTERN_OBSERVABILITY_BACKEND",
    "ML_INTERN_TELEMETRY_DIR",
    "ML_INTERN_HUB_REPO",
    "HF_TOKEN",
    "OPENAI_API_KEY",
):
    os.environ.pop(_name, None)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo

# Every non-loopback connection attempt made by the suite is recorded here (and refused).
BLOCKED: list[object] = []


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
        if isinstance(host, str):
            if host == "localhost":
                return True
            try:
                return ipaddress.ip_address(host.split("%")[0]).is_loopback
            except ValueError:
                return False
    return isinstance(address, str | bytes)  # AF_UNIX paths


def _guarded_connect(self: socket.socket, address: object) -> object:
    if not _is_loopback(address):
        BLOCKED.append(address)
        raise ConnectionRefusedError(f"test suite: refused connection to non-loopback {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_loopback(address):
        BLOCKED.append(address)
        return 111
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture
def blocked_connections() -> list[object]:
    """The non-loopback connection attempts made during the test (each was refused)."""
    start = len(BLOCKED)
    view: list[object] = []
    yield view
    view.extend(BLOCKED[start:])


# Internal telemetry errors are bugs: under tests they must not pass silently. Entry points
# raise in strict mode; errors on background threads (the forwarder's worker, the HF writer)
# are counted by agent.core.guard and checked here after every test.
INTERNAL_PREFIXES = ("langfuse.", "record_", "hf_dataset.", "session.")


@pytest.fixture(autouse=True)
def _no_internal_telemetry_errors(request: pytest.FixtureRequest):
    from agent.core import guard

    before = guard.error_counts()
    yield
    if request.node.get_closest_marker("internal_errors_expected"):
        return
    after = guard.error_counts()
    new = {
        k: after[k] - before.get(k, 0)
        for k in after
        if after[k] != before.get(k, 0) and k.startswith(INTERNAL_PREFIXES)
    }
    assert not new, f"internal telemetry errors during the test: {new}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "internal_errors_expected: the test provokes internal telemetry errors"
    )
