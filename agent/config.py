"""One configuration object for the agent and both telemetry pipelines.

Precedence, highest first: an explicit argument > an environment variable > the config file >
the default. ``None`` means "unset". A bad environment value warns once and falls back to the
next layer; a bad explicit argument raises at construction with a message naming the setting.

The config file is TOML (``ml-intern.toml`` in the working directory, or the path given by
``--config`` / ``ML_INTERN_CONFIG``), with the same keys as the fields below; LangFuse settings
may also sit in a ``[langfuse]`` table without their ``langfuse_`` prefix, e.g.::

    telemetry_dir = "/var/lib/ml-intern/telemetry"
    observability_backend = "langfuse"
    redact = "preset=no-tool-io,user_id=hash"

    [langfuse]
    host = "https://cloud.langfuse.com"     # or base_url
    environment = "production"
    sample_rate = 0.5

LangFuse settings (``langfuse_*``) read LangFuse's own variables (``LANGFUSE_HOST`` ...,
``LANGFUSE_SECRET_KEY``) as their environment layer. A bad value there is not silently dropped:
it is kept as a problem naming the variable (``langfuse_problems``), and the gate
(``agent.core.observability.resolve_gate``) turns it into an error under the ``langfuse``
backend, a warning and forwarding off under ``auto``. Two variables the langfuse SDK and
OpenTelemetry honour whatever they are given (``LANGFUSE_TRACING_ENABLED=false``,
``OTEL_SDK_DISABLED=true``, and ``LANGFUSE_DEBUG=true``) win over an argument, so the config
says what will really happen. A secret (``langfuse_secret_key``, ``hub_token``,
``redact_hmac_key``) in a config file that group or others may read gets a warning.
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "ml-intern.toml"
DEFAULT_TELEMETRY_DIR = "telemetry"

ObservabilityBackend = Literal["auto", "langfuse", "none"]


def _http_url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL, e.g. http://localhost:4318/v1/traces")
    return value


# Part of the type (not a field validator) so a bad environment value is caught by the same
# check as a bad argument, and warned about rather than raised.
HttpUrlStr = Annotated[str, AfterValidator(_http_url)]


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


# field name -> environment variable (LangFuse settings: LangFuse's own variable names).
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
    "langfuse_queue_size": "ML_INTERN_LANGFUSE_QUEUE_SIZE",
    "langfuse_trace_name": "ML_INTERN_LANGFUSE_TRACE_NAME",
    "langfuse_nest_in_caller_trace": "ML_INTERN_LANGFUSE_NEST",
    # The SDK's own names for its exporter batch settings (it reads them only when not given).
    "langfuse_flush_at": "LANGFUSE_FLUSH_AT",
    "langfuse_flush_interval_s": "LANGFUSE_FLUSH_INTERVAL",
    # Not OTEL_EXPORTER_OTLP_TRACES_ENDPOINT itself: an application often points that at its
    # own tracing backend, which would then receive the LangFuse keys and every trace.
    "langfuse_traces_endpoint": "ML_INTERN_OTLP_TRACES_ENDPOINT",
    "context_token_budget": "ML_INTERN_CONTEXT_TOKEN_BUDGET",
    "max_steps": "ML_INTERN_MAX_STEPS",
    "langfuse_host": "LANGFUSE_HOST",
    "langfuse_public_key": "LANGFUSE_PUBLIC_KEY",
    "langfuse_secret_key": "LANGFUSE_SECRET_KEY",
    "langfuse_environment": "LANGFUSE_TRACING_ENVIRONMENT",
    "langfuse_release": "LANGFUSE_RELEASE",
    "langfuse_sample_rate": "LANGFUSE_SAMPLE_RATE",
    "langfuse_timeout_s": "LANGFUSE_TIMEOUT",
    "langfuse_media_upload_thread_count": "LANGFUSE_MEDIA_UPLOAD_THREAD_COUNT",
    "langfuse_tracing_enabled": "LANGFUSE_TRACING_ENABLED",
    "langfuse_debug": "LANGFUSE_DEBUG",
    "hf_user_id": "ML_INTERN_HF_USER_ID",
    "langfuse_media_upload": "ML_INTERN_LANGFUSE_MEDIA_UPLOAD",
}
# Further names of a setting's environment variable, after the one in ENV_VARS.
ENV_ALIASES: dict[str, tuple[str, ...]] = {"langfuse_host": ("LANGFUSE_BASE_URL",)}
# [langfuse] table key -> field, besides the plain "langfuse_" + key.
_TABLE_ALIASES = {"base_url": "host"}
_SECRET_FIELDS = ("langfuse_secret_key", "hub_token", "redact_hmac_key")
# Values never repeated in a message: they are, or may hold, credentials.
_UNQUOTED_FIELDS = frozenset({"langfuse_host", "langfuse_public_key", *_SECRET_FIELDS})

# Every environment variable the installed langfuse SDK (5.0.x) reads, and what becomes of it.
# tests/test_config_layers.py scans the SDK's source and fails on one missing here.
_EXPORTER_ONLY = "not used: only the SDK's default exporter reads it; ours gzips and posts"
SDK_ENVIRONMENT: dict[str, str] = {
    "LANGFUSE_HOST": "langfuse_host: validated, passed as base_url",
    "LANGFUSE_BASE_URL": "langfuse_host (alias): validated, passed as base_url",
    "LANGFUSE_PUBLIC_KEY": "langfuse_public_key: validated, passed",
    "LANGFUSE_SECRET_KEY": "langfuse_secret_key: validated, passed",
    "LANGFUSE_TRACING_ENVIRONMENT": "langfuse_environment: validated, passed",
    "LANGFUSE_RELEASE": "langfuse_release: validated, passed",
    "CI commit variables": "unset langfuse_release: the SDK takes GITHUB_SHA, CI_COMMIT_SHA ...",
    "LANGFUSE_SAMPLE_RATE": "langfuse_sample_rate: validated, passed",
    "LANGFUSE_TIMEOUT": "langfuse_timeout_s: validated, passed",
    "LANGFUSE_MEDIA_UPLOAD_THREAD_COUNT": "langfuse_media_upload_thread_count: validated, passed",
    "LANGFUSE_DEBUG": "langfuse_debug: validated, passed (true also wins over an argument)",
    "LANGFUSE_TRACING_ENABLED": "langfuse_tracing_enabled: false turns forwarding off",
    "OTEL_SDK_DISABLED": "langfuse_tracing_enabled: true turns forwarding off",
    "LANGFUSE_FLUSH_AT": "langfuse_flush_at: validated, passed",
    "LANGFUSE_FLUSH_INTERVAL": "langfuse_flush_interval_s: validated, passed",
    "LANGFUSE_MAX_BATCH_SIZE_BYTES": "read at import (score batches): validated as a whole number",
    "LANGFUSE_PROMPT_CACHE_DEFAULT_TTL_SECONDS": "read at import: validated as a whole number",
    "LANGFUSE_MEDIA_UPLOAD_ENABLED": "overridden: langfuse_media_upload decides (default off)",
    "LANGFUSE_OTEL_COMPRESSION": _EXPORTER_ONLY,
    "LANGFUSE_OTEL_MAX_BATCH_SIZE_BYTES": _EXPORTER_ONLY,
    "LANGFUSE_OTEL_TRACES_EXPORT_PATH": _EXPORTER_ONLY,
    "OTEL_EXPORTER_OTLP_COMPRESSION": _EXPORTER_ONLY,
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": _EXPORTER_ONLY,
    "LANGFUSE_OBSERVE_DECORATOR_IO_CAPTURE_ENABLED": "not used: the @observe decorator",
    "LANGFUSE_OPENAI_SKIP_RAW_RESPONSES": "not used: the SDK's OpenAI integration",
}

# Variables the langfuse SDK reads itself, whatever it is given, when it is imported: a value
# it cannot parse makes ``import langfuse`` raise. Checked here, so that is a clear message.
SDK_IMPORT_INT_VARS = ("LANGFUSE_MAX_BATCH_SIZE_BYTES", "LANGFUSE_PROMPT_CACHE_DEFAULT_TTL_SECONDS")


class AgentConfig(BaseModel):
    """Everything the agent and its telemetry need. Immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(
        default=None,
        description="litellm model id (e.g. openai/gpt-4o-mini). None: the offline scripted model.",
    )
    telemetry_dir: Path = Field(default=Path(DEFAULT_TELEMETRY_DIR))
    hub_repo_id: str | None = Field(default=None, description="HF Dataset repo to push rows to")
    hub_token: SecretStr | None = None
    hub_push_interval_s: float = Field(
        default=600.0,
        gt=0,
        description="seconds between pushes of one writer (a telemetry directory); 600 s keeps "
        "21 writers within the Hub's 128 commits per hour per repository",
    )
    hub_push_jitter: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="each wait is the interval times a random factor in [1, 1 + jitter]",
    )
    hf_hardware_prices: dict[str, float] | None = Field(
        default=None,
        description="USD per hour by HF hardware flavor, over agent/core/dataset/pricing.py's table",
    )
    observability_backend: ObservabilityBackend = "auto"
    redact: str | None = Field(
        default=None, description="redaction spec, e.g. 'preset=metadata-only' or 'user_id=hash'"
    )
    redact_hmac_key: SecretStr | None = None
    flush_timeout_s: float = Field(default=5.0, ge=0, le=600)
    langfuse_queue_size: int = Field(default=10_000, ge=1)
    langfuse_trace_name: str = Field(
        default="ml-intern turn",
        min_length=1,
        max_length=200,
        description="the name of every turn's LangFuse trace (the turn index is in metadata)",
    )
    langfuse_nest_in_caller_trace: bool = Field(
        default=True,
        description="file a turn under the caller's active OpenTelemetry span or LangFuse "
        "observation (its trace id wins) instead of a trace of its own",
    )
    langfuse_flush_at: int = Field(
        default=64, ge=1, le=10_000, description="spans per OTLP export request"
    )
    langfuse_flush_interval_s: float = Field(
        default=1.0, gt=0, le=600, description="longest wait before queued spans are exported"
    )
    langfuse_traces_endpoint: HttpUrlStr | None = Field(
        default=None,
        description="send spans to this OTLP/HTTP traces URL (e.g. a local OpenTelemetry "
        "Collector) instead of $LANGFUSE_HOST/api/public/otel/v1/traces",
    )
    context_token_budget: int = Field(default=6_000, ge=256)
    max_steps: int = Field(default=8, ge=1, le=100)
    hf_user_id: Literal["keep", "hash"] = Field(
        default="keep",
        description="HF Dataset rows: the raw user id, or the same HMAC pseudonym LangFuse gets "
        "(session ids too when the redaction policy hashes them); needs redact_hmac_key",
    )
    langfuse_media_upload: bool = Field(
        default=False,
        description="forward inline media through LangFuse's media API (bytes go to the upload "
        "URL the LangFuse server returns) instead of replacing it by a marker",
    )

    # -- LangFuse (the gate in agent.core.observability checks hosts, keys and names) --
    # Not in repr: a host may hold a password (user:pw@, refused by the gate) and swapped keys
    # put the secret key here.
    langfuse_host: str | None = Field(
        default=None,
        repr=False,
        description="LangFuse base URL (env LANGFUSE_HOST or LANGFUSE_BASE_URL)",
    )
    langfuse_public_key: str | None = Field(default=None, repr=False)
    langfuse_secret_key: SecretStr | None = None
    langfuse_environment: str | None = None
    langfuse_release: str | None = None
    langfuse_sample_rate: float = Field(default=1.0, ge=0, le=1)
    langfuse_timeout_s: int = Field(default=5, ge=1, le=600)
    langfuse_media_upload_thread_count: int = Field(default=1, ge=1, le=64)
    langfuse_tracing_enabled: bool = True
    langfuse_debug: bool = False

    # Where each setting came from ("argument", "LANGFUSE_HOST", "ml-intern.toml [langfuse]
    # host", "default"), bad LangFuse values found in the environment (the gate reports them)
    # and notes for the gate (a stripped value, two host variables that differ).
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _problems: tuple[str, ...] = PrivateAttr(default=())
    _notes: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _layer_env_and_file(cls, data: Any, handler: Any, info: Any) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        context = info.context if isinstance(info.context, dict) else {}
        env: Mapping[str, str] = context.get("env")
        if env is None:
            env = os.environ
        layers = _Layers(
            env, dict(context.get("file") or {}), context.get("file_label") or "config file"
        )
        merged = layers.merge(data)
        model = handler(merged)
        model._sources = layers.sources
        model._problems = tuple(layers.problems)
        model._notes = tuple(layers.notes)
        return model

    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> AgentConfig:
        """Build a config from overrides > env > config file > defaults.

        ``config_file`` None: ``ML_INTERN_CONFIG`` if set, else ``ml-intern.toml`` in the working
        directory if it exists. An explicitly named file that does not exist is an error.
        ``env`` replaces ``os.environ`` as the environment layer (for tests and embedding).
        """
        environ: Mapping[str, str] = os.environ if env is None else env
        explicit_file = config_file is not None or bool(environ.get("ML_INTERN_CONFIG"))
        path = Path(config_file or environ.get("ML_INTERN_CONFIG") or DEFAULT_CONFIG_FILE)
        file_values: dict[str, Any] = {}
        if path.exists() or explicit_file:
            file_values = _read_config_file(path, set(cls.model_fields))
        try:
            return cls.model_validate(
                overrides, context={"file": file_values, "file_label": str(path), "env": env}
            )
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc

    # -- what the gate reads --

    def source(self, name: str) -> str:
        """Where setting ``name`` came from: an environment variable's name, ``argument``,
        ``<config file> [langfuse] <key>`` or ``default``."""
        return self._sources.get(name, "default")

    @property
    def langfuse_problems(self) -> tuple[str, ...]:
        """Bad LangFuse values found in the environment, each naming its variable."""
        return self._problems

    @property
    def langfuse_notes(self) -> tuple[str, ...]:
        """Warnings about LangFuse values that were used (stripped, overridden ...)."""
        return self._notes


