"""The gate and the lifecycle of the telemetry backends.

``Observability.from_config(config)`` sets up the always-on HF Dataset sink and, when the
operator chose it explicitly, LangFuse forwarding:

- ``auto`` (default): on iff a host (``LANGFUSE_HOST``, or its alias ``LANGFUSE_BASE_URL``) and
  both ``LANGFUSE_PUBLIC_KEY`` and ``LANGFUSE_SECRET_KEY`` are set. Keys without a host give one
  warning naming ``LANGFUSE_HOST`` and nothing is sent anywhere: there is no default host.
- ``langfuse``: a missing or malformed setting is a startup error (``ConfigError``) naming it.
- ``none``: off, whatever the environment says.

Setup is idempotent: the forwarder is registered in ``litellm.callbacks`` once per process, and
a second setup with the same settings reuses it. ``shutdown(timeout)`` is bounded even when the
LangFuse host is dead or silent.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agent.config import ENV_VARS, AgentConfig, ConfigError
from agent.core import guard
from agent.core.dataset.sink import HFDatasetSink
from agent.core.encodable import encodable_text
from agent.core.session import Sink, TraceLinker

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'ml-intern-observability[langfuse]'"

HOST_VARS = ("LANGFUSE_HOST", "LANGFUSE_BASE_URL")
PUBLIC_KEY_VAR = "LANGFUSE_PUBLIC_KEY"
SECRET_KEY_VAR = "LANGFUSE_SECRET_KEY"
# LangFuse key prefixes: a public key that starts like a secret key (or the other way round)
# means the two were swapped, and the secret would travel as a header and a span attribute.
PUBLIC_KEY_PREFIX = "pk-lf-"
SECRET_KEY_PREFIX = "sk-lf-"
# What the langfuse SDK accepts as an environment name (langfuse/_client/propagation.py).
_ENVIRONMENT = re.compile(r"(?!langfuse)[a-z0-9_-]+")


@dataclass(frozen=True)
class LangfuseSettings:
    """Where traces go and with which credentials, validated by the gate: everything the
    forwarder passes to ``Langfuse(...)``. ``repr`` never shows the secret key."""

    host: str
    public_key: str
    secret_key: str = field(repr=False)
    host_var: str = "LANGFUSE_HOST"  # where the host came from
    environment: str | None = None
    release: str | None = None
    sample_rate: float = 1.0
    timeout_s: int = 5
    media_upload_thread_count: int = 1
    debug: bool = False

    def masked_public_key(self) -> str:
        pk = self.public_key
        return pk if len(pk) <= 12 else f"{pk[:8]}…{pk[-4:]}"


@dataclass
class GateDecision:
    enabled: bool
    backend: str
    settings: LangfuseSettings | None = None
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


def _label(config: AgentConfig, name: str) -> str:
    """How to name setting ``name`` in a message: the variable or file key it came from."""
    source = config.source(name)
    if source == "default":
        return ENV_VARS.get(name, name)
    if source == "argument":
        return f"{name} (argument)"
    return source


def display_url(url: str) -> str:
    """``url`` without userinfo, query or fragment: what may appear in a message or a log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host_and_port = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host_and_port}{parts.path}" if parts.scheme else "<no scheme>"


def _has_userinfo(url: str) -> bool:
    authority = url.split("://", 1)[1] if "://" in url else url
    return "@" in authority.split("/", 1)[0]


