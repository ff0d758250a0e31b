"""``ml-intern demo`` and ``ml-intern run``: sessions of the agent, with both pipelines on.

Contract: ``cmd_demo`` runs the offline demo (two sessions through every call site and tool,
the second restored from the first; no network, no API key) and prints what the dataset holds
of it; ``cmd_run`` runs one task with a litellm model (or the offline script), prints the reply
on stdout and exits 1 if the task failed (or ``--save`` could not save it). Both end with the
HF Dataset's losses, if any, and the LangFuse forwarding summary with one trace URL per turn
(``trace: URL`` when the host acknowledged the traces, ``trace (not delivered): URL`` or
``trace (maybe not delivered): URL`` when it did not, or not all of them).
A full disk is a warning, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from agent.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    UsageError,
    check_writable,
    config_from_args,
)
from agent.cli.output import console, err, print_compute, print_summary, scrubbed, warn
from agent.config import AgentConfig

__all__ = ["DEMO_TURNS", "cmd_demo", "cmd_run"]

DEMO_TURNS = (
    "Count the words in this request, then research background on word statistics.",
    "Now submit a quick training job to check the numbers.",
)


# -- demo --


def cmd_demo(args: argparse.Namespace) -> int:
    config = config_from_args(args, context_token_budget=256)
    check_writable(config.telemetry_dir)
    started = time.monotonic()
    sessions, traces, (obs, report) = asyncio.run(_demo(config, args.user_id))
    err.print(
        f"[green]demo finished[/green] in {time.monotonic() - started:.1f}s; "
        f"dataset: {escape(str(config.telemetry_dir / 'data'))}"
    )
    from agent.core.dataset import queries

    if queries.has_data(config.telemetry_dir):
        print_summary(queries.summary(config.telemetry_dir, session_ids=sessions))
        print_compute(queries.rows(config.telemetry_dir, session_ids=sessions))
    else:
        warn(f"no rows reached {config.telemetry_dir / 'data'} (see the warnings above)")
    _print_hf_losses(report)
    _print_forwarding(obs, traces, report)
    return EXIT_OK


async def _demo(config: AgentConfig, user_id: str) -> tuple[list[str], list[str], Any]:
    from agent.core.observability import Observability

    obs = Observability.from_config(config)
    sessions: list[str] = []
    traces: list[str] = []
    try:
        with err.status("demo: session 1, turn 0 …") as status:
            saved = await _first_session(config, obs, user_id, status, sessions, traces)
            status.update("demo: session 2 (restored) …")
            await _restored_session(config, obs, user_id, saved, sessions, traces)
        await obs.adrain()
    finally:
        report = obs.shutdown()
    return sessions, [t for t in traces if t], (obs, report)


async def _first_session(
    config: AgentConfig,
    obs: Any,
    user_id: str,
    status: Any,
    sessions: list[str],
    traces: list[str],
) -> Path | None:
    """The demo's first session: its turns, a feedback score, then saved (None: not saved)."""
    from agent.core import telemetry
    from agent.core.agent_loop import Agent
    from agent.core.session import Session

    session = Session(user_id=user_id, observability=obs)
    sessions.append(session.session_id)
    # "high" is above what the scripted deployment accepts: the effort_probe call site runs.
    agent = Agent(session, config, reasoning_effort="high")
    try:
        for i, task in enumerate(DEMO_TURNS):
            status.update(f"demo: session 1, turn {i} …")
            link = session.link()
            reply = await agent.run_turn(task)
            traces.append(link.trace_id or "")
            err.print(f"[dim]turn {i}:[/dim] {escape(reply[:100])}")
        telemetry.record_feedback(session, value=1.0, comment="Helpful, thanks!", turn_index=0)
        return _save_or_warn(
            agent,
            config.telemetry_dir / "sessions" / f"{session.session_id}.json",
            "session 2 starts without restoring it",
        )
    finally:
        agent.close()