class _Layers:
    """One config build: merges argument > env > file > default and notes where each value
    came from and what was wrong with the LangFuse ones."""

    def __init__(self, env: Mapping[str, str], file_values: dict[str, Any], file_label: str):
        self.env = env
        self.file = file_values
        self.file_label = file_label
        self.sources: dict[str, str] = {}
        self.problems: list[str] = []
        self.notes: list[str] = []

    def merge(self, data: dict[str, Any]) -> dict[str, Any]:
        explicit = {k: v for k, v in data.items() if v is not None}
        merged: dict[str, Any] = {}
        for name in AgentConfig.model_fields:
            if name in explicit:
                merged[name] = explicit[name]
                self.sources[name] = "argument"
            elif not self._from_env(name, merged) and self.file.get(name) is not None:
                merged[name] = self.file[name]
                self.sources[name] = _file_source(self.file_label, name)
        self._sdk_overrides(merged)
        self._sdk_import_vars()
        for name in set(explicit) - set(AgentConfig.model_fields):
            merged[name] = explicit[name]  # extra="forbid" reports it by name
        return merged

    def _from_env(self, name: str, merged: dict[str, Any]) -> bool:
        found: list[tuple[str, str]] = []
        for var in (ENV_VARS.get(name), *ENV_ALIASES.get(name, ())):
            raw = self.env.get(var) if var else None
            if raw is not None and raw.strip() != "":
                found.append((var, raw))  # type: ignore[arg-type]
            elif raw is not None and raw != "" and name in _SDK_READS_WHEN_UNSET:
                # The SDK reads this variable itself when given nothing, and takes "  " as a
                # value: a blank that is not empty is a mistake, not "unset".
                self.problems.append(f"{var} is blank; unset it or give it a value")
        if not found:
            return False
        var, raw = found[0]
        if len(found) > 1 and found[0][1].strip().rstrip("/") != found[1][1].strip().rstrip("/"):
            self.notes.append(
                f"{found[0][0]} and {found[1][0]} differ; using {found[0][0]}"
                + ("" if name in _UNQUOTED_FIELDS else f" ({found[0][1].strip()})")
            )
        value = raw.strip()
        langfuse = name.startswith("langfuse_")
        if value != raw and langfuse:
            self.notes.append(f"{var} has leading or trailing whitespace; it was stripped")
        problem = _problem_for_field(name, value)
        if problem is None:
            merged[name] = value
            self.sources[name] = var
            return True
        shown = "" if name in _UNQUOTED_FIELDS else f"={raw!r}"
        if langfuse:
            self.problems.append(f"{var}{shown} is not valid: {problem}")
        else:
            _warn_once(
                f"ignoring {var}{shown}: not a valid value for {name!r} ({problem}); "
                "using the config file or the default"
            )
        return False

    def _sdk_overrides(self, merged: dict[str, Any]) -> None:
        """The langfuse SDK and OpenTelemetry honour these variables whatever they are given."""
        for var, off in (("LANGFUSE_TRACING_ENABLED", "false"), ("OTEL_SDK_DISABLED", "true")):
            raw = self.env.get(var)
            disables = raw is not None and raw.strip().lower() == off
            if disables and merged.get("langfuse_tracing_enabled") not in (False, "false"):
                merged["langfuse_tracing_enabled"] = False
                self.sources["langfuse_tracing_enabled"] = var
        raw = self.env.get("LANGFUSE_DEBUG")
        if raw is not None and raw.lower() == "true" and merged.get("langfuse_debug") is False:
            merged["langfuse_debug"] = True
            self.sources["langfuse_debug"] = "LANGFUSE_DEBUG"

    def _sdk_import_vars(self) -> None:
        for var in SDK_IMPORT_INT_VARS:
            raw = self.env.get(var)
            if raw is None:
                continue
            try:
                int(raw)
            except ValueError:
                self.problems.append(
                    f"{var}={raw!r} is not valid: the langfuse SDK reads it as a whole number "
                    "when it is imported (and would fail)"
                )


