"""The layers of one configuration: argument > environment variable > config file > default.

``Layers(fields, env, file_values, file_label).merge(arguments)`` returns the values pydantic
then validates, and notes where each came from (``sources``: ``argument``, the variable's name,
``<file> <key>`` / ``<file> [langfuse] <key>``; an absent name means the default). ``None``
means unset at every layer. A bad environment value is checked against the field's own type
before it is used: for most settings it warns once and the next layer applies; for LangFuse
settings it becomes a problem naming the variable (``problems``), for the gate to report.
``notes`` holds warnings about LangFuse values that were used (stripped, two host variables
that differ).

``read_config_file`` reads the TOML file (its ``[langfuse]`` table flattened to ``langfuse_*``
fields); anything wrong with it is a ``ConfigError`` naming the file.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from agent.config import langfuse
from agent.core.guard import warn_once

__all__ = ["ENV_ALIASES", "ENV_VARS", "ConfigError", "Layers", "describe", "read_config_file"]


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


# field name -> environment variable (LangFuse settings: agent.config.langfuse.ENV_VARS).
ENV_VARS: dict[str, str] = {
    "model": "ML_INTERN_MODEL",
    "telemetry_dir": "ML_INTERN_TELEMETRY_DIR",
    "hub_repo_id": "ML_INTERN_HUB_REPO",
    "hub_token": "HF_TOKEN",
    "hub_push_interval_s": "ML_INTERN_HUB_PUSH_INTERVAL",
    "hub_push_jitter": "ML_INTERN_HUB_PUSH_JITTER",
    "observability_backend": "ML_INTERN_OBSERVABILITY_BACKEND",
    "redact": "ML_INTERN_REDACT",
    "redact_hmac_key": "ML_INTERN_REDACT_HMAC_KEY",
    "flush_timeout_s": "ML_INTERN_FLUSH_TIMEOUT",
    "context_token_budget": "ML_INTERN_CONTEXT_TOKEN_BUDGET",
    "max_steps": "ML_INTERN_MAX_STEPS",
    "hf_user_id": "ML_INTERN_HF_USER_ID",
    **langfuse.ENV_VARS,
}
ENV_ALIASES = langfuse.ENV_ALIASES
SECRET_FIELDS = ("langfuse_secret_key", "hub_token", "redact_hmac_key")
# Values never repeated in a message: they are, or may hold, credentials.
_UNQUOTED_FIELDS = frozenset({"langfuse_host", "langfuse_public_key", *SECRET_FIELDS})


class Layers:
    """One config build; see the module docstring."""

    def __init__(
        self,
        fields: Mapping[str, FieldInfo],
        env: Mapping[str, str],
        file_values: dict[str, Any],
        file_label: str,
    ) -> None:
        self.fields = fields
        self.env = env
        self.file = file_values
        self.file_label = file_label
        self.sources: dict[str, str] = {}
        self.problems: list[str] = []
        self.notes: list[str] = []

    def merge(self, arguments: dict[str, Any]) -> dict[str, Any]:
        explicit = {k: v for k, v in arguments.items() if v is not None}
        merged: dict[str, Any] = {}
        for name in self.fields:
            if name in explicit:
                merged[name] = explicit[name]
                self.sources[name] = "argument"
            elif not self._from_env(name, merged) and self.file.get(name) is not None:
                merged[name] = self.file[name]
                self.sources[name] = _file_source(self.file_label, name)
        langfuse.apply_sdk_overrides(self.env, merged, self.sources)
        self.problems.extend(langfuse.sdk_import_problems(self.env))
        for name in set(explicit) - set(self.fields):
            merged[name] = explicit[name]  # extra="forbid" reports it by name
        return merged

    def _from_env(self, name: str, merged: dict[str, Any]) -> bool:
        """Take setting ``name`` from the environment if a variable of it holds a valid value."""
        found = self._set_variables(name)
        if not found:
            return False
        var, raw = found[0]
        if len(found) > 1 and found[0][1].strip().rstrip("/") != found[1][1].strip().rstrip("/"):
            self.notes.append(
                f"{found[0][0]} and {found[1][0]} differ; using {found[0][0]}"
                + ("" if name in _UNQUOTED_FIELDS else f" ({found[0][1].strip()})")
            )
        value = raw.strip()
        if value != raw and name.startswith("langfuse_"):
            self.notes.append(f"{var} has leading or trailing whitespace; it was stripped")
        problem = _problem_for_field(self.fields[name], value)
        if problem is None:
            merged[name] = value
            self.sources[name] = var
            return True
        self._reject(name, var, raw, problem)
        return False

    def _set_variables(self, name: str) -> list[tuple[str, str]]:
        """``(variable, value)`` of each variable of ``name`` that holds a value, in order."""
        found: list[tuple[str, str]] = []
        for var in (ENV_VARS.get(name), *ENV_ALIASES.get(name, ())):
            raw = self.env.get(var) if var else None
            if var is None or raw is None or raw == "":
                continue
            if raw.strip() != "":
                found.append((var, raw))
            elif name in langfuse.SDK_READS_WHEN_UNSET:
                # The SDK reads this variable itself when given nothing, and takes "  " as a
                # value: a blank that is not empty is a mistake, not "unset".
                self.problems.append(f"{var} is blank; unset it or give it a value")
        return found

    def _reject(self, name: str, var: str, raw: str, problem: str) -> None:
        shown = "" if name in _UNQUOTED_FIELDS else f"={raw!r}"
        if name.startswith("langfuse_"):
            self.problems.append(f"{var}{shown} is not valid: {problem}")
            return
        message = (
            f"ignoring {var}{shown}: not a valid value for {name!r} ({problem}); "
            "using the config file or the default"
        )
        warn_once(f"config:{message}", "%s", message)


def _file_source(file_label: str, name: str) -> str:
    if name.startswith("langfuse_"):
        return f"{file_label} [langfuse] {name.removeprefix('langfuse_')}"
    return f"{file_label} {name}"


def _problem_for_field(field: FieldInfo, raw: str) -> str | None:
    """Why ``raw`` is not a valid value for ``field``, or None."""
    annotation = (
        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    )
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        adapter.validate_python(raw)
    except ValidationError as exc:
        return "; ".join(err["msg"] for err in exc.errors()).lower()
    return None


def describe(exc: ValidationError) -> str:
    """A validation error as one message naming every bad setting."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)


