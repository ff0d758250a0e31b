"""Upstream's cost fields: jobs, sandboxes, the session_end rollup, in rows and in LangFuse."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.core import telemetry
from agent.core.agent_loop import Agent
from agent.core.dataset import pricing
from agent.core.session import InMemorySink, Session
from tests.langfuse_helpers import LANGFUSE, forwarding, meta, mocked_world, spans_of, use_langfuse
from tests.waiting import wait_for


def test_price_table_estimates_by_the_started_minute_and_overrides() -> None:
    assert pricing.estimate_cost("a10g-small", 61) == pytest.approx(1.00 * 120 / 3600)
    assert pricing.estimate_cost("a10g-small", 61, {"a10g-small": 3.6}) == pytest.approx(0.12)
    assert pricing.estimate_cost("local", 3600) == 0.0
    assert pricing.estimate_cost("no-such-flavor", 60) is None
    assert pricing.estimate_cost("t4-small", 90, per_started_minute=False) == pytest.approx(0.01)
    assert pricing.PRICES_AS_OF and pricing.PRICES_SOURCE.startswith("https://")


def test_prices_are_overridable_from_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "ml-intern.toml"
    cfg.write_text('[hf_hardware_prices]\n"a10g-small" = 1.2\n"my-box" = 0.5\n')
    config = AgentConfig.load(cfg)
    assert config.hf_hardware_prices == {"a10g-small": 1.2, "my-box": 0.5}
    sink = InMemorySink()
    session = Session(sinks=[sink])
    telemetry.record_hf_job_complete(
        session,
        job_id="j",
        status="completed",
        duration_s=70,
        flavor="my-box",
        prices=config.hf_hardware_prices,
    )
    (row,) = sink.of_type("hf_job_complete")
    assert row.data["estimated_cost_usd"] == pytest.approx(0.5 * 120 / 3600)


def test_an_agent_session_ends_with_one_rollup_of_its_rows(tmp_path: Path) -> None:
    sink = InMemorySink()
    session = Session(user_id="u", sinks=[sink])
    agent = Agent(session, AgentConfig(telemetry_dir=tmp_path), reasoning_effort="high")
    asyncio.run(agent.run_turn("Count the words, then research background."))
    asyncio.run(agent.run_turn("Now submit a quick training job."))
    agent.close()
    agent.close()  # idempotent: one session_end per session
    (end,) = sink.of_type("session_end")
    calls = sink.of_type("llm_call")
    d = end.data
    assert d["llm_calls"] == len(calls)
    assert d["llm_errors"] == len(sink.of_type("llm_call_error")) >= 1
    assert d["total_tokens"] == sum(c.data["total_tokens"] for c in calls)
    assert d["llm_cost_usd"] == pytest.approx(sum(c.data["cost_usd"] for c in calls))
    assert {k["kind"] for k in d["by_kind"]} == {c.kind for c in calls} | {"effort_probe"}
    assert d["tool_calls"] == len(sink.of_type("tool_call"))
    assert d["hf_jobs"] == 1 and d["sandboxes"] == 1 and d["turns"] == 2
    assert d["total_cost_usd"] == pytest.approx(d["llm_cost_usd"])  # local job and sandbox: 0
    (submit,) = sink.of_type("hf_job_submit")
    assert submit.data["flavor"] == "cpu-basic" and submit.data["timeout_s"] == 60.0
    assert submit.data["backend"] == "local" and submit.data["job_url"] is None
    (done,) = sink.of_type("hf_job_complete")
    assert done.data["estimated_cost_usd"] == 0.0 and done.data["wall_time_s"] >= 0
    for e in sink.of_type("sandbox_create") + sink.of_type("sandbox_destroy"):
        assert e.data["hardware"] == "local" and e.data["create_latency_s"] >= 0
        assert e.data["estimated_cost_usd"] == 0.0
    assert end is sink.events[-1]


def test_langfuse_gets_the_costs_on_their_events_and_the_rollup_on_the_last_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_langfuse(monkeypatch, LANGFUSE)
    with mocked_world() as router:
        obs, _ = forwarding(tmp_path)
        try:
            session = Session(user_id="carol", observability=obs)
            for turn in range(2):
                telemetry.record_turn_start(session, user_message=f"turn {turn}")
                if turn == 1:
                    telemetry.record_sandbox_create(
                        session,
                        sandbox_id="sbx",
                        backend="hub",
                        hardware="t4-small",
                        create_latency_s=30,
                    )
                    telemetry.record_hf_job_submit(
                        session,
                        job_id="job",
                        flavor="a10g-small",
                        timeout_s=600,
                        job_url="https://huggingface.co/jobs/carol/job",
                    )
                    telemetry.record_hf_job_complete(
                        session,
                        job_id="job",
                        status="completed",
                        duration_s=100,
                        wall_time_s=90,
                        flavor="a10g-small",
                    )
                telemetry.record_turn_complete(
                    session, final_reply="ok", duration_ms=5, steps=1, llm_calls=0
                )
                session.turn_index += 1
            telemetry.record_sandbox_destroy(
                session,
                sandbox_id="sbx",
                lifetime_s=330,
                backend="hub",
                runs=1,
                hardware="t4-small",
                create_latency_s=30,
            )
            end = telemetry.record_session_end(session)
            assert end is not None and end.turn_index == 1
            assert obs.flush(10)
            assert wait_for(lambda: any(s["name"] == "session.end" for s in spans_of(router)))
        finally:
            obs.shutdown(5)
        spans = {s["name"]: s for s in spans_of(router)}
    job_cost = 1.00 * 120 / 3600
    sandbox_cost = 0.40 * 30 / 3600 + 0.40 * 330 / 3600
    assert meta(spans["hf_job.complete"], "estimated_cost_usd") == pytest.approx(job_cost)
    assert meta(spans["hf_job.submit"], "job_url") == "https://huggingface.co/jobs/carol/job"
    assert meta(spans["sandbox.create"], "estimated_cost_usd") + meta(
        spans["sandbox.destroy"], "estimated_cost_usd"
    ) == pytest.approx(sandbox_cost)
    last = spans["session.end"]
    assert last["trace_id"] == end.langfuse_trace_id  # the last turn's trace
    usage = json.loads(last["attributes"]["langfuse.trace.metadata.session_usage"])
    assert usage["total_cost_usd"] == pytest.approx(job_cost + sandbox_cost)
    assert usage["hf_jobs"] == 1 and usage["sandboxes"] == 1 and usage["turns"] == 2


@pytest.mark.parametrize("price", ["-1.0", "nan", "inf", '"1.0"', "true"])
def test_a_price_that_is_not_a_usd_amount_is_refused_at_config_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], price: str
) -> None:
    from tests.cli_helpers import run_cli

    cfg = tmp_path / "ml-intern.toml"
    cfg.write_text(f'[hf_hardware_prices]\n"a10g-small" = {price}\n')
    res = run_cli(
        monkeypatch,
        capsys,
        "demo",
        "--config",
        str(cfg),
        "--telemetry-dir",
        str(tmp_path / "t"),
    )
    assert res.code == 2
    # Named like every bad value: the file, the setting, the value with its flavor, the reason.
    assert f"{cfg} hf_hardware_prices is {{'a10g-small': " in res.text
    reason = {"-1.0": "greater than or equal to 0", "nan": "a finite number"}
    assert reason.get(price, "finite number" if price == "inf" else "a valid number") in res.text
    assert not (tmp_path / "t" / "data").exists()  # refused before anything ran


def test_the_configured_prices_reach_sandboxes_and_record_calls_of_user_code(
    tmp_path: Path,
) -> None:
    from agent.core.observability import Observability
    from agent.tools.sandbox import LocalSandbox
    from tests.rows import read_rows

    config = AgentConfig(
        telemetry_dir=tmp_path, hf_hardware_prices={"a10g-small": 99.0, "local": 3600.0}
    )
    obs = Observability.from_config(config)
    session = Session(user_id="u", observability=obs)
    # User code, recording a job of its own: a 1 h job on a10g-small at the configured $99/h.
    telemetry.record_hf_job_complete(
        session, job_id="j", status="completed", duration_s=3600, flavor="a10g-small"
    )
    sandbox = LocalSandbox(session)  # the agent's tool: "local" at the configured $3600/h
    asyncio.run(sandbox.run_python("print(1)"))
    sandbox.destroy()
    obs.shutdown(5)
    rows = {r["event_type"]: r for r in read_rows(tmp_path)}
    assert rows["hf_job_complete"]["data"]["estimated_cost_usd"] == pytest.approx(99.0)
    create, destroy = rows["sandbox_create"]["data"], rows["sandbox_destroy"]["data"]
    assert create["estimated_cost_usd"] == pytest.approx(create["create_latency_s"], abs=1e-6)
    assert destroy["estimated_cost_usd"] == pytest.approx(destroy["lifetime_s"], abs=1e-3)
    assert destroy["estimated_cost_usd"] > 0
