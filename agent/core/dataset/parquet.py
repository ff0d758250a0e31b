"""JSON Lines rows to Parquet with the declared types: the form of the parts pushed to the Hub.

DuckDB (already a dependency) reads the lines with ``schema.duckdb_columns_sql()`` and writes
zstd-compressed Parquet, so every part has the same column types whatever its rows held. A line
that is not a row (not a JSON object, no ``event_id``, or a value DuckDB cannot convert to its
column's declared type, such as ``"timestamp": "yesterday"``: written by hand, or by something
else) is left out and counted (the pusher's ``unpushable_lines``, with a warning naming the
shard); the others are converted, so one bad line never blocks a push. Finding the bad lines
costs nothing while there are none: only a conversion that fails is retried on halves of the
lines (DuckDB itself decides what fits), down to the single lines that do not.
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
                good, misfits = _fitting(con, src, dst, good)
                bad += misfits
                src.write_bytes(b"".join(x + b"\n" for x in good))
                rows = _copy_parquet(con, src, dst) if good else 0
        finally:
            con.close()
        return (dst.read_bytes() if rows else b""), rows, bad


def _rows_only(lines: bytes) -> tuple[list[bytes], int]:
    """The lines that are JSON objects with an ``event_id``, and how many are not."""
    good = []
    bad = 0
    for line in lines.splitlines():
        try:
            obj = json.loads(line)
            if isinstance(obj, dict) and obj.get("event_id") is not None:
                good.append(line)
                continue
        except ValueError:
            pass
        bad += 1
    return good, bad


def _fitting(con: Any, src: Path, dst: Path, lines: list[bytes]) -> tuple[list[bytes], int]:
    """The lines DuckDB converts to the declared types (in order), and how many it cannot:
    a chunk that fails is split in two until the failing lines stand alone."""
    import duckdb

    good: list[bytes] = []
    bad = 0
    chunks = [lines]
    while chunks:
        chunk = chunks.pop()
        src.write_bytes(b"".join(x + b"\n" for x in chunk))
        try:
            _copy_parquet(con, src, dst)
        except duckdb.Error:
            if len(chunk) == 1:
                bad += 1
            else:
                half = len(chunk) // 2
                chunks += [chunk[half:], chunk[:half]]  # the first half next: order kept
            continue
        good.extend(chunk)
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
