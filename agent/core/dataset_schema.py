"""The declared schema of the HF Dataset: every column, every event type, every ``data`` field.

Defined once, here, and used by everything that writes or reads rows:

- ``to_row(event)`` turns an ``Event`` into the one row shape every writer emits: exactly the
  columns of ``COLUMNS`` in order, each of its declared type or null. A value of the wrong type
  is converted when that loses nothing (an int where a float is declared) and otherwise written
  as null; either way it is counted, never allowed to change a column's type.
- ``features()`` is the same schema as ``datasets`` features (the dataset card's
  ``dataset_info.features``); ``duckdb_columns()`` as DuckDB types for ``read_json``;
  ``pandas_dtypes()`` for ``pandas.read_json``.
- ``dataset_card(...)`` renders the card (``README.md`` of the telemetry directory and of the Hub
  repo) from this module: never edit a card by hand, it is rewritten.

``data`` is one JSON-encoded string column, not a struct: its keys differ per event type, and a
JSON string is the one representation that ``datasets``, DuckDB, pandas, Parquet and the Hub
viewer all accept for every event type, whatever day or version wrote it (a struct's fields
would have to match across files, and a writer one version ahead would break an older card).
Its keys are declared per event type in ``EVENTS`` (name, type, meaning); the card documents
them. Read it with ``json.loads`` (Python) or ``data->>'key'`` (DuckDB).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 2

# -- declared types --
# One name per type, mapped to each tool's spelling below.
STRING, INT64, FLOAT64, BOOL, TIMESTAMP, JSON_TEXT, LIST = (
    "string",
    "int64",
    "float64",
    "bool",
    "timestamp[us, tz=UTC]",
    "json",
    "list",
)

_HF_DTYPE = {
    STRING: "string",
    INT64: "int64",
    FLOAT64: "float64",
    BOOL: "bool",
    TIMESTAMP: "timestamp[us, tz=UTC]",
    JSON_TEXT: "string",  # a JSON document as text: every reader accepts a string
}
_DUCKDB_TYPE = {
    STRING: "VARCHAR",
    INT64: "BIGINT",
    FLOAT64: "DOUBLE",
    BOOL: "BOOLEAN",
    TIMESTAMP: "TIMESTAMPTZ",
    JSON_TEXT: "VARCHAR",
}
_PANDAS_DTYPE = {
    STRING: "string",
    INT64: "Int64",
    FLOAT64: "Float64",
    BOOL: "boolean",
    TIMESTAMP: "datetime64[us, UTC]",
    JSON_TEXT: "string",
}


@dataclass(frozen=True, slots=True)
class Field:
    """One column of a row, or one key of an event type's ``data``."""

    name: str
    dtype: str
    description: str


# -- the columns of every row --

COLUMNS: tuple[Field, ...] = (
    Field(
        "event_id",
        STRING,
        "Unique id of the row; for LLM calls also the LangFuse "
        "generation's `hf_event_id` metadata.",
    ),
    Field("event_type", STRING, "What happened: one of the event types below."),
    Field("timestamp", TIMESTAMP, "When it happened (UTC, microseconds)."),
    Field("session_id", STRING, "The agent session the event belongs to."),
    Field(
        "user_id",
        STRING,
        "The session's user, as the operator's application named it (null when none).",
    ),
    Field("turn_index", INT64, "The turn of the session (0-based) the event belongs to."),
    Field(
        "kind",
        STRING,
        "LLM events only: the call site, one of `main`, `research`, "
        "`compaction`, `effort_probe`, `restore`; null otherwise.",
    ),
    Field(
        "data",
        JSON_TEXT,
        "The event's typed metadata as a JSON object encoded as text; "
        "its keys per event type are listed below. Never message content.",
    ),
    Field(
        "langfuse_trace_id",
        STRING,
        "The LangFuse trace of this row (null while forwarding is off).",
    ),
    Field(
        "langfuse_observation_id",
        STRING,
        "The LangFuse observation of this row: the "
        "generation, span, event or score (null while forwarding is off).",
    ),
    Field(
        "langfuse_sampled",
        BOOL,
        "Whether the turn was kept by `LANGFUSE_SAMPLE_RATE` (null while forwarding is off).",
    ),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)


