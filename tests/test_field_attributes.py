"""The "field -> every attribute it reaches" table (FIELD_ATTRIBUTES, agent/README.md), walked
against the wire: a distinct marker planted in every source of every field reaches exactly the
attributes the table lists (with every field kept), and nothing at all once every field is
dropped. A new path that carries content without a row in the table fails here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.core import llm, telemetry
from agent.core.privacy.redaction import FIELD_ATTRIBUTES, FIELDS
from agent.core.session import Session
from tests.langfuse_helpers import (
    LANGFUSE,
    PROVIDER,
    forwarding,
    mocked_world,
    scores_of,
    spans_of,
    use_langfuse,
    wire_bytes,
)

M = {f: f"FLD{f.replace('_', '')}Q" for f in FIELDS}
# Table entries this run cannot reach: the mock provider returns no reasoning, and a job's
# status (metadata) is what hf_job.complete's status message quotes.
UNREACHED = {
    ("reasoning", ("llm.*", "output")),
    ("error_message", ("hf_job.complete", "status_message")),
    ("metadata", ("turn", "metadata")),  # a turn's metadata is numbers only
}


def _provider(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if "FAILNOW" in json.dumps(body["messages"][-1]):
        return httpx.Response(500, json={"error": {"message": f"boom {M['error_message']}"}})
    message = {
        "role": "assistant",
        "content": f"done {M['completion']}",
        "tool_calls": [
            {
                "id": "c2",
                "type": "function",
                "function": {"name": "t", "arguments": json.dumps({"x": M["tool_calls"]})},
            }
        ],
    }
    return httpx.Response(
        200,
        json={
            "id": "x",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    )


def _run(tmp_path: Path, spec: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, bytes]:
    use_langfuse(monkeypatch, LANGFUSE)
    with mocked_world() as router:
        router.post(f"{PROVIDER}/chat/completions").mock(side_effect=_provider)
        obs, _ = forwarding(tmp_path, redact=spec, redact_hmac_key="k" * 16)
        session = Session(
            user_id=M["user_id"], session_id=f"s-{M['session_id']}", observability=obs
        )
        telemetry.record_turn_start(session, user_message=M["user_messages"])
        common = dict(kind="main", model="openai/gpt-4o-mini", api_base=PROVIDER, api_key="k" * 20)
        llm.complete_sync(
            session,
            messages=[
                {"role": "system", "content": M["system_prompt"]},
                {"role": "user", "content": M["user_messages"]},
                {
                    "role": "assistant",
                    "content": M["assistant_messages"],
                    "reasoning_content": M["reasoning"],
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "t", "arguments": json.dumps([M["tool_calls"]])},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": M["tool_results"]},
            ],
            tools=[
                {
                    "type": "function",
                    "function": {"name": "t", "description": M["tool_definitions"]},
                }
            ],
            stop=[M["model_parameters"]],
            num_retries=0,
            **common,
        )
        with pytest.raises(Exception):  # noqa: B017
            llm.complete_sync(
                session, messages=[{"role": "user", "content": "FAILNOW"}], num_retries=0, **common
            )
        telemetry.record_tool_call(
            session,
            name="t",
            duration_ms=1,
            ok=True,
            tool_call_id=M["metadata"],
            arguments=M["tool_calls"],
            result=M["tool_results"],
        )
        telemetry.record_tool_call(
            session,
            name="t",
            duration_ms=1,
            ok=False,
            arguments="{}",
            error=f"E {M['tool_results']}",
        )
        telemetry.record_hf_job_submit(
            session, job_id=M["metadata"], image="img", flavor="cpu", command=M["tool_calls"]
        )
        telemetry.record_hf_job_complete(
            session, job_id=M["metadata"], status="completed", duration_s=1
        )
        telemetry.record_sandbox_create(session, sandbox_id="sb", backend=M["metadata"])
        telemetry.record_feedback(session, value=1, comment=M["feedback_comment"])
        telemetry.record_turn_complete(
            session, final_reply=M["completion"], duration_ms=1, steps=1, llm_calls=2
        )
        obs.shutdown(15)
        return spans_of(router), scores_of(router), wire_bytes(router)


def _observation(name: str) -> str:
    for prefix in ("llm.", "tool.", "sandbox."):
        if name.startswith(prefix):
            return prefix + "*"
    return name


def _attribute(key: str) -> str | None:
    if key in ("user.id", "session.id"):
        return key
    if key.startswith("langfuse.observation.metadata."):
        return "metadata"
    names = {
        "langfuse.observation.input": "input",
        "langfuse.observation.output": "output",
        "langfuse.observation.status_message": "status_message",
        "langfuse.observation.model.parameters": "model_parameters",
    }
    return names.get(key)


def test_every_field_reaches_exactly_the_attributes_in_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ",".join(f"{f}=keep" for f in FIELDS)
    spans, scores, _ = _run(tmp_path, spec, monkeypatch)
    seen: dict[str, set[tuple[str, str]]] = {f: set() for f in FIELDS}
    for span in spans:
        for key, value in span["attributes"].items():
            for f, marker in M.items():
                if marker in str(value):
                    attr = _attribute(key)
                    assert attr is not None, (f, span["name"], key)  # an unlisted attribute
                    obs = "*" if attr in ("user.id", "session.id") else _observation(span["name"])
                    seen[f].add((obs, attr))
    for score in scores:
        for f, marker in M.items():
            if marker in json.dumps(score):
                assert marker in str(score.get("comment")), (f, score)
                seen[f].add(("score", "comment"))
    for f in FIELDS:
        expected = {e for e in FIELD_ATTRIBUTES[f] if (f, e) not in UNREACHED}
        assert seen[f] == expected, (f, seen[f], expected)


def test_every_field_dropped_leaves_no_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ",".join(f"{f}=drop" for f in FIELDS)
    _, _, raw = _run(tmp_path, spec, monkeypatch)
    text = raw.decode("utf-8", "replace")
    for f, marker in M.items():
        assert marker not in text, f


def test_the_readme_table_is_this_table() -> None:
    readme = (Path(__file__).parent.parent / "agent" / "README.md").read_text(encoding="utf-8")
    for f, entries in FIELD_ATTRIBUTES.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{f}` |")), None)
        assert row is not None, f"agent/README.md: no row for {f}"
        for obs, attr in entries:
            assert f"`{obs}` {attr}" in row, (f, obs, attr)
