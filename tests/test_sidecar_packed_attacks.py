"""Adversarial pass on the sidecar's packed records: the same calls through the forwarder in
"thread" and in "sidecar" mode must put the same generations on the wire, and whatever does not
reach the wire must be counted in the shutdown report. Two faults found here are known and left
open (marked xfail, strict: they fail the suite once fixed, so the mark comes off)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.core import llm
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import direct_forwarder

MODEL = "openai/gpt-4o-mini"
_VARYING = ("hf_event_id", "turn_index", "completion_start_time")


def _pause(i: int, fwd: Any) -> None:
    """Between calls: each call's record reaches the core in a batch of its own."""
    time.sleep(0.2)


def _comparable(span: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in span["attributes"].items()
        if not any(part in k for part in _VARYING) and k not in ("session.id", "user.id")
    }


def _gens(sink: FakeLangfuse) -> list[dict[str, Any]]:
    return [
        s for s in sink.spans if s["attributes"].get("langfuse.observation.type") == "generation"
    ]


def run_calls(
    tmp_path: Path,
    calls: list[dict[str, Any]],
    *,
    mode: str,
    spec: str | None = None,
    between: Any = None,
    wait_for: int | None = None,
    **options: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each of ``calls`` (llm.complete keywords) through one forwarder; the generations on the
    wire, in call order (by ``metadata={"n": i}``), and the shutdown report.
    ``between(i, fwd)`` runs before call i."""
    with direct_forwarder(tmp_path, mode=mode, spec=spec, user_id="attack-user", **options) as d:
        fwd, session, sink = d.forwarder, d.session, d.sink

        async def main() -> None:
            for i, kw in enumerate(calls):
                if between is not None:
                    waiting = between(i, fwd)
                    if asyncio.iscoroutine(waiting):  # lets litellm's callbacks run meanwhile
                        await waiting
                kw = dict(kw)
                kw.setdefault("mock_response", f"reply {i}")
                kw["metadata"] = {"n": i, **kw.get("metadata", {})}
                with contextlib.suppress(Exception):  # a failed call is one of the attacks
                    await llm.complete(session, kind="main", model=MODEL, **kw)
            await llm.adrain_callbacks(30)

        asyncio.run(main())
        fwd.flush(30)
        if wait_for is not None:
            sink.wait_for_spans(wait_for, timeout=10)
    report = d.report
    gens = _gens(sink)

    gens.sort(key=lambda s: s["start_time_ns"])
    return gens, report


class ProviderError(Exception):
    """An exception with a constructor of its own: it pickles, but does not unpickle (pickle
    calls ``ProviderError(*self.args)`` with the one formatted argument)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status


def _wire(gens: list[dict[str, Any]]) -> str:
    return " ".join(str(s["attributes"]) for s in gens)


@pytest.mark.internal_errors_expected
def test_a_secret_learned_with_a_call_that_does_not_pickle_still_reaches_the_sidecar(
    tmp_path: Path,
) -> None:
    """The first call made with a new ``api_key=`` holds something that does not pickle (it is
    dropped, counted): the key learned with it must still be scrubbed from every later call."""

    def calls(value: str) -> list[dict[str, Any]]:
        return [
            {
                "messages": [{"role": "user", "content": "hi", "lock": threading.Lock()}],
                "api_key": value,
            },
            {
                "messages": [{"role": "user", "content": f"my provider key is {value}"}],
                "api_key": value,
            },
            {"messages": [{"role": "user", "content": f"again: {value}"}], "api_key": value},
        ]

    # A value of its own per run: once known, a value stays known in this process.
    value = f"unusual-{uuid.uuid4().hex[:8]}-value-of-a-provider"
    thread, _ = run_calls(tmp_path / "t", calls(value), mode="thread", between=_pause)
    assert len(thread) == 3 and value not in _wire(thread)
    value = f"unusual-{uuid.uuid4().hex[:8]}-value-of-a-provider"
    sidecar, report = run_calls(tmp_path / "s", calls(value), mode="sidecar", between=_pause)
    assert report["dropped"] == {"sidecar_unpicklable": 1}, report
    assert len(sidecar) == 2, report
    assert value not in _wire(sidecar)  # fails: the child never learned it


def _provider_error() -> httpx.HTTPStatusError:
    """What an agent keeps of a failed provider call: it pickles, but does not unpickle (its
    constructor's keyword-only arguments are not in its ``args``)."""
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(429, request=request)
    return httpx.HTTPStatusError("Too many requests", request=request, response=response)


@pytest.mark.internal_errors_expected
def test_a_metadata_value_that_does_not_unpickle_costs_only_its_own_call(tmp_path: Path) -> None:
    """One call's metadata holds an exception that pickles in the agent but does not unpickle
    in the child: the child's read of the frame raises out of its loop and it exits; every
    call it held goes with it, and the report says none of the delivered ones arrived."""
    calls: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(5)
    ]
    calls[2]["metadata"] = {"previous_error": _provider_error()}
    thread, _ = run_calls(tmp_path / "t", calls, mode="thread", between=_pause)
    assert len(thread) == 5
    sidecar, report = run_calls(tmp_path / "s", calls, mode="sidecar", between=_pause)
    on_wire = [s["attributes"]["langfuse.observation.metadata.n"] for s in sidecar]
    # Nothing lost uncounted (fails: 0 and 1 lost, 2 counted: the one the child had handled
    # but not yet exported is in neither) ...
    assert len(sidecar) + sum(report["dropped"].values()) >= len(calls), (on_wire, report)
    # ... and the odd value costs only its own call, as in thread mode.
    assert {"0", "1", "3", "4"} <= set(on_wire), (on_wire, report)


