"""Running the ``ml-intern`` CLI: in the test process (``run_cli``: fast, and any exception that
escapes ``main()``, a traceback a user would see, fails the test), or as a user runs it, in a
process of its own (``run_process``)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from agent.main import main

CLEAN_PREFIXES = ("LANGFUSE_", "ML_INTERN_", "OTEL_SDK_DISABLED")
# This process's environment without its LangFuse and ml-intern settings.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(CLEAN_PREFIXES)}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        """stdout and stderr with rich's line wrapping undone."""
        return " ".join((self.out + "\n" + self.err).split())


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    env: dict[str, str] | None = None,
) -> Result:
    for name in list(os.environ):
        if name.startswith(CLEAN_PREFIXES):
            monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def usage_error(result: Result, *fragments: str) -> None:
    """A usage error as a user sees it: exit 2, ``ml-intern: error:``, no traceback, and each
    fragment in the output."""
    assert result.code == 2, result
    assert "ml-intern: error:" in result.err and "Traceback" not in result.text
    for fragment in fragments:
        assert fragment in result.text, (fragment, result.text)


def run_process(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 120, **options: Any
) -> subprocess.CompletedProcess[str]:
    """``python -m agent.main ARGV`` in a new process, its environment ``CLEAN_ENV`` plus
    ``env``; ``options`` go to ``subprocess.run`` (``cwd``, ``preexec_fn`` ...)."""
    return subprocess.run(
        [sys.executable, "-m", "agent.main", *argv],
        capture_output=True,
        text=True,
        env={**CLEAN_ENV, **(env or {})},
        timeout=timeout,
        check=False,
        **options,
    )
