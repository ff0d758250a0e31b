"""``ml-intern observability check [--ping]`` and ``observability preview``.

Contract: ``check`` resolves the LangFuse gate from the configuration exactly as a run would
(offline): it prints whether forwarding is on and why, the destination (never a secret: the
public key masked, the secret key "set (hidden)") and the redaction policy, and exits 0; an
explicit ``--observability-backend langfuse`` with bad settings is a configuration error (2),
and so is every setting a run would refuse (``hf_user_id=hash`` without an HMAC key, a bad
redaction spec), with the same message. ``--ping`` adds one authenticated round trip to the
host: exit 1 when it fails, with the cause named; 2 when there are no LangFuse settings to ping
or ``--ping-timeout`` is not a number of seconds in (0, 300]. ``preview`` shows what the
policy would send for a saved call (``--file``) or a sample; a file that cannot be read or
shown is exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from rich.markup import escape

from agent.cli.common import EXIT_FAIL, EXIT_OK, UsageError, config_from_args
from agent.cli.output import console, print_preview
from agent.config import AgentConfig

__all__ = ["MAX_PING_TIMEOUT_S", "cmd_observability"]

MAX_PING_TIMEOUT_S = 300.0


def cmd_observability(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    return _check(args, config) if args.obs_command == "check" else _preview(args, config)


# -- check --


def _check(args: argparse.Namespace, config: AgentConfig) -> int:
    from agent.core.forwarding.gate import resolve_gate
    from agent.core.observability import build_policy, hf_row_hook

    _check_ping_timeout(args.ping_timeout)
    gate = resolve_gate(config)  # ConfigError for an explicit backend with bad settings
    hf_row_hook(config)  # ConfigError as in a run: hf_user_id=hash without an HMAC key
    out: dict[str, Any] = {
        "backend": config.observability_backend,
        "enabled": gate.enabled,
        "reason": gate.reason,
        "warnings": gate.warnings,
        "policy": build_policy(config).describe(),
        "flush_timeout_s": config.flush_timeout_s,
        "telemetry_dir": str(config.telemetry_dir),
    }
    if gate.settings is not None:
        out["destination"] = _destination(gate.settings, config)
    ping = _ping(args, config, gate) if args.ping else None
    if ping is not None:
        out["ping"] = ping.as_dict()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_check(out, gate, ping)
    return EXIT_FAIL if ping is not None and not ping.ok else EXIT_OK


def _destination(settings: Any, config: AgentConfig) -> dict[str, Any]:
    """Where forwarding sends, and with which settings: nothing secret."""
    from agent.core.forwarding.gate import traces_endpoint

    return {
        "host": settings.host,
        "host_from": settings.host_var,
        "otlp_endpoint": traces_endpoint(settings, config),
        "public_key": settings.masked_public_key(),
        "secret_key": "set (hidden)",
        "environment": settings.environment,
        "release": settings.release,
        "sample_rate": settings.sample_rate,
        "timeout_s": settings.timeout_s,
        "media_upload_thread_count": settings.media_upload_thread_count,
        "debug": settings.debug,
        "trace_name": config.langfuse_trace_name,
        "nest_in_caller_trace": config.langfuse_nest_in_caller_trace,
        "flush_at": config.langfuse_flush_at,
        "flush_interval_s": config.langfuse_flush_interval_s,
        "forwarder": config.langfuse_forwarder,
    }


def _print_check(out: dict[str, Any], gate: Any, ping: Any) -> None:
    state = "[green]ON[/green]" if gate.enabled else "[yellow]OFF[/yellow]"
    console.print(f"LangFuse forwarding: {state} ({escape(gate.reason)}); backend={out['backend']}")
    for w in gate.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)
    for k, v in out.get("destination", {}).items():
        console.print(f"  {k}: {v}", markup=False)
    console.print("redaction policy:")
    for k, v in out["policy"].items():
        console.print(f"  {k}: {v}", markup=False)
    if ping is not None:
        state = "[green]OK[/green]" if ping.ok else f"[red]FAILED ({ping.problem})[/red]"
        console.print(f"ping: {state} in {ping.elapsed_s:.2f}s: {escape(ping.message)}")


def _check_ping_timeout(seconds: float) -> None:
    # Finite and bounded: inf or 1e300 would overflow the deadline arithmetic of the request.
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_PING_TIMEOUT_S):
        raise UsageError(
            f"--ping-timeout {seconds:g}: must be a number of seconds above 0 and at most "
            f"{MAX_PING_TIMEOUT_S:g}"
        )


def _ping(args: argparse.Namespace, config: AgentConfig, gate: Any) -> Any:
    """``check --ping``: one authenticated round trip. Settings that do not name a LangFuse
    destination are a configuration error (exit 2), not a failed check."""
    from agent.core.forwarding.gate import traces_endpoint
    from agent.core.forwarding.ping import ping_langfuse

    if gate.settings is None:
        raise UsageError(
            f"--ping needs LangFuse settings: forwarding is off ({gate.reason}). Set "
            "LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY"
        )
    return ping_langfuse(
        gate.settings,
        traces_endpoint=traces_endpoint(gate.settings, config),
        timeout=args.ping_timeout,
    )


# -- preview --


def _preview(args: argparse.Namespace, config: AgentConfig) -> int:
    from agent.core.observability import build_policy
    from agent.core.privacy.preview import load_call_record, preview, sample_call_record

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
    else:
        print_preview(result, config.redact or "default")
    return EXIT_OK
