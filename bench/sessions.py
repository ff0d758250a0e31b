"""Many sessions in one process: does the forwarder keep up, and what does it cost the agent?

The hosted ml-intern backend runs many agent sessions in one process. Here ``SESSIONS`` (64)
sessions run concurrently on one event loop for ``DURATION_S`` seconds; each runs turns of
``CALLS_PER_TURN`` calls of the heavy workload (``bench/workload.py``), every call answered by
litellm's ``mock_response`` after a simulated provider latency of ``LATENCY_S`` (200 ms,
``mock_delay``), each turn framed by ``turn_start`` / ``turn_complete`` events. Each
configuration (no telemetry; ours with the HF sink, forwarding from the sidecar; the same from a
thread) runs in its own process, one after the other, against a loopback sink in this process,
at the forwarder's default queue size.

Reported per configuration: calls per second (the ideal is ``SESSIONS / LATENCY_S``), the mean
and p99 of a call as the session sees it, CPU per call over every thread and process, the
forwarder's intake queue high-water mark and every drop (after a final flush), and how many
call spans reached the sink.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import overhead

SESSIONS = 64
LATENCY_S = 0.2
DURATION_S = 15.0
CALLS_PER_TURN = 3

# key -> (label, forwarder mode or None for no telemetry)
CONFIGS: dict[str, tuple[str, str | None]] = {
    "a": ("no callback", None),
    "g": ("ours default + HF sink, sidecar", "sidecar"),
    "i": ("ours default + HF sink, thread", "thread"),
}


def worker_main(config: str, sink_url: str, workdir: str, duration: float) -> None:
    from agent.testing import loopback

    loopback.install("bench")
    import asyncio
    import uuid

    from agent.config import AgentConfig
    from agent.core import llm, telemetry
    from agent.core.observability import Observability
    from agent.core.session import Session
    from bench import workload

    mode = CONFIGS[config][1]
    obs = None
    if mode is not None:
        tag = uuid.uuid4().hex[:10]
        cfg = AgentConfig.load(
            env={
                "LANGFUSE_HOST": sink_url,
                "LANGFUSE_PUBLIC_KEY": f"pk-lf-bench-{tag}",
                "LANGFUSE_SECRET_KEY": f"sk-lf-bench-{tag}",
            },
            telemetry_dir=Path(workdir) / "telemetry",
            langfuse_forwarder=mode,
        )
        obs = Observability.from_config(cfg)
        assert obs.forwarding
    arguments = workload.call_arguments("heavy")
    durations: list[float] = []

    async def session_loop(i: int, stop: float) -> None:
        session = Session(user_id=f"user-{i}", observability=obs)
        while time.monotonic() < stop:
            session.turn_index += 1
            telemetry.record_turn_start(session, user_message="go on")
            for _ in range(CALLS_PER_TURN):
                t0 = time.perf_counter()
                await llm.complete(session, **arguments, mock_delay=LATENCY_S)
                durations.append(time.perf_counter() - t0)
            telemetry.record_turn_complete(
                session, final_reply="done", duration_ms=1.0, steps=1, llm_calls=CALLS_PER_TURN
            )

    async def main() -> dict[str, Any]:
        # warm-up: a few turns (imports, caches, the sidecar's start)
        await asyncio.gather(*(session_loop(i, time.monotonic() + 1.0) for i in range(4)))
        if obs is not None:
            obs.flush(30)
        warmup = len(durations)
        durations.clear()
        cpu0 = time.process_time()
        kids0 = overhead.children_cpu()
        t0 = time.perf_counter()
        stop = time.monotonic() + duration
        await asyncio.gather(*(session_loop(i, stop) for i in range(SESSIONS)))
        wall = time.perf_counter() - t0
        await llm.adrain_callbacks(30.0)
        flushed = obs.flush(30) if obs is not None else True
        cpu = time.process_time() - cpu0 + overhead.children_cpu() - kids0
        out: dict[str, Any] = {
            "calls": len(durations),
            "wall_s": wall,
            "calls_per_s": len(durations) / wall,
            "mean": sum(durations) / len(durations),
            "p99": overhead._pct(durations, 0.99),
            "cpu_per_call": cpu / len(durations),
            "flushed": flushed,
            "warmup_calls": warmup,
        }
        if obs is not None:
            stats = obs.langfuse.stats()
            out["high_water"] = stats.get("queue_high_water")
            out["queue_size"] = obs.config.langfuse_queue_size
            out["dropped"] = stats.get("dropped", {})
            out["mode"] = stats.get("forwarder_mode")
            obs.shutdown(10)
        return out

    report = asyncio.run(main())
    sys.stdout.write(overhead._MARK + json.dumps(report) + "\n")
    sys.stdout.flush()


def run(*, duration: float = DURATION_S, progress: Any = print) -> dict[str, Any]:
    """Each configuration in turn, in its own process; per configuration the worker's report
    and how many call spans reached its sink."""
    BenchSink = overhead._bench_sink_class()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ml-intern-bench-") as workdir:
        for key, (label, _) in CONFIGS.items():
            sink = BenchSink().start()
            try:
                (Path(workdir) / key).mkdir()
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "import sys; from bench.sessions import worker_main; "
                        "worker_main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))",
                        key,
                        sink.url,
                        str(Path(workdir) / key),
                        str(duration),
                    ],
                    cwd=str(overhead.ROOT),
                    env=overhead._worker_env(None),
                    capture_output=True,
                    text=True,
                    timeout=duration * 4 + 300,
                )
                lines = [x for x in proc.stdout.splitlines() if x.startswith(overhead._MARK)]
                if proc.returncode != 0 or not lines:
                    raise RuntimeError(f"sessions worker {key} failed:\n{proc.stderr[-3000:]}")
                report = json.loads(lines[-1][len(overhead._MARK) :])
                from agent.testing.otlp import decode_otlp

                spans = [s for body, enc in sink.raw for s in decode_otlp(body, enc)]
                report["call_spans"] = (
                    sum(1 for s in spans if s["name"] == "llm.main") - report["warmup_calls"]
                )
                report["label"] = label
                results[key] = report
                progress(f"  sessions {key} ({label}): {report['calls_per_s']:.0f} calls/s")
            finally:
                sink.stop()
    return results


def table(res: dict[str, Any]) -> list[str]:
    ideal = SESSIONS / LATENCY_S
    lines = [
        f"{SESSIONS} concurrent sessions in one process, heavy workload, {LATENCY_S * 1e3:.0f} ms "
        f"simulated provider latency (ideal {ideal:.0f} calls/s), default queue size:",
        "",
        "| cfg | configuration | calls/s | mean call ms | p99 call ms | CPU/call ms "
        "| queue high-water / size | drops | call spans delivered |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for key, v in res.items():
        hw = f"{v['high_water']} / {v['queue_size']}" if "high_water" in v else "-"
        drops = "-" if "dropped" not in v else (json.dumps(v["dropped"]) if v["dropped"] else "0")
        spans = f"{v['call_spans']}/{v['calls']}" if key != "a" else "-"
        lines.append(
            f"| {key} | {v['label']} | {v['calls_per_s']:.0f} | {v['mean'] * 1e3:.1f} "
            f"| {v['p99'] * 1e3:.1f} | {v['cpu_per_call'] * 1e3:.2f} | {hw} | {drops} "
            f"| {spans} |"
        )
    return lines


if __name__ == "__main__":
    out = run(duration=float(os.environ.get("BENCH_SESSIONS_S", DURATION_S)))
    print("\n".join(table(out)))
