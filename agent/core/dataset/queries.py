"""DuckDB queries over an HF Dataset directory: the live JSON Lines shards (``DIR/data/*.jsonl``)
and any Parquet parts beside them (``DIR/data/**/*.parquet``, e.g. a snapshot of the Hub repo
downloaded with ``hf download --repo-type dataset REPO --local-dir DIR``).

Both are read with the declared schema (``agent.core.dataset.schema``), so rows of every event
type, day and writer read together, and rows of an older version (``data`` as an object rather
than JSON text) read too: DuckDB gives the object back as its JSON text.

What cannot be read is left out and counted by ``data_problems``, never an error after the
answer: a JSON line that is not a row (corrupt, cut short, not UTF-8; any length), a Parquet file
that is not whole (no ``PAR1`` at both ends: an interrupted download). A directory whose path is
not UTF-8 (bytes from a non-UTF-8 file system, which DuckDB's SQL strings cannot carry) is read
through ``/proc/self/fd`` on Linux.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from agent.core.dataset import schema

JSONL_GLOB = "data/**/*.jsonl"
PARQUET_GLOB = "data/**/*.parquet"


PARQUET_MAGIC = b"PAR1"


def _files(directory: str | Path, pattern: str) -> list[Path]:
    data = Path(directory) / "data"
    if not data.is_dir():
        return []
    suffix = pattern.rsplit(".", 1)[-1]
    out = [p for p in data.rglob(f"*.{suffix}") if p.is_file() and p.stat().st_size > 0]
    if suffix == "parquet":
        out = [p for p in out if _whole_parquet(p)]
    return [p for p in out if _sql_path(p) is not None]


def _whole_parquet(path: Path) -> bool:
    """Whether ``path`` starts and ends with Parquet's magic (an interrupted download or a
    truncated copy does not end with it; DuckDB would refuse the whole query)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            fh.seek(-4, os.SEEK_END)
            return head == PARQUET_MAGIC and fh.read(4) == PARQUET_MAGIC
    except OSError:
        return False


def broken_parquet_files(directory: str | Path) -> list[Path]:
    """Parquet files under ``directory/data`` that the queries leave out (not whole)."""
    data = Path(directory) / "data"
    if not data.is_dir():
        return []
    return sorted(p for p in data.rglob("*.parquet") if p.is_file() and not _whole_parquet(p))


def has_data(directory: str | Path) -> bool:
    return bool(_files(directory, JSONL_GLOB) or _files(directory, PARQUET_GLOB))


# Directories opened to reach files whose path is not UTF-8: kept open (DuckDB opens the files
# when a query runs), at most a few per process.
_DIR_FDS: dict[Path, int] = {}
_MAX_DIR_FDS = 64


def _sql_path(path: Path) -> str | None:
    """``path`` as DuckDB can open it: itself when UTF-8, else through an open descriptor of
    its highest directory below which the rest of the path is UTF-8 (the telemetry directory
    itself, for our files), on Linux's ``/proc/self/fd``; None when neither works."""
    text = str(path)
    if _utf8(text):
        return text
    base = None
    for ancestor in path.parents:
        if not _utf8(str(path.relative_to(ancestor))):
            break
        base = ancestor
    if base is None:
        return None  # the file's own name is not UTF-8: someone else's file, not ours
    fd = _DIR_FDS.get(base)
    if fd is None:
        if len(_DIR_FDS) >= _MAX_DIR_FDS or not os.path.isdir("/proc/self/fd"):
            return None
        try:
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return None
        _DIR_FDS[base] = fd
    return f"/proc/self/fd/{fd}/{path.relative_to(base)}"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _quote(path: Path) -> str:
    text = _sql_path(path)
    assert text is not None  # _files lists only the paths it can give
    return "'" + text.replace("'", "''") + "'"


def source_sql(directory: str | Path) -> str:
    """A subquery with every row under ``directory``, typed as declared."""
    cols = ", ".join(f'"{c}"' for c in schema.COLUMN_NAMES)
    parts = []
    jsonl = sorted(_files(directory, JSONL_GLOB))
    if jsonl:
        # An explicit file list, not a glob: a directory named like a glob (a[b]) still works.
        files = "[" + ", ".join(_quote(p) for p in jsonl) + "]"
        # ignore_errors turns a corrupt line into a row of NULLs: not a row (data_problems
        # counts them, so the CLI can say so).
        parts.append(
            f"SELECT {cols} FROM read_json({files}, format='newline_delimited', "
            f"columns={schema.duckdb_columns_sql()}, ignore_errors=true) "
            "WHERE event_id IS NOT NULL"
        )
    parquet = sorted(_files(directory, PARQUET_GLOB))
    if parquet:
        files = "[" + ", ".join(_quote(p) for p in parquet) + "]"
        parts.append(f"SELECT {cols} FROM read_parquet({files}, union_by_name=true)")
    if not parts:
        types = schema.duckdb_columns()
        nulls = ", ".join(f'CAST(NULL AS {types[c]}) AS "{c}"' for c in schema.COLUMN_NAMES)
        parts.append(f"SELECT {nulls} WHERE false")
    return "(" + " UNION ALL ".join(parts) + ")"


