"""The layers of one configuration: argument > environment variable > config file > default.

``Layers(fields, env, file_values, file_label, ...).merge(arguments)`` returns the values
pydantic then validates, and notes where each came from (``sources``: ``argument`` or
the flag that gave it, the variable's name, ``<file> <key>`` / ``<file> [langfuse] <key>``; an
absent name means the default). ``None`` means unset at every layer.

The rule for a value that cannot be a valid setting (wrong type, out of range, unparsable),
whatever its layer: it is never used, and the message names the setting and its source (the
variable, the file and key, the flag or argument), never a secret's value.

- A general setting given as an argument or in the file: an error (``merge`` raises;
  ``AgentConfig.load`` turns it into a ``ConfigError``, the CLI into exit 2), every bad setting
  in one message. From the environment: a warning naming the variable, and the next layer
  applies (the team's rule: a bad environment value warns and falls back), except for a
  privacy setting whose default is the weaker choice (``hf_user_id``): an error there too.
- A LangFuse setting (``langfuse_*``) from the environment or the file: a problem
  (``problems``) and the next layer applies; the gate turns problems into an error under the
  ``langfuse`` backend and a warning with forwarding off under ``auto`` (only LangFuse is
  affected, the agent still runs). As an argument: an error, like any argument.

File values are checked strictly, as TOML typed them (``sample_rate = true`` is not a number,
``debug = "yes"`` not a bool, ``media_upload_thread_count = 2.0`` not a whole number);
environment values are text and parsed. ``notes`` holds warnings about LangFuse values that
were used (stripped, two host variables that differ).

``read_config_file`` reads the TOML file (its ``[langfuse]`` table flattened to ``langfuse_*``
fields); anything wrong with it is a ``ConfigError`` naming the file.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

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
# Privacy settings whose fallback (the default) is the weaker choice: a bad value in the
# environment is an error for them, never a warning and the default.
_FAILS_CLOSED = frozenset({"hf_user_id"})
# The pydantic error type of a bad value found by the layers (``describe`` prints it as is).
INVALID_SETTING = "invalid_setting"


class Layers:
    """One config build; see the module docstring."""

    def __init__(
        self,
        fields: Mapping[str, FieldInfo],
        env: Mapping[str, str],
        file_values: dict[str, Any],
        file_label: str,
        argument_sources: Mapping[str, str] | None = None,
        file_keys: Mapping[str, str] | None = None,
    ) -> None:
        self.fields = fields
        self.env = env
        self.file = file_values
        self.file_label = file_label
        self.file_keys = dict(file_keys or {})  # setting -> its key as written in the file
        # How to name an argument in messages: the CLI passes its flags ("--flush-timeout").
        self.argument_sources = dict(argument_sources or {})
        self.sources: dict[str, str] = {}
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.errors: list[str] = []

    def merge(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The value of every setting from the highest layer that holds a valid one. Raises
        (a pydantic error of type ``INVALID_SETTING`` naming each) for bad general settings and
        bad arguments."""
        explicit = {k: v for k, v in arguments.items() if v is not None}
        merged: dict[str, Any] = {}
        for name in self.fields:
            if name in explicit:
                self._from_argument(name, explicit[name], merged)
            elif not self._from_env(name, merged):
                self._from_file(name, merged)
        langfuse.apply_sdk_overrides(self.env, merged, self.sources)
        self.problems.extend(langfuse.sdk_import_problems(self.env))
        for name in set(explicit) - set(self.fields):
            merged[name] = explicit[name]  # extra="forbid" reports it by name
        if self.errors:
            message = "; ".join(self.errors)
            raise PydanticCustomError(INVALID_SETTING, "{message}", {"message": message})
        return merged

    def _from_argument(self, name: str, value: Any, merged: dict[str, Any]) -> None:
        source = self.argument_sources.get(name, "argument")
        problem = _problem_for_field(self.fields[name], value, strict=False)
        if problem is not None:
            where = f"argument {name}" if source == "argument" else source
            self.errors.append(_invalid(where, name, repr(value), problem))
            return
        merged[name] = value
        self.sources[name] = source

    def _from_file(self, name: str, merged: dict[str, Any]) -> None:
        """Take setting ``name`` from the config file if it holds a valid value there."""
        value = self.file.get(name)
        if value is None:
            return
        source = f"{self.file_label} {self.file_keys.get(name) or _file_key(name)}"
        if name.startswith("langfuse_") and isinstance(value, str) and value.strip() != value:
            # The same as a padded variable: surrounding whitespace cannot be part of a URL,
            # a key or a name, and a key copied with its line break is the usual mistake.
            self.notes.append(f"{source} has leading or trailing whitespace; it was stripped")
            value = value.strip()
        problem = _problem_for_field(self.fields[name], value, strict=True)
        if problem is None:
            merged[name] = value
            self.sources[name] = source
            return
        message = _invalid(source, name, _toml(value), problem)
        (self.problems if name.startswith("langfuse_") else self.errors).append(message)

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
            # Stripped, not refused: surrounding whitespace cannot be part of a URL or a key,
            # and a key pasted with its line break (a secret file's "\r\n") is the usual
            # mistake; a space or line break inside a key is refused by the gate.
            self.notes.append(f"{var} has leading or trailing whitespace; it was stripped")
        problem = _problem_for_field(self.fields[name], value, strict=False)
        if problem is None:
            merged[name] = value
            self.sources[name] = var
            return True
        message = _invalid(var, name, repr(raw), problem)
        if name.startswith("langfuse_"):
            self.problems.append(message)
        elif name in _FAILS_CLOSED:
            self.errors.append(message)
        else:
            # The team's rule (STYLE.md 4): a bad environment value warns and falls back; an
            # explicit argument or a config file's value is an error. (The redaction spec is
            # a string here and is parsed by its owner, which fails closed.)
            message += "; using the config file or the default"
            warn_once(f"config:{message}", "%s", message)
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


