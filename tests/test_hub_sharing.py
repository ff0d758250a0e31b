"""Processes that share one telemetry directory are one pusher: the commit bound per directory,
a 429 honoured by every one of them (their exit pushes included), a push at exit that says when
it could not push, and one state per repository. Time is simulated (no sleeping), against the
fake Hub that enforces the commit budget.
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import random
from pathlib import Path

import pytest
import respx

from agent.core.dataset.sink import HFDatasetSink
from agent.core.session import Event, new_id, utcnow
from agent.testing.fake_hub import FakeHub
from tests.test_hub_fleet import Clock

REPO = "acme/shared-dir"
TOKEN = "hf_shared_token_not_real"


@pytest.fixture(autouse=True)
def _no_xet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


def _sinks(directory: Path, clock: Clock, n: int, repo: str = REPO, **kw) -> list[HFDatasetSink]:
    return [
        HFDatasetSink(
            directory,
            repo_id=repo,
            token=TOKEN,
            push_thread=False,
            clock=clock,
            wall_clock=clock,
            rng=random.Random(p),
            **kw,
        )
        for p in range(n)
    ]


def _row(proc: int, i: int) -> Event:
    return Event(new_id(), "tool_call", utcnow(), {"name": f"{proc}:{i}"}, session_id=f"s{proc}")


def _run(sinks: list[HFDatasetSink], clock: Clock, hours: float, step: float = 30.0) -> set[str]:
    sent: set[str] = set()
    for k in range(int(hours * 3600 / step)):
        clock.t += step
        for p, sink in enumerate(sinks):
            sink.export(_row(p, k))
            sent.add(f"{p}:{k}")
        for sink in sinks:
            if sink.schedule.due():
                sink.push_due()
    return sent


def _names(hub: FakeHub) -> collections.Counter:
    return collections.Counter(json.loads(r["data"])["name"] for r in hub.rows())


def test_ten_processes_sharing_a_directory_make_at_most_3600_over_interval_commits_an_hour(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, clock=clock)
        sinks = _sinks(tmp_path, clock, 10, push_interval_s=600)
        sent = _run(sinks, clock, hours=3, step=60.0)
        assert hub.max_commits_in_an_hour() <= 3600 / 600, [c.at for c in hub.commits]
        assert len(hub.commits) >= 15  # the directory is still pushed about every interval
        for sink in sinks:
            sink.shutdown(5)
    assert _names(hub) == collections.Counter(sent)  # every row exactly once
    assert set(hub.uploads.values()) == {1}


def test_a_429_received_by_one_process_is_honoured_by_every_process_of_the_directory(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, clock=clock, commits_per_hour=2)
        sinks = _sinks(tmp_path, clock, 5, push_interval_s=600)
        sent = _run(sinks, clock, hours=2)
        assert hub.refused, "the budget of 2 commits an hour was exceeded at least once"
        not_before = 0.0
        for at, status, _ in sorted(hub.attempts):
            assert at >= not_before, "a commit was tried before the Hub's Retry-After passed"
            if status == 429:
                retry = next(r for t, r, _ in hub.refused if t == at)
                not_before = max(not_before, at + retry)
        for sink in sinks:
            sink.shutdown(5)
        for _ in range(5):  # the rows the exits could not push go with the next process's push
            clock.t += 3600
            (later,) = _sinks(tmp_path, clock, 1)
            if later.shutdown(5):
                break
    assert _names(hub) == collections.Counter(sent)


def test_the_push_at_exit_waits_out_a_429_and_says_the_rows_were_not_pushed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, clock=clock, commits_per_hour=1)
        a, b = _sinks(tmp_path, clock, 2, push_interval_s=600)
        a.export(_row(0, 0))
        clock.t += 700
        assert a.push_due()
        a.export(_row(0, 1))
        clock.t += 700
        assert not a.push_due()  # 429: the hour's single commit is spent
        ((refused_at, retry_after, _),) = hub.refused
        b.export(_row(1, 0))
        assert b.flush(5)
        clock.t += 10
        with caplog.at_level(logging.WARNING, logger="agent.core.dataset.sink"):
            assert a.shutdown(5) is False
            assert b.shutdown(5) is False  # the other process of the directory waits too
        assert len(hub.attempts) == 2  # no commit tried at exit
        assert a.stats.not_pushed == b.stats.not_pushed == 2
        assert "2 row(s) not pushed" in caplog.text and "asked to wait (429)" in caplog.text
        # The rows stayed on disk: the next process, once the wait is over, sends them.
        assert a.schedule.next_due >= refused_at + retry_after
        clock.t = a.schedule.next_due + 1
        (c,) = _sinks(tmp_path, clock, 1)
        assert c.shutdown(5) is True
    assert _names(hub) == collections.Counter(["0:0", "0:1", "1:0"])


def test_the_push_at_exit_is_not_a_success_when_another_process_holds_the_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, clock=clock)
        (b,) = _sinks(tmp_path, clock, 1)
        b.export(_row(1, 0))
        fd = os.open(tmp_path / ".hub_push.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process, mid-push
            with caplog.at_level(logging.WARNING, logger="agent.core.dataset.sink"):
                assert b.shutdown(2) is False
        finally:
            os.close(fd)
        assert not hub.attempts and b.stats.not_pushed == 1
        assert "another process was pushing" in caplog.text
        (c,) = _sinks(tmp_path, clock, 1)  # the next push of the directory sends b's row
        assert c.push_now() is True
        c.shutdown(5)
    assert _names(hub) == collections.Counter(["1:0"])


def test_processes_of_one_directory_pushing_to_two_repositories_send_each_row_once_to_each(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with respx.mock(assert_all_called=False) as router:
        one, two = (
            FakeHub(router, "acme/one", clock=clock),
            FakeHub(router, "acme/two", clock=clock),
        )
        (a,) = _sinks(tmp_path, clock, 1, repo="acme/one")
        (b,) = _sinks(tmp_path, clock, 1, repo="acme/two")
        for i in range(3):
            a.export(_row(0, i))
            assert a.flush(5)
            assert a.push_now() and b.push_now()
        assert a.shutdown(5) and b.shutdown(5)
    expected = collections.Counter(["0:0", "0:1", "0:2"])
    assert _names(one) == expected and _names(two) == expected
    assert set(one.uploads.values()) == set(two.uploads.values()) == {1}


def test_the_requests_a_push_makes_are_the_readmes(tmp_path: Path) -> None:
    """README: 2 per push; a process's first push 1 more (is the Hub's card current?) and 1
    more when it sends the card; the first push to a repository that does not exist yet also
    creates it; a push after a lost commit reply asks once what landed."""
    clock = Clock()

    def push(sink: HFDatasetSink, hub: FakeHub, i: int) -> dict[str, int]:
        sink.export(_row(0, i))
        assert sink.flush(5)
        before = collections.Counter(hub.requests)
        sink.push_now()
        return dict(collections.Counter(hub.requests) - before)

    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO, clock=clock, exists=False)
        (a,) = _sinks(tmp_path, clock, 1)
        first = push(a, hub, 0)
        assert first == {
            "paths_info": 1,
            "create_repo": 1,
            "validate_yaml": 1,
            "preupload": 1,
            "commit": 1,
        }
        assert push(a, hub, 1) == {"preupload": 1, "commit": 1}
        before = collections.Counter(hub.requests)
        assert a.push_now() is True  # nothing new: no request at all
        assert collections.Counter(hub.requests) == before
        assert a.shutdown(5)
        (b,) = _sinks(tmp_path, clock, 1)  # a new process: the card is checked once
        assert push(b, hub, 2) == {"paths_info": 1, "preupload": 1, "commit": 1}
        hub.lose_reply_of_commits = 1
        assert push(b, hub, 3) == {"preupload": 1, "commit": 1}
        assert push(b, hub, 4) == {"paths_info": 1, "preupload": 1, "commit": 1}
        assert b.shutdown(5)
    assert sorted(_names(hub)) == [f"0:{i}" for i in range(5)]


def test_demo_and_run_say_how_many_rows_the_exit_push_left_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``demo`` and ``run`` print from ``Observability.shutdown``'s report."""
    from agent.cli.run import _print_hf_losses
    from agent.config import AgentConfig
    from agent.core import telemetry
    from agent.core.observability import Observability
    from agent.core.session import Session

    config = AgentConfig(
        telemetry_dir=tmp_path, hub_repo_id=REPO, hub_token=TOKEN, flush_timeout_s=2
    )
    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, REPO)
        obs = Observability.from_config(config)
        session = Session(user_id="u", observability=obs)
        telemetry.record_tool_call(session, name="t", duration_ms=1, ok=True)
        fd = os.open(tmp_path / ".hub_push.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process, mid-push, past the bound
            report = obs.shutdown()
        finally:
            os.close(fd)
    assert not hub.attempts
    assert report["hf_dataset"]["not_pushed"] == 1
    capsys.readouterr()
    _print_hf_losses(report)
    err = " ".join(capsys.readouterr().err.split())
    assert "1 row is on disk but not on the Hub" in err