def connect(directory: str | Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view ``events`` over every row of ``directory``."""
    con = duckdb.connect()
    con.execute(f"CREATE VIEW events AS SELECT * FROM {source_sql(directory)}")
    return con


def _where(session_ids: Sequence[str] | None, trace_id: str | None = None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if session_ids:
        clauses.append(f"session_id IN ({', '.join('?' for _ in session_ids)})")
        params.extend(session_ids)
    if trace_id:
        clauses.append("langfuse_trace_id = ?")
        params.append(trace_id)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _num(field: str, sql_type: str = "DOUBLE") -> str:
    return f"TRY_CAST(data->>'{field}' AS {sql_type})"


def summary(directory: str | Path, *, session_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """LLM calls, errors, tokens and cost per kind; events per type; the all-in cost per session
    (LLM calls + jobs + sandboxes)."""
    where, params = _where(session_ids)
    con = connect(directory)
    try:
        llm_where = (
            where + " AND " if where else " WHERE "
        ) + "event_type IN ('llm_call', 'llm_call_error')"
        calls = con.execute(
            f"""
            SELECT kind,
                   count(*) FILTER (WHERE event_type = 'llm_call') AS calls,
                   count(*) FILTER (WHERE event_type = 'llm_call_error') AS errors,
                   coalesce(sum({_num("prompt_tokens", "BIGINT")}), 0),
                   coalesce(sum({_num("completion_tokens", "BIGINT")}), 0),
                   coalesce(sum({_num("total_tokens", "BIGINT")}), 0),
                   coalesce(sum({_num("cost_usd")}), 0)
            FROM events {llm_where}
            GROUP BY kind ORDER BY kind
            """,
            params,
        ).fetchall()
        events = con.execute(
            f"SELECT event_type, count(*) FROM events {where} GROUP BY 1 ORDER BY 1", params
        ).fetchall()
        totals = con.execute(
            f"SELECT count(*), count(DISTINCT session_id) FROM events {where}", params
        ).fetchall()
        per_session = con.execute(
            f"""
            SELECT session_id,
                   any_value(user_id) FILTER (WHERE user_id IS NOT NULL),
                   min(timestamp),
                   count(*) FILTER (WHERE event_type = 'llm_call'),
                   coalesce(sum({_num("cost_usd")}) FILTER (WHERE event_type = 'llm_call'), 0),
                   coalesce(sum({_num("estimated_cost_usd")})
                            FILTER (WHERE event_type = 'hf_job_complete'), 0),
                   coalesce(sum({_num("estimated_cost_usd")})
                            FILTER (WHERE event_type IN ('sandbox_create', 'sandbox_destroy')), 0),
                   bool_or(event_type = 'session_end')
            FROM events {where}
            GROUP BY session_id ORDER BY min(timestamp), session_id
            """,
            params,
        ).fetchall()
    finally:
        con.close()
    llm = [
        {
            "kind": k,
            "calls": c,
            "errors": e,
            "prompt_tokens": p,
            "completion_tokens": o,
            "total_tokens": t,
            "cost_usd": float(cost),
        }
        for k, c, e, p, o, t, cost in calls
    ]
    sessions = [
        {
            "session_id": sid,
            "user_id": uid,
            "started": str(started) if started is not None else None,
            "llm_calls": n,
            "llm_cost_usd": float(lc),
            "job_cost_usd": float(jc),
            "sandbox_cost_usd": float(sc),
            "total_cost_usd": float(lc) + float(jc) + float(sc),
            "ended": bool(ended),
        }
        for sid, uid, started, n, lc, jc, sc, ended in per_session
    ]
    total = totals[0] if totals else (0, 0)
    return {
        "llm_calls": llm,
        "events": [{"event_type": t, "count": n} for t, n in events],
        "total_events": total[0],
        "sessions": total[1],
        "session_costs": sessions,
        "llm_cost_usd": sum(r["cost_usd"] for r in llm),
        "job_cost_usd": sum(s["job_cost_usd"] for s in sessions),
        "sandbox_cost_usd": sum(s["sandbox_cost_usd"] for s in sessions),
        "total_cost_usd": sum(s["total_cost_usd"] for s in sessions),
    }


def rows(
    directory: str | Path,
    *,
    trace_id: str | None = None,
    session_ids: Sequence[str] | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Rows as dicts (``data`` decoded, ``timestamp`` as ISO 8601 text), oldest first."""
    where, params = _where(session_ids, trace_id)
    order = "DESC" if newest_first else "ASC"
    lim = f" LIMIT {int(limit)}" if limit else ""
    con = connect(directory)
    try:
        cur = con.execute(
            f"SELECT * REPLACE (strftime(timestamp AT TIME ZONE 'UTC', "
            f"'%Y-%m-%dT%H:%M:%S.%f+00:00') AS timestamp) "
            f"FROM events {where} ORDER BY events.timestamp {order}, event_id{lim}",
            params,
        )
        names = [d[0] for d in cur.description]
        out = []
        for values in cur.fetchall():
            row = dict(zip(names, values, strict=True))
            if isinstance(row.get("data"), str):
                with contextlib.suppress(ValueError):
                    row["data"] = json.loads(row["data"])
            out.append(row)
        return out
    finally:
        con.close()


def tail(
    directory: str | Path, *, limit: int = 20, session_ids: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The ``limit`` most recent events, oldest first."""
    return list(reversed(rows(directory, session_ids=session_ids, limit=limit, newest_first=True)))


# The numbers the summary adds up: a value that is not a number there is counted as 0.
SUMMED_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "estimated_cost_usd",
)


def data_problems(directory: str | Path) -> dict[str, int]:
    """What the queries skip or cannot add up: ``skipped_lines`` (JSON Lines that are not a row:
    corrupt, cut short, not JSON, not UTF-8), ``skipped_files`` (Parquet files that are not
    whole) and ``non_numeric`` (rows whose token or cost field is not a number). One more pass
    over the files; for notices, not for the results themselves."""
    out = {"skipped_lines": 0, "non_numeric": 0, "skipped_files": 0}
    con = duckdb.connect()
    try:
        jsonl = sorted(_files(directory, JSONL_GLOB))
        if jsonl:
            out["skipped_lines"] = _bad_lines(con, jsonl)
        out["skipped_files"] = len(broken_parquet_files(directory))
        checks = " OR ".join(
            f"(data->>'{f}' IS NOT NULL AND {_num(f)} IS NULL)" for f in SUMMED_FIELDS
        )
        (non_numeric,) = con.execute(
            f"SELECT count(*) FROM {source_sql(directory)} WHERE {checks}"
        ).fetchall()[0]
        out["non_numeric"] = int(non_numeric)
    finally:
        con.close()
    return out


def _bad_lines(con: duckdb.DuckDBPyConnection, files: list[Path]) -> int:
    """JSON lines that are not a row. DuckDB counts them in one pass; a file it cannot read as
    lines (one past its line-size limit, bytes that are not UTF-8) is counted line by line here
    instead, as ``read_json`` reads it: a line that is not UTF-8 JSON with an ``event_id``."""
    try:
        return _bad_lines_sql(con, files)
    except duckdb.Error:
        pass
    bad = 0
    for path in files:
        try:
            bad += _bad_lines_sql(con, [path])
        except duckdb.Error:
            bad += _bad_lines_slow(path)
    return bad


def _bad_lines_sql(con: duckdb.DuckDBPyConnection, files: list[Path]) -> int:
    files_sql = "[" + ", ".join(_quote(p) for p in files) + "]"
    # Each line as one text value (no delimiter, quote or escape can occur in it).
    (n,) = con.execute(
        f"SELECT count(*) FROM read_csv({files_sql}, columns={{'line': 'VARCHAR'}}, "
        "delim=chr(1), quote='', escape='', header=false, auto_detect=false) "
        "WHERE trim(line) <> '' AND (NOT json_valid(line) OR json_type(line) <> 'OBJECT' "
        "OR line->>'$.event_id' IS NULL)"
    ).fetchall()[0]
    return int(n)


def _bad_lines_slow(path: Path) -> int:
    bad = 0
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:  # UnicodeDecodeError included
                    bad += 1
                    continue
                if not isinstance(row, dict) or row.get("event_id") is None:
                    bad += 1
    except OSError:
        pass
    return bad
