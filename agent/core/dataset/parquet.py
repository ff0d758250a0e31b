"""JSON Lines rows to Parquet with the declared types: the form of the parts pushed to the Hub.

DuckDB (already a dependency) reads the lines with ``schema.duckdb_columns_sql()`` and writes
zstd-compressed Parquet, so every part has the same column types whatever its rows held. A line
that is not a row (written by hand, or by something else) is left out and counted; the others
are converted.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from agent.core.dataset import schema

__all__ = ["to_parquet"]


def to_parquet(lines: bytes) -> tuple[bytes, int, int]:
    """JSON Lines rows as Parquet with the declared types: (bytes, rows, invalid lines)."""
    import duckdb

    bad = 0
    with tempfile.TemporaryDirectory(prefix="ml-intern-push-") as tmp:
        src, dst = Path(tmp) / "part.jsonl", Path(tmp) / "part.parquet"
        src.write_bytes(lines)
        con = duckdb.connect(config={"threads": 1})
        try:
            try:
                rows = _copy_parquet(con, src, dst)
            except duckdb.Error:
                good, bad = _rows_only(lines)
                src.write_bytes(b"".join(x + b"\n" for x in good))
                rows = _copy_parquet(con, src, dst) if good else 0
        finally:
            con.close()
        return (dst.read_bytes() if rows else b""), rows, bad


def _rows_only(lines: bytes) -> tuple[list[bytes], int]:
    """The lines that are JSON objects, and how many are not."""
    good = []
    bad = 0
    for line in lines.splitlines():
        try:
            if isinstance(json.loads(line), dict):
                good.append(line)
                continue
        except ValueError:
            pass
        bad += 1
    return good, bad


def _copy_parquet(con: Any, src: Path, dst: Path) -> int:
    path = str(src).replace("'", "''")
    out = str(dst).replace("'", "''")
    cols = ", ".join(f'"{c}"' for c in schema.COLUMN_NAMES)
    result = con.execute(
        f"COPY (SELECT {cols} FROM read_json('{path}', format='newline_delimited', "
        f"columns={schema.duckdb_columns_sql()})) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    ).fetchall()
    return int(result[0][0]) if result else 0
