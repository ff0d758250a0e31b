"""The content memo (agent.core.privacy.memo): the history an agent sends with every call is
redacted once, and nothing a user can observe changes because of it.

At the wire: the same session (growing history; secrets in prompts, tool definitions and tool
results; a lone surrogate; an inline image; a failed call) forwarded with the memo, without
it, and from the sidecar (messages packed by pickle) gives the same generations, byte for byte
in every attribute but ids and times. A secret learned after a message was remembered is
scrubbed from it on the next call; a stricter per-call override is never served a laxer
policy's result. Below the wire: ``redact`` with and without a memo returns equal records and
reports on a first and a repeated pass, the memo stays within its bound, a policy with a user
hook is never remembered, and a packed item that does not unpickle fails closed.
"""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.core import llm
from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings
from agent.core.privacy.known import KNOWN_SECRETS
from agent.core.privacy.memo import ContentMemo
from agent.core.privacy.redaction import RedactionPolicy, redact
from agent.core.records import CallRecord
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import direct_forwarder

MODEL = "openai/gpt-4o-mini"
OPENAI_KEY = "sk-proj-" + "Ab3" * 16  # the catalogue's OpenAI key form
GITHUB_TOKEN = "ghp_" + "x1Y2" * 9
IMAGE = "data:image/png;base64," + "iVBORw0KGgo" * 40

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": f"Reads a file. Debug token {GITHUB_TOKEN} (never shown).",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run",
            "description": "Runs a command.",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
        },
    },
]


def _history() -> list[list[dict[str, Any]]]:
    """The messages of each call of a session: every call resends what came before."""
    system = {"role": "system", "content": "You are a careful agent. " * 20}
    turns: list[dict[str, Any]] = [
        {"role": "user", "content": f"my key is {OPENAI_KEY}, please list the files"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "run", "arguments": '{"cmd": "ls"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt\nb\udcff.txt\n"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and what is in this picture?"},
                {"type": "image_url", "image_url": {"url": IMAGE}},
            ],
        },
        {"role": "assistant", "content": "A diagram."},
        {"role": "user", "content": "thanks, one more question " * 10},
    ]
    return [[system, *turns[:n]] for n in range(1, len(turns) + 1)]


def _generations(sink: FakeLangfuse, n: int) -> list[dict[str, Any]]:
    assert sink.wait_for_spans(n, timeout=30), f"{len(sink.spans)} spans of {n}"
    gens = [
        s for s in sink.spans if s["attributes"].get("langfuse.observation.type") == "generation"
    ]
    # In call order: call i answered "reply i".
    gens.sort(key=lambda s: int(s["attributes"]["langfuse.observation.output"].split()[-1][:-2]))
    return gens


_VARYING = ("hf_event_id", "turn_index", "completion_start_time")


def _comparable(span: dict[str, Any]) -> dict[str, Any]:
    """A generation's attributes without ids and times (which differ from run to run)."""
    return {
        k: v
        for k, v in span["attributes"].items()
        if not any(part in k for part in _VARYING) and k not in ("session.id", "user.id")
    }


def _run_session(tmp_path: Path, *, mode: str, memo_bytes: int) -> list[dict[str, Any]]:
    """One session's calls through a forwarder (``mode``, memo size); what LangFuse got, in
    call order."""
    calls = _history()
    with direct_forwarder(
        tmp_path, mode=mode, user_id="memo-user", content_memo_bytes=memo_bytes
    ) as d:

        async def main() -> None:
            for i, messages in enumerate(calls):
                await llm.complete(
                    d.session,
                    kind="main",
                    model=MODEL,
                    messages=messages,
                    tools=TOOLS,
                    mock_response=f"reply {i}",
                )
            await llm.adrain_callbacks(30)

        asyncio.run(main())
        assert d.forwarder.flush(30)
        return _generations(d.sink, len(calls))


def test_the_memo_changes_nothing_on_the_wire(tmp_path: Path) -> None:
    without = _run_session(tmp_path / "a", mode="thread", memo_bytes=0)
    with_memo = _run_session(tmp_path / "b", mode="thread", memo_bytes=8 << 20)
    sidecar = _run_session(tmp_path / "c", mode="sidecar", memo_bytes=8 << 20)
    assert len(without) == len(with_memo) == len(sidecar) == len(_history())
    for a, b, c in zip(without, with_memo, sidecar, strict=True):
        assert _comparable(a) == _comparable(b)
        assert _comparable(a) == _comparable(c)
    # The content really was redacted, and the repeated history really is there each time.
    wire = " ".join(str(s["attributes"]) for s in with_memo)
    assert OPENAI_KEY not in wire and GITHUB_TOKEN not in wire and "iVBORw0KGgo" not in wire
    last = with_memo[-1]["attributes"]["langfuse.observation.input"]
    assert last.count("[REDACTED:") >= 2 and "b\\ufffd.txt" in last  # JSON-escaped


def _record(messages: list[dict[str, Any]], **kw: Any) -> CallRecord:
    now = datetime.now(UTC)
    return CallRecord(
        event_id=uuid.uuid4().hex,
        kind="main",
        session_id="s",
        user_id="u",
        turn_index=1,
        trace_id="0" * 32,
        observation_id="1" * 16,
        model=MODEL,
        start_time=now,
        end_time=now,
        messages=tuple(messages),
        tools=tuple(TOOLS),
        output={"role": "assistant", "content": "ok"},
        **kw,
    )


