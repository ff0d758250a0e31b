"""Test-suite wide settings: strict telemetry, offline litellm, loopback-only sockets."""

from __future__ import annotations

import os

import pytest

from agent.testing import loopback

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

# Every non-loopback connection attempt made by the suite is refused (and recorded in
# loopback.BLOCKED).
loopback.install("test suite")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``cli(*argv, env=...)``: the CLI run in this process (tests/cli_helpers.run_cli)."""
    from tests.cli_helpers import Result, run_cli  # lazily: after the settings above

    def call(*argv: str, env: dict[str, str] | None = None) -> Result:
        return run_cli(monkeypatch, capsys, *argv, env=env)

    return call


@pytest.fixture
def blocked_connections() -> list[object]:
    """The non-loopback connection attempts made during the test (each was refused)."""
    start = len(loopback.BLOCKED)
    view: list[object] = []
    yield view
    view.extend(loopback.BLOCKED[start:])


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
