"""Redaction throughput, whole-record redaction time and HF Dataset sink rows per second.

- ``scrub`` (``agent.core.privacy.scrubber.scrub``, the text pass both pipelines use) on ordinary
  text of 1 KB, 100 KB and 1 MB, in MB/s, and on adversarial 1 MB inputs built to make a regex
  engine backtrack or do work at every position (runs of pattern prefixes, near-miss tokens,
  huge whitespace runs ...), reported as a slowdown factor against ordinary text of the same
  size.
- ``redact(record, policy)`` on the realistic call's record (the one ``bench.workload``
  sends), under ``preset=default`` and ``preset=metadata-only``.
- HF Dataset sink: export N ``llm_call`` events, then flush; rows per second of wall time.

All single-process and in-thread. The scrub figures are CPU time of this process
(``time.process_time``: the scrubber is single-threaded, and on a shared machine wall time also
counts other processes' turns on the CPU); figures are medians of repeated timings.

``python -m bench.redaction --compare OTHER_TREE [--runs N]`` times the scrubber of another
checkout (``/work/main``: the "before") against this one, alternating fresh processes run by
run with this file's harness, and prints mean and median over the runs side by side.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

KB = 1024
MB = 1024 * 1024
SIZES = {"1 KB": KB, "100 KB": 100 * KB, "1 MB": MB}


# -- inputs -------------------------------------------------------------------------------------

_TEXT = (
    "the model trains on the dataset with a learning rate of 3e-5 and a batch size of 32 "
    "tokenizer padding truncation max_tokens evaluation accuracy macro f1 precision recall "
    "we keep the validation split stratified so the label ratio holds and log every step "
    "the job ran on an a10g small instance for forty minutes and the loss went down steadily "
    "def train(model, loader): for batch in loader: loss = model(**batch).loss loss.backward() "
    'print({"epoch": 3, "eval_loss": 0.2871, "eval_f1": 0.912}) keyboard passage monkey '
    "Hugging Face Hub repo revision main commit sha pushed the checkpoint and the model card "
    "Authorization headers are never printed and the API is called with the user's session "
    "a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G 0 1 2 3 4 5 6 7 8 9"
)
_WORDS = _TEXT.split()


def ordinary_text(size: int, seed: int = 7) -> str:
    """Technical chat/code prose of ``size`` characters: words like ``token``, ``key`` and
    ``pass`` occur (so the patterns do real work) and one real secret per ~64 KB."""
    rng = random.Random(seed)
    out: list[str] = []
    n = 0
    next_secret = 32 * KB
    while n < size:
        if n >= next_secret:
            w = rng.choice(
                [
                    "hf_" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=34)),
                    "api_key=" + "".join(rng.choices("abcdef0123456789", k=32)),
                    "Bearer " + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=40)),
                ]
            )
            next_secret += 64 * KB
        else:
            w = rng.choice(_WORDS)
        out.append(w)
        n += len(w) + 1
        if rng.random() < 0.08:
            out.append("\n")
    return " ".join(out)[:size]


def _fill(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def adversarial_inputs(size: int = MB) -> dict[str, str]:
    """Inputs built to trigger backtracking or per-position work in the secret patterns."""
    return {
        "'hf_' run": _fill("hf_", size),
        "'hf_'+29 (near miss)": _fill("hf_" + "a" * 29 + " ", size),
        "'sk-' run": _fill("sk-", size),
        "'sk-ant-'+19 (near miss)": _fill("sk-ant-" + "b" * 19 + " ", size),
        "'ghp_'+35 (near miss)": _fill("ghp_" + "c" * 35 + " ", size),
        "'g' run": _fill("g", size),
        "'A' run": _fill("A", size),
        "'AKIA'+15 (near miss)": _fill("AKIA" + "D" * 15 + " ", size),
        "'Bearer ' run": _fill("Bearer ", size),
        "'bearer'+spaces+15": _fill("bearer" + " " * 20 + "e" * 15 + " ", size),
        "'-----BEGIN ' run": _fill("-----BEGIN ", size),
        "PEM header, no END": "-----BEGIN RSA PRIVATE KEY-----\n" + _fill("-" * 4 + "x", size),
        "'-' run": _fill("-", size),
        "'token=' run": _fill("token=", size),
        "'token' run": _fill("token", size),
        "'key' run": _fill("key", size),
        "'api_key: ' run": _fill("api_key: ", size),
        "'secret=\"' unclosed": _fill('secret="' + "v " * 20, size),
        "'password=\\\\\"' run": _fill('password=\\"' + "\\x" * 8, size),
        "'token=\"' run": _fill('token="', size),
        "'token: ' run": _fill("token: ", size),
        "'TOKEN' run then '='": _fill("TOKEN", size - 1) + "=",
        "'password' run": _fill("password", size),
        "'github_pat_' run": _fill("github_pat_", size),
        "PEM BEGIN headers run": _fill("-----BEGIN RSA PRIVATE KEY-----", size),
        "'token=' + long unclosed quote": 'token="' + "a" * (size - 7),
        "'token='' + escapes": "token='" + _fill("\\a", size - 7),
        "'api_key = ' + spaces": "api_key = " + " " * (size - 10),
        "'token' + long name": "token" + "a" * (size - 7) + "=x",
        "mixed quotes run": _fill("token=\"x'", size),
        "letters then '!'": _fill("a", size - 1) + "!",
        "whitespace run": " " * size,
        "tabs/newlines run": _fill(" \t\n\r", size),
        # -- one per anchor of the catalogue's passes (agent.core.privacy.catalogue) --
        "'-a' run (gate passes)": _fill("-a", size),
        "'-abc' run": _fill("-abc", size),
        "'_ab' run": _fill("_ab", size),
        "'x.yy' run": _fill("x.yy", size),
        "'://a:' run": _fill("://a:", size),
        "'1:AA' run": _fill("1:AA", size),
        "'12345:' run (pgpass, telegram)": _fill("12345:", size),
        "'AIza' run": _fill("AIza", size),
        "'eyJa.' run": _fill("eyJa.", size),
        "'mysql -u x ' run": _fill("mysql -u x ", size),
        "'BEGIN ' run": _fill("BEGIN ", size),
        "'8Q~' run": _fill("abc8Q~", size),
        "';base64,' run": _fill(";base64,", size),
        "data: URL, 1 MB of base64": "data:image/png;base64," + _fill("iVBORw0KGgo", size - 22),
        "'sig=' run": _fill("?sig=", size),
        "'kkk' run": _fill("k", size),
        "'ccc' run": _fill("c", size),
        "'cookie: ' run": _fill("cookie: x\n", size),
        "'machine x login ' run": _fill("machine x login ", size),
        "'pwd ' run": _fill("pwd ", size),
        "'authorization: ' run": _fill("authorization: ", size),
        "'--password ' run": _fill("--password ", size),
        "'-u a:' run": _fill("-u a:", size),
        "'pwd >' run (XML form, no '<')": _fill("pwd >", size),
        "'\\u0041' escapes": _fill("\\u0041", size),
        "'\\\\u0041' escapes": _fill("\\\\u0041", size),
        "zero-width run": _fill("\u200bx", size),
        "full-width run": _fill("\uff48\uff46\uff3f", size),
        "'@a.bc ' run (pii off)": _fill("@a.bc ", size),
        "random printable": "".join(
            random.Random(3).choices(
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-=:\"' ",
                k=size,
            )
        ),
    }


# -- timing -------------------------------------------------------------------------------------


# CPU time of this process: the scrubber runs on the calling thread alone.
_clock = time.process_time


def _time(fn: Callable[[], Any], *, min_time: float, min_reps: int = 3, per_call: int = 1) -> float:
    """Median seconds per call of ``fn`` over at least ``min_reps`` samples / ``min_time`` s
    (one sample: one call of ``fn``, which makes ``per_call`` scrub calls)."""
    fn()  # warm (compiles, caches)
    samples: list[float] = []
    start = _clock()
    while len(samples) < min_reps or _clock() - start < min_time:
        t0 = _clock()
        fn()
        samples.append(_clock() - t0)
        if len(samples) > 100_000:
            break
    return statistics.median(samples)


def scrub_throughput(quick: bool = False) -> dict[str, Any]:
    from agent.core.privacy.scrubber import scrub

    budget = 0.4 if quick else 1.5
    ordinary: dict[str, dict[str, float]] = {}
    for label, size in SIZES.items():
        text = ordinary_text(size)
        if size <= _clean_cache_max_len():
            # The scrubber remembers strings this short that held no secret (a string an agent
            # resends is scrubbed once): time fresh strings, as the first sighting costs. They
            # are made before the clock starts and scrubbed in batches of 64 (a CPU clock read
            # per call would cost a few percent of a 10 us scrub).
            spent: list[float] = []
            n = 0
            deadline = _clock() + budget
            while len(spent) < 6 or _clock() < deadline:
                batch = [f"{n + i:012d}{text[12:]}" for i in range(64)]
                n += 64
                t0 = _clock()
                for t in batch:
                    scrub(t)
                spent.append(_clock() - t0)
            sec = statistics.median(spent[1:]) / 64
        else:
            sec = _time(lambda text=text: scrub(text), min_time=budget)
        ordinary[label] = {"bytes": size, "seconds": sec, "mb_s": size / MB / sec}
    # Each adversarial input is timed alternately with the ordinary 1 MB text, and its slowdown
    # is the median of the per-pair ratios: drift on a noisy machine cancels out.
    adversarial: dict[str, dict[str, float]] = {}
    base_text = ordinary_text(MB)
    pairs = 3 if quick else 7
    for name, text in adversarial_inputs(MB).items():
        scrub(text)  # warm
        ratios, secs = [], []
        for _ in range(pairs):
            t0 = _clock()
            scrub(base_text)
            t1 = _clock()
            scrub(text)
            t2 = _clock()
            ratios.append((t2 - t1) / (t1 - t0))
            secs.append(t2 - t1)
        sec = statistics.median(secs)
        adversarial[name] = {
            "seconds": sec,
            "mb_s": len(text) / MB / sec,
            "slowdown": statistics.median(ratios),
        }
    return {"ordinary": ordinary, "adversarial": adversarial}


def catalogue_cost(quick: bool = False) -> dict[str, Any]:
    """What the bigger catalogue costs: MB/s on the ordinary 1 MB text for the kinds of the first
    release alone (same engine), the full default catalogue, the catalogue with 4 and 16 known
    values (the value scrub), and with the opt-in pii group, timed in interleaved rounds (drift on a
    noisy machine lands on every configuration alike); mean and median over rounds."""
    from agent.core.privacy.known import KnownSecrets
    from agent.core.privacy.scrubber import GROUPS, Scrubber, pattern_names

    first = {
        "hf_token",
        "openai_key",
        "anthropic_key",
        "github_token",
        "aws_access_key_id",
        "bearer_token",
        "pem_private_key",
        "secret_assignment",
    }
    rng = random.Random(5)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    # 4: a typical deployment (provider key, HF token, LangFuse secret key, HMAC key); 16: many.
    known4, known16 = KnownSecrets(), KnownSecrets()
    for i in range(16):
        value = "".join(rng.choices(letters, k=40))
        known16.add(value)
        if i < 4:
            known4.add(value)
    configs = {
        "first-release kinds (8)": Scrubber(
            disabled=[n for n in pattern_names(default_only=True) if n not in first], known=None
        ),
        "full catalogue": Scrubber(known=None),
        "full catalogue + 4 known values": Scrubber(known=known4),
        "full catalogue + 16 known values": Scrubber(known=known16),
        "full catalogue + pii": Scrubber(enabled=["pii"], known=None),
    }
    assert "pii" in GROUPS
    text = ordinary_text(MB)
    rounds = 5 if quick else 15
    samples: dict[str, list[float]] = {k: [] for k in configs}
    for s in configs.values():
        s.scrub_text(text)  # warm
    for r in range(rounds):
        order = list(configs)[r % len(configs) :] + list(configs)[: r % len(configs)]
        for name in order:
            t0 = _clock()
            configs[name].scrub_text(text)
            samples[name].append(_clock() - t0)
    return {
        name: {
            "mb_s_median": 1 / statistics.median(v),
            "mb_s_mean": 1 / statistics.mean(v),
        }
        for name, v in samples.items()
    }


def _clean_cache_max_len() -> int:
    from agent.core.privacy import scrubber

    return int(getattr(scrubber, "_CLEAN_MAX_LEN", 0))


def realistic_record(redact_override: str | None = None) -> Any:
    """The ``CallRecord`` our litellm hook builds for ``bench.workload``'s call."""
    from agent.core.records import CallRecord
    from bench import workload

    now = datetime.now(UTC)
    return CallRecord(
        event_id="0" * 32,
        kind="main",
        session_id="s" * 32,
        user_id="bench-user",
        turn_index=1,
        trace_id="1" * 32,
        observation_id="2" * 16,
        model=workload.MODEL,
        start_time=now,
        end_time=now,
        messages=tuple(dict(m) for m in workload.MESSAGES),
        tools=tuple(dict(t) for t in workload.TOOLS),
        model_parameters={"temperature": 0.2, "max_tokens": 512},
        output={"role": "assistant", "content": workload.REPLY},
        usage={
            "prompt_tokens": 1500,
            "completion_tokens": 70,
            "total_tokens": 1570,
            "cache_read_tokens": 0,
            "cache_creation_tokens": 0,
        },
        cost_usd=0.00027,
        redact_override=redact_override,
    )


