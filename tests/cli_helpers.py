"""Running the ``ml-intern`` CLI in the test process: fast, and any exception that escapes
``main()`` (a traceback a user would see) fails the test."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from agent.main import main

CLEAN_PREFIXES = ("LANGFUSE_", "ML_INTERN_", "OTEL_SDK_DISABLED")


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