# -- the event types and their data --


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    description: str
    data: tuple[Field, ...]

    def field(self, name: str) -> Field | None:
        return next((f for f in self.data if f.name == name), None)


_MODEL = Field("model", STRING, "The litellm model id.")
_LATENCY = Field("latency_ms", FLOAT64, "Wall time of the call in milliseconds.")
_STREAM = Field("stream", BOOL, "Whether the reply was streamed.")
_TOKENS = (
    Field("prompt_tokens", INT64, "Input tokens, cached ones included."),
    Field("completion_tokens", INT64, "Output tokens."),
    Field("total_tokens", INT64, "Input plus output tokens."),
    Field("cache_read_tokens", INT64, "Input tokens read from the provider's prompt cache."),
    Field("cache_creation_tokens", INT64, "Input tokens written to the provider's prompt cache."),
)
_HARDWARE = Field("hardware", STRING, "Hardware flavor it runs on (`local` for this machine).")
_CREATE_LATENCY = Field(
    "create_latency_s", FLOAT64, "Seconds from the request to a usable sandbox."
)
_BACKEND = Field("backend", STRING, "`local` (this machine: no HF charge) or `hub`.")

EVENTS: dict[str, EventType] = {
    e.name: e
    for e in (
        EventType(
            "llm_call",
            "One successful LLM call.",
            (
                _MODEL,
                _LATENCY,
                Field(
                    "finish_reason",
                    STRING,
                    "Why the model stopped (`stop`, `tool_calls`, `length` ...).",
                ),
                *_TOKENS,
                Field(
                    "cost_usd",
                    FLOAT64,
                    "Cost in USD as litellm prices it (null when the model's price is unknown).",
                ),
                _STREAM,
                Field("tool_calls", INT64, "Tool calls in the reply."),
            ),
        ),
        EventType(
            "llm_call_error",
            "One failed LLM call (the provider's or litellm's exception).",
            (
                _MODEL,
                _LATENCY,
                Field("error_type", STRING, "The exception's class name."),
                Field(
                    "error_message",
                    STRING,
                    "The error message without the call's content, quoted spans or secrets, at "
                    "most 500 characters (agent/core/error_text.py).",
                ),
                Field("http_status", INT64, "The HTTP status of the provider's answer, if any."),
                Field("error_code", STRING, "The provider's error code (or type), if any."),
                _STREAM,
            ),
        ),
        EventType(
            "tool_call",
            "One tool call by the model (arguments and results are never stored).",
            (
                Field("name", STRING, "The tool's name."),
                Field("duration_ms", FLOAT64, "Wall time of the call in milliseconds."),
                Field("ok", BOOL, "False when the tool raised or was unknown."),
                Field("tool_call_id", STRING, "The model's id for the call."),
                Field(
                    "error",
                    STRING,
                    "The error without the tool's arguments, quoted spans or secrets, at most "
                    "500 characters (failed calls only).",
                ),
            ),
        ),
        EventType(
            "turn_start",
            "A user message starts a turn.",
            (Field("message_chars", INT64, "Length of the user's message in characters."),),
        ),
        EventType(
            "turn_complete",
            "A turn ends with the agent's reply (or at the step limit).",
            (
                Field("duration_ms", FLOAT64, "Wall time of the turn in milliseconds."),
                Field("steps", INT64, "Model calls of the main loop in the turn."),
                Field("llm_calls", INT64, "All LLM calls of the turn, sub-agents included."),
                Field("reply_chars", INT64, "Length of the final reply in characters."),
                Field("ok", BOOL, "False when the turn ended without a final answer."),
            ),
        ),
        EventType(
            "hf_job_submit",
            "A job is submitted (HF Jobs, or rehearsed as a local process).",
            (
                Field("job_id", STRING, "The job's id."),
                Field("image", STRING, "The container image (`local-python` for a local run)."),
                Field(
                    "flavor",
                    STRING,
                    "The hardware flavor requested (`cpu-basic`, `a10g-small` ...).",
                ),
                Field(
                    "job_url", STRING, "Link to the job's page on the Hub (null for a local run)."
                ),
                Field("timeout_s", FLOAT64, "The job's timeout in seconds."),
                _BACKEND,
            ),
        ),
        EventType(
            "hf_job_complete",
            "A job ends (completed, error, timeout, canceled).",
            (
                Field("job_id", STRING, "The job's id."),
                Field("status", STRING, "`completed`, `error`, `timeout`, `canceled` ..."),
                Field("duration_s", FLOAT64, "Seconds from submission to the end."),
                Field(
                    "wall_time_s", FLOAT64, "Seconds the job ran on its hardware (what is billed)."
                ),
                Field("flavor", STRING, "The hardware flavor it ran on."),
                Field(
                    "estimated_cost_usd",
                    FLOAT64,
                    "Estimated cost: the flavor's hourly price "
                    "(`agent/core/pricing.py`) times the wall time, billed by the started "
                    "minute; 0 for a local run; null for an unknown flavor.",
                ),
                _BACKEND,
            ),
        ),
        EventType(
            "sandbox_create",
            "A sandbox for the agent's code is created.",
            (
                Field("sandbox_id", STRING, "The sandbox's id."),
                _BACKEND,
                _HARDWARE,
                _CREATE_LATENCY,
                Field(
                    "estimated_cost_usd",
                    FLOAT64,
                    "Estimated cost of creating it (price "
                    "times `create_latency_s`); add `sandbox_destroy`'s for the whole "
                    "sandbox.",
                ),
            ),
        ),
        EventType(
            "sandbox_destroy",
            "A sandbox is torn down.",
            (
                Field("sandbox_id", STRING, "The sandbox's id."),
                Field("lifetime_s", FLOAT64, "Seconds from ready to torn down."),
                Field("runs", INT64, "Code runs in the sandbox."),
                _BACKEND,
                _HARDWARE,
                _CREATE_LATENCY,
                Field(
                    "estimated_cost_usd",
                    FLOAT64,
                    "Estimated cost of its lifetime (price times `lifetime_s`), creation excluded.",
                ),
            ),
        ),
        EventType(
            "feedback",
            "A user's rating of a turn (a score in LangFuse).",
            (
                Field("name", STRING, "The score's name (default `user_feedback`)."),
                Field("value", FLOAT64, "The rating."),
                Field(
                    "has_comment",
                    BOOL,
                    "Whether a comment came with it (the comment goes to LangFuse only).",
                ),
            ),
        ),
        EventType(
            "session_end",
            "A session ends: its usage and cost, all in. One per session.",
            (
                Field("duration_s", FLOAT64, "Seconds from the session's start to its end."),
                Field("turns", INT64, "Turns completed."),
                Field("llm_calls", INT64, "Successful LLM calls."),
                Field("llm_errors", INT64, "Failed LLM calls."),
                Field("prompt_tokens", INT64, "Input tokens of all calls."),
                Field("completion_tokens", INT64, "Output tokens of all calls."),
                Field("total_tokens", INT64, "Input plus output tokens of all calls."),
                Field("llm_cost_usd", FLOAT64, "Cost of all LLM calls in USD."),
                Field(
                    "by_kind",
                    LIST,
                    "Per call site: a list of objects with `kind`, "
                    "`calls`, `errors`, `prompt_tokens`, `completion_tokens`, "
                    "`total_tokens`, `cost_usd`.",
                ),
                Field("tool_calls", INT64, "Tool calls."),
                Field("tool_errors", INT64, "Failed tool calls."),
                Field("hf_jobs", INT64, "Jobs that ended."),
                Field("job_cost_usd", FLOAT64, "Estimated cost of those jobs in USD."),
                Field("sandboxes", INT64, "Sandboxes created."),
                Field("sandbox_cost_usd", FLOAT64, "Estimated cost of the sandboxes in USD."),
                Field("total_cost_usd", FLOAT64, "LLM calls plus jobs plus sandboxes, in USD."),
            ),
        ),
    )
}


