"""The ``ml-intern`` command line.

    ml-intern demo     [--telemetry-dir DIR] [--user-id ID]       the offline session
    ml-intern run TASK [--model M] [--user-id ID] ...              one task with a real model
    ml-intern events   summary|tail|show [--telemetry-dir DIR] [--json] [--trace-id ID]
    ml-intern observability check [--ping] | preview [--redact SPEC] [--file CALL.json]

    every command also takes -v/--verbose (INFO) and --debug (DEBUG, with a warning)

Exit codes: 0 success (an empty answer included, with a notice), 1 the work (or a
``check --ping``) failed, 2 bad usage or configuration (a message, never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.config import AgentConfig, ConfigError

# Piped output is read by people and scripts alike: do not squeeze tables to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

logger = logging.getLogger("agent.main")


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


# -- argument parsing --


DEBUG_WARNING = (
    "--debug: DEBUG logs of litellm and the provider SDKs (openai, httpx, langfuse ...) hold "
    "prompts, replies and request headers, API keys included; redaction does not apply to "
    "logs. Do not share them."
)


def _log_flags(p: argparse.ArgumentParser, *, default: Any) -> None:
    # Also on every subcommand (`ml-intern demo --debug`); there the default is SUPPRESS, so an
    # absent flag does not undo the same flag given before the subcommand.
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="log at INFO")
    p.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="log at DEBUG (litellm and provider SDK debug logs hold prompts and headers)",
    )


def _common(p: argparse.ArgumentParser, *, observability: bool = True) -> None:
    _log_flags(p, default=argparse.SUPPRESS)
    p.add_argument("--config", help="TOML config file (default: ./ml-intern.toml if present)")
    p.add_argument(
        "--telemetry-dir",
        help="where the JSON Lines dataset lives (env ML_INTERN_TELEMETRY_DIR; default ./telemetry)",
    )
    if observability:
        p.add_argument(
            "--observability-backend",
            choices=("auto", "langfuse", "none"),
            help="LangFuse forwarding: auto (on iff LANGFUSE_HOST and both keys are set), "
            "langfuse (required: missing settings are an error), none (off)",
        )
        p.add_argument(
            "--redact",
            metavar="SPEC",
            help="redaction policy for LangFuse, e.g. 'preset=metadata-only' or "
            "'tool_results=drop,user_id=hash' (env ML_INTERN_REDACT)",
        )
        p.add_argument(
            "--flush-timeout",
            type=float,
            metavar="SECONDS",
            help="upper bound on the final flush to LangFuse (default 5)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ml-intern",
        description="An ML agent with HF Dataset telemetry and opt-in LangFuse forwarding.",
    )
    _log_flags(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the offline demo session (no network, no API key)")
    _common(demo)
    demo.add_argument("--user-id", default="demo-user", help="the session's user id")

    run = sub.add_parser("run", help="run one task with a litellm model")
    _common(run)
    run.add_argument("task", help="what the agent should do")
    run.add_argument(
        "--model", help="litellm model id, e.g. openai/gpt-4o-mini (default: offline script)"
    )
    run.add_argument("--user-id", help="the session's user id")
    run.add_argument(
        "--reasoning-effort",
        choices=("high", "medium", "low", "minimal"),
        help="requested effort; lower levels are probed if the provider rejects it",
    )
    run.add_argument("--stream", action="store_true", help="stream the model's replies")
    run.add_argument("--restore", metavar="SESSION.json", help="resume a saved session first")
    run.add_argument("--save", metavar="SESSION.json", help="save the session afterwards")

    events = sub.add_parser("events", help="query the local dataset with DuckDB")
    esub = events.add_subparsers(dest="events_command", required=True, metavar="QUERY")
    for name, help_text in (
        ("summary", "calls, tokens and cost per kind; events per type"),
        ("tail", "the most recent events"),
        ("show", "the events of one LangFuse trace or session"),
    ):
        q = esub.add_parser(name, help=help_text)
        _common(q, observability=False)
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.add_argument("--session-id", help="only this session")
        if name == "tail":
            q.add_argument("-n", "--limit", type=int, default=20, help="how many rows (default 20)")
        if name == "show":
            q.add_argument("--trace-id", help="a LangFuse trace id (32 hex characters)")

    obs = sub.add_parser("observability", help="check or preview LangFuse forwarding")
    osub = obs.add_subparsers(dest="obs_command", required=True, metavar="ACTION")
    check = osub.add_parser("check", help="validate the settings; print destination and policy")
    _common(check)
    check.add_argument("--json", action="store_true")
    check.add_argument(
        "--ping",
        action="store_true",
        help="also make one authenticated request to the LangFuse host (offline without it)",
    )
    check.add_argument(
        "--ping-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long --ping waits for each answer (default 5)",
    )
    preview = osub.add_parser("preview", help="show exactly what would be sent for a call")
    _common(preview)
    preview.add_argument(
        "--file", help="a saved call (JSON with CallRecord fields); default: a sample"
    )
    preview.add_argument("--json", action="store_true")
    return parser


def _config(args: argparse.Namespace, **extra: Any) -> AgentConfig:
    overrides: dict[str, Any] = {
        "telemetry_dir": getattr(args, "telemetry_dir", None),
        "observability_backend": getattr(args, "observability_backend", None),
        "redact": getattr(args, "redact", None),
        "flush_timeout_s": getattr(args, "flush_timeout", None),
        **extra,
    }
    config = AgentConfig.load(
        getattr(args, "config", None), **{k: v for k, v in overrides.items() if v is not None}
    )
    logger.debug(
        "where each setting came from: %s",
        {name: config.source(name) for name in type(config).model_fields},
    )
    return config


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--telemetry-dir {directory}: cannot create it ({exc.strerror or exc})"
        ) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--telemetry-dir {directory}: not writable")


# -- demo and run --

DEMO_TURNS = (
    "Count the words in this request, then research background on word statistics.",
    "Now submit a quick training job to check the numbers.",
)


async def _demo(config: AgentConfig, user_id: str) -> tuple[list[str], list[str], Any]:
    from agent.core import telemetry
    from agent.core.agent_loop import Agent
    from agent.core.observability import Observability
    from agent.core.session import Session

    obs = Observability.from_config(config)
    sessions: list[str] = []
    traces: list[str] = []
    try:
        with err.status("demo: session 1, turn 0 …") as status:
            session = Session(user_id=user_id, observability=obs)
            sessions.append(session.session_id)
            agent = Agent(session, config, reasoning_effort="high")
            try:
                for i, task in enumerate(DEMO_TURNS):
                    status.update(f"demo: session 1, turn {i} …")
                    link = session.link()
                    reply = await agent.run_turn(task)
                    traces.append(link.trace_id or "")
                    err.print(f"[dim]turn {i}:[/dim] {escape(reply[:100])}")
                telemetry.record_feedback(
                    session, value=1.0, comment="Helpful, thanks!", turn_index=0
                )
                saved = _save_or_warn(
                    agent,
                    config.telemetry_dir / "sessions" / f"{session.session_id}.json",
                    "session 2 starts without restoring it",
                )
            finally:
                agent.close()
            status.update("demo: session 2 (restored) …")
            session2 = Session(user_id=user_id, observability=obs)
            sessions.append(session2.session_id)
            agent2 = Agent(session2, config)
            try:
                link = session2.link()
                if saved is not None:
                    await agent2.restore(saved)
                reply = await agent2.run_turn(
                    "Continue where we left off and summarise the results."
                )
                traces.append(link.trace_id or "")
                label = "restored turn 0" if saved is not None else "session 2, turn 0"
                err.print(f"[dim]{label}:[/dim] {escape(reply[:100])}")
            finally:
                agent2.close()
        await obs.adrain()
    finally:
        report = obs.shutdown()
    return sessions, [t for t in traces if t], (obs, report)


def cmd_demo(args: argparse.Namespace) -> int:
    config = _config(args, context_token_budget=256)
    _check_writable(config.telemetry_dir)
    started = time.monotonic()
    sessions, traces, (obs, report) = asyncio.run(_demo(config, args.user_id))
    err.print(
        f"[green]demo finished[/green] in {time.monotonic() - started:.1f}s; "
        f"dataset: {escape(str(config.telemetry_dir / 'data'))}"
    )
    from agent.core.dataset import queries

    if queries.has_data(config.telemetry_dir):
        _print_summary(queries.summary(config.telemetry_dir, session_ids=sessions))
        _print_compute(queries.rows(config.telemetry_dir, session_ids=sessions))
    else:
        _warn(f"no rows reached {config.telemetry_dir / 'data'} (see the warnings above)")
    _print_hf_losses(report)
    _print_forwarding(obs, traces, report)
    return EXIT_OK


def _print_compute(rows: list[dict[str, Any]]) -> None:
    """The jobs and sandboxes of the demo, with their hardware, timings and estimated cost."""
    t = Table(title="Jobs and sandboxes")
    for col in ("event", "id", "hardware", "backend", "seconds", "create latency (s)", "est. USD"):
        t.add_column(
            col, justify="right" if col in ("seconds", "create latency (s)", "est. USD") else "left"
        )
    for r in rows:
        d = r.get("data") or {}
        if r["event_type"] == "hf_job_complete":
            ident, hw, secs = d.get("job_id"), d.get("flavor"), d.get("wall_time_s")
        elif r["event_type"] in ("sandbox_create", "sandbox_destroy"):
            ident, hw, secs = d.get("sandbox_id"), d.get("hardware"), d.get("lifetime_s")
        else:
            continue
        cost = d.get("estimated_cost_usd")
        t.add_row(
            Text(r["event_type"]),
            Text(str(ident)),
            Text(str(hw)),
            Text(str(d.get("backend") or "")),
            "" if secs is None else f"{secs:.3f}",
            "" if d.get("create_latency_s") is None else f"{d['create_latency_s']:.4f}",
            "unknown" if cost is None else f"{cost:.6f}",
        )
    console.print(t)


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


def _save_or_warn(agent: Any, path: Path, consequence: str) -> Path | None:
    """Save the session; on a full disk (or any OS error) warn and return None."""
    try:
        return agent.save(path)
    except OSError as exc:
        _warn(f"could not save the session to {path} ({exc.strerror or exc}); {consequence}")
        return None


def _print_hf_losses(report: dict[str, Any]) -> None:
    hf = report.get("hf_dataset") or {}
    lost = int(hf.get("dropped") or 0) + int(hf.get("pending") or 0)
    if lost:
        _warn(
            f"HF Dataset: {hf.get('written', 0)} rows written, {lost} not written "
            f"({hf.get('write_errors', 0)} write errors; see the warnings above)"
        )


def _print_forwarding(obs: Any, traces: list[str], report: dict[str, Any]) -> None:
    if not obs.forwarding:
        reason = obs.gate.reason if obs.gate else "off"
        err.print(f"[dim]LangFuse forwarding: off ({escape(reason)})[/dim]")
        return
    lf = report.get("langfuse", {})
    dropped = lf.get("dropped") or {}
    exporter = lf.get("exporter") or {}
    err.print(
        f"LangFuse forwarding to {escape(obs.langfuse.settings.host)}: "
        f"{lf.get('generations', 0)} generations, {lf.get('spans', 0)} spans, "
        f"{lf.get('traces', 0)} traces, {lf.get('scores', 0)} scores; "
        f"spans exported {exporter.get('exported_spans', '?')}, dropped {sum(dropped.values())}"
        + ("" if lf.get("completed_in_time", True) else " (flush bound reached)")
    )
    for trace_id in traces:
        console.print(f"trace: {obs.trace_url(trace_id)}", markup=False)


async def _run(args: argparse.Namespace, config: AgentConfig) -> int:
    from agent.core.agent_loop import Agent
    from agent.core.observability import Observability
    from agent.core.session import Session

    obs = Observability.from_config(config)
    traces: list[str] = []
    saved = False
    try:
        session = Session(user_id=args.user_id, observability=obs)
        agent = Agent(session, config, reasoning_effort=args.reasoning_effort, stream=args.stream)
        try:
            if args.restore:
                await agent.restore(args.restore)
            traces.append(session.link().trace_id or "")
            with err.status("working …"):
                reply = await agent.run_turn(args.task)
            console.print(reply, markup=False, highlight=False)
            if args.save and _save_or_warn(agent, Path(args.save), "the task's reply is above"):
                saved = True
        finally:
            agent.close()
            await obs.adrain()
    except Exception as exc:
        err.print(
            f"[red]ml-intern: the task failed:[/red] {type(exc).__name__}: "
            f"{escape(_scrubbed(str(exc)))}"
        )
        report = obs.shutdown()
        _print_forwarding(obs, [t for t in traces if t], report)
        return EXIT_FAIL
    report = obs.shutdown()
    _print_hf_losses(report)
    _print_forwarding(obs, [t for t in traces if t], report)
    # --save was asked for: a session that could not be saved is a failed run (exit 1).
    return EXIT_FAIL if args.save and not saved else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    config = _config(args, model=args.model)
    if config.model is not None:
        from agent.core import llm

        problem = llm.model_problem(config.model)
        if problem:
            raise UsageError(problem)
    if args.restore and not Path(args.restore).is_file():
        raise UsageError(f"--restore {args.restore}: no such file")
    _check_writable(config.telemetry_dir)
    return asyncio.run(_run(args, config))


# -- events --


def cmd_events(args: argparse.Namespace) -> int:
    from agent.core.dataset import queries

    config = _config(args)
    directory = config.telemetry_dir
    if not queries.has_data(directory):
        raise UsageError(
            f"no events in {directory / 'data'}: run `ml-intern demo` first, or pass --telemetry-dir"
        )
    sessions = [args.session_id] if args.session_id else None
    if args.events_command == "summary":
        summary = queries.summary(directory, session_ids=sessions)
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            _print_summary(summary)
        _data_notices(directory)
        return EXIT_OK
    if args.events_command == "tail":
        if not 1 <= args.limit <= MAX_TAIL:
            raise UsageError(f"--limit must be between 1 and {MAX_TAIL:,}")
        rows = queries.tail(directory, limit=args.limit, session_ids=sessions)
    else:
        if not args.trace_id and not args.session_id:
            raise UsageError("events show needs --trace-id ID or --session-id ID")
        if args.trace_id and not _is_hex(args.trace_id, 32):
            raise UsageError(
                f"--trace-id {args.trace_id!r} is not a LangFuse trace id (32 lowercase hex characters)"
            )
        rows = queries.rows(directory, trace_id=args.trace_id, session_ids=sessions)
        if not rows:
            # An empty answer is an answer, not a failure (exit 1 means the work failed).
            if args.json:
                print("[]")
            what = f"trace {args.trace_id}" if args.trace_id else f"session {args.session_id}"
            _notice(f"no events of {what} in {directory / 'data'}")
            _data_notices(directory)
            return EXIT_OK
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        _print_rows(rows)
    _data_notices(directory)
    return EXIT_OK


MAX_TAIL = 1_000_000


def _notice(message: str) -> None:
    err.print(f"[dim]notice:[/dim] {escape(message)}", highlight=False)


def _data_notices(directory: Path) -> None:
    """Say what the query skipped or could not add up, instead of dropping it silently."""
    from agent.core.dataset import queries

    problems = queries.data_problems(directory)
    if problems["skipped_lines"]:
        n = problems["skipped_lines"]
        _notice(
            f"{n} line{'s' if n > 1 else ''} in {directory / 'data'} "
            f"{'are' if n > 1 else 'is'} not a valid row (corrupt or cut short) and "
            f"{'were' if n > 1 else 'was'} skipped"
        )
    if problems["non_numeric"]:
        n = problems["non_numeric"]
        _notice(
            f"{n} row{'s' if n > 1 else ''} in {directory / 'data'} {'have' if n > 1 else 'has'} "
            "a token count or cost that is not a number; counted as 0"
        )


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in "0123456789abcdef" for c in value)


def _print_summary(summary: dict[str, Any]) -> None:
    t = Table(title="LLM calls per kind")
    for col in (
        "kind",
        "calls",
        "errors",
        "prompt tokens",
        "completion tokens",
        "total tokens",
        "cost (USD)",
    ):
        t.add_column(col, justify="left" if col == "kind" else "right")
    t.columns[0].min_width = 12
    for row in summary["llm_calls"]:
        t.add_row(
            Text(str(row["kind"])),
            str(row["calls"]),
            str(row["errors"]),
            str(row["prompt_tokens"]),
            str(row["completion_tokens"]),
            str(row["total_tokens"]),
            f"{row['cost_usd']:.6f}",
        )
    console.print(t)
    e = Table(title="Events per type")
    e.add_column("event type")
    e.add_column("count", justify="right")
    for row in summary["events"]:
        e.add_row(Text(str(row["event_type"])), str(row["count"]))
    console.print(e)
    c = Table(title="Cost per session, all in (USD)")
    for col in ("session", "user", "started", "LLM calls", "LLM", "jobs", "sandboxes", "total"):
        c.add_column(col, justify="left" if col in ("session", "user", "started") else "right")
    for row in summary.get("session_costs", []):
        c.add_row(
            Text(str(row["session_id"] or "")[:12] + ("" if row["ended"] else " (open)")),
            Text(str(row["user_id"] or "")),
            str(row["started"] or "")[:19],
            str(row["llm_calls"]),
            f"{row['llm_cost_usd']:.6f}",
            f"{row['job_cost_usd']:.6f}",
            f"{row['sandbox_cost_usd']:.6f}",
            f"{row['total_cost_usd']:.6f}",
        )
    console.print(c)
    console.print(
        f"sessions: {summary['sessions']}  events: {summary['total_events']}  "
        f"total cost: ${summary['total_cost_usd']:.6f} (LLM ${summary['llm_cost_usd']:.6f}, "
        f"jobs ${summary['job_cost_usd']:.6f}, sandboxes ${summary['sandbox_cost_usd']:.6f})"
    )


def _print_rows(rows: list[dict[str, Any]]) -> None:
    t = Table()
    for col in ("timestamp", "event_type", "kind", "session", "turn", "langfuse_trace_id", "data"):
        t.add_column(col, overflow="fold", no_wrap=col != "data")
    for r in rows:
        t.add_row(
            *(
                Text(cell)
                for cell in (
                    str(r["timestamp"])[:19].replace("T", " "),
                    str(r["event_type"]),
                    str(r.get("kind") or ""),
                    str(r.get("session_id") or "")[:8],
                    str(r.get("turn_index") if r.get("turn_index") is not None else ""),
                    str(r.get("langfuse_trace_id") or ""),
                    json.dumps(r.get("data"), default=str)[:120],
                )
            )
        )
    console.print(t)


# -- observability --


def cmd_observability(args: argparse.Namespace) -> int:
    from agent.core.observability import build_policy, resolve_gate, traces_endpoint

    config = _config(args)
    if args.obs_command == "check":
        gate = resolve_gate(config)  # ConfigError for an explicit backend with bad settings
        policy = build_policy(config)
        out: dict[str, Any] = {
            "backend": config.observability_backend,
            "enabled": gate.enabled,
            "reason": gate.reason,
            "warnings": gate.warnings,
            "policy": policy.describe(),
            "flush_timeout_s": config.flush_timeout_s,
            "telemetry_dir": str(config.telemetry_dir),
        }
        if gate.settings is not None:
            s = gate.settings
            out["destination"] = {
                "host": s.host,
                "host_from": s.host_var,
                "otlp_endpoint": traces_endpoint(s, config),
                "public_key": s.masked_public_key(),
                "secret_key": "set (hidden)",
                "environment": s.environment,
                "release": s.release,
                "sample_rate": s.sample_rate,
                "timeout_s": s.timeout_s,
                "media_upload_thread_count": s.media_upload_thread_count,
                "debug": s.debug,
                "trace_name": config.langfuse_trace_name,
                "nest_in_caller_trace": config.langfuse_nest_in_caller_trace,
                "flush_at": config.langfuse_flush_at,
                "flush_interval_s": config.langfuse_flush_interval_s,
            }
        ping = _ping(args, config, gate) if args.ping else None
        if ping is not None:
            out["ping"] = ping.as_dict()
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            state = "[green]ON[/green]" if gate.enabled else "[yellow]OFF[/yellow]"
            console.print(
                f"LangFuse forwarding: {state} ({escape(gate.reason)}); "
                f"backend={config.observability_backend}"
            )
            for w in gate.warnings:
                console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)
            if gate.settings is not None:
                for k, v in out["destination"].items():
                    console.print(f"  {k}: {v}", markup=False)
            console.print("redaction policy:")
            for k, v in out["policy"].items():
                console.print(f"  {k}: {v}", markup=False)
            if ping is not None:
                state = "[green]OK[/green]" if ping.ok else f"[red]FAILED ({ping.problem})[/red]"
                console.print(f"ping: {state} in {ping.elapsed_s:.2f}s: {escape(ping.message)}")
        if ping is not None and not ping.ok:
            return EXIT_FAIL
        return EXIT_OK
    # preview
    from agent.core.callbacks.preview import load_call_record, preview, sample_call_record

    policy = build_policy(config)
    try:
        record = load_call_record(args.file) if args.file else sample_call_record()
        result = preview(record, policy)
        json.dumps(result, default=str)  # what is printed below must encode
    except RecursionError:
        raise UsageError(f"--file {args.file}: the call is nested too deeply to show") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--file {args.file}: {exc}") from exc
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return EXIT_OK
    t = Table(
        title=f"What would be sent (policy: {escape(config.redact or 'default')})", show_lines=True
    )
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
    return EXIT_OK


def _ping(args: argparse.Namespace, config: AgentConfig, gate: Any) -> Any:
    """``check --ping``: one authenticated round trip. Settings that do not name a LangFuse
    destination are a configuration error (exit 2), not a failed check."""
    from agent.core.forwarding.ping import ping_langfuse
    from agent.core.observability import traces_endpoint

    if gate.settings is None:
        raise UsageError(
            f"--ping needs LangFuse settings: forwarding is off ({gate.reason}). Set "
            "LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY"
        )
    if not args.ping_timeout > 0:
        raise UsageError("--ping-timeout must be a positive number of seconds")
    return ping_langfuse(
        gate.settings,
        traces_endpoint=traces_endpoint(gate.settings, config),
        timeout=args.ping_timeout,
    )


def _scrubbed(text: str) -> str:
    from agent.core.redact import scrub

    return scrub(text)


def _tolerate_no_temp_dir() -> None:
    """litellm calls ``tempfile.gettempdir()`` at import, which raises when no candidate
    directory accepts a small test file (a full disk). Name the usual one without that test,
    so the agent still runs (and warns) instead of dying in an import."""
    import tempfile

    try:
        tempfile.gettempdir()
    except OSError as exc:
        tempfile.tempdir = os.environ.get("TMPDIR") or "/tmp"
        _warn(f"no usable temporary directory ({exc.strerror or exc}); is the disk full?")


def _tolerate_unencodable_output() -> None:
    """A reply or a name may hold a code point the terminal's encoding cannot take (a lone
    surrogate from a non-UTF-8 file name): print an escape for it, never die mid-output."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict":
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _tolerate_no_temp_dir()
    _tolerate_unencodable_output()
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    if args.debug:
        _warn(DEBUG_WARNING)
        logging.getLogger("LiteLLM").setLevel(logging.DEBUG)
    else:
        # litellm logs every provider exception at ERROR with a banner; ours are reported
        # cleanly.
        logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logger.info("ml-intern %s (log level %s)", args.command, logging.getLevelName(level))
    handlers = {
        "demo": cmd_demo,
        "run": cmd_run,
        "events": cmd_events,
        "observability": cmd_observability,
    }
    try:
        return handlers[args.command](args)
    except (UsageError, ConfigError) as exc:
        err.print(f"[red]ml-intern: error:[/red] {escape(_scrubbed(str(exc)))}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
