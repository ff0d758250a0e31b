"""A declared row from an ``Event``: the one shape every writer of the HF Dataset emits.

``to_row(event)`` returns exactly the columns of ``schema.COLUMNS``, in order, each of its
declared type or null. A value of the wrong type is converted when that loses nothing (an int
where a float is declared, a whole float where an int is) and otherwise written as null; either
way it is counted in ``SchemaIssues``, never allowed to change a column's type. The conversion
per declared type is a table (``_CONVERT``), one small function per type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from agent.core.dataset.schema import (
    BOOL,
    COLUMNS,
    EVENTS,
    FLOAT64,
    INT64,
    JSON_TEXT,
    LIST,
    STRING,
    TIMESTAMP,
    Field,
)

__all__ = ["SchemaIssues", "to_row"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A converter's answer for "not representable as the declared type": the value becomes null.
_NULL = object()


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
    row: dict[str, Any] = {}
    for col in COLUMNS:
        if col.name == "data":
            row["data"] = _data_text(event.event_type, event.data, issues)
        else:
            row[col.name] = _typed(col, getattr(event, col.name), issues, col.name)
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
    try:
        out = _CONVERT[field.dtype](value, issues, path)
    except (OverflowError, ValueError):
        out = _NULL
    if out is _NULL:
        issues.nulled.append(path)
        return None
    return out


# -- one converter per declared type: the value as that type, or _NULL --


def _as_string(value: Any, issues: SchemaIssues, path: str) -> Any:
    if isinstance(value, str):
        return _clean_str(value, issues)
    if isinstance(value, bool | int | float):
        issues.coerced.append(path)
        return _clean_str(str(value), issues)
    return _NULL


def _as_bool(value: Any, issues: SchemaIssues, path: str) -> Any:
    return value if isinstance(value, bool) else _NULL


def _as_int(value: Any, issues: SchemaIssues, path: str) -> Any:
    if isinstance(value, bool):
        return _NULL
    if isinstance(value, float) and value.is_integer():
        issues.coerced.append(path)
        value = int(value)
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return _NULL


def _as_float(value: Any, issues: SchemaIssues, path: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _NULL
    f = float(value)
    return f if math.isfinite(f) else _NULL


def _as_timestamp(value: Any, issues: SchemaIssues, path: str) -> Any:
    if not isinstance(value, datetime):
        return _NULL
    ts = value if value.tzinfo else value.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def _as_list(value: Any, issues: SchemaIssues, path: str) -> Any:
    return _json_safe(list(value), issues) if isinstance(value, list | tuple) else _NULL


_CONVERT: dict[str, Callable[[Any, SchemaIssues, str], Any]] = {
    STRING: _as_string,
    JSON_TEXT: _as_string,
    BOOL: _as_bool,
    INT64: _as_int,
    FLOAT64: _as_float,
    TIMESTAMP: _as_timestamp,
    LIST: _as_list,
}


# -- free-form values --


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