def record_redaction(quick: bool = False) -> dict[str, float]:
    from agent.core.privacy.redaction import RedactionPolicy, redact

    budget = 0.5 if quick else 1.5
    rec = realistic_record()
    out = {}
    for spec in ("preset=default", "preset=metadata-only"):
        policy = RedactionPolicy.from_spec(spec)
        out[spec] = _time(lambda policy=policy: redact(rec, policy), min_time=budget)
    return out


def hf_sink_rate(quick: bool = False) -> dict[str, float]:
    from agent.core.dataset.sink import HFDatasetSink
    from agent.core.session import Event

    n = 5_000 if quick else 20_000
    rates = []
    for _ in range(2 if quick else 3):
        directory = tempfile.mkdtemp(prefix="ml-intern-bench-hf-")
        try:
            sink = HFDatasetSink(directory)
            events = [
                Event(
                    event_id=f"{i:032x}",
                    event_type="llm_call",
                    timestamp=datetime.now(UTC),
                    data={
                        "model": "openai/gpt-4o-mini",
                        "latency_ms": 812.5,
                        "finish_reason": "stop",
                        "prompt_tokens": 1500,
                        "completion_tokens": 70,
                        "total_tokens": 1570,
                        "cache_read_tokens": 0,
                        "cache_creation_tokens": 0,
                        "cost_usd": 0.00027,
                        "stream": False,
                        "tool_calls": 0,
                    },
                    session_id="s" * 32,
                    user_id="bench-user",
                    turn_index=i // 10,
                    kind="main",
                    langfuse_trace_id="1" * 32,
                    langfuse_observation_id=f"{i:016x}",
                    langfuse_sampled=True,
                )
                for i in range(n)
            ]
            t0 = time.perf_counter()
            for e in events:
                sink.export(e)
            ok = sink.flush(60.0)
            wall = time.perf_counter() - t0
            sink.shutdown(10.0)
            if not ok or sink.stats.written != n:
                raise RuntimeError(f"HF sink wrote {sink.stats.written}/{n} rows")
            rates.append(n / wall)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return {"rows_per_s": statistics.median(rates), "rows": n}