def _invalid(where: str, name: str, shown: str, problem: str) -> str:
    """The message for a bad value: its source, the value (never a secret's), the setting.
    Worded without ``name = value`` or ``name: value``: messages pass the secret scrubber, which
    takes those forms of a token-like name (``context_token_budget``) for a secret."""
    value = " is" if name in _UNQUOTED_FIELDS else f" is {shown},"
    setting = "" if where == f"argument {name}" else f" for {name}"
    return f"{where}{value} not a valid value{setting} ({problem})"


def _file_key(name: str) -> str:
    if name.startswith("langfuse_"):
        return f"[langfuse] {name.removeprefix('langfuse_')}"
    return name


def _problem_for_field(field: FieldInfo, value: Any, *, strict: bool) -> str | None:
    """Why ``value`` is not a valid value for ``field``, or None. ``strict``: as TOML typed it
    (an int is still a float; a string is still a path, TOML having no path type)."""
    annotation = (
        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    )
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    if strict and isinstance(value, str) and _takes_path(field.annotation):
        strict = False
    try:
        adapter.validate_python(value, strict=strict)
    except ValidationError as exc:
        return "; ".join(err["msg"] for err in exc.errors()).lower()
    return None


def _takes_path(annotation: Any) -> bool:
    return annotation is Path or Path in get_args(annotation)


def _toml(value: Any) -> str:
    """A file value as TOML writes it (``true``, ``"Prod"``, ``2.0``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def describe(exc: ValidationError) -> str:
    """A validation error as one message naming every bad setting."""
    parts = []
    for err in exc.errors():
        if err["type"] == INVALID_SETTING:
            parts.append(err["msg"])  # already names the setting and its source
            continue
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)


# -- the config file --


def read_config_file(
    path: Path, fields: set[str], written: dict[str, str] | None = None
) -> dict[str, Any]:
    """The settings in a TOML config file, its ``[langfuse]`` table flattened to
    ``langfuse_<key>``. ``ConfigError`` naming the file for anything wrong with it.
    ``written`` receives each setting's key as the file spells it (``[langfuse] base_url``,
    ``langfuse_host``), for messages."""
    values = _load_toml(path)
    keys = written if written is not None else {}
    keys.update((name, name) for name in values if name != "langfuse")
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
            keys[name] = f"[langfuse] {key}"
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
