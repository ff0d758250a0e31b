"""The README's first quick-start command installs the base package only (``pip install -e .``):
no ``langfuse`` extra, so no langfuse SDK and no OpenTelemetry, and none of the dev extra's
``datasets``/``pandas``. Each documented command a base install offers must still run, with
forwarding off. The test hides those packages from a child interpreter (an import hook that
refuses them, as a base install would) and drives the CLI there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Packages a base install does not have (pyproject: the langfuse and dev extras).
ABSENT = ("langfuse", "opentelemetry", "datasets", "pandas")

RUNNER = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {absent!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Absent())
from agent.main import main
code = main({argv!r})
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {absent!r})
assert not leaked, leaked
sys.exit(code)
"""


def _cli(argv: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    code = RUNNER.format(absent=ABSENT, argv=argv)
    root = str(Path(__file__).resolve().parents[1])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PYTHONPATH": root, **extra_env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["demo"],
        ["observability", "check"],
        ["events", "summary"],
    ],
    ids=lambda a: " ".join(a),
)
def test_base_install_commands_run(argv: list[str], tmp_path: Path) -> None:
    if argv[0] == "events":  # something to summarise first
        assert _cli(["demo"], tmp_path).returncode == 0
    done = _cli(argv, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "ModuleNotFoundError" not in done.stdout + done.stderr


def test_langfuse_asked_for_on_a_base_install_is_a_clear_error(tmp_path: Path) -> None:
    """Forwarding required on an install without the extra: exit 2, the message says why and
    how to fix it, no traceback. (No request is made: check runs without --ping.)"""
    done = _cli(
        ["observability", "check", "--observability-backend", "langfuse"],
        tmp_path,
        LANGFUSE_HOST="http://127.0.0.1:9",
        LANGFUSE_PUBLIC_KEY="pk-lf-base-install",
        LANGFUSE_SECRET_KEY="sk-lf-base-install",
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    assert "Traceback" not in out
    assert "langfuse package is not installed" in out, out[-3000:]
    assert "pip install 'ml-intern-observability[langfuse]'" in " ".join(out.split())