def run(quick: bool = False) -> dict[str, Any]:
    return {
        "scrub": scrub_throughput(quick),
        "catalogue": catalogue_cost(quick),
        "record": record_redaction(quick),
        "hf": hf_sink_rate(quick),
    }


# -- before / after -----------------------------------------------------------------------------


def _figures(res: dict[str, Any]) -> dict[str, float]:
    """The figures compared before / after, flat (MB/s and slowdown factors)."""
    out = {f"scrub {k} MB/s": v["mb_s"] for k, v in res["scrub"]["ordinary"].items()}
    adv = res["scrub"]["adversarial"]
    out["worst adversarial slowdown x"] = max(v["slowdown"] for v in adv.values())
    out |= {f"adversarial {name} x": v["slowdown"] for name, v in adv.items()}
    out |= {f"catalogue: {k} MB/s": v["mb_s_median"] for k, v in res["catalogue"].items()}
    return out


def compare(other: str, runs: int, quick: bool) -> str:
    """This harness run alternately on ``other``'s scrubber and this checkout's, each run in a
    fresh process; a markdown table of mean and median over runs, before / after."""
    import os
    import subprocess
    from pathlib import Path

    here = str(Path(__file__).resolve().parent.parent)
    trees = {"before": str(Path(other).resolve()), "after": here}
    # `agent` is imported from the tree under test, this harness from this checkout.
    prog = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import agent.core.privacy.scrubber; "
        "sys.path.insert(0, sys.argv[2]); sys.modules.pop('bench', None); "
        "from bench import redaction as r; "
        "print(json.dumps({'scrub': r.scrub_throughput(sys.argv[3] == '1'), "
        "'catalogue': r.catalogue_cost(sys.argv[3] == '1')}))"
    )
    got: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for i in range(runs):
        order = list(trees) if i % 2 == 0 else list(trees)[::-1]
        for label in order:
            proc = subprocess.run(
                [sys.executable, "-c", prog, trees[label], here, "1" if quick else "0"],
                cwd="/",
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                capture_output=True,
                text=True,
                check=True,
            )
            got[label].append(_figures(json.loads(proc.stdout.splitlines()[-1])))
            print(f"run {i + 1}/{runs} {label} done", file=sys.stderr, flush=True)
    keys = list(dict.fromkeys(k for rs in got.values() for r in rs for k in r))
    # Of the adversarial inputs, the eight slowest on either side (by median).
    adv = [k for k in keys if k.startswith("adversarial ")]
    worst = sorted(
        adv, key=lambda k: -max(statistics.median(r[k] for r in rs) for rs in got.values())
    )[:8]
    keys = [k for k in keys if k not in adv or k in worst]
    lines = [
        f"{runs} alternating runs per side (CPU time), before = {trees['before']}, "
        f"after = {trees['after']}",
        "",
        "| figure | before mean | before median | after mean | after median |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in keys:
        cells = []
        for label in trees:
            vals = [r[k] for r in got[label] if k in r]
            cells += (
                [f"{statistics.mean(vals):.1f}", f"{statistics.median(vals):.1f}"]
                if vals
                else ["-", "-"]
            )
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m bench.redaction [--quick] [--json-out FILE]
    # python -m bench.redaction --compare OTHER_TREE [--runs N] [--quick]
    quick = "--quick" in sys.argv
    if "--compare" in sys.argv:
        n = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 5
        print(compare(sys.argv[sys.argv.index("--compare") + 1], n, quick))
        sys.exit(0)
    res = run(quick=quick)
    if "--json-out" in sys.argv:
        with open(sys.argv[sys.argv.index("--json-out") + 1], "w") as fh:
            json.dump(res, fh)
    else:
        print(json.dumps(res, indent=1))
