"""The README's examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_public_api_example_runs_and_writes_the_dataset(tmp_path: Path) -> None:
    (api,) = [b for b in python_blocks(ROOT / "README.md") if "Observability.from_config" in b]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGFUSE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", api],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hi"
    shards = list((tmp_path / "telemetry" / "data").glob("*.jsonl"))
    assert shards and '"llm_call"' in shards[0].read_text()
    (query,) = [b for b in python_blocks(ROOT / "README.md") if "duckdb.sql" in b]
    # The query binds against the rows just written (a wrong column name would raise here).
    proc = subprocess.run(
        [sys.executable, "-c", query],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
