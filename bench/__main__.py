"""Run every benchmark and print one table: ``.venv/bin/python -m bench [--quick]``.

See bench/README.md for what each row means. The table is also written to bench/results.md
(with the date, the machine and the exact command) unless ``--no-write`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import overhead

HERE = Path(__file__).resolve().parent

# Targets (issue 13; the README's performance table, how each is judged: bench/README.md):
# by the mean, on every workload.
T_RATIO_VS_OTEL = 0.25  # our added time <= 0.25 x langfuse_otel's added time
T_FRACTION_OF_BARE = 0.10  # ... and <= 10% of a bare call
T_ADDED_P99_MS = 2.0
T_CPU_VS_OTEL = 0.5  # our added CPU per call (every thread and process) <= 0.5 x langfuse_otel's
T_SCRUB_MBS = 100.0
T_LINEAR = 12.0  # 1 MB in <= 12 x the 100 KB time
T_ADVERSARIAL = 10.0  # no adversarial 1 MB input > 10 x slower than ordinary 1 MB text


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ver(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _ms(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:+.3f}" if signed else f"{x * 1e3:.3f}"


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _overhead_table(res: dict[str, Any]) -> list[str]:
    a = res.get("a")
    lines = [
        "| cfg | configuration | mean ms | added mean ms (% of a) | p50 ms | added p50 ms "
        "| p99 ms | added p99 ms | CPU/call ms, all threads and processes (added) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, v in res.items():
        base = key == "a"
        pct = "" if base or not a else f" ({v['added_mean'] / a['mean'] * 100:+.1f}%)"
        lines.append(
            f"| {key} | {v['label']} | {_ms(v['mean'])} "
            f"| {'-' if base else _ms(v['added_mean'], True) + pct} | {_ms(v['p50'])} "
            f"| {'-' if base else _ms(v['added_p50'], True)} | {_ms(v['p99'])} "
            f"| {'-' if base else _ms(v['added_p99'], True)} "
            f"| {_ms(v['cpu'])} ({'-' if base else _ms(v['added_cpu'], True)}) |"
        )
    return lines


def _delivery_table(ov: dict[str, Any]) -> list[str]:
    lines = [
        "| cfg | wire B/call (protobuf B/call) | call spans delivered | HF rows |",
        "|---|---:|---:|---:|",
    ]
    for key, worker in ov["workers"].items():
        d = ov["delivery"].get(key)
        wire = spans = "-"
        if d is not None:
            enc = "+".join(d["encodings"])
            wire = f"{d['wire_bytes_per_call']:,.0f} {enc} ({d['proto_bytes_per_call']:,.0f})"
            spans = f"{d['call_spans']}/{d['calls']} ({d['spans']} spans)"
        hf = (worker or {}).get("hf")
        lines.append(f"| {key} | {wire} | {spans} | {hf['written'] if hf else '-'} |")
    return lines


def _threads_table(res: dict[str, Any]) -> list[str]:
    groups = [
        "caller",
        "executor",
        "forwarder",
        "span export",
        "HF writer",
        "child processes",
        "other",
    ]
    lines = [
        "| cfg | " + " | ".join(groups) + " | all |",
        "|---|" + "---:|" * (len(groups) + 1),
    ]
    for key, v in res.items():
        t = v.get("threads") or {}
        cells = [f"{t[g] * 1e3:.2f}" if t.get(g) else "-" for g in groups]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {v['cpu'] * 1e3:.2f} |")
    return lines


def _redaction_table(res: dict[str, Any]) -> list[str]:
    o = res["scrub"]["ordinary"]
    lines = [
        "| redaction / sink | figure | target |",
        "|---|---:|---|",
    ]
    for label in ("1 KB", "100 KB", "1 MB"):
        mbs = o[label]["mb_s"]
        lines.append(
            f"| scrub, ordinary text, {label} | {mbs:.0f} MB/s | >= {T_SCRUB_MBS:.0f} MB/s: "
            f"{_mark(mbs >= T_SCRUB_MBS)} |"
        )
    lin = o["1 MB"]["seconds"] / o["100 KB"]["seconds"]
    lines.append(
        f"| scrub, 1 MB time / 100 KB time | {lin:.1f} x | <= {T_LINEAR:.0f} x: "
        f"{_mark(lin <= T_LINEAR)} |"
    )
    adv = res["scrub"]["adversarial"]
    worst = max(adv, key=lambda k: adv[k]["slowdown"])
    lines.append(
        f"| scrub, worst adversarial 1 MB input ({worst}) | {adv[worst]['slowdown']:.1f} x "
        f"slower ({adv[worst]['mb_s']:.0f} MB/s) | <= {T_ADVERSARIAL:.0f} x: "
        f"{_mark(adv[worst]['slowdown'] <= T_ADVERSARIAL)} |"
    )
    for name, v in (res.get("catalogue") or {}).items():
        lines.append(
            f"| scrub 1 MB, {name} (interleaved; median / mean) | {v['mb_s_median']:.0f} / "
            f"{v['mb_s_mean']:.0f} MB/s | - |"
        )
    for spec, sec in res["record"].items():
        lines.append(f"| redact(record), realistic call, {spec} | {sec * 1e6:.0f} us | - |")
    lines.append(
        f"| HF Dataset sink, {res['hf']['rows']:,} llm_call rows, export + flush "
        f"| {res['hf']['rows_per_s']:,.0f} rows/s | - |"
    )
    return lines


def _adversarial_table(res: dict[str, Any]) -> list[str]:
    adv = res["scrub"]["adversarial"]
    lines = ["| adversarial 1 MB input | MB/s | x ordinary 1 MB |", "|---|---:|---:|"]
    for name, v in sorted(adv.items(), key=lambda kv: -kv[1]["slowdown"]):
        lines.append(f"| {name} | {v['mb_s']:.0f} | {v['slowdown']:.1f} |")
    return lines


def _overhead_targets(name: str, res: dict[str, Any]) -> list[str]:
    out = []
    a, c = res.get("a"), res.get("c")
    for key in ("d", "e", "g", "i"):
        v = res.get(key)
        if v is None or a is None:
            continue
        frac = v["added_mean"] / a["mean"]
        line = (
            f"- {name} ({key}): added mean {_ms(v['added_mean'])} ms = {frac * 100:.1f}% of a bare "
            f"call (<= {T_FRACTION_OF_BARE * 100:.0f}%: {_mark(frac <= T_FRACTION_OF_BARE)})"
        )
        if c is not None and c["added_mean"] > 0:
            ratio = v["added_mean"] / c["added_mean"]
            line += (
                f"; {ratio:.2f} x langfuse_otel's {_ms(c['added_mean'])} ms "
                f"(<= {T_RATIO_VS_OTEL}: {_mark(ratio <= T_RATIO_VS_OTEL)})"
            )
        line += (
            f"; added p99 {_ms(v['added_p99'])} ms (<= {T_ADDED_P99_MS} ms: "
            f"{_mark(v['added_p99'] * 1e3 <= T_ADDED_P99_MS)})"
        )
        if c is not None and c["added_cpu"] > 0:
            cpu = v["added_cpu"] / c["added_cpu"]
            line += (
                f"; added CPU {_ms(v['added_cpu'])} ms = {cpu:.2f} x langfuse_otel's "
                f"{_ms(c['added_cpu'])} ms (<= {T_CPU_VS_OTEL}: {_mark(cpu <= T_CPU_VS_OTEL)})"
            )
        out.append(line)
    return out


def _targets(ov: dict[str, Any] | None, red: dict[str, Any] | None) -> list[str]:
    out = []
    if ov:
        for name, res in ov["workloads"].items():
            out += _overhead_targets(name, res)
        checks = (ov["workers"].get("d") or {}).get("checks")
        if checks:
            out.append(
                "- fast-path equivalence (in the (d) worker): "
                + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in checks.items())
            )
        for key, d in ov["delivery"].items():
            if d["call_spans"] != d["calls"]:
                out.append(f"- ({key}) delivered {d['call_spans']} of {d['calls']} call spans!")
    if red:
        o = red["scrub"]["ordinary"]
        slow = min(o[s]["mb_s"] for s in o)
        lin = o["1 MB"]["seconds"] / o["100 KB"]["seconds"]
        worst = max(v["slowdown"] for v in red["scrub"]["adversarial"].values())
        out.append(
            f"- redaction >= {T_SCRUB_MBS:.0f} MB/s on ordinary text (slowest size {slow:.0f} "
            f"MB/s): {_mark(slow >= T_SCRUB_MBS)}; linear (1 MB = {lin:.1f} x 100 KB, "
            f"target <= {T_LINEAR:.0f}): {_mark(lin <= T_LINEAR)}"
        )
        out.append(
            f"- no adversarial input > {T_ADVERSARIAL:.0f} x slower (worst {worst:.1f} x): "
            f"{_mark(worst <= T_ADVERSARIAL)}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="about a minute: fewer, shorter rounds")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 64; quick 10)")
    ap.add_argument("--calls", type=int, help="timed calls per block (default 50; quick 40)")
    ap.add_argument(
        "--configs",
        default=overhead.DEFAULT_CONFIGS,
        help=f"which configurations, e.g. 'acde' (default {overhead.DEFAULT_CONFIGS}; 'a' is "
        "always added: every 'added' figure is relative to it)",
    )
    ap.add_argument(
        "--workloads",
        default="light,heavy",
        help="which workloads of bench/workload.py, comma-separated (default light,heavy)",
    )
    ap.add_argument(
        "--sessions",
        action="store_true",
        help="also run the many-sessions scenario (bench/sessions.py; about a minute)",
    )
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-redaction", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results.md")
    ap.add_argument("--json", type=Path, help="also dump every raw figure to this file")
    args = ap.parse_args(argv)

    rounds = args.rounds or (10 if args.quick else 64)
    calls = args.calls or (40 if args.quick else 50)
    configs = "a" + "".join(c for c in args.configs if c != "a" and c in overhead.CONFIGS)
    workloads = [w for w in args.workloads.split(",") if w]
    started = time.monotonic()

    ov = red = None
    if not args.skip_overhead:
        _progress(f"overhead: {len(configs)} configurations, {rounds} rounds x {calls} calls")
        ov = overhead.run(
            rounds=rounds,
            calls=calls,
            configs=configs,
            workloads=workloads,
            progress=_progress,
        )
    many = None
    if args.sessions:
        from bench import sessions

        _progress("many sessions ...")
        many = sessions.run(progress=_progress)
    if not args.skip_redaction:
        _progress("redaction, record redaction and HF sink ...")
        red = _redaction_in_subprocess(args.quick)
    elapsed = time.monotonic() - started

    command = " ".join([".venv/bin/python -m bench", *(argv if argv is not None else sys.argv[1:])])
    head = [
        f"# ml-intern observability benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- command: `{command.strip()}` (took {elapsed:.0f} s)",
        f"- machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"litellm {_ver('litellm')}, langfuse {_ver('langfuse')}, "
        f"opentelemetry-sdk {_ver('opentelemetry-sdk')}",
        *(f"- workload {name}: {bench_workload_desc(name)}" for name in workloads),
    ]
    if ov:
        head.append(
            f"- overhead: {rounds} interleaved rounds x {calls} timed calls per configuration and "
            "workload (each configuration in its own process, warmed up); mean and p99 pooled "
            "over all calls, p50 the median of block medians, CPU per call over every thread "
            "and every process the configuration runs (the flush after each block included); "
            "'added' figures are paired with (a) round by round (added mean and CPU: the mean "
            "of the paired differences)"
        )
    body: list[str] = []
    if ov:
        for name, res in ov["workloads"].items():
            body += ["", f"## Per-call overhead, {name} workload (await llm.complete)", ""]
            body += _overhead_table(res)
            body += [
                "",
                "CPU ms per call by thread and process (mean over rounds; from /proc clock "
                "ticks, so coarse; 'executor' is litellm's thread pool, 'span export' the "
                "exporter's queue worker that encodes and sends, 'child processes' the "
                "forwarding sidecar):",
                "",
            ]
            body += _threads_table(res)
        body += ["", "## What arrived (timed calls of every workload)", ""]
        body += _delivery_table(ov)
    if many:
        from bench import sessions

        body += ["", "## Many sessions in one process", ""]
        body += sessions.table(many)
    if red:
        body += ["", "## Redaction and HF sink", ""]
        body += _redaction_table(red)
        body += ["", "<details><summary>every adversarial input</summary>", ""]
        body += _adversarial_table(red)
        body += ["", "</details>"]
    body += ["", "## Targets", "", *_targets(ov, red)]
    text = "\n".join(head + body) + "\n"
    print(text)
    if not args.no_write:
        (HERE / "results.md").write_text(text)
        _progress(f"written to {HERE / 'results.md'}")
    if args.json:
        args.json.write_text(
            json.dumps({"overhead": ov, "sessions": many, "redaction": red}, indent=1, default=str)
        )
    return 0


def _redaction_in_subprocess(quick: bool) -> dict[str, Any]:
    """bench.redaction in a fresh process: no heap or threads left over from the rest."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ml-intern-bench-") as tmp:
        out = Path(tmp) / "redaction.json"
        cmd = [sys.executable, "-m", "bench.redaction", "--json-out", str(out)]
        if quick:
            cmd.append("--quick")
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        subprocess.run(cmd, cwd=str(HERE.parent), env=env, check=True)
        return json.loads(out.read_text())


def bench_workload_desc(name: str) -> str:
    from bench import workload

    s = workload.sizes(name)
    return (
        f"{s['messages']} messages (system prompt {s['system']} B, history {s['history']} B of "
        f"user/assistant turns, tool calls and results), {s['tools']} tools ({s['tool_bytes']} "
        f"B of JSON schema), mock reply {s['reply']} chars; model {workload.MODEL}"
    )


if __name__ == "__main__":
    sys.exit(main())
