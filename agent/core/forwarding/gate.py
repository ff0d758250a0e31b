"""The gate: whether LangFuse forwarding is on, a pure function of an ``AgentConfig``.

- ``auto`` (default): on iff a host (``LANGFUSE_HOST``, or its alias ``LANGFUSE_BASE_URL``) and
  both ``LANGFUSE_PUBLIC_KEY`` and ``LANGFUSE_SECRET_KEY`` are set. Keys without a host give one
  warning naming ``LANGFUSE_HOST`` and nothing is sent anywhere: there is no default host.
- ``langfuse``: a missing or malformed setting is a startup error (``ConfigError``) naming it.
- ``none``: off, whatever the environment says. ``LANGFUSE_TRACING_ENABLED=false`` and
  ``OTEL_SDK_DISABLED=true`` turn it off under any backend.

Every message names the variable (or file key, or argument) a setting came from, and never
repeats a key, a user name or password, a query or a fragment. Cheap to import: the langfuse SDK
is only looked for, at the end, when everything else is valid.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agent.config import AgentConfig, ConfigError
from agent.core.encodable import encodable_text
from agent.core.forwarding.otlp.destination import display_url
from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings

__all__ = [
    "GateDecision",
    "check_host",
    "forwarder_options",
    "resolve_gate",
    "traces_endpoint",
]

INSTALL_HINT = "pip install 'ml-intern-observability[langfuse]'"

PUBLIC_KEY_VAR = "LANGFUSE_PUBLIC_KEY"
SECRET_KEY_VAR = "LANGFUSE_SECRET_KEY"
# LangFuse key prefixes: a public key that starts like a secret key (or the other way round)
# means the two were swapped, and the secret would travel as a header and a span attribute.
PUBLIC_KEY_PREFIX = "pk-lf-"
SECRET_KEY_PREFIX = "sk-lf-"
# What the langfuse SDK accepts as an environment name (langfuse/_client/propagation.py).
_ENVIRONMENT = re.compile(r"(?!langfuse)[a-z0-9_-]+")


@dataclass
class GateDecision:
    enabled: bool
    backend: str
    settings: LangfuseSettings | None = None
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


def _label(config: AgentConfig, name: str) -> str:
    """How to name setting ``name`` in a message: the variable or file key it came from."""
    return config.label(name)


# -- URLs --


def _has_userinfo(url: str) -> bool:
    authority = url.split("://", 1)[1] if "://" in url else url
    return "@" in authority.split("/", 1)[0]


def _url_problem(host: str, var: str) -> str | None:
    """Why ``host`` is not a usable base URL (never repeating userinfo, query or fragment)."""
    if _has_userinfo(host):
        return (
            f"{var} holds a user name or password (user:password@host); it is refused and not "
            "repeated here. Give the host alone: the LangFuse keys go in LANGFUSE_PUBLIC_KEY "
            "and LANGFUSE_SECRET_KEY"
        )
    if not host.isprintable() or any(c.isspace() for c in host):
        return f"{var} is not a valid URL (it holds spaces or control characters)"
    parts = urlsplit(host)
    if not parts.scheme or "://" not in host:
        return f"{var}={host!r} has no scheme: use https://HOST (or http://localhost:3000)"
    if parts.scheme not in ("http", "https"):
        return f"{var}={display_url(host)!r}: the scheme must be http or https"
    try:
        hostname = parts.hostname
        _ = parts.port
    except ValueError as exc:
        return f"{var}={display_url(host)!r} is not a valid URL ({exc})"
    if not hostname:
        return f"{var}={host!r} is not a valid URL (no host name)"
    if parts.query or parts.fragment or host.rstrip("/").endswith(("?", "#")):
        return (
            f"{var}={display_url(host)!r} has a query or fragment (?... or #...), which would "
            "end up in the middle of every LangFuse URL; give the base URL only"
        )
    return None


def check_host(host: str, var: str) -> tuple[str | None, str | None, list[str]]:
    """(normalised host, error, warnings). No message ever repeats a user name or password,
    a query or a fragment the host may hold."""
    error = _url_problem(host, var)
    if error is not None:
        return None, error, []
    parts = urlsplit(host)
    warnings: list[str] = []
    if parts.scheme == "http" and not _is_loopback_name(parts.hostname or ""):
        warnings.append(
            f"{var} uses http:// to a non-loopback host ({parts.hostname}): the LangFuse keys "
            "and every trace travel in clear text; use https://"
        )
    return host.rstrip("/"), None, warnings


def _is_loopback_name(hostname: str) -> bool:
    if hostname in ("localhost", "localhost.localdomain") or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


# -- keys and labels --


def _key_problem(value: str, label: str, *, secret: bool) -> str | None:
    """Why a key cannot be used (never quoting it), or None."""
    if not value.isascii():
        return f"{label} holds a non-ASCII character; LangFuse keys are plain ASCII"
    if not value.isprintable() or any(c.isspace() for c in value):
        return f"{label} holds a line break, space or control character"
    if not secret and value.startswith(SECRET_KEY_PREFIX):
        return (
            f"{label} looks like a secret key (it starts with {SECRET_KEY_PREFIX}): are the "
            "public and secret keys swapped? It is refused, so the secret never travels as a "
            "header"
        )
    if secret and value.startswith(PUBLIC_KEY_PREFIX):
        return (
            f"{label} looks like a public key (it starts with {PUBLIC_KEY_PREFIX}): are the "
            "public and secret keys swapped?"
        )
    return None


def _text_problem(value: str | None, label: str) -> str | None:
    if value is None:
        return None
    if encodable_text(value)[1] or not value.isprintable():
        return f"{label} holds bytes that are not text (or control characters)"
    return None


def _environment_problem(config: AgentConfig) -> str | None:
    value = config.langfuse_environment
    if value is None or _ENVIRONMENT.fullmatch(value):
        return None
    label = _label(config, "langfuse_environment")
    shown = "" if _text_problem(value, label) else f"={value!r}"
    return (
        f"{label}{shown} is not a LangFuse environment name: lowercase letters, digits, '-' "
        "and '_', not starting with 'langfuse'"
    )


def _endpoint_problem(config: AgentConfig) -> str | None:
    endpoint = config.langfuse_traces_endpoint
    if endpoint and _has_userinfo(endpoint):
        return (
            f"{_label(config, 'langfuse_traces_endpoint')} holds a user name or password; it is "
            "refused and not repeated here (the LangFuse keys are sent as headers)"
        )
    return None


def _sdk_problem(config: AgentConfig) -> str | None:
    if config.langfuse_forwarder == "sidecar":
        # The SDK is imported by the sidecar, not here (performance: ~0.3 s of this process's
        # start-up); that it is installed is enough here. Should it still fail to import
        # there, the sidecar falls back to a thread, whose import then says why.
        try:
            found = importlib.util.find_spec("langfuse") is not None
        except (ImportError, ValueError):  # an import hook that refuses it
            found = False
        if not found:
            return f"the langfuse package is not installed; install it with: {INSTALL_HINT}"
        return None
    try:
        import langfuse  # noqa: F401
    except ImportError:
        return f"the langfuse package is not installed; install it with: {INSTALL_HINT}"
    except Exception as exc:  # it parses some variables at import (those are checked before)
        return f"the langfuse SDK cannot be imported ({type(exc).__name__}: {exc})"
    return None


# -- the decision --


def _switched_off(config: AgentConfig) -> GateDecision | None:
    """The operator's explicit off switches, or None."""
    backend = config.observability_backend
    if backend == "none":
        return GateDecision(False, backend, reason="observability_backend is 'none'")
    if not config.langfuse_tracing_enabled:
        # The operator's switch (or OTEL_SDK_DISABLED): off entirely, under any backend.
        source = config.source("langfuse_tracing_enabled")
        var = "LANGFUSE_TRACING_ENABLED" if source == "default" else source
        what = "OTEL_SDK_DISABLED=true" if var == "OTEL_SDK_DISABLED" else f"{var}=false"
        return GateDecision(False, backend, reason=f"disabled by {what}")
    return None