async def _restored_session(
    config: AgentConfig,
    obs: Any,
    user_id: str,
    saved: Path | None,
    sessions: list[str],
    traces: list[str],
) -> None:
    """The demo's second session: the first one restored (when it was saved), one turn."""
    from agent.core.agent_loop import Agent
    from agent.core.session import Session

    session = Session(user_id=user_id, observability=obs)
    sessions.append(session.session_id)
    agent = Agent(session, config)
    try:
        link = session.link()
        if saved is not None:
            await agent.restore(saved)
        reply = await agent.run_turn("Continue where we left off and summarise the results.")
        traces.append(link.trace_id or "")
        label = "restored turn 0" if saved is not None else "session 2, turn 0"
        err.print(f"[dim]{label}:[/dim] {escape(reply[:100])}")
    finally:
        agent.close()


# -- run --


def cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # --model among the flags
    if config.model is not None:
        from agent.core import llm

        problem = llm.model_problem(config.model)
        if problem:
            raise UsageError(problem)
    if args.restore:
        _check_restore(Path(args.restore))
    check_writable(config.telemetry_dir)
    return asyncio.run(_run(args, config))


def _check_restore(path: Path) -> None:
    """A ``--restore`` that cannot be a saved session is a usage error naming what it is."""
    if path.is_dir():
        raise UsageError(f"--restore {path} is a directory, not a session file (one --save wrote)")
    if not path.exists():
        raise UsageError(f"--restore {path}: no such file")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--restore {path}: cannot read it ({exc.strerror or exc})") from exc
    except ValueError as exc:  # not UTF-8, or not JSON
        raise UsageError(
            f"--restore {path} is not a session file (one --save wrote): {exc}"
        ) from exc
    if not isinstance(saved, dict) or not isinstance(saved.get("messages"), list):
        raise UsageError(
            f"--restore {path} is not a session file (one --save wrote): it has no messages"
        )


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
            f"{escape(scrubbed(str(exc)))}"
        )
        report = obs.shutdown()
        _print_forwarding(obs, [t for t in traces if t], report)
        return EXIT_FAIL
    report = obs.shutdown()
    _print_hf_losses(report)
    _print_forwarding(obs, [t for t in traces if t], report)
    # --save was asked for: a session that could not be saved is a failed run (exit 1).
    return EXIT_FAIL if args.save and not saved else EXIT_OK


# -- what both print at the end --


def _save_or_warn(agent: Any, path: Path, consequence: str) -> Path | None:
    """Save the session; on a full disk (or any OS error) warn and return None."""
    try:
        return agent.save(path)
    except OSError as exc:
        warn(f"could not save the session to {path} ({exc.strerror or exc}); {consequence}")
        return None


def _print_hf_losses(report: dict[str, Any]) -> None:
    hf = report.get("hf_dataset") or {}
    lost = int(hf.get("dropped") or 0) + int(hf.get("pending") or 0)
    if lost:
        warn(
            f"HF Dataset: {hf.get('written', 0)} rows written, {lost} not written "
            f"({hf.get('write_errors', 0)} write errors; see the warnings above)"
        )
    not_pushed = int(hf.get("not_pushed") or 0)
    if not_pushed:
        warn(
            f"HF Dataset: {not_pushed} {'rows are' if not_pushed > 1 else 'row is'} on disk "
            "but not on the Hub (see the warning above); the next push from this telemetry "
            "directory sends them"
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
    _print_trace_links(obs, traces, lf.get("traces"))


def _print_trace_links(obs: Any, traces: list[str], acknowledged: Any) -> None:
    """One ``trace: URL`` line per turn, when the host acknowledged as many traces as there are
    links; otherwise each link says it was not (or may not have been) delivered, so a link to
    a trace that never arrived is never shown as if it had."""
    if not traces:
        return
    if isinstance(acknowledged, int) and acknowledged >= len(traces):
        for trace_id in traces:
            console.print(f"trace: {obs.trace_url(trace_id)}", markup=False)
        return
    if not isinstance(acknowledged, int):
        label = "delivery unknown"
    elif acknowledged == 0:
        label = "not delivered"
        warn(f"LangFuse acknowledged none of the {len(traces)} traces below: they are not there")
    else:
        label = "maybe not delivered"
        warn(
            f"LangFuse acknowledged {acknowledged} of the {len(traces)} traces below; the "
            "others did not arrive (see the warnings above)"
        )
    for trace_id in traces:
        console.print(f"trace ({label}): {obs.trace_url(trace_id)}", markup=False)
