"""Reading the HF Dataset rows a test produced, as a user's tool would see them.

Tests that look at rows go through ``read_rows`` so that a change of the on-disk row format
(for instance the ``data`` column's representation) is adapted in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_rows(telemetry_dir: str | Path) -> list[dict[str, Any]]:
    """Every row under ``telemetry_dir/data`` in file order, ``data`` as a dict."""
    out: list[dict[str, Any]] = []
    for path in sorted((Path(telemetry_dir) / "data").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if isinstance(row.get("data"), str):
                row["data"] = json.loads(row["data"])
            out.append(row)
    return out
