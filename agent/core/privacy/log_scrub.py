"""Log records scrubbed of secrets before any handler sees them.

litellm logs each call's model at INFO (``LiteLLM completion() model= ...``), httpx logs request
URLs, and exception texts we report quote what failed. ``install()`` puts one filter on those
loggers (and on ours) that formats each record once and replaces its text by the scrubbed text
(``agent.core.privacy.scrubber.scrub``: catalogue patterns and known values), so a secret that reached a
model name, a URL or an error never reaches a log file either. Idempotent; a record that cannot
be formatted is left to the logging module's own error handling.
"""

from __future__ import annotations

import logging
import threading

from agent.core.privacy.scrubber import scrub

__all__ = ["SecretLogFilter", "install"]

LOGGERS = (
    "LiteLLM",
    "LiteLLM Router",
    "LiteLLM Proxy",
    "litellm",
    "langfuse",
    "httpx",
    "httpcore",
    "huggingface_hub",
    "agent",
    "agent.telemetry",
)

_lock = threading.Lock()


class SecretLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = SecretLogFilter()


def install() -> None:
    """Attach the filter to the third-party loggers above and to every ``agent.*`` logger."""
    with _lock:
        names = set(LOGGERS) | {
            name for name in logging.root.manager.loggerDict if name.startswith("agent.")
        }
        for name in names:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