# -- a row from an event --


class SchemaIssues:
    """What ``to_row`` had to repair in one row; empty for a row that obeyed the schema."""

    __slots__ = ("coerced", "nulled", "replaced_strings", "undeclared")

    def __init__(self) -> None:
        self.coerced: list[str] = []
        self.nulled: list[str] = []
        self.undeclared: list[str] = []
        self.replaced_strings = 0

    def __bool__(self) -> bool:
        return bool(self.coerced or self.nulled or self.undeclared or self.replaced_strings)


def to_row(event: Any, issues: SchemaIssues | None = None) -> dict[str, Any]:
    """The declared row for ``event``: every column of ``COLUMNS``, in order, typed or null.

    ``data`` is the event's data as JSON text, keys in the writer's order. Lone surrogates (as
    ``os.fsdecode`` makes of non-UTF-8 file names) are replaced by U+FFFD, non-finite floats
    (not valid JSON) become null; both counted in ``issues``. Keys an event type does not
    declare are kept (``data`` is free-form JSON for readers) and listed in ``issues``.
    """
    issues = issues if issues is not None else SchemaIssues()
    values = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "timestamp": event.timestamp,
        "session_id": event.session_id,
        "user_id": event.user_id,
        "turn_index": event.turn_index,
        "kind": event.kind,
        "langfuse_trace_id": event.langfuse_trace_id,
        "langfuse_observation_id": event.langfuse_observation_id,
        "langfuse_sampled": event.langfuse_sampled,
    }
    row: dict[str, Any] = {}
    for col in COLUMNS:
        if col.name == "data":
            row["data"] = _data_text(event.event_type, event.data, issues)
        else:
            row[col.name] = _typed(col, values[col.name], issues, col.name)
    return row


