"""``ml-intern events summary|tail|show``: the local dataset, queried with DuckDB.

Contract: each query prints a table (or JSON with ``--json``) and exits 0, an empty answer
included (``show`` of an unknown trace prints a notice, and ``[]`` with ``--json``). No
dataset, a ``--limit`` outside 1..1,000,000 or a malformed trace id are usage errors (exit 2).
Lines the query skipped (corrupt, cut short, not UTF-8), Parquet files that are not whole
(an interrupted download) and token counts or costs that are not numbers are named in a notice
after the answer, never dropped silently.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent.cli.common import EXIT_OK, UsageError, config_from_args
from agent.cli.output import notice, print_rows, print_summary

__all__ = ["MAX_TAIL", "cmd_events"]

MAX_TAIL = 1_000_000


def cmd_events(args: argparse.Namespace) -> int:
    from agent.core.dataset import queries

    directory = config_from_args(args).telemetry_dir
    if not queries.has_data(directory):
        raise UsageError(
            f"no events in {directory / 'data'}: run `ml-intern demo` first, or pass --telemetry-dir"
        )
    sessions = [args.session_id] if args.session_id else None
    _QUERIES[args.events_command](args, directory, sessions)
    _data_notices(directory)
    return EXIT_OK


def _summary(args: argparse.Namespace, directory: Path, sessions: list[str] | None) -> None:
    from agent.core.dataset import queries

    summary = queries.summary(directory, session_ids=sessions)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)


def _tail(args: argparse.Namespace, directory: Path, sessions: list[str] | None) -> None:
    from agent.core.dataset import queries

    if not 1 <= args.limit <= MAX_TAIL:
        raise UsageError(f"--limit must be between 1 and {MAX_TAIL:,}")
    _print(args, queries.tail(directory, limit=args.limit, session_ids=sessions))


def _show(args: argparse.Namespace, directory: Path, sessions: list[str] | None) -> None:
    from agent.core.dataset import queries

    if not args.trace_id and not args.session_id:
        raise UsageError("events show needs --trace-id ID or --session-id ID")
    if args.trace_id and not _is_hex(args.trace_id, 32):
        raise UsageError(
            f"--trace-id {args.trace_id!r} is not a LangFuse trace id (32 lowercase hex characters)"
        )
    rows = queries.rows(directory, trace_id=args.trace_id, session_ids=sessions)
    if rows:
        _print(args, rows)
        return
    # An empty answer is an answer, not a failure (exit 1 means the work failed).
    if args.json:
        print("[]")
    what = f"trace {args.trace_id}" if args.trace_id else f"session {args.session_id}"
    notice(f"no events of {what} in {directory / 'data'}")


_QUERIES = {"summary": _summary, "tail": _tail, "show": _show}


def _print(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_rows(rows)


def _data_notices(directory: Path) -> None:
    """Say what the query skipped or could not add up, instead of dropping it silently."""
    from agent.core.dataset import queries

    problems = queries.data_problems(directory)
    if problems["skipped_lines"]:
        n = problems["skipped_lines"]
        notice(
            f"{n} line{'s' if n > 1 else ''} in {directory / 'data'} "
            f"{'are' if n > 1 else 'is'} not a valid row (corrupt or cut short) and "
            f"{'were' if n > 1 else 'was'} skipped"
        )
    if problems.get("skipped_files"):
        n = problems["skipped_files"]
        notice(
            f"{n} Parquet file{'s' if n > 1 else ''} in {directory / 'data'} "
            f"{'are' if n > 1 else 'is'} not whole (an interrupted download?) and "
            f"{'were' if n > 1 else 'was'} skipped"
        )
    if problems["non_numeric"]:
        n = problems["non_numeric"]
        notice(
            f"{n} row{'s' if n > 1 else ''} in {directory / 'data'} {'have' if n > 1 else 'has'} "
            "a token count or cost that is not a number; counted as 0"
        )


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in "0123456789abcdef" for c in value)
