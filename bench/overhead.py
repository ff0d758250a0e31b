"""Per-call overhead of each telemetry configuration on a realistic mocked LLM call.

Every configuration runs in its own long-lived subprocess (they share global litellm and
OpenTelemetry state, so they must not share a process). The orchestrator (this module's
``run``) starts them, waits until each has imported everything and warmed up, then runs
*rounds*: in each round every configuration in turn (the starting one rotates) runs one block
of ``calls`` timed calls while the others sit idle. A block ends with an untimed flush of
everything that configuration buffers (litellm's logging queue, our forwarder, the exporter,
the HF sink), so no configuration's background work spills into the next one's block; the
flush's CPU is still charged to the block (process CPU covers every thread). The figures are
medians over rounds of per-round statistics.

Each configuration that sends to LangFuse gets its own loopback sink (``BenchSink``: the test
suite's ``FakeLangfuse`` with decoding deferred to the end, so the sink's own protobuf work does
not compete with the measured process while it runs). Bytes on the wire are the request bodies
as received (compressed when the client compressed them).

Worker processes refuse every non-loopback connection (the same guard as the test suite), and
litellm only ever answers from ``mock_response``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# key -> (label, sends to a LangFuse sink)
CONFIGS: dict[str, tuple[str, bool]] = {
    "a": ("no callback", False),
    "b": ("no-op CustomLogger", False),
    "c": ("litellm langfuse_otel", True),
    "d": ("ours, preset=default (sidecar)", True),
    "e": ("ours, preset=metadata-only", True),
    "f": ("HF Dataset sink alone", False),
    "g": ("ours default + HF sink (prod)", True),
    # Diagnostic, not in the default set: our hook and queue only, the worker drops each
    # record unprocessed (how much of (d) is the caller's side).
    "h": ("ours, hook + queue only", True),
    # The same as (d) with the forwarding core on a thread of this process (no sidecar).
    "i": ("ours, preset=default, in-thread", True),
}
DEFAULT_CONFIGS = "abcdefgi"

_MARK = "@@BENCH "


# ---------------------------------------------------------------------------------------------
# the worker (one configuration, in its own process)
# ---------------------------------------------------------------------------------------------


_THREAD_GROUPS = (
    ("MainThread", "caller"),
    ("asyncio_", "executor"),
    ("langfuse.forwarder", "forwarder"),
    ("langfuse.export", "span export"),
    ("hf_dataset.", "HF writer"),
)


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by this process's threads, summed per group (Linux only)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(tid), "")
        group = next((g for prefix, g in _THREAD_GROUPS if name.startswith(prefix)), "other")
        out[group] = out.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def children_cpu(pid: int | None = None) -> float:
    """CPU seconds used so far by every live descendant process of ``pid`` (this process by
    default): the forwarding sidecar and anything else a configuration starts (Linux only)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent_of: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent_of[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    root = os.getpid() if pid is None else pid
    total = 0.0
    for proc, parent in parent_of.items():
        seen = 0
        while parent not in (0, 1, root) and parent in parent_of and seen < 64:
            parent, seen = parent_of[parent], seen + 1
        if parent == root and proc != root:
            total += cpu[proc]
    return total


def _send(obj: dict[str, Any]) -> None:
    sys.stdout.write(_MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker_main(config: str, sink_url: str | None, workdir: str) -> None:
    from agent.testing import loopback

    loopback.install("bench")
    import asyncio
    import gc
    import uuid

    import litellm
    from litellm.integrations.custom_logger import CustomLogger

    from agent.config import AgentConfig
    from agent.core import llm
    from agent.core.forwarding.settings import LangfuseSettings
    from agent.core.observability import Observability
    from agent.core.session import Session
    from bench import workload

    class NoopLogger(CustomLogger):
        def log_success_event(self, kwargs, response_obj, start_time, end_time):
            pass

        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            pass

    fwd = None
    hf = None
    obs = None
    cfg = AgentConfig(telemetry_dir=Path(workdir) / "telemetry")

    def forwarder(spec: str | None, mode: str = "sidecar") -> Any:
        from agent.core.forwarding import engine
        from agent.core.forwarding.logger import LangfuseForwardingLogger
        from agent.core.forwarding.register import register
        from agent.core.forwarding.settings import ForwarderOptions
        from agent.core.privacy.redaction import RedactionPolicy

        if os.environ.get("BENCH_GATHER_S"):
            LangfuseForwardingLogger.GATHER_S = float(os.environ["BENCH_GATHER_S"])
        if os.environ.get("BENCH_YIELD_EVERY"):
            engine.YIELD_EVERY = int(os.environ["BENCH_YIELD_EVERY"])
        tag = uuid.uuid4().hex[:10]
        settings = LangfuseSettings(
            host=str(sink_url), public_key=f"pk-lf-bench-{tag}", secret_key=f"sk-lf-bench-{tag}"
        )
        f = LangfuseForwardingLogger(
            settings, policy=RedactionPolicy.from_spec(spec), options=ForwarderOptions(mode=mode)
        )
        register(f)
        return f

    def hf_sink() -> Any:
        from agent.core.dataset.sink import HFDatasetSink

        return HFDatasetSink(Path(workdir) / "telemetry")

    if config == "b":
        litellm.callbacks = [NoopLogger()]
    elif config == "c":
        # litellm's own callback reads LANGFUSE_OTEL_HOST / keys from the environment, which the
        # orchestrator set to the loopback sink for this process only.
        litellm.callbacks = ["langfuse_otel"]
    elif config == "d":
        fwd = forwarder(None)
    elif config == "e":
        fwd = forwarder("preset=metadata-only")
    elif config == "f":
        hf = hf_sink()
    elif config == "g":
        fwd = forwarder(None)
        hf = hf_sink()
    elif config == "h":
        fwd = forwarder(None)
        fwd._intake._handle = lambda batch: None  # the worker drops every item unread
    elif config == "i":
        fwd = forwarder(None, "thread")
    if fwd is not None or hf is not None:
        obs = Observability(cfg, hf_sink=hf, forwarder=fwd)
    session = Session(user_id="bench-user", observability=obs)
    session.turn_index = 1

    async def one(name: str) -> float:
        arguments = workload.call_arguments(name)
        t0 = time.perf_counter()
        await llm.complete(session, **arguments)
        return time.perf_counter() - t0

    def otel_providers() -> list[Any]:
        # litellm's OpenTelemetry logger keeps its own provider plus one per credential set
        # (langfuse_otel uses the latter); the global provider is left alone.
        from litellm.litellm_core_utils import litellm_logging

        found = []
        for lg in list(getattr(litellm_logging, "_in_memory_loggers", [])):
            p = getattr(lg, "_tracer_provider", None)
            if p is not None and hasattr(p, "force_flush"):
                found.append(p)
            for cached in list(getattr(lg, "_tracer_provider_cache", {}).values()):
                found.append(cached.provider)
        return found

    async def flush() -> None:
        await llm.adrain_callbacks(30.0)
        if fwd is not None:
            fwd.flush(30.0)
        if hf is not None:
            hf.flush(30.0)
        if config == "c":
            for p in otel_providers():
                p.force_flush(30_000)

    async def block(n: int, name: str) -> dict[str, Any]:
        durations = []
        threads0 = thread_cpu()
        children0 = children_cpu()
        cpu0 = time.process_time()
        w0 = time.perf_counter()
        for _ in range(n):
            durations.append(await one(name))
        wall_calls = time.perf_counter() - w0
        cpu_calls = time.process_time() - cpu0
        f0 = time.perf_counter()
        await flush()
        flush_wall = time.perf_counter() - f0
        children = children_cpu() - children0
        # Every thread of this process and every process it started (the sidecar), the flush
        # included: what the configuration costs the machine per call.
        cpu_total = time.process_time() - cpu0 + children
        threads1 = thread_cpu()
        if children:
            threads1["child processes"] = threads0.get("child processes", 0.0) + children
        return {
            "workload": name,
            "threads": {k: v - threads0.get(k, 0.0) for k, v in threads1.items()},
            "durations": durations,
            "wall_calls": wall_calls,
            "cpu_calls": cpu_calls,
            "cpu_total": cpu_total,
            "flush_wall": flush_wall,
        }

    def stats() -> dict[str, Any]:
        out: dict[str, Any] = {}
        if fwd is not None:
            out["forwarder"] = fwd.stats()
        if hf is not None:
            out["hf"] = hf.stats.as_dict()
        return out

    async def main() -> None:
        warm = int(os.environ.get("BENCH_WARMUP", "40"))
        for name in workload.WORKLOADS:
            await block(warm, name)
        gc.collect()
        _send({"ready": True, "pid": os.getpid()})
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            cmd = line.split()
            if not cmd or cmd[0] == "finish":
                break
            if cmd[0] == "run":
                _send({"block": await block(int(cmd[1]), cmd[2])})
        await flush()
        report = stats()
        if config == "d":
            from bench import checks

            report["checks"] = checks.run(fwd)
            fwd.flush(30.0)
        if fwd is not None:
            report["shutdown"] = fwd.shutdown(10.0)
        if hf is not None:
            hf.shutdown(10.0)
        if config == "c":
            for p in otel_providers():
                p.force_flush(30_000)
        _send({"finished": report})

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# the orchestrator
# ---------------------------------------------------------------------------------------------


def _bench_sink_class() -> Any:
    from agent.testing.fake_langfuse import FakeLangfuse

    class BenchSink(FakeLangfuse):
        """``FakeLangfuse`` that keeps OTLP bodies raw and decodes them at the end."""

        def __init__(self) -> None:
            super().__init__()
            self.raw: list[tuple[bytes, str | None]] = []

        def _ingest_otlp(self, body: bytes, headers: dict[str, str]) -> bool:
            with self._lock:
                self.raw.append((body, headers.get("content-encoding")))
            return True

    return BenchSink


@dataclass
class Worker:
    key: str
    proc: subprocess.Popen[str]
    sink: Any
    log: Path
    blocks: list[dict[str, Any]] = field(default_factory=list)
    finished: dict[str, Any] = field(default_factory=dict)
    sink_mark: int = 0  # sink requests received before the timed rounds
    sink_end: int = 0  # ... and after them (the finish step sends a few check spans)

    def read(self, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(
                    f"bench worker {self.key} died; see {self.log}:\n"
                    + self.log.read_text()[-3000:]
                )
            if line.startswith(_MARK):
                return json.loads(line[len(_MARK) :])
        raise TimeoutError(f"bench worker {self.key}")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()


def _worker_env(sink_url: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(("LANGFUSE_", "OTEL_", "ML_INTERN_"))
        and k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "HF_TOKEN")
    }
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    if sink_url:
        # Only litellm's langfuse_otel reads these (ours gets its settings passed in).
        env.update(
            LANGFUSE_OTEL_HOST=sink_url,
            LANGFUSE_HOST=sink_url,
            LANGFUSE_PUBLIC_KEY="pk-lf-bench-otel",
            LANGFUSE_SECRET_KEY="sk-lf-bench-otel",
        )
    return env


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run(
    *,
    rounds: int,
    calls: int,
    configs: str = DEFAULT_CONFIGS,
    workloads: list[str] | None = None,
    warmup: int = 40,
    progress: Any = print,
) -> dict[str, Any]:
    """Run the interleaved overhead benchmark; return per-configuration summaries."""
    BenchSink = _bench_sink_class()
    workloads = workloads or ["light", "heavy"]
    workdir = Path(tempfile.mkdtemp(prefix="ml-intern-bench-"))
    workers: dict[str, Worker] = {}
    try:
        for key in configs:
            sink = BenchSink().start() if CONFIGS[key][1] else None
            log = workdir / f"worker-{key}.log"
            env = _worker_env(sink.url if sink else None)
            env["BENCH_WARMUP"] = str(warmup)
            (workdir / key).mkdir()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from bench.overhead import worker_main; "
                    "worker_main(sys.argv[1], sys.argv[2] or None, sys.argv[3])",
                    key,
                    sink.url if sink else "",
                    str(workdir / key),
                ],
                cwd=str(ROOT),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=open(log, "w"),  # noqa: SIM115 - closed with the process
                text=True,
                bufsize=1,
            )
            workers[key] = Worker(key, proc, sink, log)
            # Start them one after another: importing litellm is CPU-bound and this box is small.
            workers[key].read()
            if sink is not None:
                workers[key].sink_mark = len(sink.raw)
            progress(f"  worker {key} ready ({CONFIGS[key][0]})")

        keys = list(configs)
        for r in range(rounds):
            order = keys[r % len(keys) :] + keys[: r % len(keys)]
            for name in workloads:
                for key in order:
                    w = workers[key]
                    time.sleep(0.05)
                    w.send(f"run {calls} {name}")
                    w.blocks.append(w.read()["block"])
            progress(f"  round {r + 1}/{rounds} done")

        for w in workers.values():
            if w.sink is not None:
                w.sink_end = len(w.sink.raw)
            w.send("finish")
            w.finished = w.read()["finished"]
            w.proc.wait(timeout=60)
        return _summarise(workers, calls, rounds, workloads)
    finally:
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.kill()
            if w.sink is not None:
                w.sink.stop()
        if os.environ.get("BENCH_KEEP_LOGS"):
            progress(f"  worker logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _block_row(b: dict[str, Any]) -> dict[str, float]:
    n = len(b["durations"])
    return {
        "p50": statistics.median(b["durations"]),
        "mean": b["wall_calls"] / n,
        "cpu": b["cpu_total"] / n,
        **{f"thread:{k}": v / n for k, v in (b.get("threads") or {}).items()},
    }


def _workload_summary(
    workers: dict[str, Worker], name: str, calls: int, rounds: int
) -> dict[str, Any]:
    """One workload: per configuration, pooled mean and p99, the median of block medians, CPU
    per call over every thread and process, and "added" figures paired with (a) round by round
    (within a round the configurations ran one after another: the difference cancels most of
    the slow drift of a noisy machine). Added mean and CPU: the mean of the paired differences
    (an unbiased estimate of the difference of means); added p50: their median."""
    rows = {
        k: [_block_row(b) for b in w.blocks if b["workload"] == name] for k, w in workers.items()
    }
    pooled = {
        k: [d for b in w.blocks if b["workload"] == name for d in b["durations"]]
        for k, w in workers.items()
    }
    base = rows.get("a")
    out: dict[str, Any] = {}
    for key in workers:
        r = rows[key]

        def paired(field: str, agg: Any, r: list[dict[str, float]] = r) -> float | None:
            if base is None:
                return None
            return agg([x[field] - y[field] for x, y in zip(r, base, strict=True)])

        mean = statistics.fmean(pooled[key])
        p99 = _pct(pooled[key], 0.99)
        out[key] = {
            "label": CONFIGS[key][0],
            "mean": mean,
            "p50": statistics.median(x["p50"] for x in r),
            "p99": p99,
            "cpu": statistics.fmean(x["cpu"] for x in r),
            "added_mean": paired("mean", statistics.fmean),
            "added_p50": paired("p50", statistics.median),
            "added_p99": p99 - _pct(pooled["a"], 0.99) if base else None,
            "added_cpu": paired("cpu", statistics.fmean),
            "calls": calls * rounds,
            "rounds": rounds,
            # per thread group (and child processes), CPU s per call, mean over rounds; clock
            # ticks are coarse: meaningful summed over a block, not per call
            "threads": {
                n.split(":", 1)[1]: statistics.fmean(x.get(n, 0.0) for x in r)
                for n in sorted({n for x in r for n in x if n.startswith("thread:")})
            },
        }
    return out


def _delivery(w: Worker, key: str, calls: int) -> dict[str, Any]:
    """What the configuration's sink received during the timed rounds (both workloads)."""
    import gzip

    from agent.testing.otlp import decode_otlp

    raw = w.sink.raw[w.sink_mark : w.sink_end]
    spans = [s for body, enc in raw for s in decode_otlp(body, enc)]
    # One span per call carries the generation: ours is "llm.main", litellm's own callback
    # names its request span "litellm_request" (plus a raw_gen_ai_request child).
    call_span = "litellm_request" if key == "c" else "llm.main"
    return {
        "calls": calls,
        "wire_bytes_per_call": sum(len(b) for b, _ in raw) / calls,
        "proto_bytes_per_call": sum(
            len(gzip.decompress(b)) if e == "gzip" else len(b) for b, e in raw
        )
        / calls,
        "requests": len(raw),
        "encodings": sorted({e or "none" for _, e in raw}),
        "spans": len(spans),
        "call_spans": sum(1 for s in spans if s["name"] == call_span),
        "sink_errors": w.sink.errors,
    }


def _summarise(
    workers: dict[str, Worker], calls: int, rounds: int, workloads: list[str]
) -> dict[str, Any]:
    """Per workload and configuration (see ``_workload_summary``), what each sink received,
    and what each worker reported at the end."""
    return {
        "workloads": {name: _workload_summary(workers, name, calls, rounds) for name in workloads},
        "delivery": {
            k: _delivery(w, k, calls * rounds * len(workloads))
            for k, w in workers.items()
            if w.sink is not None
        },
        "workers": {k: w.finished for k, w in workers.items()},
    }
