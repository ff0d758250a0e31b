"""Preview what a redaction policy sends to LangFuse, without sending anything.

Used by ``ml-intern observability`` commands and by tests:

- ``sample_call_record()``: a realistic call with secrets planted in every kind of content
  (fake, obviously so, and assembled at run time so secret scanners do not flag this file).
- ``load_call_record(path)``: a ``CallRecord`` from a JSON file written with the record's field
  names; missing ids get placeholders, datetimes are ISO strings. Bad files raise ``ValueError``
  with a message that names the problem.
- ``preview(record, policy)``: ``{"original": ..., "redacted": ..., "report": ...}``, all
  JSON-ready, showing only the record fields that can carry content.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.core.privacy.redaction import RedactionPolicy, redact
from agent.core.records import CallRecord

__all__ = ["CONTENT_KEYS", "load_call_record", "preview", "sample_call_record"]

# The CallRecord fields that can carry content (what a preview shows).
CONTENT_KEYS: tuple[str, ...] = (
    "messages",
    "tools",
    "model_parameters",
    "output",
    "metadata",
    "error_message",
    "user_id",
)

_SAMPLE_TIME = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def _fake(prefix: str, body: str, length: int) -> str:
    """A fake token of ``length`` characters after ``prefix``, built from ``body``."""
    return prefix + (body * (length // len(body) + 1))[:length]


def sample_call_record() -> CallRecord:
    """A realistic LLM call with a secret planted in each kind of content."""
    hf_token = _fake("hf_", "FakeSampleToken0", 34)
    openai_key = _fake("sk-proj-", "FakeSampleKey0", 48)
    aws_key = _fake("AKIA", "FAKESAMPLE0", 16)
    github_token = _fake("ghp_", "FakeSampleGh0", 36)
    messages = (
        {
            "role": "system",
            "content": (
                "You are ml-intern, an assistant that trains and evaluates models on the "
                f"Hugging Face Hub. Use the token {hf_token} to push checkpoints."
            ),
        },
        {
            "role": "user",
            "content": (
                f"My OpenAI key is {openai_key}; email me at alice@example.com when the "
                "fine-tuning run on squad finishes."
            ),
        },
        {
            "role": "assistant",
            "content": "I'll check the S3 bucket with the training data first.",
            "tool_calls": [
                {
                    "id": "call_s3_ls",
                    "type": "function",
                    "function": {
                        "name": "bash",
                        "arguments": json.dumps(
                            {
                                "command": (
                                    f"AWS_ACCESS_KEY_ID={aws_key} "
                                    "aws s3 ls s3://alice-datasets/squad/"
                                )
                            }
                        ),
                    },
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_s3_ls",
            "name": "bash",
            "content": (
                "2025-01-01 train.parquet\n2025-01-01 dev.parquet\n"
                f"warning: GITHUB_TOKEN={github_token} found in environment"
            ),
        },
    )
    tools = (
        {
            "type": "function",
            "function": {
                "name": "bash",
                "description": "Run a shell command in the sandbox and return its output.",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "string", "description": "the command"}},
                    "required": ["command"],
                },
            },
        },
    )
    output = {
        "role": "assistant",
        "content": "The data is there: train.parquet and dev.parquet. Starting the run now.",
        "reasoning_content": (
            "The listing shows both splits; alice wants an email at alice@example.com."
        ),
        "tool_calls": None,
    }
    return CallRecord(
        event_id="evt_sample",
        kind="main",
        session_id="sess_sample",
        user_id="alice@example.com",
        turn_index=3,
        trace_id=None,
        observation_id=None,
        model="openai/gpt-4o-mini",
        start_time=_SAMPLE_TIME,
        end_time=_SAMPLE_TIME.replace(second=2),
        messages=messages,
        tools=tools,
        model_parameters={"temperature": 0.2, "max_tokens": 1024, "tool_choice": "auto"},
        output=output,
        usage={"prompt_tokens": 412, "completion_tokens": 38, "total_tokens": 450},
        cost_usd=0.000085,
        metadata={"kind": "main", "dataset": "squad"},
    )


# -- loading ------------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(CallRecord)}
_PLACEHOLDERS: dict[str, Any] = {
    "event_id": "evt_preview",
    "kind": "main",
    "session_id": "sess_preview",
    "user_id": None,
    "turn_index": 0,
    "trace_id": None,
    "observation_id": None,
    "model": "unknown",
}
_TIME_FIELDS = ("start_time", "end_time", "completion_start_time")


def _time(name: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO 8601 string, got {type(value).__name__}")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 datetime: {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _expect(name: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be {what}, got {type(value).__name__}")


def _read_object(p: Path) -> dict[str, Any]:
    """The JSON object in ``p``, with known field names and ``messages``."""
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read call record {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"call record {p} is not valid JSON: {exc.msg} (line {exc.lineno})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"call record {p} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"call record {p}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(_FIELDS)}"
        )
    if "messages" not in data:
        raise ValueError(f"call record {p}: missing 'messages' (a list of message objects)")
    return data


def _record_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    """``CallRecord`` keyword arguments from a JSON object: placeholders filled, types checked."""
    kwargs: dict[str, Any] = {**_PLACEHOLDERS, **data}
    messages = kwargs["messages"]
    _expect("messages", messages, list, "a list of message objects")
    for i, m in enumerate(messages):
        _expect(f"messages[{i}]", m, dict, "an object")
    kwargs["messages"] = tuple(messages)
    tools = kwargs.get("tools", [])
    _expect("tools", tools, list, "a list of tool definitions")
    kwargs["tools"] = tuple(tools)
    for name in ("model_parameters", "usage", "metadata"):
        kwargs.setdefault(name, {})
        _expect(name, kwargs[name], dict, "an object")
    if kwargs.get("output") is not None:
        _expect("output", kwargs["output"], dict, "an object or null")
    for name in ("event_id", "kind", "session_id", "model"):
        _expect(name, kwargs[name], str, "a string")
    _expect("turn_index", kwargs["turn_index"], int, "an integer")
    for name in _TIME_FIELDS:
        kwargs[name] = _time(name, kwargs.get(name))
    kwargs["start_time"] = kwargs["start_time"] or datetime.now(UTC)
    kwargs["end_time"] = kwargs["end_time"] or kwargs["start_time"]
    return kwargs


def load_call_record(path: str | os.PathLike[str]) -> CallRecord:
    """A ``CallRecord`` from a JSON object with the record's field names.

    ``messages`` (a list of message objects) is required; everything else is optional. Unknown
    keys are an error (they usually are typos, and a preview must show what would go out).
    """
    p = Path(path)
    data = _read_object(p)
    try:
        return CallRecord(**_record_kwargs(data))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"call record {p}: {exc}") from None


# -- preview ------------------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


def _content_view(record: CallRecord) -> dict[str, Any]:
    return {k: _jsonable(getattr(record, k)) for k in CONTENT_KEYS}


def preview(record: CallRecord, policy: RedactionPolicy) -> dict[str, Any]:
    """``original`` and ``redacted`` content of ``record`` side by side, and the ``report``."""
    redacted, report = redact(record, policy)
    return {
        "original": _content_view(record),
        "redacted": _content_view(redacted),
        "report": report.as_metadata(),
    }
