"""One configuration object for the agent and both telemetry pipelines.

Precedence, highest first: an explicit argument > an environment variable > the config file >
the default. ``None`` means "unset". A bad environment value warns once and falls back to the
next layer; a bad explicit argument raises at construction with a message naming the setting.

The config file is TOML (``ml-intern.toml`` in the working directory, or the path given by
``--config`` / ``ML_INTERN_CONFIG``), with the same keys as the fields below, e.g.::

    telemetry_dir = "/var/lib/ml-intern/telemetry"
    observability_backend = "langfuse"
    redact = "preset=no-tool-io,user_id=hash"
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
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


# field name -> environment variable. LangFuse's own variables are read by the gate
# (agent.core.observability), which also knows their aliases.
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
}


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
        description="USD per hour by HF hardware flavor, over agent/core/pricing.py's table",
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

    @model_validator(mode="before")
    @classmethod
    def _layer_env_and_file(cls, data: Any, info: Any) -> Any:
        if not isinstance(data, dict):
            return data
        explicit = {k: v for k, v in data.items() if v is not None}
        file_values: dict[str, Any] = {}
        if info.context and isinstance(info.context, dict):
            file_values = dict(info.context.get("file") or {})
        merged: dict[str, Any] = {}
        for name in cls.model_fields:
            if name in explicit:
                merged[name] = explicit[name]
                continue
            env_name = ENV_VARS.get(name)
            raw = os.environ.get(env_name) if env_name else None
            if raw is not None and raw.strip() != "":
                if _valid_for_field(name, raw.strip()):
                    merged[name] = raw.strip()
                    continue
                _warn_once(
                    f"ignoring {env_name}={raw!r}: not a valid value for {name!r}; "
                    "using the config file or the default"
                )
            if name in file_values and file_values[name] is not None:
                merged[name] = file_values[name]
        unknown = set(explicit) - set(cls.model_fields)
        for name in unknown:
            merged[name] = explicit[name]  # extra="forbid" reports it by name
        return merged

    @classmethod
    def load(
        cls, config_file: str | os.PathLike[str] | None = None, **overrides: Any
    ) -> AgentConfig:
        """Build a config from overrides > env > config file > defaults.

        ``config_file`` None: ``ML_INTERN_CONFIG`` if set, else ``ml-intern.toml`` in the working
        directory if it exists. An explicitly named file that does not exist is an error.
        """
        explicit_file = config_file is not None or bool(os.environ.get("ML_INTERN_CONFIG"))
        path = Path(config_file or os.environ.get("ML_INTERN_CONFIG") or DEFAULT_CONFIG_FILE)
        file_values: dict[str, Any] = {}
        if path.is_file():
            try:
                file_values = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"config file {path}: {exc}") from exc
            unknown = sorted(set(file_values) - set(cls.model_fields))
            if unknown:
                raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
        elif explicit_file:
            raise ConfigError(f"config file {path} does not exist")
        try:
            return cls.model_validate(overrides, context={"file": file_values})
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc


def _valid_for_field(name: str, raw: str) -> bool:
    field = AgentConfig.model_fields[name]
    annotation = (
        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    )
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        adapter.validate_python(raw)
    except ValidationError:
        return False
    return True


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
