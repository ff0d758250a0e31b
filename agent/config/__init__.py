"""One configuration object for the agent and both telemetry pipelines.

Precedence, highest first: an explicit argument > an environment variable > the config file >
the default. ``None`` means "unset". A value that cannot be a valid setting (wrong type, out of
range, unparsable; file values as TOML typed them) is never used: for a general setting, at any
layer, construction fails with a message naming the setting and its source (the variable, the
file and key, the flag or argument); a bad LangFuse value from the environment or the file is
kept as a problem for the gate (see below). ``agent.config.layers`` states the rule in full.

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
``LANGFUSE_SECRET_KEY``) as their environment layer. A bad value there or in the file's
``[langfuse]`` table is not silently dropped: it is kept as a problem naming its variable or
file key (``langfuse_problems``), and the gate
(``agent.core.forwarding.gate.resolve_gate``) turns it into an error under the ``langfuse``
backend, a warning and forwarding off under ``auto``. Two variables the langfuse SDK and
OpenTelemetry honour whatever they are given (``LANGFUSE_TRACING_ENABLED=false``,
``OTEL_SDK_DISABLED=true``, and ``LANGFUSE_DEBUG=true``) win over an argument, so the config
says what will really happen. A secret (``langfuse_secret_key``, ``hub_token``,
``redact_hmac_key``) in a config file that group or others may read gets a warning.

The rooms: this module holds ``AgentConfig`` (the general settings, ``load``, ``source``);
``agent.config.layers`` the precedence and the config file; ``agent.config.langfuse`` the
LangFuse settings and what the langfuse SDK reads from the environment itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, model_validator

from agent.config.langfuse import (
    SDK_ENVIRONMENT,
    SDK_IMPORT_INT_VARS,
    HttpUrlStr,
    LangfuseFields,
)
from agent.config.layers import (
    ENV_ALIASES,
    ENV_VARS,
    ConfigError,
    Layers,
    describe,
    read_config_file,
)

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_TELEMETRY_DIR",
    "ENV_ALIASES",
    "ENV_VARS",
    "SDK_ENVIRONMENT",
    "SDK_IMPORT_INT_VARS",
    "AgentConfig",
    "ConfigError",
    "HttpUrlStr",
    "ObservabilityBackend",
]

DEFAULT_CONFIG_FILE = "ml-intern.toml"
DEFAULT_TELEMETRY_DIR = "telemetry"

ObservabilityBackend = Literal["auto", "langfuse", "none"]


HardwareFlavor = Annotated[str, Field(min_length=1)]
HourlyPrice = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class AgentConfig(LangfuseFields):
    """Everything the agent and its telemetry need. Immutable once built.

    The ``langfuse_*`` settings are declared in ``agent.config.langfuse.LangfuseFields``.
    """

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
        allow_inf_nan=False,  # nan would never be due: no push, and no word about it
        description="seconds between pushes of one writer (a telemetry directory); 600 s keeps "
        "21 writers within the Hub's 128 commits per hour per repository",
    )
    hub_push_jitter: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="each wait is the interval times a random factor in [1, 1 + jitter]",
    )
    # A price is a finite number of USD per hour, 0 or more (a negative or NaN price would make
    # every estimate wrong): checked like every value, named with its file and key.
    hf_hardware_prices: dict[HardwareFlavor, HourlyPrice] | None = Field(
        default=None,
        description="USD per hour by HF hardware flavor, over agent/core/dataset/pricing.py's table",
    )
    observability_backend: ObservabilityBackend = "auto"
    redact: str | None = Field(
        default=None, description="redaction spec, e.g. 'preset=metadata-only' or 'user_id=hash'"
    )
    redact_hmac_key: SecretStr | None = None
    flush_timeout_s: float = Field(default=5.0, ge=0, le=600)
    context_token_budget: int = Field(default=6_000, ge=256)
    max_steps: int = Field(default=8, ge=1, le=100)
    hf_user_id: Literal["keep", "hash"] = Field(
        default="keep",
        description="HF Dataset rows: the raw user id, or the same HMAC pseudonym LangFuse gets "
        "(session ids too when the redaction policy hashes them); needs redact_hmac_key",
    )
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
        file_values = dict(context.get("file") or {})
        label = context.get("file_label") or "config file"
        layers = Layers(
            cls.model_fields,
            env,
            file_values,
            label,
            argument_sources=context.get("argument_sources"),
            file_keys=context.get("file_keys"),
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
        argument_sources: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> AgentConfig:
        """Build a config from overrides > env > config file > defaults.

        ``config_file`` None: ``ML_INTERN_CONFIG`` if set, else ``ml-intern.toml`` in the working
        directory if it exists. An explicitly named file that does not exist is an error.
        ``env`` replaces ``os.environ`` as the environment layer (for tests and embedding).
        ``argument_sources`` names overrides in messages and ``source()`` (the CLI passes
        ``{"flush_timeout_s": "--flush-timeout"}``); others are ``argument``.
        """
        environ: Mapping[str, str] = os.environ if env is None else env
        explicit_file = config_file is not None or bool(environ.get("ML_INTERN_CONFIG"))
        path = Path(config_file or environ.get("ML_INTERN_CONFIG") or DEFAULT_CONFIG_FILE)
        file_values: dict[str, Any] = {}
        file_keys: dict[str, str] = {}
        if path.exists() or explicit_file:
            file_values = read_config_file(path, set(cls.model_fields), file_keys)
        try:
            return cls.model_validate(
                overrides,
                context={
                    "file": file_values,
                    "file_label": str(path),
                    "env": env,
                    "argument_sources": argument_sources,
                    "file_keys": file_keys,
                },
            )
        except ValidationError as exc:
            raise ConfigError(describe(exc)) from exc

    # -- what the gate reads --

    def source(self, name: str) -> str:
        """Where setting ``name`` came from: an environment variable's name, ``argument``,
        ``<config file> [langfuse] <key>`` or ``default``."""
        return self._sources.get(name, "default")

    def label(self, name: str) -> str:
        """How a message names setting ``name``: where its value came from (the variable, the
        file and key, the flag), ``<name> (argument)``, or for a default the variable that
        would set it."""
        source = self.source(name)
        if source == "default":
            return ENV_VARS.get(name, name)
        if source == "argument":
            return f"{name} (argument)"
        return source

    @property
    def langfuse_problems(self) -> tuple[str, ...]:
        """Bad LangFuse values found in the environment or the config file, each naming its
        variable or file key."""
        return self._problems

    @property
    def langfuse_notes(self) -> tuple[str, ...]:
        """Warnings about LangFuse values that were used (stripped, overridden ...)."""
        return self._notes
