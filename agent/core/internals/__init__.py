"""Other people's private internals, declared in one place per library.

Some protections of this project can only be had by reaching into a library's private state
(litellm's logging worker and callback thread pool, the langfuse SDK's client cache, ...).
Every such reach is declared here, in ``internals/<library>.py``, as an ``Internal``: where it
lives, and which protection of ours rides on it. Nothing else in the project touches a private
name of litellm, langfuse or OpenTelemetry.

Contract: ``Internal.get()`` returns the object, or None when it is gone (a library upgrade
moved it). A missing internal is never silent: the first miss logs one WARNING that names the
library version and the protection that is lost, and ``lost()`` lists every miss so far (tests
and ``ml-intern observability check`` show it). Each library module also checks, at import,
that the installed version is inside the range pinned in ``pyproject.toml``
(``check_version``): outside it, one WARNING says the internals were written for another
version.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from agent.core import guard

__all__ = ["Internal", "check_version", "lost"]

_lost: dict[str, str] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Internal:
    """One private name of another library and the protection of ours that needs it.

    ``path`` is ``"package.module:attr.attr"``.
    """

    library: str
    path: str
    protection: str

    def get(self) -> Any:
        """The object, or None (reported once, naming the lost protection)."""
        module_name, _, attrs = self.path.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for name in attrs.split(".") if attrs else ():
                obj = getattr(obj, name)
        except Exception as exc:
            self.report(f"{type(exc).__name__}: {exc}")
            return None
        return obj

    def report(self, reason: str) -> None:
        """Say once that this internal is unusable, and which protection that costs."""
        with _lock:
            first = self.path not in _lost
            _lost[self.path] = self.protection
        if first:
            guard.warn_once(
                f"internals:{self.path}",
                "%s %s no longer has %s (%s): %s is lost. Pin %s to the range in pyproject.toml.",
                self.library,
                _version(self.library),
                self.path,
                reason,
                self.protection,
                self.library,
            )


def lost() -> dict[str, str]:
    """Every internal found missing so far: path -> the protection that is lost."""
    with _lock:
        return dict(_lost)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def check_version(distribution: str, lowest: str, below: str) -> bool:
    """True when ``lowest <= installed < below`` (the pyproject pin); warns once otherwise."""
    installed = _version(distribution)
    try:
        ok = _key(lowest) <= _key(installed) < _key(below)
    except ValueError:
        ok = False
    if not ok:
        guard.warn_once(
            f"internals-version:{distribution}",
            "%s %s is outside the range this project's internals were written for (>=%s,<%s); "
            "protections that reach into it may be lost (each one says so when it is)",
            distribution,
            installed,
            lowest,
            below,
        )
    return ok


def _key(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)
