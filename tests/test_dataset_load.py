"""The dataset as the tools users load it with see it: datasets (the README's calls), DuckDB,
pandas, and the Hub's card.

The rows are the hard case the issue describes: shards written with LangFuse forwarding off
(every ``langfuse_*`` value null, so JSON type inference calls those columns ``null``) sorted
before shards written with it on, every event type, two writer processes, two days.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import respx

from agent.core import llm, telemetry
from agent.core.dataset import queries, schema, shards
from agent.core.dataset.sink import HFDatasetSink
from agent.core.session import Session, TraceLink
from agent.testing.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
MODEL = "openai/gpt-4o-mini"


class Linker:
    """What forwarding does for the rows: every event gets its trace and observation ids."""

    def __init__(self, sampled: bool) -> None:
        self.sampled = sampled
        self.n = 0

    def link(
        self,
        session_id: str,
        turn_index: int,
        event_type: str | None = None,
        *,
        caller_trace: tuple[str, str | None] | None = None,
    ) -> TraceLink:
        self.n += 1
        return TraceLink(f"{self.n:032x}", f"{self.n:016x}", self.sampled)


def _on_day(monkeypatch: pytest.MonkeyPatch, day: datetime) -> None:
    class Day(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return day

    monkeypatch.setattr(shards, "datetime", Day)


async def _session_of_every_event(sink: HFDatasetSink, *, forwarding: bool, user: str) -> None:
    session = Session(user_id=user, sinks=[sink])
    if forwarding:
        session.linker = Linker(sampled=user.endswith("1"))
    telemetry.record_turn_start(session, user_message="train a model")
    await llm.complete(
        session,
        kind="main",
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        mock_response="ok",
    )
    with pytest.raises(Exception, match="boom"):
        await llm.complete(
            session,
            kind="research",
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            mock_response=Exception("boom"),
        )
    telemetry.record_tool_call(
        session, name="run_python", duration_ms=3.5, ok=True, tool_call_id="call_1"
    )
    telemetry.record_tool_call(
        session, name="run_python", duration_ms=1, ok=False, error="ValueError: no"
    )
    telemetry.record_sandbox_create(
        session, sandbox_id="sbx_1", backend="hub", hardware="cpu-upgrade", create_latency_s=12.5
    )
    telemetry.record_hf_job_submit(
        session,
        job_id="job_1",
        image="python:3.12",
        flavor="a10g-small",
        job_url="https://huggingface.co/jobs/u/1",
        timeout_s=1800,
    )
    telemetry.record_hf_job_complete(
        session,
        job_id="job_1",
        status="completed",
        duration_s=130.0,
        wall_time_s=125.0,
        flavor="a10g-small",
    )
    telemetry.record_sandbox_destroy(
        session,
        sandbox_id="sbx_1",
        lifetime_s=600,
        backend="hub",
        runs=2,
        hardware="cpu-upgrade",
        create_latency_s=12.5,
    )
    telemetry.record_turn_complete(
        session, final_reply="done", duration_ms=50, steps=1, llm_calls=2
    )
    telemetry.record_feedback(session, value=1, comment="thanks", turn_index=0)
    session.turn_index += 1
    telemetry.record_session_end(session)


async def write_dataset(directory: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Two processes x two days: day 1 with forwarding off, day 2 with it on."""
    for day, forwarding in (
        (datetime(2026, 3, 1, tzinfo=UTC), False),
        (datetime(2026, 3, 2, tzinfo=UTC), True),
    ):
        _on_day(monkeypatch, day)
        for proc in (1, 2):
            sink = HFDatasetSink(directory)  # a process's own shard
            await _session_of_every_event(sink, forwarding=forwarding, user=f"user-{proc}")
            assert sink.shutdown(5)
            assert sink.stats.schema_repairs == 0 and sink.stats.dropped == 0
    monkeypatch.undo()
    return 4 * 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    directory = tmp_path_factory.mktemp("load") / "telemetry"
    mp = pytest.MonkeyPatch()
    try:
        asyncio.run(write_dataset(directory, mp))
    finally:
        mp.undo()
    return directory


def _python_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


def _run_readme_block(marker: str, cwd: Path, epilogue: str) -> dict[str, Any]:
    code = _python_block(marker) + "\n" + epilogue
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_DATASETS_CACHE": str(cwd / ".hf-cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_DATASETS_EPILOGUE = """
import json as _j
_rows = ds.to_list()
print(_j.dumps({"features": {k: str(v) for k, v in ds.features.items()}, "n": len(ds),
                "rows": _rows}, default=lambda v: [type(v).__name__, v.isoformat()]))
"""


