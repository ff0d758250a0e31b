"""A fleet of 20 agent processes pushing to one Hub repo, against a fake Hub that enforces the
commit budget (128 per hour) and answers 429 past it. Time is simulated (no sleeping): each
process's push schedule and the Hub's budget window run on the same fake clock.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import respx

from agent.core.dataset.sink import HFDatasetSink
from agent.core.session import Event, new_id, utcnow
from agent.testing.fake_hub import FakeHub

REPO = "acme/fleet-telemetry"
N = 20
_SHARD = re.compile(r"events-\d{8}-([0-9a-f]{12})")


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _row(proc: int, i: int) -> Event:
    return Event(new_id(), "fleet_test", utcnow(), {"p": proc, "i": i}, session_id=f"s{proc}")


def _fleet(root: Path, clock: Clock, interval: float | None) -> list[HFDatasetSink]:
    kw = {} if interval is None else {"push_interval_s": interval}
    return [
        HFDatasetSink(
            root / f"machine-{p}",  # one directory per machine: the worst case for the budget
            repo_id=REPO,
            token="hf_fleet_token_not_real",
            push_thread=False,
            clock=clock,
            wall_clock=clock,
            rng=random.Random(p),
            **kw,
        )
        for p in range(N)
    ]


def _run(sinks: list[HFDatasetSink], clock: Clock, hours: float, rows_per_step: int) -> Counter:
    """Every process writes rows and pushes when its schedule says so, for ``hours``."""
    sent: Counter = Counter()
    step = 20.0
    for k in range(int(hours * 3600 / step)):
        clock.t += step
        for p, sink in enumerate(sinks):
            if rows_per_step:
                for j in range(rows_per_step):
                    i = k * rows_per_step + j
                    sink.export(_row(p, i))
                    sent[(p, i)] += 1
            if sink.schedule.due():
                sink.push_due()
    return sent


def _drain(sinks: list[HFDatasetSink], clock: Clock, root: Path) -> None:
    """Every process exits (a final push each); one refused at exit is pushed at its restart."""
    unpushed = [s for s in sinks if not s.shutdown(10)]
    for _ in range(20):
        if not unpushed:
            return
        clock.t += 600
        again = []
        for s in unpushed:
            restarted = HFDatasetSink(
                s.directory,
                repo_id=REPO,
                token="hf_fleet_token_not_real",
                push_thread=False,
                clock=clock,
                wall_clock=clock,
            )
            if not restarted.shutdown(10):
                again.append(s)
        unpushed = again
    raise AssertionError(f"{len(unpushed)} directories never got their rows to the Hub")


def _check(hub: FakeHub, sent: Counter) -> None:
    got = Counter((json.loads(r["data"])["p"], json.loads(r["data"])["i"]) for r in hub.rows())
    assert got == sent  # every row exactly once
    assert set(hub.uploads.values()) == {1}  # no file uploaded twice
    assert hub.max_commits_in_an_hour() <= 128


def _honoured_retry_after(hub: FakeHub) -> None:
    """After a 429, a machine sends no commit before the time the Hub named."""
    not_before: dict[str, float] = {}
    for at, status, paths in sorted(hub.attempts):
        shards = {m.group(1) for p in paths if (m := _SHARD.search(p))}
        for shard in shards:
            assert at >= not_before.get(shard, 0.0), (shard, at, not_before[shard])
        if status == 429:
            retry = next(r for t, r, ps in hub.refused if t == at and sorted(ps) == paths)
            for shard in shards:
                not_before[shard] = at + retry


@pytest.fixture(autouse=True)
def _no_xet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


def test_twenty_processes_at_the_default_interval_stay_within_the_budget(tmp_path: Path) -> None:
    clock = Clock()
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, clock=clock)
        sinks = _fleet(tmp_path, clock, interval=None)
        assert sinks[0].push_interval_s >= 300  # the default
        start = clock.t
        sent = _run(sinks, clock, hours=2, rows_per_step=1)
        hourly = len(hub.commits) / ((clock.t - start) / 3600)
        _drain(sinks, clock, tmp_path)
    assert not hub.refused, "no 429 at the default interval"
    assert 90 <= hourly <= 120, hourly  # 20 x 3600 / (600 x [1, 1.2]): about 109
    _check(hub, sent)
    # One commit per push: each carries the machine's new part (and the card, once).
    assert all(len([p for p in c.files if p.startswith("data/")]) == 1 for c in hub.commits)
    assert hub.uploads["README.md"] == 1


def test_a_fleet_ten_times_over_the_budget_backs_off_and_loses_nothing(tmp_path: Path) -> None:
    clock = Clock()
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, clock=clock)
        sinks = _fleet(tmp_path, clock, interval=60)  # 20 x 60/hour: ten times the budget
        sent = _run(sinks, clock, hours=1, rows_per_step=1)
        sent += _run(sinks, clock, hours=2, rows_per_step=0)  # quiet: the backlog drains
        _drain(sinks, clock, tmp_path)
    assert hub.refused, "the storm was answered with 429"
    _honoured_retry_after(hub)
    _check(hub, sent)
    refused_per_hour = len(hub.refused) / 3
    assert refused_per_hour < 3 * N  # backoff: a few refusals per machine, not one per minute
