"""Small typed records of what may be forwarded to LangFuse.

litellm's kwargs and our telemetry events are converted into these records once, field by field
(never by copying kwargs: they hold the provider API key, api_base and headers), by
``agent.core.forwarding.capture``. Everything after that (redaction, the LangFuse SDK calls)
reads only these records. They are plain data shared by the redaction walker and the forwarder,
so they sit below both (no imports of ours), and they pickle (the forwarding sidecar receives
them over a pipe).

Content is kept in OpenAI chat format, which is what litellm hands its callbacks:
- a message: ``{"role": ..., "content": str | list[part] | None, "tool_calls": [...],
  "tool_call_id": ..., "name": ..., "reasoning_content": ...}``;
- a tool call: ``{"id": ..., "type": "function", "function": {"name": ..., "arguments": str}}``;
- a tool definition: ``{"type": "function", "function": {"name", "description", "parameters"}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class CallerContext:
    """litellm's LangFuse metadata keys given on a call: names and labels that steer where and
    under which names the generation is filed (secret-scrubbed, not content). The caller's
    ``trace_metadata`` and other keys are content: they travel in ``CallRecord.metadata``."""

    tags: tuple[str, ...] = ()
    trace_name: str | None = None
    generation_name: str | None = None
    version: str | None = None
    trace_version: str | None = None
    # A LangFuse prompt (object or name + version) the generation is linked to.
    prompt_name: str | None = None
    prompt_version: int | None = None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One LLM call, as bound for a LangFuse generation."""

    event_id: str
    kind: str
    session_id: str
    user_id: str | None
    turn_index: int
    trace_id: str | None
    observation_id: str | None
    model: str
    start_time: datetime
    end_time: datetime
    messages: tuple[dict[str, Any], ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    model_parameters: dict[str, Any] = field(default_factory=dict)
    # The assistant message the call returned (None on failure).
    output: dict[str, Any] | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    completion_start_time: datetime | None = None
    stream: bool = False
    error_type: str | None = None
    error_message: str | None = None
    # Extra metadata for the generation (redacted per key under the `metadata` field).
    metadata: dict[str, Any] = field(default_factory=dict)
    # A per-call redaction spec from the call's metadata: may only make the policy stricter.
    redact_override: str | None = None
    # The observation the generation nests under (the turn's span or a caller's), and whether
    # the trace is a caller's (its trace-level attributes are then left alone).
    parent_id: str | None = None
    caller_trace: bool = False
    caller: CallerContext = field(default_factory=CallerContext)
    # What ``session.id`` carries on the wire, set by ``redact()`` (the id scrubbed, or its
    # pseudonym under ``session_id=hash``). ``session_id`` itself stays raw: ids are derived from it.
    wire_session_id: str | None = None


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """A telemetry event (tool call, job, sandbox, turn) as bound for a span on the turn's trace.

    ``input_field`` / ``output_field`` name the redaction field that governs ``input`` /
    ``output`` (for example ``tool_calls`` for a tool's arguments, ``tool_results`` for its
    result, ``user_messages`` for a turn's input, ``completion`` for a turn's reply).
    """

    event_id: str
    event_type: str
    name: str
    session_id: str | None
    user_id: str | None
    turn_index: int | None
    trace_id: str | None
    observation_id: str | None
    timestamp: datetime
    start_time: datetime | None = None
    input: Any = None
    output: Any = None
    input_field: str | None = None
    output_field: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status_message: str | None = None
    level: str = "DEFAULT"
    # The redaction field that governs ``status_message`` (None: ``error_message``). A tool's
    # error text quotes its arguments and output, so it is ``tool_results``.
    status_field: str | None = None
    # What ``session.id`` carries on the wire, set by ``redact()`` (the id scrubbed, or its
    # pseudonym under ``session_id=hash``). ``session_id`` itself stays raw: ids are derived from it.
    wire_session_id: str | None = None


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    """A ``feedback`` event as bound for a LangFuse score on the turn's trace."""

    event_id: str
    trace_id: str
    name: str
    value: float
    session_id: str | None = None
    user_id: str | None = None
    comment: str | None = None
    # What ``session.id`` carries on the wire, set by ``redact()`` (the id scrubbed, or its
    # pseudonym under ``session_id=hash``). ``session_id`` itself stays raw: ids are derived from it.
    wire_session_id: str | None = None