def _incomplete(
    config: AgentConfig, missing: list[str], warnings: list[str]
) -> GateDecision | None:
    """Under ``auto``: nothing configured (quietly off) or keys without a host (one warning)."""
    backend = config.observability_backend
    if backend == "langfuse":
        return None
    if len(missing) == 3:
        # Nothing configured: silently off (the problems of loose variables included).
        return GateDecision(False, backend, reason="no LangFuse settings", warnings=warnings)
    if missing == ["LANGFUSE_HOST"]:
        warnings.append(
            "LangFuse keys are set but LANGFUSE_HOST is not: forwarding is off and nothing "
            "is sent. Set LANGFUSE_HOST (or LANGFUSE_BASE_URL), e.g. "
            "https://cloud.langfuse.com, https://us.cloud.langfuse.com or your own host"
        )
        return GateDecision(False, backend, reason="LANGFUSE_HOST is not set", warnings=warnings)
    return None


def _problems(config: AgentConfig, host_error: str | None, public: str, secret: str) -> list[str]:
    """Every reason the complete settings cannot be used, in the order they are reported."""
    found = [
        host_error,
        _endpoint_problem(config),
        _key_problem(public, _label(config, "langfuse_public_key"), secret=False),
        _key_problem(secret, _label(config, "langfuse_secret_key"), secret=True),
        _environment_problem(config),
        _text_problem(config.langfuse_release, _label(config, "langfuse_release")),
    ]
    return [p for p in found if p]


