"""The lifecycle of the telemetry backends.

``Observability.from_config(config)`` sets up the always-on HF Dataset sink and, when the gate
opens (``agent.core.forwarding.gate``: the operator chose it explicitly), LangFuse forwarding.

Setup is idempotent: the forwarder is registered in ``litellm.callbacks`` once per process, and
a second setup with the same settings reuses it. ``shutdown(timeout)`` is bounded even when the
LangFuse host is dead or silent.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from agent.config import AgentConfig, ConfigError
from agent.core import guard
from agent.core.dataset.sink import HFDatasetSink
from agent.core.forwarding.gate import GateDecision, resolve_gate
from agent.core.session import Sink, TraceLinker

logger = logging.getLogger(__name__)


def _release_forwarder(forwarder: Any, timeout: float | None) -> dict[str, Any]:
    from agent.core.forwarding import register

    return register.release(forwarder, timeout)


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
        self.linker: TraceLinker | None = forwarder.linker if forwarder is not None else None
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
                from agent.core.forwarding import register

                forwarder = register.acquire(gate.settings, config, policy)
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
        from agent.core.privacy import log_scrub

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
    from agent.core.privacy.redaction import RedactionPolicy, RedactionSpecError

    key = config.redact_hmac_key.get_secret_value() if config.redact_hmac_key else None
    try:
        return RedactionPolicy.from_spec(
            config.redact, hmac_key=key, media_upload=config.langfuse_media_upload
        )
    except RedactionSpecError as exc:
        raise ConfigError(f"{config.label('redact')}: {exc}") from exc


def _learn_secrets(config: AgentConfig) -> None:
    """Secrets of this process are scrubbed by value in both pipelines (agent.core.privacy.known)."""
    from agent.core.privacy import log_scrub
    from agent.core.privacy.known import KNOWN_SECRETS

    log_scrub.install()  # and none in log records either
    KNOWN_SECRETS.refresh_env()
    KNOWN_SECRETS.add(config.hub_token)
    KNOWN_SECRETS.add(config.redact_hmac_key)


def hf_row_hook(config: AgentConfig) -> Any:
    """The HF rows' pseudonyms for ``hf_user_id=hash`` (None for ``keep``): the same HMAC
    pseudonym LangFuse gets for the user, and for the session when the policy hashes it."""
    from agent.core.privacy.pseudonym import HFRowPseudonyms

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