def _data_text(event_type: str, data: Any, issues: SchemaIssues) -> str | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        issues.coerced.append("data")
        data = {"value": data}
    spec = EVENTS.get(event_type)
    clean: dict[str, Any] = {}
    for key, value in data.items():
        key = _clean_str(str(key), issues)
        declared = spec.field(key) if spec is not None else None
        if declared is None:
            if spec is not None:
                issues.undeclared.append(f"data.{key}")
            clean[key] = _json_safe(value, issues)
        else:
            clean[key] = _typed(declared, value, issues, f"data.{key}")
    return json.dumps(clean, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _typed(field: Field, value: Any, issues: SchemaIssues, path: str) -> Any:
    if value is None:
        return None
    dtype = field.dtype
    try:
        if dtype in (STRING, JSON_TEXT):
            if isinstance(value, str):
                return _clean_str(value, issues)
            if isinstance(value, bool | int | float):
                issues.coerced.append(path)
                return _clean_str(str(value), issues)
        elif dtype == BOOL:
            if isinstance(value, bool):
                return value
        elif dtype == INT64:
            if isinstance(value, bool):
                pass
            elif isinstance(value, int):
                if -(2**63) <= value < 2**63:
                    return value
            elif isinstance(value, float) and value.is_integer():
                issues.coerced.append(path)
                return int(value)
        elif dtype == FLOAT64:
            if isinstance(value, bool):
                pass
            elif isinstance(value, int | float):
                f = float(value)
                if math.isfinite(f):
                    return f
        elif dtype == TIMESTAMP:
            if isinstance(value, datetime):
                ts = value if value.tzinfo else value.replace(tzinfo=UTC)
                return ts.astimezone(UTC).isoformat(timespec="microseconds")
        elif dtype == LIST and isinstance(value, list | tuple):
            return _json_safe(list(value), issues)
    except (OverflowError, ValueError):
        pass
    issues.nulled.append(path)
    return None


def _json_safe(value: Any, issues: SchemaIssues, depth: int = 0) -> Any:
    """``value`` as plain JSON: strings cleaned, non-finite floats null, other objects as text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _clean_str(value, issues)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        issues.nulled.append("data")
        return None
    if depth < 32:
        if isinstance(value, Mapping):
            return {
                _clean_str(str(k), issues): _json_safe(v, issues, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [_json_safe(v, issues, depth + 1) for v in value]
    issues.coerced.append("data")
    return _clean_str(str(value), issues)


def _clean_str(s: str, issues: SchemaIssues) -> str:
    """``s`` made encodable as UTF-8: lone surrogates become U+FFFD (counted)."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    out = []
    for ch in s:
        if "\ud800" <= ch <= "\udfff":
            issues.replaced_strings += 1
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


# -- the schema in each tool's terms --


def features() -> Any:
    """The schema as ``datasets.Features`` (imports ``datasets``)."""
    import datasets

    return datasets.Features.from_dict(
        {c.name: {"dtype": _HF_DTYPE[c.dtype], "_type": "Value"} for c in COLUMNS}
    )


def card_features() -> list[dict[str, str]]:
    """The schema as the card's ``dataset_info.features`` list."""
    return [{"name": c.name, "dtype": _HF_DTYPE[c.dtype]} for c in COLUMNS]


def duckdb_columns() -> dict[str, str]:
    return {c.name: _DUCKDB_TYPE[c.dtype] for c in COLUMNS}


def duckdb_columns_sql() -> str:
    """The ``columns={...}`` argument of DuckDB's ``read_json`` for these rows."""
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in duckdb_columns().items()) + "}"


