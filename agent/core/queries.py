"""DuckDB queries over the local HF Dataset (``DIR/data/*.jsonl``).

The schema is given explicitly (``data`` as JSON) so rows of every event type read together
whatever keys their ``data`` has, and a dataset written by a newer version still reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

COLUMNS = {
    "event_id": "VARCHAR",
    "event_type": "VARCHAR",
    "timestamp": "VARCHAR",
    "session_id": "VARCHAR",
    "user_id": "VARCHAR",
    "turn_index": "BIGINT",
    "kind": "VARCHAR",
    "data": "JSON",
    "langfuse_trace_id": "VARCHAR",
    "langfuse_observation_id": "VARCHAR",
    "langfuse_sampled": "BOOLEAN",
}


def has_data(directory: str | Path) -> bool:
    data = Path(directory) / "data"
    return data.is_dir() and any(p.stat().st_size > 0 for p in data.glob("*.jsonl"))


def _source(directory: str | Path) -> str:
    pattern = str(Path(directory) / "data" / "*.jsonl").replace("'", "''")
    cols = ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items())
    return (
        f"(SELECT * FROM read_json('{pattern}', format='newline_delimited', "
        f"columns={{{cols}}}, ignore_errors=true))"
    )


def _where(session_ids: Sequence[str] | None, trace_id: str | None = None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if session_ids:
        clauses.append(f"session_id IN ({', '.join('?' for _ in session_ids)})")
        params.extend(session_ids)
    if trace_id:
        clauses.append("langfuse_trace_id = ?")
        params.append(trace_id)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def summary(directory: str | Path, *, session_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """LLM calls, errors, tokens and cost per kind; events per type."""
    src = _source(directory)
    where, params = _where(session_ids)
    con = duckdb.connect()
    try:
        llm_where = (
            where + " AND " if where else " WHERE "
        ) + "event_type IN ('llm_call', 'llm_call_error')"
        calls = con.execute(
            f"""
            SELECT kind,
                   count(*) FILTER (WHERE event_type = 'llm_call') AS calls,
                   count(*) FILTER (WHERE event_type = 'llm_call_error') AS errors,
                   coalesce(sum(CAST(data->>'prompt_tokens' AS BIGINT)), 0) AS prompt_tokens,
                   coalesce(sum(CAST(data->>'completion_tokens' AS BIGINT)), 0) AS completion_tokens,
                   coalesce(sum(CAST(data->>'total_tokens' AS BIGINT)), 0) AS total_tokens,
                   coalesce(sum(CAST(data->>'cost_usd' AS DOUBLE)), 0) AS cost_usd
            FROM {src} {llm_where}
            GROUP BY kind ORDER BY kind
            """,
            params,
        ).fetchall()
        events = con.execute(
            f"SELECT event_type, count(*) FROM {src} {where} GROUP BY 1 ORDER BY 1", params
        ).fetchall()
        totals = con.execute(
            f"SELECT count(*), count(DISTINCT session_id) FROM {src} {where}", params
        ).fetchone()
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
    return {
        "llm_calls": llm,
        "events": [{"event_type": t, "count": n} for t, n in events],
        "total_events": totals[0] if totals else 0,
        "sessions": totals[1] if totals else 0,
        "total_cost_usd": sum(r["cost_usd"] for r in llm),
    }


def rows(
    directory: str | Path,
    *,
    trace_id: str | None = None,
    session_ids: Sequence[str] | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    src = _source(directory)
    where, params = _where(session_ids, trace_id)
    order = "DESC" if newest_first else "ASC"
    lim = f" LIMIT {int(limit)}" if limit else ""
    con = duckdb.connect()
    try:
        cur = con.execute(f"SELECT * FROM {src} {where} ORDER BY timestamp {order}{lim}", params)
        names = [d[0] for d in cur.description]
        out = []
        for values in cur.fetchall():
            row = dict(zip(names, values, strict=True))
            if isinstance(row.get("data"), str):
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
