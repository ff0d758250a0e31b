"""JSON Lines vs Parquet for the HF Dataset: size and query speed on the demo's rows scaled up.

    .venv/bin/python -m bench.dataset_formats [--rows 1000000]

Runs the offline demo once, replicates its rows (fresh event and session ids, timestamps spread
over days) into one shard per simulated process-day, then compares the two layouts a user gets:
the local JSON Lines shards and the Parquet parts the Hub receives (the same conversion the
pusher uses). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from agent.core.dataset import queries
from agent.core.dataset.parquet import to_parquet


def _demo_rows(workdir: Path) -> list[dict]:
    subprocess.run(
        [sys.executable, "-m", "agent.main", "demo", "--telemetry-dir", str(workdir / "demo")],
        check=True,
        capture_output=True,
    )
    rows = []
    for p in sorted((workdir / "demo" / "data").glob("*.jsonl")):
        rows.extend(json.loads(line) for line in p.read_text().splitlines())
    return rows


def _scale(rows: list[dict], n: int, shards: int, out: Path) -> list[Path]:
    out.mkdir(parents=True)
    per_shard = n // shards
    paths = []
    base = datetime.fromisoformat(rows[0]["timestamp"])
    k = 0
    for s in range(shards):
        path = out / f"events-{20260101 + s % 28:08d}-{s:012x}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            session = uuid.uuid4().hex
            for i in range(per_shard):
                r = dict(rows[i % len(rows)])
                if i % len(rows) == 0:
                    session = uuid.uuid4().hex
                r["event_id"] = uuid.uuid4().hex
                r["session_id"] = session
                r["timestamp"] = (base + timedelta(seconds=k)).isoformat(timespec="microseconds")
                k += 1
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


def _time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo = _demo_rows(work)
        jsonl_dir = work / "jsonl"
        paths = _scale(demo, args.rows, args.shards, jsonl_dir / "data")
        parquet_dir = work / "parquet"
        (parquet_dir / "data").mkdir(parents=True)
        t = time.perf_counter()
        for p in paths:
            data, _rows, bad = to_parquet(p.read_bytes())
            assert bad == 0
            (parquet_dir / "data" / (p.stem + ".parquet")).write_bytes(data)
        convert_s = time.perf_counter() - t

        def size(d: Path) -> int:
            return sum(p.stat().st_size for p in (d / "data").glob("*"))

        def summary(d: Path) -> None:
            queries.summary(d)

        def cost_by_kind(d: Path, fmt: str) -> None:
            src = (
                f"read_parquet('{d}/data/*.parquet')"
                if fmt == "parquet"
                else f"read_json_auto('{d}/data/*.jsonl')"
            )
            duckdb.sql(
                "SELECT kind, count(*), sum(CAST(data->>'cost_usd' AS DOUBLE)) "
                f"FROM {src} WHERE event_type = 'llm_call' GROUP BY kind"
            ).fetchall()

        results = {
            "bytes": (size(jsonl_dir), size(parquet_dir)),
            "events summary (s)": (
                _time(lambda: summary(jsonl_dir)),
                _time(lambda: summary(parquet_dir)),
            ),
            "cost per kind, README query (s)": (
                _time(lambda: cost_by_kind(jsonl_dir, "jsonl")),
                _time(lambda: cost_by_kind(parquet_dir, "parquet")),
            ),
        }
        n_rows = len(paths) * (args.rows // args.shards)
        print(
            f"{n_rows:,} rows ({len(demo)} demo rows replicated), {len(paths)} shards; "
            f"JSON Lines -> Parquet conversion {convert_s:.1f} s ({n_rows / convert_s:,.0f} rows/s)"
        )
        print()
        print("| | JSON Lines | Parquet (zstd) | ratio |")
        print("|---|---:|---:|---:|")
        j, p = results["bytes"]
        print(f"| size | {j / 1e6:,.1f} MB | {p / 1e6:,.1f} MB | {j / p:.1f} x smaller |")
        for name in ("events summary (s)", "cost per kind, README query (s)"):
            j, p = results[name]
            print(f"| {name} | {j:.2f} | {p:.2f} | {j / p:.1f} x faster |")


if __name__ == "__main__":
    main()