def _check_rows(rows: list[dict[str, Any]], n: int) -> None:
    assert len(rows) == n
    types = {r["event_type"] for r in rows}
    assert types == set(schema.EVENTS), types ^ set(schema.EVENTS)
    assert {r["langfuse_sampled"] for r in rows} == {None, True, False}
    for r in rows:
        assert list(r) == list(schema.COLUMN_NAMES)
        assert r["timestamp"][0] == "datetime" and r["timestamp"][1].endswith("+00:00")
        assert isinstance(r["turn_index"], int)
        spec = schema.EVENTS[r["event_type"]]
        data = json.loads(r["data"])
        for key, value in data.items():
            f = spec.field(key)
            assert f is not None, (r["event_type"], key)
            if value is not None:
                expected = {
                    "string": str,
                    "int64": int,
                    "float64": float,
                    "bool": bool,
                    "list": list,
                }[f.dtype]
                assert type(value) is expected, (r["event_type"], key, value)


def test_the_readme_loads_the_directory_with_its_card(dataset: Path) -> None:
    out = _run_readme_block('"telemetry", split="train"', dataset.parent, _DATASETS_EPILOGUE)
    assert out["features"] == {k: str(v) for k, v in schema.features().items()}
    _check_rows(out["rows"], 48)
    costs = [json.loads(r["data"]) for r in out["rows"] if r["event_type"] == "hf_job_complete"]
    assert {c["estimated_cost_usd"] for c in costs} == {round(1.00 * 180 / 3600, 8)}


def test_the_json_loader_needs_the_features_and_loads_everything_with_them(
    dataset: Path,
) -> None:
    out = _run_readme_block('load_dataset("json"', dataset.parent, _DATASETS_EPILOGUE)
    _check_rows(out["rows"], 48)
    # Without them: the trap the card and the features avoid (datasets infers the types of the
    # all-null langfuse columns of the first file as null, then cannot cast the next file).
    code = (
        "import datasets\ndatasets.load_dataset('json', data_dir='telemetry/data', split='train')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=dataset.parent,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "HF_DATASETS_CACHE": str(dataset.parent / ".c2"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        },
        timeout=120,
    )
    assert proc.returncode != 0 and "DatasetGenerationError" in proc.stderr


def test_duckdb_reads_every_row_with_the_declared_types(dataset: Path) -> None:
    con = queries.connect(dataset)
    described = {name: t for name, t, *_ in con.execute("DESCRIBE events").fetchall()}
    assert described == {
        k: {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}.get(v, v)
        for k, v in schema.duckdb_columns().items()
    }
    ((n, sessions, cost),) = con.execute(
        "SELECT count(*), count(DISTINCT session_id), "
        "sum(CAST(data->>'estimated_cost_usd' AS DOUBLE)) FILTER "
        "(WHERE event_type = 'hf_job_complete') FROM events"
    ).fetchall()
    assert (n, sessions) == (48, 4)
    assert cost == pytest.approx(4 * 0.05)
    summary = queries.summary(dataset)
    (one, *_) = summary["session_costs"]
    sandbox = 0.03 * (12.5 + 600) / 3600
    assert one["sandbox_cost_usd"] == pytest.approx(sandbox)
    assert one["total_cost_usd"] == pytest.approx(one["llm_cost_usd"] + 0.05 + sandbox)
    ends = [r for r in queries.rows(dataset) if r["event_type"] == "session_end"]
    assert len(ends) == 4
    for end in ends:
        assert end["data"]["total_cost_usd"] == pytest.approx(
            next(s for s in summary["session_costs"] if s["session_id"] == end["session_id"])[
                "total_cost_usd"
            ]
        )
        assert end["data"]["llm_errors"] == 1 and end["data"]["tool_errors"] == 1


def test_pandas_reads_every_row_with_the_declared_types(dataset: Path) -> None:
    frames = [
        pd.read_json(p, lines=True, dtype=schema.pandas_dtypes())
        for p in sorted((dataset / "data").glob("*.jsonl"))
    ]
    df = pd.concat(frames, ignore_index=True)
    assert len(df) == 48
    assert {k: str(v) for k, v in df.dtypes.items()} == schema.pandas_dtypes()
    assert df["langfuse_trace_id"].isna().sum() == 24  # day 1 (forwarding off)


def test_the_card_parses_and_its_features_are_the_schema(dataset: Path) -> None:
    from datasets import Features
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(dataset / "README.md")
    meta = card.data.to_dict()
    assert meta["dataset_info"]["features"] == schema.card_features()
    assert Features._from_yaml_list(meta["dataset_info"]["features"]) == schema.features()
    assert meta["configs"][0]["data_files"][0]["path"] == "data/**/*.jsonl"
    assert meta["license"] and "telemetry" in meta["tags"]
    for col in schema.COLUMNS:
        assert f"| `{col.name}` |" in card.text
    for ev in schema.EVENTS.values():
        assert f"### `{ev.name}`" in card.text
        for f in ev.data:
            assert f"| `{f.name}` | {f.dtype} |" in card.text