# -- the config file --


def read_config_file(path: Path, fields: set[str]) -> dict[str, Any]:
    """The settings in a TOML config file, its ``[langfuse]`` table flattened to
    ``langfuse_<key>``. ``ConfigError`` naming the file for anything wrong with it."""
    values = _load_toml(path)
    table = values.pop("langfuse", None)
    if table is not None:
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: langfuse must be a table ([langfuse])")
        for key, value in table.items():
            name = "langfuse_" + langfuse.TABLE_ALIASES.get(key, key)
            if name not in fields:
                raise ConfigError(f"config file {path}: unknown setting [langfuse] {key}")
            if name in values:
                raise ConfigError(
                    f"config file {path}: [langfuse] {key} is set twice (also as {name})"
                )
            values[name] = value
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    _warn_if_secret_readable(path, values)
    return values


def _load_toml(path: Path) -> dict[str, Any]:
    """The file parsed, checked to be a readable UTF-8 TOML file (``ConfigError`` otherwise)."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc})") from exc
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"config file {path} is UTF-16 text: save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


def _warn_if_secret_readable(path: Path, values: Mapping[str, Any]) -> None:
    secrets = [name for name in SECRET_FIELDS if values.get(name)]
    if not secrets or os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        message = (
            f"config file {path} holds {', '.join(secrets)} and is readable by others "
            f"(mode {mode:04o}): run chmod 600 {path}, or set the secret in the environment"
        )
        warn_once(f"config:{message}", "%s", message)