def check_host(host: str, var: str) -> tuple[str | None, str | None, list[str]]:
    """(normalised host, error, warnings). No message ever repeats a user name or password,
    a query or a fragment the host may hold."""
    warnings: list[str] = []
    if _has_userinfo(host):
        return (
            None,
            f"{var} holds a user name or password (user:password@host); it is refused and not "
            "repeated here. Give the host alone: the LangFuse keys go in LANGFUSE_PUBLIC_KEY "
            "and LANGFUSE_SECRET_KEY",
            [],
        )
    if not host.isprintable() or any(c.isspace() for c in host):
        return None, f"{var} is not a valid URL (it holds spaces or control characters)", []
    parts = urlsplit(host)
    if not parts.scheme or "://" not in host:
        return (
            None,
            f"{var}={host!r} has no scheme: use https://HOST (or http://localhost:3000)",
            [],
        )
    if parts.scheme not in ("http", "https"):
        return None, f"{var}={display_url(host)!r}: the scheme must be http or https", []
    try:
        hostname = parts.hostname
        _ = parts.port
    except ValueError as exc:
        return None, f"{var}={display_url(host)!r} is not a valid URL ({exc})", []
    if not hostname:
        return None, f"{var}={host!r} is not a valid URL (no host name)", []
    if parts.query or parts.fragment or host.rstrip("/").endswith(("?", "#")):
        return (
            None,
            f"{var}={display_url(host)!r} has a query or fragment (?... or #...), which would "
            "end up in the middle of every LangFuse URL; give the base URL only",
            [],
        )
    if parts.scheme == "http" and not _is_loopback_name(hostname):
        warnings.append(
            f"{var} uses http:// to a non-loopback host ({hostname}): the LangFuse keys and "
            "every trace travel in clear text; use https://"
        )
    return host.rstrip("/"), None, warnings


def _is_loopback_name(hostname: str) -> bool:
    if hostname in ("localhost", "localhost.localdomain") or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


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


def resolve_gate(config: AgentConfig) -> GateDecision:
    """Decide whether LangFuse forwarding is on: a pure function of ``config``.

    Raises ``ConfigError`` only for an explicit ``langfuse`` backend whose settings are missing
    or malformed (and when langfuse is not installed); under ``auto`` the same problems are
    warnings and forwarding is off.
    """
    backend = config.observability_backend
    if backend == "none":
        return GateDecision(False, backend, reason="observability_backend is 'none'")
    if not config.langfuse_tracing_enabled:
        # The operator's switch (or OTEL_SDK_DISABLED): off entirely, under any backend.
        source = config.source("langfuse_tracing_enabled")
        var = "LANGFUSE_TRACING_ENABLED" if source == "default" else source
        what = "OTEL_SDK_DISABLED=true" if var == "OTEL_SDK_DISABLED" else f"{var}=false"
        return GateDecision(False, backend, reason=f"disabled by {what}")
    warnings = list(config.langfuse_notes)
    explicit = backend == "langfuse"

    def fail(reason: str) -> GateDecision:
        if explicit:
            raise ConfigError(f"--observability-backend langfuse: {reason}")
        warnings.append(f"LangFuse forwarding is off: {reason}")
        return GateDecision(False, backend, reason=reason, warnings=warnings)

    host = config.langfuse_host
    public_key = config.langfuse_public_key
    secret = config.langfuse_secret_key.get_secret_value() if config.langfuse_secret_key else None
    missing = [
        label
        for label, value in (
            ("LANGFUSE_HOST", host),
            (PUBLIC_KEY_VAR, public_key),
            (SECRET_KEY_VAR, secret),
        )
        if not value
    ]
    problems = list(config.langfuse_problems)
    if missing:
        if not explicit and len(missing) == 3:
            # Nothing configured: silently off (the problems of loose variables included).
            return GateDecision(False, backend, reason="no LangFuse settings", warnings=warnings)
        if not explicit and missing == ["LANGFUSE_HOST"]:
            warnings.append(
                "LangFuse keys are set but LANGFUSE_HOST is not: forwarding is off and nothing "
                "is sent. Set LANGFUSE_HOST (or LANGFUSE_BASE_URL), e.g. "
                "https://cloud.langfuse.com, https://us.cloud.langfuse.com or your own host"
            )
            return GateDecision(
                False, backend, reason="LANGFUSE_HOST is not set", warnings=warnings
            )
        return fail("; ".join([f"missing {', '.join(missing)}", *problems]))
    assert host is not None and public_key is not None and secret is not None
    if problems:
        return fail("; ".join(problems))
    host_label = _label(config, "langfuse_host")
    norm_host, error, host_warnings = check_host(host, host_label)
    warnings.extend(host_warnings)
    endpoint = config.langfuse_traces_endpoint
    endpoint_problem = (
        f"{_label(config, 'langfuse_traces_endpoint')} holds a user name or password; it is "
        "refused and not repeated here (the LangFuse keys are sent as headers)"
        if endpoint and _has_userinfo(endpoint)
        else None
    )
    for problem in (
        error,
        endpoint_problem,
        _key_problem(public_key, _label(config, "langfuse_public_key"), secret=False),
        _key_problem(secret, _label(config, "langfuse_secret_key"), secret=True),
        _environment_problem(config),
        _text_problem(config.langfuse_release, _label(config, "langfuse_release")),
    ):
        if problem:
            return fail(problem)
    if config.langfuse_debug:
        warnings.append(
            f"{_label(config, 'langfuse_debug')} is on: the langfuse SDK logs at DEBUG, and its "
            "debug logs may hold what is traced"
        )
    try:
        import langfuse  # noqa: F401
    except ImportError:
        return fail(f"the langfuse package is not installed; install it with: {INSTALL_HINT}")
    except Exception as exc:  # it parses some variables at import (those are checked above)
        return fail(f"the langfuse SDK cannot be imported ({type(exc).__name__}: {exc})")
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


