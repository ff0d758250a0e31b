"""The README's examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.cli_helpers import run_process

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in ``cwd``, as a user who pasted it would run it (no LangFuse)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGFUSE_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_public_api_example_runs_and_writes_the_dataset(tmp_path: Path) -> None:
    (api,) = [b for b in python_blocks(ROOT / "README.md") if "Observability.from_config" in b]
    proc = _python(api, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hi"
    shards = list((tmp_path / "telemetry" / "data").glob("*.jsonl"))
    assert shards and '"llm_call"' in shards[0].read_text()
    (query,) = [b for b in python_blocks(ROOT / "README.md") if "duckdb.sql" in b]
    # The query binds against the rows just written (a wrong column name would raise here).
    proc = _python(query, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_agent_readme_sql_runs_against_the_dataset(tmp_path: Path) -> None:
    import duckdb

    (sql,) = re.findall(r"```sql\n(.*?)```", (ROOT / "agent" / "README.md").read_text(), re.S)
    env = {"PYTHONPATH": str(ROOT)}
    demo = run_process("demo", "--telemetry-dir", "telemetry", cwd=tmp_path, env=env)
    assert demo.returncode == 0, demo.stderr
    # session_end is in the demo's output, with the all-in cost per session.
    assert "session_end" in demo.stdout and "Cost per session, all in" in demo.stdout
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        duckdb.sql(sql).fetchall()  # binds against the rows (forwarding off: no trace ids)
    finally:
        os.chdir(cwd)


def test_readme_field_tables_cover_the_declared_schema() -> None:
    from agent.core.dataset import schema

    text = (ROOT / "README.md").read_text()
    start = text.index("| event type | `data` keys |")
    table = text[start : text.index("\n\n", start)]
    words = set(re.findall(r"[a-z_]+", table))
    for ev in schema.EVENTS.values():
        assert f"`{ev.name}`" in table, ev.name
        missing = [f.name for f in ev.data if f.name not in words]
        assert not missing, (ev.name, missing)
    for col in schema.COLUMNS:
        assert f"`{col.name}`" in text
