"""The ``ml-intern`` command line.

    ml-intern demo     [--telemetry-dir DIR] [--user-id ID]       the offline session
    ml-intern run TASK [--model M] [--user-id ID] ...              one task with a real model
    ml-intern events   summary|tail|show [--telemetry-dir DIR] [--json] [--trace-id ID]
    ml-intern observability check [--ping] | preview [--redact SPEC] [--file CALL.json]

    every command also takes -v/--verbose (INFO) and --debug (DEBUG, with a warning)

Exit codes: 0 success (an empty answer included, with a notice), 1 the work (or a
``check --ping``) failed, 2 bad usage or configuration (a message, never a traceback).

This module is the entry point only: the parser, logging, and the dispatch to the commands in
``agent.cli`` (``run``: demo and run, ``events``, ``observability``). Nothing in ``agent``
imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from agent.cli.common import EXIT_USAGE, UsageError, logger, tolerate_no_temp_dir
from agent.cli.events import cmd_events
from agent.cli.observability import cmd_observability
from agent.cli.output import err, error, tolerate_unencodable_output, warn
from agent.cli.run import cmd_demo, cmd_run
from agent.config import ConfigError

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


COMMANDS = {
    "demo": cmd_demo,
    "run": cmd_run,
    "events": cmd_events,
    "observability": cmd_observability,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tolerate_no_temp_dir()
    tolerate_unencodable_output()
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    if args.debug:
        warn(DEBUG_WARNING)
        logging.getLogger("LiteLLM").setLevel(logging.DEBUG)
    else:
        # litellm logs every provider exception at ERROR with a banner; ours are reported
        # cleanly.
        logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logger.info("ml-intern %s (log level %s)", args.command, logging.getLevelName(level))
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError) as exc:
        error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