def test_a_secret_learned_later_is_scrubbed_from_remembered_messages() -> None:
    value = f"plain-looking-{uuid.uuid4().hex}-credential"
    policy = RedactionPolicy.from_spec(None)
    memo = ContentMemo()
    history = [{"role": "user", "content": f"use {value} for the upload"}]
    first, _ = redact(_record(history), policy, memo=memo)
    assert value in first.messages[0]["content"]  # not a secret yet: nothing says so
    KNOWN_SECRETS.add(value)
    second, report = redact(_record(history), policy, memo=memo)
    assert value not in str(second.messages)
    assert report.secrets, report


def test_a_stricter_per_call_override_is_never_served_a_laxer_result() -> None:
    policy = RedactionPolicy.from_spec(None)
    memo = ContentMemo()
    history = [{"role": "user", "content": "the quarterly numbers are 41, 42, 43"}]
    lax, _ = redact(_record(history), policy, memo=memo)
    assert "quarterly" in lax.messages[0]["content"]
    strict, _ = redact(_record(history, redact_override="preset=metadata-only"), policy, memo=memo)
    assert "quarterly" not in str(strict.messages)


MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief. " * 50},
    {"role": "user", "content": f"key {OPENAI_KEY} and token {GITHUB_TOKEN}"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "half sk-proj-"},
            {"type": "text", "text": "Ab3" * 16},
        ],
    },
    {"role": "tool", "tool_call_id": "c", "content": "bad \udcff byte"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": (
            {
                "id": "c",
                "type": "function",
                "function": {"name": "x", "arguments": '{"password": "hunter2hunter2"}'},
            },
        ),
    },
    {"role": "user", 1: "an int key", "content": "odd keys"},
    {"role": "user", "content": "created", "when": datetime(2026, 1, 1, tzinfo=UTC)},
    {"role": "mystery", "content": "unknown role"},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]},
]


@pytest.mark.parametrize(
    "spec",
    [None, "preset=strict", "preset=metadata-only", "user_messages=hash,tool_results=truncate:5"],
)
def test_redact_with_a_memo_equals_redact_without(spec: str | None) -> None:
    hmac = "k" * 32 if spec is not None and ("hash" in spec or "strict" in spec) else None
    policy = RedactionPolicy.from_spec(spec, hmac_key=hmac)
    memo = ContentMemo()
    packed_memo = ContentMemo()
    record = _record(MESSAGES)
    packed = _record([pickle.dumps(m) for m in MESSAGES])
    expected, expected_report = redact(record, policy)
    for _ in range(3):  # a miss, then hits
        got, report = redact(record, policy, memo=memo)
        assert got.messages == expected.messages and got.tools == expected.tools
        assert report.as_metadata() == expected_report.as_metadata()
        got, report = redact(packed, policy, memo=packed_memo)
        assert got.messages == expected.messages
        assert report.as_metadata() == expected_report.as_metadata()
    assert memo.stats()["hits"] > 0 and packed_memo.stats()["hits"] > 0


def test_the_memo_stays_within_its_bound_and_still_redacts() -> None:
    policy = RedactionPolicy.from_spec(None)
    memo = ContentMemo(max_bytes=20_000)
    for i in range(200):
        messages = [{"role": "user", "content": f"message {i} {OPENAI_KEY} " + "x" * 300}]
        got, _ = redact(_record(messages), policy, memo=memo)
        assert OPENAI_KEY not in str(got.messages)
        assert memo.stats()["bytes"] <= 20_000
    assert memo.stats()["evicted"] > 0


def test_a_policy_with_a_hook_is_never_remembered() -> None:
    policy = RedactionPolicy.from_spec("hook=tests.redaction_hooks:upper")
    memo = ContentMemo()
    for _ in range(3):
        got, _ = redact(_record(MESSAGES[:2]), policy, memo=memo)
        assert "BE BRIEF." in got.messages[0]["content"]
    assert memo.stats().get("hits", 0) == 0 and memo.stats()["items"] == 0


def test_a_packed_item_that_does_not_unpickle_fails_closed() -> None:
    memo = ContentMemo()
    got, report = redact(_record([b"not a pickle"]), RedactionPolicy.from_spec(None), memo=memo)
    assert got.messages[0]["content"] == "[REDACTION_FAILED]"
    assert report.failures == 1


def test_nothing_is_remembered_when_the_sdk_gets_objects() -> None:
    """With LangFuse's media upload on, the SDK is handed our objects (it uploads the media in
    them), and a remembered item is handed out again: so nothing is remembered."""
    from agent.core.forwarding.engine import Engine
    from agent.testing.fake_langfuse import closed_port

    tag = uuid.uuid4().hex[:10]
    settings = LangfuseSettings(
        host=f"http://127.0.0.1:{closed_port()}", public_key=f"pk-lf-{tag}", secret_key="sk-x"
    )
    for media_upload, remembered in ((False, True), (True, False)):
        engine = Engine(
            settings,
            policy=RedactionPolicy.from_spec(None, media_upload=media_upload),
            options=ForwarderOptions(),
        )
        try:
            engine.handle([("call", _record(MESSAGES[:2]))] * 2)
            assert (engine.memo.stats()["items"] > 0) is remembered
        finally:
            engine.shutdown(time.monotonic() + 2)