def forwarder_options(config: AgentConfig) -> tuple[tuple[str, Any], ...]:
    """The forwarder's settings from the config, as (keyword, value) pairs (hashable: they are
    part of the key that decides whether a setup reuses the running forwarder)."""
    return (
        ("flush_at", config.langfuse_flush_at),
        ("flush_interval_s", config.langfuse_flush_interval_s),
        ("traces_endpoint", config.langfuse_traces_endpoint),
        ("trace_name", config.langfuse_trace_name),
        ("nest_in_caller_trace", config.langfuse_nest_in_caller_trace),
    )


def traces_endpoint(settings: LangfuseSettings, config: AgentConfig) -> str:
    """Where spans go: the configured OTLP endpoint (a local Collector), else LangFuse's."""
    from agent.core.forwarding import otlp

    return config.langfuse_traces_endpoint or otlp.traces_endpoint(settings.host)


# -- the process-wide forwarder (one LangFuse client per process) --

_forwarder_lock = threading.Lock()
_forwarder: Any = None
_forwarder_key: tuple[Any, ...] | None = None
_forwarder_users = 0


def _acquire_forwarder(settings: LangfuseSettings, config: AgentConfig, policy: Any) -> Any:
    global _forwarder, _forwarder_key, _forwarder_users
    from agent.core.callbacks.langfuse import LangfuseForwardingLogger, register

    options = forwarder_options(config)
    key = (settings, config.flush_timeout_s, config.langfuse_queue_size, policy, options)
    with _forwarder_lock:
        if _forwarder is not None and _forwarder_key == key and not _forwarder.closed:
            _forwarder_users += 1
            return _forwarder
        if _forwarder is not None and not _forwarder.closed:
            logger.warning("LangFuse settings changed: shutting the previous forwarder down")
            _forwarder.shutdown(timeout=config.flush_timeout_s)
        _forwarder = LangfuseForwardingLogger(
            settings,
            policy=policy,
            queue_size=config.langfuse_queue_size,
            flush_timeout_s=config.flush_timeout_s,
            **dict(options),
        )
        _forwarder_key = key
        _forwarder_users = 1
        register(_forwarder)
        return _forwarder


def _release_forwarder(forwarder: Any, timeout: float | None) -> dict[str, Any]:
    global _forwarder, _forwarder_key, _forwarder_users
    with _forwarder_lock:
        if forwarder is _forwarder:
            _forwarder_users -= 1
            if _forwarder_users > 0:
                return forwarder.flush_report(timeout)
            _forwarder = None
            _forwarder_key = None
    from agent.core.callbacks.langfuse import unregister

    unregister(forwarder)
    return forwarder.shutdown(timeout=timeout)