def pandas_dtypes() -> dict[str, str]:
    return {c.name: _PANDAS_DTYPE[c.dtype] for c in COLUMNS}


# -- the dataset card --

CARD_TAGS = ("ml-intern", "telemetry", "llm-observability", "agents", "litellm", "langfuse")


def dataset_card(
    *,
    data_files: str,
    file_format: str,
    pretty_name: str = "ml-intern telemetry",
    license: str = "other",
) -> str:
    """The dataset card (``README.md``): YAML front matter plus a description of every field."""
    import yaml  # a dependency of huggingface_hub and datasets

    header = {
        "pretty_name": pretty_name,
        "license": license,
        "license_details": "Telemetry of the operator's own agents: the operator decides who may "
        "use it.",
        "tags": list(CARD_TAGS),
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": data_files}],
            }
        ],
        "dataset_info": {
            "config_name": "default",
            # No splits/sizes: the files grow, and datasets verifies recorded sizes.
            "features": card_features(),
        },
    }
    yml = yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=1000)
    lines = [
        "---",
        yml.rstrip("\n"),
        "---",
        "",
        f"# {pretty_name}",
        "",
        "<!-- Generated by ml-intern from agent/core/dataset_schema.py (schema version "
        f"{SCHEMA_VERSION}). Do not edit: it is rewritten. -->",
        "",
        "Telemetry of an [ml-intern](https://github.com/huggingface/ml-intern)-style agent: one row "
        "per LLM call and per lifecycle event (turns, tools, jobs, sandboxes, feedback, session "
        "ends). Rows hold metadata only (usage, cost, timing, ids), never prompts, tool "
        "arguments or results; every string is scrubbed of recognisable secrets.",
        "",
        f"Files: `{data_files}` ({file_format}), one file per writer process and day "
        "(and, on the Hub, one per push), each written once and never rewritten.",
        "",
        "## Columns",
        "",
        "| column | type | meaning |",
        "|---|---|---|",
        *(f"| `{c.name}` | {_HF_DTYPE[c.dtype]} | {c.description} |" for c in COLUMNS),
        "",
        "`data` is a JSON object encoded as text (one type for every event type, so every "
        "file loads with the same schema): `json.loads(row['data'])` in Python, "
        "`data->>'cost_usd'` in DuckDB.",
        "",
        "## Event types and their `data`",
        "",
    ]
    for ev in EVENTS.values():
        lines += [f"### `{ev.name}`", "", ev.description, "", "| key | type | meaning |"]
        lines.append("|---|---|---|")
        lines += [f"| `{f.name}` | {f.dtype} | {f.description} |" for f in ev.data]
        lines.append("")
    lines += [
        "## Loading",
        "",
        "```python",
        "import datasets",
        "",
        'ds = datasets.load_dataset("<this repo id, or the local telemetry directory>", '
        'split="train")',
        "```",
        "",
        "Costs: `sum(cost_usd)` of `llm_call` rows plus `sum(estimated_cost_usd)` of "
        "`hf_job_complete`, `sandbox_create` and `sandbox_destroy` rows is what the sessions "
        "cost, all in; each `session_end` row holds that rollup for its session.",
        "",
    ]
    return "\n".join(lines)
