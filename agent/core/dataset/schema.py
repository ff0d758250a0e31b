"""The declared schema of the HF Dataset: every column, every event type, every ``data`` field.

Defined once, here, and used by everything that writes or reads rows:

- ``COLUMNS`` (every row's columns, in order) and ``EVENTS`` (each event type's ``data`` keys),
  each a ``Field``: name, declared type, meaning. ``agent.core.dataset.rows.to_row`` makes every
  row obey them; ``agent.core.dataset.card`` renders them as the dataset card.
- The schema in each reader's terms: ``features()`` for ``datasets`` (and ``card_features()``,
  the card's ``dataset_info.features``), ``duckdb_columns()`` / ``duckdb_columns_sql()`` for
  DuckDB's ``read_json`` (the queries and the Parquet parts pushed to the Hub),
  ``pandas_dtypes()`` for ``pandas.read_json``. One table (``_SPELLING``) maps each declared
  type to each tool's spelling.

``data`` is one JSON-encoded string column, not a struct: its keys differ per event type, and a
JSON string is the one representation that ``datasets``, DuckDB, pandas, Parquet and the Hub
viewer all accept for every event type, whatever day or version wrote it (a struct's fields
would have to match across files, and a writer one version ahead would break an older card).
Its keys are declared per event type in ``EVENTS`` (name, type, meaning); the card documents
them. Read it with ``json.loads`` (Python) or ``data->>'key'`` (DuckDB).
"""

from __future__ import annotations

from dataclasses import dataclass
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

# Each declared type of a column in each reader's spelling: (datasets and the card, DuckDB,
# pandas). A JSON document is stored as text: every reader accepts a string. (LIST is a type of
# ``data`` keys only: inside the JSON text.)
_SPELLING: dict[str, tuple[str, str, str]] = {
    STRING: ("string", "VARCHAR", "string"),
    INT64: ("int64", "BIGINT", "Int64"),
    FLOAT64: ("float64", "DOUBLE", "Float64"),
    BOOL: ("bool", "BOOLEAN", "boolean"),
    TIMESTAMP: ("timestamp[us, tz=UTC]", "TIMESTAMPTZ", "datetime64[us, UTC]"),
    JSON_TEXT: ("string", "VARCHAR", "string"),
}
_HF, _DUCKDB, _PANDAS = 0, 1, 2


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
_JOB_ID = Field("job_id", STRING, "The job's id.")
_SANDBOX_ID = Field("sandbox_id", STRING, "The sandbox's id.")

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
                    "most 500 characters (agent/core/privacy/error_text.py).",
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
                _JOB_ID,
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
                _JOB_ID,
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
                    "(`agent/core/dataset/pricing.py`) times the wall time, billed by the started "
                    "minute; 0 for a local run; null for an unknown flavor.",
                ),
                _BACKEND,
            ),
        ),
        EventType(
            "sandbox_create",
            "A sandbox for the agent's code is created.",
            (
                _SANDBOX_ID,
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
                _SANDBOX_ID,
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


# -- the schema in each tool's terms --


def features() -> Any:
    """The schema as ``datasets.Features`` (imports ``datasets``)."""
    import datasets

    return datasets.Features.from_dict(
        {c.name: {"dtype": _SPELLING[c.dtype][_HF], "_type": "Value"} for c in COLUMNS}
    )


def card_features() -> list[dict[str, str]]:
    """The schema as the card's ``dataset_info.features`` list."""
    return [{"name": c.name, "dtype": _SPELLING[c.dtype][_HF]} for c in COLUMNS]


def duckdb_columns() -> dict[str, str]:
    return {c.name: _SPELLING[c.dtype][_DUCKDB] for c in COLUMNS}


def duckdb_columns_sql() -> str:
    """The ``columns={...}`` argument of DuckDB's ``read_json`` for these rows."""
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in duckdb_columns().items()) + "}"


def pandas_dtypes() -> dict[str, str]:
    return {c.name: _SPELLING[c.dtype][_PANDAS] for c in COLUMNS}