def test_the_hub_gets_parquet_with_the_declared_types_and_loads_with_its_card(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, "acme/telemetry")
        sink = HFDatasetSink(dataset, repo_id="acme/telemetry", token="hf_x", push_thread=False)
        assert sink.push_now()
        sink.shutdown(5)
    # The repository, as a snapshot download would lay it out.
    snap = tmp_path / "snapshot"
    for path, content in hub.files.items():
        (snap / path).parent.mkdir(parents=True, exist_ok=True)
        (snap / path).write_bytes(content)
    assert sorted(p.parent.name for p in snap.glob("data/*/*.parquet")) == [
        "2026-03-01",
        "2026-03-01",
        "2026-03-02",
        "2026-03-02",
    ]
    import pyarrow.parquet as pq

    for part in snap.glob("data/*/*.parquet"):
        assert pq.read_schema(part).names == list(schema.COLUMN_NAMES)
        assert pq.read_schema(part) == schema.features().arrow_schema
    from huggingface_hub import DatasetCard

    meta = DatasetCard.load(snap / "README.md").data.to_dict()
    assert meta["dataset_info"]["features"] == schema.card_features()
    assert meta["configs"][0]["data_files"][0]["path"] == "data/**/*.parquet"
    snap.rename(tmp_path / "telemetry")  # the README's call, on the Hub's files
    out = _run_readme_block('"telemetry", split="train"', tmp_path, _DATASETS_EPILOGUE)
    _check_rows(out["rows"], 48)
    # The events commands read a downloaded snapshot too.
    assert queries.summary(tmp_path / "telemetry")["total_events"] == 48
    assert duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{tmp_path}/telemetry/data/**/*.parquet')"
    ).fetchall() == [(48,)]


def test_the_readme_duckdb_queries_read_every_file(dataset: Path) -> None:
    code = _python_block("duckdb.sql")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=dataset.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # Four sessions, each LLM call + the a10g-small job + the cpu-upgrade sandbox.
    llm_per_session = queries.summary(dataset)["llm_cost_usd"] / 4
    expected = llm_per_session + 0.05 + 0.03 * (12.5 + 600) / 3600
    assert proc.stdout.count(f"{expected:.8f}"[:8]) == 4, proc.stdout


def test_the_readme_call_reads_the_files_each_time_with_a_shared_cache(
    dataset: Path, tmp_path: Path
) -> None:
    """One cache for every load, as a user has: a second load after rows were appended, and a
    load of another directory also named ``telemetry``, each return the rows on disk (without
    the README's options datasets answers both from the first load's cache)."""
    import shutil

    a, b = tmp_path / "a" / "telemetry", tmp_path / "b" / "telemetry"
    shutil.copytree(dataset, a)
    shutil.copytree(dataset, b)
    for shard in sorted((b / "data").glob("*.jsonl"))[:2]:
        shard.unlink()  # b holds only day 2's shards

    def ids_on_disk(directory: Path) -> list[str]:
        return sorted(json.loads(x)["event_id"] for x in b"".join(_raw(directory)).splitlines())

    def load(*dirs: Path) -> list[list[str]]:
        code = (
            "import json, os\n"
            "_out = []\n"
            f"for _d in {[str(d.parent) for d in dirs]!r}:\n"
            "    os.chdir(_d)\n"
            + "".join(
                "    " + line + "\n"
                for line in _python_block('"telemetry", split="train"').splitlines()
            )
            + "    _out.append(sorted(ds['event_id']))\n"
            "print(json.dumps(_out))\n"
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HF_DATASETS_CACHE": str(tmp_path / "shared-cache"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        }
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first_a, first_b = load(a, b)
    assert first_a == ids_on_disk(a) and len(first_a) == 48
    assert first_b == ids_on_disk(b) and len(first_b) == 24
    # More rows in a: a line of each shard again, under a new event id.
    for shard in sorted((a / "data").glob("*.jsonl")):
        row = json.loads(shard.read_bytes().splitlines()[0])
        row["event_id"] = "appended-" + shard.stem
        with open(shard, "ab") as fh:
            fh.write(json.dumps(row).encode() + b"\n")
    (again_a,) = load(a)
    assert again_a == ids_on_disk(a) and len(again_a) == 52


def _raw(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((directory / "data").glob("*.jsonl"))]
