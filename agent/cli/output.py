"""What the CLI prints: the two consoles, messages, and the tables of the dataset.

Contract: results go to stdout (``console``), everything about the run (progress, warnings,
notices, errors, the LangFuse summary) to stderr (``err``). Every value that comes from data or
from the user is printed as text (``Text`` cells, ``escape``, ``markup=False``): a ``[red]`` in
a reply or a file name is shown, never interpreted as markup. Piped output is not squeezed to 80
columns, and a code point the terminal's encoding cannot take is printed as an escape
(``tolerate_unencodable_output``), never a crash mid-output.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

__all__ = [
    "console",
    "err",
    "error",
    "notice",
    "print_compute",
    "print_preview",
    "print_rows",
    "print_summary",
    "scrubbed",
    "tolerate_unencodable_output",
    "warn",
]

# Piped output is read by people and scripts alike: do not squeeze tables to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


def notice(message: str) -> None:
    err.print(f"[dim]notice:[/dim] {escape(message)}", highlight=False)


def error(message: str) -> None:
    """A usage or configuration error (exit 2), secrets scrubbed."""
    err.print(f"[red]ml-intern: error:[/red] {escape(scrubbed(message))}", highlight=False)


def scrubbed(text: str) -> str:
    """``text`` with every secret the scrubber knows replaced: error messages may quote them."""
    from agent.core.privacy.scrubber import scrub

    return scrub(text)


def tolerate_unencodable_output() -> None:
    """A reply or a name may hold a code point the terminal's encoding cannot take (a lone
    surrogate from a non-UTF-8 file name): print an escape for it, never die mid-output."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict":
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


# -- tables --


def _table(title: str | None, columns: dict[str, str], **options: Any) -> Table:
    """A table with ``columns`` (name -> justify)."""
    t = Table(title=title, **options)
    for name, justify in columns.items():
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    return t


def _usd(value: Any) -> str:
    return f"{value:.6f}"


_LLM_COLUMNS = {
    "kind": "left",
    **dict.fromkeys(
        ("calls", "errors", "prompt tokens", "completion tokens", "total tokens", "cost (USD)"),
        "right",
    ),
}
_LLM_FIELDS = ("calls", "errors", "prompt_tokens", "completion_tokens", "total_tokens")
_SESSION_COLUMNS = {
    **dict.fromkeys(("session", "user", "started"), "left"),
    **dict.fromkeys(("LLM calls", "LLM", "jobs", "sandboxes", "total"), "right"),
}
_SESSION_COSTS = ("llm_cost_usd", "job_cost_usd", "sandbox_cost_usd", "total_cost_usd")


def print_summary(summary: dict[str, Any]) -> None:
    """``events summary``: LLM calls per kind, events per type, cost per session, totals."""
    t = _table("LLM calls per kind", _LLM_COLUMNS)
    t.columns[0].min_width = 12
    for row in summary["llm_calls"]:
        cells = [str(row[name]) for name in _LLM_FIELDS]
        t.add_row(Text(str(row["kind"])), *cells, _usd(row["cost_usd"]))
    console.print(t)
    e = _table("Events per type", {"event type": "left", "count": "right"})
    for row in summary["events"]:
        e.add_row(Text(str(row["event_type"])), str(row["count"]))
    console.print(e)
    c = _table("Cost per session, all in (USD)", _SESSION_COLUMNS)
    for row in summary.get("session_costs", []):
        c.add_row(
            Text(str(row["session_id"] or "")[:12] + ("" if row["ended"] else " (open)")),
            Text(str(row["user_id"] or "")),
            str(row["started"] or "")[:19],
            str(row["llm_calls"]),
            *(_usd(row[name]) for name in _SESSION_COSTS),
        )
    console.print(c)
    console.print(
        f"sessions: {summary['sessions']}  events: {summary['total_events']}  "
        f"total cost: ${summary['total_cost_usd']:.6f} (LLM ${summary['llm_cost_usd']:.6f}, "
        f"jobs ${summary['job_cost_usd']:.6f}, sandboxes ${summary['sandbox_cost_usd']:.6f})"
    )


_ROW_COLUMNS = ("timestamp", "event_type", "kind", "session", "turn", "langfuse_trace_id", "data")


def print_rows(rows: list[dict[str, Any]]) -> None:
    """``events tail`` / ``show``: one line per row, its data cut to 120 characters."""
    t = Table()
    for col in _ROW_COLUMNS:
        t.add_column(col, overflow="fold", no_wrap=col != "data")
    for r in rows:
        turn = r.get("turn_index")
        cells = (
            str(r["timestamp"])[:19].replace("T", " "),
            str(r["event_type"]),
            str(r.get("kind") or ""),
            str(r.get("session_id") or "")[:8],
            str(turn if turn is not None else ""),
            str(r.get("langfuse_trace_id") or ""),
            json.dumps(r.get("data"), default=str)[:120],
        )
        t.add_row(*(Text(cell) for cell in cells))
    console.print(t)


# event type -> the data keys of (id, hardware, seconds) in the "Jobs and sandboxes" table
_COMPUTE = {
    "hf_job_complete": ("job_id", "flavor", "wall_time_s"),
    "sandbox_create": ("sandbox_id", "hardware", "lifetime_s"),
    "sandbox_destroy": ("sandbox_id", "hardware", "lifetime_s"),
}
_COMPUTE_COLUMNS = {
    **dict.fromkeys(("event", "id", "hardware", "backend"), "left"),
    **dict.fromkeys(("seconds", "create latency (s)", "est. USD"), "right"),
}


def print_compute(rows: list[dict[str, Any]]) -> None:
    """The jobs and sandboxes of the demo, with their hardware, timings and estimated cost."""
    t = _table("Jobs and sandboxes", _COMPUTE_COLUMNS)
    for r in rows:
        keys = _COMPUTE.get(r["event_type"])
        if keys is None:
            continue
        d = r.get("data") or {}
        ident, hw, secs = (d.get(key) for key in keys)
        latency, cost = d.get("create_latency_s"), d.get("estimated_cost_usd")
        t.add_row(
            Text(r["event_type"]),
            Text(str(ident)),
            Text(str(hw)),
            Text(str(d.get("backend") or "")),
            "" if secs is None else f"{secs:.3f}",
            "" if latency is None else f"{latency:.4f}",
            "unknown" if cost is None else _usd(cost),
        )
    console.print(t)


def print_preview(result: dict[str, Any], policy_name: str) -> None:
    """``observability preview``: each field of the call, as given and as LangFuse gets it."""
    t = Table(title=f"What would be sent (policy: {escape(policy_name)})", show_lines=True)
    t.add_column("field")
    t.add_column("original", overflow="fold")
    t.add_column("sent to LangFuse", overflow="fold")
    for key in result["original"]:
        t.add_row(
            Text(key),
            Text(json.dumps(result["original"][key], indent=1, default=str)),
            Text(json.dumps(result["redacted"].get(key), indent=1, default=str)),
        )
    console.print(t)
    console.print("report: " + json.dumps(result["report"], default=str), markup=False)
