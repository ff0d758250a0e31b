"""The LangFuse settings of ``AgentConfig`` and what the langfuse SDK reads behind our back.

``LangfuseFields`` declares every ``langfuse_*`` setting (``AgentConfig`` inherits them), with
the environment variable each is read from (``ENV_VARS``: LangFuse's own names where the SDK
has one). The gate (``agent.core.forwarding.gate.resolve_gate``) checks hosts, keys and names.

Unlike other settings, a bad LangFuse value in the environment is not dropped with a warning:
it is kept as a problem naming the variable (``AgentConfig.langfuse_problems``), which the gate
turns into an error under the ``langfuse`` backend and a warning with forwarding off under
``auto``, so ``observability check`` and a real run agree.

The installed SDK (5.0.x) also reads variables itself: ``SDK_ENVIRONMENT`` lists every one and
what becomes of it (tests/test_config_layers.py scans the SDK's source and fails on one missing
here). Three of them win over any argument, because the SDK or OpenTelemetry honours them
whatever it is given (``apply_sdk_overrides``), and two are parsed at import
(``sdk_import_problems``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field, SecretStr

__all__ = [
    "ENV_ALIASES",
    "ENV_VARS",
    "SDK_ENVIRONMENT",
    "SDK_IMPORT_INT_VARS",
    "TABLE_ALIASES",
    "HttpUrlStr",
    "LangfuseFields",
    "apply_sdk_overrides",
    "sdk_import_problems",
]


def _http_url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL, e.g. http://localhost:4318/v1/traces")
    return value


# Part of the type (not a field validator) so a bad environment value is caught by the same
# check as a bad argument, and warned about rather than raised.
HttpUrlStr = Annotated[str, AfterValidator(_http_url)]


class LangfuseFields(BaseModel):
    """The ``langfuse_*`` settings of ``AgentConfig``."""

    langfuse_queue_size: int = Field(default=10_000, ge=1)
    langfuse_forwarder: Literal["sidecar", "thread"] = Field(
        # "thread" by default: under a loaded CI machine the sidecar's start-up raced short
        # shutdown bounds (a short-lived program lost its call, counters were missing), so it
        # stays opt-in until that is fixed; see the README's performance section.
        default="thread",
        description="where the forwarder redacts, builds and sends: a thread of the agent's "
        "process (the default) or a child process of its own (opt-in: the agent's threads "
        "never wait on that work)",
    )
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
    langfuse_media_upload: bool = Field(
        default=False,
        description="forward inline media through LangFuse's media API (bytes go to the upload "
        "URL the LangFuse server returns) instead of replacing it by a marker",
    )
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


# field -> environment variable: LangFuse's own names where the SDK has one.
ENV_VARS: dict[str, str] = {
    "langfuse_queue_size": "ML_INTERN_LANGFUSE_QUEUE_SIZE",
    "langfuse_forwarder": "ML_INTERN_LANGFUSE_FORWARDER",
    "langfuse_trace_name": "ML_INTERN_LANGFUSE_TRACE_NAME",
    "langfuse_nest_in_caller_trace": "ML_INTERN_LANGFUSE_NEST",
    # The SDK's own names for its exporter batch settings (it reads them only when not given).
    "langfuse_flush_at": "LANGFUSE_FLUSH_AT",
    "langfuse_flush_interval_s": "LANGFUSE_FLUSH_INTERVAL",
    # Not OTEL_EXPORTER_OTLP_TRACES_ENDPOINT itself: an application often points that at its
    # own tracing backend, which would then receive the LangFuse keys and every trace.
    "langfuse_traces_endpoint": "ML_INTERN_OTLP_TRACES_ENDPOINT",
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
    "langfuse_media_upload": "ML_INTERN_LANGFUSE_MEDIA_UPLOAD",
}
# Further names of a setting's environment variable, after the one in ENV_VARS.
ENV_ALIASES: dict[str, tuple[str, ...]] = {"langfuse_host": ("LANGFUSE_BASE_URL",)}
# [langfuse] table key -> field name without its "langfuse_" prefix, besides the key itself.
TABLE_ALIASES = {"base_url": "host"}
# Settings whose variable the SDK reads itself when it is given None: a blank value there
# ("  ") is a mistake the SDK would take as a value, not "unset".
SDK_READS_WHEN_UNSET = frozenset({"langfuse_environment", "langfuse_release"})

# Every environment variable the installed langfuse SDK (5.0.x) reads, and what becomes of it.
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

# (variable, field, the field's value when the variable wins, when it wins). The SDK reads
# LANGFUSE_DEBUG as is; a padded "false" / "true" also turns forwarding off (the safe side).
_SDK_OVERRIDES: tuple[tuple[str, str, bool, Callable[[str], bool]], ...] = (
    ("LANGFUSE_TRACING_ENABLED", "langfuse_tracing_enabled", False, lambda raw: _is(raw, "false")),
    ("OTEL_SDK_DISABLED", "langfuse_tracing_enabled", False, lambda raw: _is(raw, "true")),
    ("LANGFUSE_DEBUG", "langfuse_debug", True, lambda raw: raw.lower() == "true"),
)


def _is(raw: str, word: str) -> bool:
    return raw.strip().lower() == word


def apply_sdk_overrides(
    env: Mapping[str, str], merged: dict[str, Any], sources: dict[str, str]
) -> None:
    """The variables the SDK and OpenTelemetry honour whatever they are given win over the
    layers (``merged``), so the config says what will really happen."""
    for var, name, value, wins in _SDK_OVERRIDES:
        raw = env.get(var)
        if raw is not None and wins(raw) and merged.get(name) not in (value, str(value).lower()):
            merged[name] = value
            sources[name] = var


def sdk_import_problems(env: Mapping[str, str]) -> list[str]:
    """The variables the SDK parses as whole numbers at import that are not whole numbers."""
    problems = []
    for var in SDK_IMPORT_INT_VARS:
        raw = env.get(var)
        if raw is None:
            continue
        try:
            int(raw)
        except ValueError:
            problems.append(
                f"{var}={raw!r} is not valid: the langfuse SDK reads it as a whole number "
                "when it is imported (and would fail)"
            )
    return problems