# Settings whose variable the SDK reads itself when it is given None (see _Layers._from_env).
_SDK_READS_WHEN_UNSET = frozenset({"langfuse_environment", "langfuse_release"})


def _file_source(file_label: str, name: str) -> str:
    if name.startswith("langfuse_"):
        return f"{file_label} [langfuse] {name.removeprefix('langfuse_')}"
    return f"{file_label} {name}"


def _read_config_file(path: Path, fields: set[str]) -> dict[str, Any]:
    """The settings in a TOML config file, its ``[langfuse]`` table flattened to
    ``langfuse_<key>``. ``ConfigError`` naming the file for anything wrong with it."""
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
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    table = values.pop("langfuse", None)
    if table is not None:
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: langfuse must be a table ([langfuse])")
        for key, value in table.items():
            name = "langfuse_" + _TABLE_ALIASES.get(key, key)
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


def _warn_if_secret_readable(path: Path, values: Mapping[str, Any]) -> None:
    secrets = [name for name in _SECRET_FIELDS if values.get(name)]
    if not secrets or os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        _warn_once(
            f"config file {path} holds {', '.join(secrets)} and is readable by others "
            f"(mode {mode:04o}): run chmod 600 {path}, or set the secret in the environment"
        )


def _problem_for_field(name: str, raw: str) -> str | None:
    """Why ``raw`` is not a valid value for setting ``name``, or None."""
    field = AgentConfig.model_fields[name]
    annotation = (
        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    )
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        adapter.validate_python(raw)
    except ValidationError as exc:
        return "; ".join(err["msg"] for err in exc.errors()).lower()
    return None


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)