def _unset(
    config: AgentConfig, values: tuple[str | None, str | None, str | None], warnings: list[str]
) -> GateDecision | str | None:
    """For host, public and secret key: a quiet decision (nothing configured under ``auto``), a
    reason forwarding cannot start (set but empty, missing), or None when all three are set."""
    named = list(
        zip(
            ("langfuse_host", "langfuse_public_key", "langfuse_secret_key"),
            ("LANGFUSE_HOST", PUBLIC_KEY_VAR, SECRET_KEY_VAR),
            values,
            strict=True,
        )
    )
    # Set to "" where an empty value is not "unset" (a file key, an argument): named as such.
    empty = [
        f"{_label(config, name)} is set but empty"
        for name, _, value in named
        if value == "" and config.source(name) != "default"
    ]
    if empty:
        return "; ".join([*empty, *config.langfuse_problems])
    missing = [var for _, var, value in named if not value]
    if not missing:
        return None
    quiet = _incomplete(config, missing, warnings)
    return quiet or "; ".join([f"missing {', '.join(missing)}", *config.langfuse_problems])


def _debug_warning(config: AgentConfig) -> str:
    return (
        f"{_label(config, 'langfuse_debug')} is on: the langfuse SDK logs at DEBUG, and its "
        "debug logs may hold what is traced"
    )


def resolve_gate(config: AgentConfig) -> GateDecision:
    """Decide whether LangFuse forwarding is on: a pure function of ``config``.

    Raises ``ConfigError`` only for an explicit ``langfuse`` backend whose settings are missing
    or malformed (and when langfuse is not installed); under ``auto`` the same problems are
    warnings and forwarding is off.
    """
    off = _switched_off(config)
    if off is not None:
        return off
    backend = config.observability_backend
    warnings = list(config.langfuse_notes)

    def fail(reason: str) -> GateDecision:
        if backend == "langfuse":
            raise ConfigError(f"--observability-backend langfuse: {reason}")
        warnings.append(f"LangFuse forwarding is off: {reason}")
        return GateDecision(False, backend, reason=reason, warnings=warnings)

    host = config.langfuse_host
    public_key = config.langfuse_public_key
    secret = config.langfuse_secret_key.get_secret_value() if config.langfuse_secret_key else None
    unset = _unset(config, (host, public_key, secret), warnings)
    if isinstance(unset, GateDecision):
        return unset
    if unset is not None:
        return fail(unset)
    assert host is not None and public_key is not None and secret is not None
    if config.langfuse_problems:
        return fail("; ".join(config.langfuse_problems))
    host_label = _label(config, "langfuse_host")
    norm_host, error, host_warnings = check_host(host, host_label)
    warnings.extend(host_warnings)
    problems = _problems(config, error, public_key, secret)
    if problems:
        return fail(problems[0])
    if config.langfuse_debug:
        warnings.append(_debug_warning(config))
    sdk = _sdk_problem(config)
    if sdk:
        return fail(sdk)
    settings = LangfuseSettings(
        host=str(norm_host),
        public_key=public_key,
        secret_key=secret,
        host_var=host_label,
        environment=config.langfuse_environment,
        release=config.langfuse_release,
        sample_rate=config.langfuse_sample_rate,
        timeout_s=config.langfuse_timeout_s,
        media_upload_thread_count=config.langfuse_media_upload_thread_count,
        debug=config.langfuse_debug,
    )
    return GateDecision(True, backend, settings=settings, reason="enabled", warnings=warnings)


def forwarder_options(config: AgentConfig) -> ForwarderOptions:
    """The forwarder's options from the config."""
    return ForwarderOptions(
        queue_size=config.langfuse_queue_size,
        flush_timeout_s=config.flush_timeout_s,
        flush_at=config.langfuse_flush_at,
        flush_interval_s=config.langfuse_flush_interval_s,
        traces_endpoint=config.langfuse_traces_endpoint,
        trace_name=config.langfuse_trace_name or ForwarderOptions.trace_name,
        nest_in_caller_trace=config.langfuse_nest_in_caller_trace,
        mode=config.langfuse_forwarder,
    )


def traces_endpoint(settings: LangfuseSettings, config: AgentConfig) -> str:
    """Where spans go: the configured OTLP endpoint (a local Collector), else LangFuse's."""
    from agent.core.forwarding import otlp

    return config.langfuse_traces_endpoint or otlp.traces_endpoint(settings.host)