class Observability:
    """The telemetry backends of one process (or one embedding application)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        hf_sink: HFDatasetSink | None,
        forwarder: Any = None,
        gate: GateDecision | None = None,
        extra_sinks: Iterable[Sink] = (),
    ) -> None:
        self.config = config
        self.hf_sink = hf_sink
        self.langfuse = forwarder
        self.gate = gate
        self.sinks: list[Sink] = [s for s in (hf_sink, forwarder) if s is not None]
        self.sinks.extend(extra_sinks)
        self.linker: TraceLinker | None = forwarder
        self._closed = False
        self._lock = threading.Lock()
        self.last_report: dict[str, Any] = {}
        atexit.register(self._atexit)

    @classmethod
    def from_config(
        cls,
        config: AgentConfig | None = None,
        *,
        extra_sinks: Iterable[Sink] = (),
    ) -> Observability:
        """Set up the HF Dataset sink and, if the gate opens, LangFuse forwarding.

        Raises ``ConfigError`` for an explicit ``langfuse`` backend with bad settings, for a
        malformed redaction spec, and for a telemetry directory that cannot be created.
        """
        config = config or AgentConfig.load()
        _learn_secrets(config)
        gate = resolve_gate(config)
        for warning in gate.warnings:
            guard.warn_once(f"gate:{warning}", "%s", warning)
        forwarder = None
        if gate.enabled and gate.settings is not None:
            policy = build_policy(config)
            try:
                forwarder = _acquire_forwarder(gate.settings, config, policy)
            except Exception as exc:
                # The gate validated everything we know the SDK checks; should the SDK still
                # refuse, that is a message like any other bad setting, never a traceback.
                text = str(exc).replace(gate.settings.secret_key, "[REDACTED]")
                reason = f"the langfuse SDK refused the settings ({type(exc).__name__}: {text})"
                if gate.backend == "langfuse":
                    raise ConfigError(f"--observability-backend langfuse: {reason}") from exc
                guard.warn_once(f"gate:{reason}", "LangFuse forwarding is off: %s", reason)
                gate = GateDecision(False, gate.backend, reason=reason, warnings=gate.warnings)
        elif config.redact:
            build_policy(config)  # a malformed spec is an error even while forwarding is off
        try:
            config.telemetry_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if forwarder is not None:
                _release_forwarder(forwarder, 0.5)
            raise ConfigError(
                f"telemetry_dir {config.telemetry_dir}: cannot create it ({exc})"
            ) from exc
        hf_sink = HFDatasetSink(
            config.telemetry_dir,
            repo_id=config.hub_repo_id,
            token=config.hub_token.get_secret_value() if config.hub_token else None,
            push_interval_s=config.hub_push_interval_s,
            push_jitter=config.hub_push_jitter,
            row_hook=hf_row_hook(config),
        )
        from agent.core import log_scrub

        log_scrub.install()  # again: loggers of the modules imported since
        return cls(config, hf_sink=hf_sink, forwarder=forwarder, gate=gate, extra_sinks=extra_sinks)

    @property
    def forwarding(self) -> bool:
        return self.langfuse is not None

    def trace_url(self, trace_id: str) -> str | None:
        """A browser link to a trace, built locally (no request is made)."""
        if self.langfuse is None:
            return None
        return self.langfuse.trace_url(trace_id)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything recorded so far, within ``timeout`` seconds (default: the
        configured flush bound). True only when every sink delivered and every call made so
        far reached the LangFuse forwarder (litellm's queued and running callbacks included).
        Calls litellm will never hand over are counted as dropped."""
        deadline = time.monotonic() + (
            timeout if timeout is not None else self.config.flush_timeout_s
        )
        started = time.monotonic()
        ok = self._drain_litellm(deadline)
        if self.langfuse is not None:
            missing = self.langfuse.settle_calls(since=started, litellm_idle=ok, final=False)
            ok = ok and missing == 0
        for sink in self.sinks:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                ok = bool(sink.flush(remaining)) and ok
            except Exception as exc:
                guard.report(f"flush {type(sink).__name__}", exc)
                ok = False
        return ok

    def shutdown(self, timeout: float | None = None) -> dict[str, Any]:
        """Flush and stop every backend within ``timeout`` seconds (default: the configured
        flush bound). Idempotent. Returns a report of what was delivered and dropped."""
        with self._lock:
            if self._closed:
                return self.last_report
            self._closed = True
        atexit.unregister(self._atexit)
        budget = self.config.flush_timeout_s if timeout is None else timeout
        started = time.monotonic()
        deadline = started + budget
        # litellm first: the callbacks of the last calls must reach the forwarder before it
        # closes (a sync call's run on litellm's thread pool, after the call has returned).
        litellm_idle = self._drain_litellm(started + budget / 2)
        if self.langfuse is not None:
            self.langfuse.settle_calls(since=started, litellm_idle=litellm_idle, final=True)
        report: dict[str, Any] = {}
        if self.hf_sink is not None:
            # The local dataset gets its share first: it is the record of truth.
            self.hf_sink.shutdown(max(0.5, budget / 2) if self.langfuse else budget)
            report["hf_dataset"] = self.hf_sink.stats.as_dict()
        if self.langfuse is not None:
            remaining = max(0.0, deadline - time.monotonic())
            report["langfuse"] = _release_forwarder(self.langfuse, remaining)
            if not litellm_idle:
                report["langfuse"]["completed_in_time"] = False
        for sink in self.sinks:
            if sink is self.hf_sink or sink is self.langfuse:
                continue
            try:
                sink.shutdown(max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                guard.report(f"shutdown {type(sink).__name__}", exc)
        self.last_report = report
        return report

    async def adrain(self, timeout: float | None = None) -> bool:
        """From async code, before leaving the event loop: let litellm run the callbacks it
        queued for this loop's calls (the LangFuse forwarder's included)."""
        from agent.core import llm

        return await llm.adrain_callbacks(
            self.config.flush_timeout_s if timeout is None else timeout
        )

    def _drain_litellm(self, deadline: float) -> bool:
        if self.langfuse is None:
            return True
        from agent.core import llm

        return llm.drain_callbacks(max(0.0, deadline - time.monotonic()))

    def _atexit(self) -> None:
        try:
            self.shutdown()
        except Exception as exc:  # never let exit hang or crash on telemetry
            guard.report("observability.atexit", exc)


def build_policy(config: AgentConfig) -> Any:
    """The operator's redaction policy from the config (``ConfigError`` if malformed)."""
    from agent.core.callbacks.redaction import RedactionPolicy, RedactionSpecError

    key = config.redact_hmac_key.get_secret_value() if config.redact_hmac_key else None
    try:
        return RedactionPolicy.from_spec(
            config.redact, hmac_key=key, media_upload=config.langfuse_media_upload
        )
    except RedactionSpecError as exc:
        raise ConfigError(f"redact: {exc}") from exc


def _learn_secrets(config: AgentConfig) -> None:
    """Secrets of this process are scrubbed by value in both pipelines (agent.core.known_secrets)."""
    from agent.core import log_scrub
    from agent.core.known_secrets import KNOWN_SECRETS

    log_scrub.install()  # and none in log records either
    KNOWN_SECRETS.refresh_env()
    KNOWN_SECRETS.add(config.hub_token)
    KNOWN_SECRETS.add(config.redact_hmac_key)


def hf_row_hook(config: AgentConfig) -> Any:
    """The HF rows' pseudonyms for ``hf_user_id=hash`` (None for ``keep``): the same HMAC
    pseudonym LangFuse gets for the user, and for the session when the policy hashes it."""
    from agent.core.pseudonym import HFRowPseudonyms

    if config.hf_user_id != "hash":
        if config.redact and "strict" in config.redact.lower().replace(" ", ""):
            guard.warn_once(
                "hf-user-id-keep-strict",
                "redaction is strict but hf_user_id is 'keep': the HF rows hold raw user ids "
                "next to the trace ids, which maps LangFuse pseudonyms back to users; set "
                "hf_user_id=hash (ML_INTERN_HF_USER_ID=hash)",
            )
        return None
    if config.redact_hmac_key is None:
        raise ConfigError(
            "hf_user_id=hash pseudonymises HF rows with HMAC-SHA256 and needs a key: set "
            "ML_INTERN_REDACT_HMAC_KEY (or redact_hmac_key)"
        )
    policy = build_policy(config)
    key = config.redact_hmac_key.get_secret_value().encode("utf-8")
    return HFRowPseudonyms(key, sessions=policy.actions["session_id"].kind == "hash")
