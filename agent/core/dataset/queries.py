"""DuckDB queries over an HF Dataset directory: the live JSON Lines shards (``DIR/data/*.jsonl``)
and any Parquet parts beside them (``DIR/data/**/*.parquet``, e.g. a snapshot of the Hub repo
downloaded with ``hf download --repo-type dataset REPO --local-dir DIR``).

Both are read with the declared schema (``agent.core.dataset.schema``), so rows of every event
type, day and writer read together, and rows of an older version (``data`` as an object rather
than JSON text) read too: DuckDB gives the object back as its JSON text.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from agent.core.dataset import schema

JSONL_GLOB = "data/**/*.jsonl"
PARQUET_GLOB = "data/**/*.parquet"


def _files(directory: str | Path, pattern: str) -> list[Path]:
    data = Path(directory) / "data"
    if not data.is_dir():
        return []
    suffix = pattern.rsplit(".", 1)[-1]
    return [p for p in data.rglob(f"*.{suffix}") if p.is_file() and p.stat().st_size > 0]


def has_data(directory: str | Path) -> bool:
    return bool(_files(directory, JSONL_GLOB) or _files(directory, PARQUET_GLOB))


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


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
    corrupt, cut short, not JSON) and ``non_numeric`` (rows whose token or cost field is not a
    number). One more pass over the files; for notices, not for the results themselves."""
    out = {"skipped_lines": 0, "non_numeric": 0}
    con = duckdb.connect()
    try:
        jsonl = sorted(_files(directory, JSONL_GLOB))
        if jsonl:
            files = "[" + ", ".join(_quote(p) for p in jsonl) + "]"
            # Each line as one text value (no delimiter, quote or escape can occur in it).
            (bad,) = con.execute(
                f"SELECT count(*) FROM read_csv({files}, columns={{'line': 'VARCHAR'}}, "
                "delim=chr(1), quote='', escape='', header=false, auto_detect=false) "
                "WHERE trim(line) <> '' AND (NOT json_valid(line) OR json_type(line) <> 'OBJECT' "
                "OR line->>'$.event_id' IS NULL)"
            ).fetchall()[0]
            out["skipped_lines"] = int(bad)
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