@pytest.mark.xfail(
    strict=True,
    reason="known, left open (issue 13): a killed child's handled but not yet exported records "
    "are counted nowhere; the parent knows only what the child had not handled",
)
@pytest.mark.internal_errors_expected
def test_calls_a_killed_sidecar_had_handled_but_not_exported_are_counted(tmp_path: Path) -> None:
    """The child dies (SIGKILL) after it handled a call and reported so, before its exporter
    sent it: that call is neither on the wire nor in the report."""

    async def kill_after_first(i: int, fwd: Any) -> None:
        if i != 1:
            return
        core = fwd.core
        deadline = time.monotonic() + 10
        while core._handled < 1 and time.monotonic() < deadline:  # the child reported it
            await asyncio.sleep(0.02)
        assert core._handled == 1
        os.kill(core.pid, signal.SIGKILL)
        while core.mode != "thread" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    calls = [{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(2)]
    gens, report = run_calls(
        tmp_path, calls, mode="sidecar", between=kill_after_first, flush_interval_s=30
    )
    assert report["forwarder_mode"] == "thread"
    counted = sum(report["dropped"].values())
    assert len(gens) + counted >= len(calls), (len(gens), report)  # fails: 1 + 0 < 2


@pytest.mark.internal_errors_expected
def test_calls_made_while_the_sidecar_falls_back_are_delivered_or_counted(tmp_path: Path) -> None:
    """The child dies with nothing in flight (all delivered) and the agent goes on calling at
    once: records handed over between the reader's reckoning (``_child_gone``) and the fallback
    engine being in place go into the dead pipe, after the lost ones were counted."""

    async def kill_when_idle(i: int, fwd: Any) -> None:
        if i == 1:
            await asyncio.sleep(0.2)
            assert fwd.flush(10)
            os.kill(fwd.core.pid, signal.SIGKILL)
        else:
            await asyncio.sleep(0.03)

    calls = [{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(12)]
    gens, report = run_calls(tmp_path, calls, mode="sidecar", between=kill_when_idle)
    assert report["forwarder_mode"] == "thread"
    counted = sum(report["dropped"].values())
    assert len(gens) + counted >= len(calls), (len(gens), report)


@pytest.mark.xfail(
    strict=True,
    reason="known, left open (issue 13): the sidecar drops (and counts) a record holding an "
    "object that does not pickle, which the thread forwarder sends as its text",
)
@pytest.mark.internal_errors_expected
def test_a_message_holding_a_lock_reaches_the_wire_in_both_modes(tmp_path: Path) -> None:
    """Thread mode forwards the call (the lock as its repr); the sidecar drops it (counted as
    ``sidecar_unpicklable``): the two modes put different things on the wire."""
    calls = [
        {"messages": [{"role": "user", "content": "a", "extra": threading.Lock()}]},
        {"messages": [{"role": "user", "content": "b"}]},
    ]
    thread, _ = run_calls(tmp_path / "t", calls, mode="thread", between=_pause)
    sidecar, report = run_calls(tmp_path / "s", calls, mode="sidecar", between=_pause)
    assert len(thread) == 2
    assert len(sidecar) == len(thread), report  # fails: 1, dropped sidecar_unpicklable=1


_KEY = "sk-proj-" + "Ab3" * 16


def _held_scenarios() -> dict[str, list[dict[str, Any]]]:
    import litellm

    said = litellm.completion(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        mock_response=f"assistant said {_KEY}",
    )
    called = litellm.completion(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        mock_tool_calls=[
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "run", "arguments": '{"password": "hunter2hunter2"}'},
            }
        ],
    )
    base = [{"role": "user", "content": f"hi {_KEY}"}]
    tool_msg = called.choices[0].message
    return {
        "message_objects": [{"messages": [*base, said.choices[0].message, tool_msg]}],
        "dict_with_tool_call_objects": [
            {
                "messages": [
                    *base,
                    {"role": "assistant", "content": None, "tool_calls": tool_msg.tool_calls},
                ]
            }
        ],
        "failed_between_successes": [
            {"messages": base},
            {"messages": base, "mock_response": Exception(f"boom {_KEY}")},
            {"messages": base},
        ],
        "stream": [{"messages": base, "stream": True}],
        "override": [{"messages": base}, {"messages": base, "redact": "preset=metadata-only"}],
        "surrogates": [{"messages": [{"role": "user", "content": f"bad \udcff \ud800 {_KEY}"}]}],
    }


@pytest.mark.parametrize("name", list(_held_scenarios()))
def test_held_the_sidecar_puts_what_the_thread_puts_on_the_wire(tmp_path: Path, name: str) -> None:
    calls = _held_scenarios()[name]
    thread, _ = run_calls(tmp_path / "t", calls, mode="thread")
    sidecar, report = run_calls(tmp_path / "s", calls, mode="sidecar")
    assert len(thread) == len(sidecar) == len(calls) and not report["dropped"]
    for a, b in zip(thread, sidecar, strict=True):
        assert _comparable(a) == _comparable(b)
    assert _KEY not in _wire(sidecar) and "hunter2hunter2" not in _wire(sidecar)
