"""What the forwarder is given: where to send and as whom (``LangfuseSettings``) and how to run
(``ForwarderOptions``). Plain frozen data, built by the gate from an ``AgentConfig``; it
pickles (the forwarding sidecar receives it over its pipe) and imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ForwarderOptions", "LangfuseSettings"]


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


@dataclass(frozen=True)
class ForwarderOptions:
    """How the forwarder runs (everything but where to and with which keys): from the config,
    hashable (part of the key that decides whether a setup reuses the running forwarder)."""

    queue_size: int = 10_000
    flush_timeout_s: float = 5.0
    flush_at: int = 64
    flush_interval_s: float = 1.0
    traces_endpoint: str | None = None
    trace_name: str = "ml-intern turn"
    nest_in_caller_trace: bool = True
    # How long a turn span waits after turn_complete for the turn's last children (litellm
    # calls the last call's callback after the turn returned; a sandbox is torn down after it).
    turn_grace_s: float = 2.0
    # "sidecar": redaction, the SDK and the exporter run in a child process of their own;
    # "thread": on a worker thread of this process (also the fallback when no child starts).
    mode: str = "thread"
    # Bytes of redacted messages and tool definitions remembered by content, so the history an
    # agent sends again with every call is redacted once (agent.core.privacy.memo); 0: off.
    content_memo_bytes: int = 8 * 1024 * 1024
