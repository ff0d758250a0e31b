"""What every ``ml-intern`` command shares: exit codes, usage errors, the config from the flags.

Contract: a command returns ``EXIT_OK`` (0, an empty answer included, with a notice) or
``EXIT_FAIL`` (1: the work, or a ``check --ping``, failed), or raises ``UsageError`` /
``ConfigError`` for bad usage or configuration, which ``agent.main`` prints as one message
(exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from agent.cli.output import warn
from agent.config import AgentConfig

__all__ = [
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "check_writable",
    "config_from_args",
    "logger",
    "tolerate_no_temp_dir",
]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

# The name -v / --debug output shows for the CLI's own lines (documented in tests and logs).
logger = logging.getLogger("agent.main")


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


# flag (argparse dest) -> AgentConfig field; a flag a command does not have is unset.
_FLAGS = {
    "telemetry_dir": "telemetry_dir",
    "observability_backend": "observability_backend",
    "redact": "redact",
    "flush_timeout": "flush_timeout_s",
    "model": "model",
}


def config_from_args(args: argparse.Namespace, **extra: Any) -> AgentConfig:
    """The command's ``AgentConfig``: its flags and ``extra`` as arguments (the top layer),
    then the environment, ``--config`` (or ``ml-intern.toml``) and the defaults. A bad value
    is a ``ConfigError`` naming the flag, variable or file key it came from."""
    overrides = {field: getattr(args, flag, None) for flag, field in _FLAGS.items()}
    sources = {
        field: "--" + flag.replace("_", "-")
        for flag, field in _FLAGS.items()
        if overrides[field] is not None
    }
    overrides.update(extra)
    config = AgentConfig.load(
        getattr(args, "config", None),
        argument_sources=sources,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    logger.debug(
        "where each setting came from: %s",
        {name: config.source(name) for name in type(config).model_fields},
    )
    return config


def check_writable(directory: Path) -> None:
    """``UsageError`` unless the telemetry directory exists (or can be made) and is writable."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--telemetry-dir {directory}: cannot create it ({exc.strerror or exc})"
        ) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--telemetry-dir {directory}: not writable")


def tolerate_no_temp_dir() -> None:
    """litellm calls ``tempfile.gettempdir()`` at import, which raises when no candidate
    directory accepts a small test file (a full disk). Name the usual one without that test,
    so the agent still runs (and warns) instead of dying in an import."""
    import tempfile

    try:
        tempfile.gettempdir()
    except OSError as exc:
        tempfile.tempdir = os.environ.get("TMPDIR") or "/tmp"
        warn(f"no usable temporary directory ({exc.strerror or exc}); is the disk full?")
