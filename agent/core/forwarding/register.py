"""One forwarder per process, registered with litellm once.

``acquire(settings, config, policy)`` returns the process-wide forwarder, creating it (and
putting it in ``litellm.callbacks``) on first use; a second setup with the same settings reuses
it, a setup with other settings shuts the previous one down first (one LangFuse client per
process). ``release(forwarder, timeout)`` flushes while others still use it and, for the last
user, unregisters and shuts it down (bounded).

litellm's own ``langfuse`` / ``langfuse_otel`` callbacks are never left registered beside ours:
they fall back to a cloud host.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from agent.config import AgentConfig
from agent.core.forwarding.gate import forwarder_options
from agent.core.forwarding.settings import LangfuseSettings
from agent.core.internals import litellm as litellm_internals

if TYPE_CHECKING:
    from agent.core.forwarding.logger import LangfuseForwardingLogger

__all__ = ["acquire", "register", "release", "unregister"]

logger = logging.getLogger(__name__)

_register_lock = threading.Lock()

_LITELLM_LANGFUSE_CALLBACKS = ("langfuse", "langfuse_otel")


def _filter_litellm_callbacks(keep: Any) -> None:
    # litellm copies entries of ``litellm.callbacks`` into its other lists at call time.
    for lst in litellm_internals.callback_lists():
        lst[:] = [cb for cb in lst if keep(cb)]


def register(forwarder: LangfuseForwardingLogger) -> None:
    """Put ``forwarder`` in ``litellm.callbacks``, replacing any other instance of ours, and
    never alongside litellm's own LangFuse callbacks (which fall back to a cloud host)."""
    import litellm

    from agent.core.forwarding.logger import LangfuseForwardingLogger

    with _register_lock:
        _filter_litellm_callbacks(
            lambda cb: (
                not isinstance(cb, LangfuseForwardingLogger)
                and cb not in _LITELLM_LANGFUSE_CALLBACKS
            )
        )
        litellm.callbacks = [*litellm.callbacks, forwarder]


def unregister(forwarder: LangfuseForwardingLogger) -> None:
    with _register_lock:
        _filter_litellm_callbacks(lambda cb: cb is not forwarder)


# -- the process-wide forwarder (one LangFuse client per process) --

_lock = threading.Lock()
_forwarder: LangfuseForwardingLogger | None = None
_key: tuple[Any, ...] | None = None
_users = 0


def acquire(
    settings: LangfuseSettings, config: AgentConfig, policy: Any
) -> LangfuseForwardingLogger:
    global _forwarder, _key, _users
    options = forwarder_options(config)
    key = (settings, policy, options)
    with _lock:
        if _forwarder is not None and _key == key and not _forwarder.closed:
            _users += 1
            return _forwarder
        if _forwarder is not None and not _forwarder.closed:
            logger.warning("LangFuse settings changed: shutting the previous forwarder down")
            _forwarder.shutdown(timeout=config.flush_timeout_s)
        sidecar = None
        if options.mode == "sidecar":
            from agent.core.forwarding.sidecar import Sidecar

            # Started before the logger's module is imported (performance: that import is
            # litellm's, seconds of this process's start-up; the child's own imports run on
            # another core meanwhile).
            sidecar = Sidecar(settings, policy=policy, options=options)
        try:
            from agent.core.forwarding.logger import LangfuseForwardingLogger

            _forwarder = LangfuseForwardingLogger(
                settings, policy=policy, options=options, sidecar=sidecar
            )
        except BaseException:
            if sidecar is not None:
                sidecar.shutdown(time.monotonic())  # no child left behind
            raise
        _key = key
        _users = 1
        register(_forwarder)
        return _forwarder


def release(forwarder: LangfuseForwardingLogger, timeout: float | None) -> dict[str, Any]:
    global _forwarder, _key, _users
    with _lock:
        if forwarder is _forwarder:
            _users -= 1
            if _users > 0:
                return forwarder.flush_report(timeout)
            _forwarder = None
            _key = None
    unregister(forwarder)
    return forwarder.shutdown(timeout=timeout)
