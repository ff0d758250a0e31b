"""An adversary's run: a distinct secret of every catalogue kind planted in every field, name,
keyword argument and error path, under every preset; none may reach the wire (gunzipped), an HF
row, or a log record at INFO. The same run proves the value scrub (a provider key with no
recognisable shape, from the environment and from ``api_key=``, raw and encoded) and the
normalisation (a ``\\u``-escaped token in tool arguments, a token split across two multimodal
text parts and across two stream chunks).

One session per preset does everything, so the whole matrix costs a few seconds.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from agent.core import llm, telemetry
from agent.core.observability import Observability
from agent.core.privacy.scrubber import pattern_names
from agent.core.session import Session
from tests.langfuse_helpers import (
    LANGFUSE,
    PROVIDER,
    forwarding,
    mocked_world,
    spans_of,
    use_langfuse,
    wire_bytes,
)
from tests.rows import read_rows
from tests.test_secret_catalogue import B64, CASES, HEX, PEM_BODY, A

BODIES = (A, HEX, PEM_BODY, B64)

PII = {"email", "ipv6", "payment_card", "iban", "ipv4", "phone"}

# One planted text per kind (and the part that must never be seen again).
PLANTS: dict[str, tuple[str, str]] = {name: CASES[name][0][0] for name in pattern_names()}
NEEDLES = {name: needle for name, (_, needle) in PLANTS.items()}
# A key with no recognisable shape: only the value scrub can catch it.
SHAPELESS = "Zq7Vw2Rt9Lm4Xp8Kc3Hn6Bd1Fg5Js0Ty"
CALL_KEY = "Mx4Pq8Wn2Ke7Rv1Ja5Hs9Lc3Gd6Tb0Yf"  # passed as api_key=
TOKEN = "ghp_" + "Wq4Er5Ty6" * 4  # for names and ids
SPLIT = "hf_" + "Sp1itT0k3n" * 4  # split across parts and stream chunks
ESCAPED = "".join(f"\\u{ord(c):04x}" if i < 6 else c for i, c in enumerate(SPLIT))
PROMPT_MARKER = "PROMPTTEXTjuliet"


def _all_plants(pii: bool) -> str:
    lines = [text for name, (text, _) in PLANTS.items() if pii or name not in PII]
    lines += [
        f"shapeless {SHAPELESS} and {CALL_KEY}",
        f"url-encoded {quote(SHAPELESS + '/+=')} basic "
        + base64.b64encode(f"user:{SHAPELESS}".encode()).decode(),
        f"{PROMPT_MARKER} {TOKEN}",
    ]
    return "\n".join(lines) + "\n"


def _provider(all_text: str) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        last = json.dumps(body["messages"][-1])
        if "FAIL400" in last:  # a provider that quotes the prompt back
            quoted = json.dumps(body["messages"])[-3000:]
            return httpx.Response(
                400,
                json={
                    "error": {
                        "message": f"Invalid messages: {quoted}",
                        "type": "invalid_request_error",
                        "code": "invalid_prompt",
                    }
                },
            )
        if "FAIL401" in last:  # ... and one that echoes the key it was given
            key = request.headers.get("authorization", "").partition(" ")[2]
            return httpx.Response(
                401,
                json={"error": {"message": f"Incorrect API key provided: {key}", "code": "x"}},
            )
        now = int(time.time())
        if body.get("stream"):
            half = len(SPLIT) // 2
            pieces = [f"reply {SPLIT[:half]}", f"{SPLIT[half:]} and {all_text}"]
            chunks = [
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": now,
                    "model": "m",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": p}}],
                }
                for p in pieces
            ]
            chunks.append(
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": now,
                    "model": "m",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
            )
            sse = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
            return httpx.Response(
                200,
                content=sse + b"data: [DONE]\n\n",
                headers={"content-type": "text/event-stream"},
            )
        message = {
            "role": "assistant",
            "content": f"reply {all_text}",
            "tool_calls": [
                {
                    "id": "call_out",
                    "type": "function",
                    "function": {"name": "run_" + TOKEN, "arguments": json.dumps({"a": all_text})},
                }
            ],
        }
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": now,
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            },
        )

    return handler


PRESETS = {
    "default": "preset=default",
    "no-tool-io": "preset=no-tool-io",
    "metadata-only": "preset=metadata-only",
    "strict": "preset=strict",
    "default+pii": "preset=default,patterns.on=pii",
}


def _run_session(obs: Observability, all_text: str) -> Session:
    session = Session(user_id="user-" + TOKEN, session_id="sess-" + TOKEN, observability=obs)
    half = len(SPLIT) // 2
    tools = [
        {
            "type": "function",
            "function": {
                "name": "run_" + TOKEN,
                "description": all_text,
                "parameters": {"type": "object", "properties": {"x": {"description": all_text}}},
            },
        }
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": all_text},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"{all_text} split {SPLIT[:half]}"},
                {"type": "text", "text": f"{SPLIT[half:]} end"},
            ],
        },
        {
            "role": "assistant",
            "content": all_text,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "run_" + TOKEN,
                        # a \\u-escaped token, as a model may write it in JSON arguments
                        "arguments": '{"code": "'
                        + ESCAPED
                        + '", "all": '
                        + json.dumps(all_text)
                        + "}",
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "run_" + TOKEN, "content": all_text},
        {"role": "user", "content": all_text},
    ]
    common = dict(
        kind="main",
        api_base=PROVIDER,
        api_key=CALL_KEY,
        extra_headers={"Authorization": f"Bearer {CALL_KEY}", "X-Api-Key": SHAPELESS},
        num_retries=0,
    )
    telemetry.record_turn_start(session, user_message=all_text)
    llm.complete_sync(
        session,
        model="openai/gpt-" + TOKEN,
        messages=messages,
        tools=tools,
        stop=[all_text[:200]],
        temperature=0.1,
        **common,
    )
    llm.complete_sync(
        session,
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        **common,
    )
    for fail in ("FAIL400", "FAIL401"):
        with pytest.raises(Exception):  # noqa: B017 - the provider's own error, re-raised
            llm.complete_sync(
                session,
                model="openai/gpt-4o-mini",
                messages=[{"role": "user", "content": f"{fail} {all_text}"}],
                **common,
            )
    args = json.dumps({"path": f"/home/alice/{PROMPT_MARKER}", "all": all_text})
    telemetry.record_tool_call(
        session,
        name="run_" + TOKEN,
        duration_ms=1.0,
        ok=True,
        tool_call_id="call_1",
        arguments=args,
        result=all_text,
    )
    telemetry.record_tool_call(
        session,
        name="read_" + TOKEN,
        duration_ms=1.0,
        ok=False,
        tool_call_id="call_2",
        arguments=args,
        error=f"FileNotFoundError: /home/alice/{PROMPT_MARKER} {all_text}",
    )
    telemetry.record_hf_job_submit(
        session, job_id="job-" + TOKEN, image="img-" + TOKEN, flavor="cpu", command=all_text
    )
    telemetry.record_hf_job_complete(session, job_id="job-" + TOKEN, status="failed", duration_s=1)
    telemetry.record_sandbox_create(session, sandbox_id="sb-" + TOKEN)
    telemetry.record_feedback(session, value=1.0, comment=all_text, name="fb-" + TOKEN)
    telemetry.record_turn_complete(
        session, final_reply=all_text, duration_ms=5, steps=1, llm_calls=4, ok=False
    )
    return session


@pytest.mark.parametrize("preset", list(PRESETS))
def test_no_planted_secret_leaves_under_any_preset(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pii = preset.endswith("+pii")
    all_text = _all_plants(pii)
    _, sk = use_langfuse(monkeypatch, LANGFUSE)
    monkeypatch.setenv("MISTRAL_API_KEY", SHAPELESS)  # known only by value
    caplog.set_level(logging.INFO)
    with mocked_world() as router:
        router.post(f"{PROVIDER}/chat/completions").mock(side_effect=_provider(all_text))
        obs, _ = forwarding(
            tmp_path,
            redact=PRESETS[preset],
            redact_hmac_key="an-hmac-key-for-tests",
            hf_user_id="hash" if preset == "strict" else "keep",
        )
        session = _run_session(obs, all_text)
        report = obs.shutdown(15)
        raw = wire_bytes(router)
        spans = spans_of(router)
    assert report["langfuse"]["completed_in_time"]
    rows_text = "\n".join(
        p.read_text(encoding="utf-8") for p in sorted((tmp_path / "data").glob("*.jsonl"))
    )
    logs = "\n".join(r.getMessage() for r in caplog.records)
    text = raw.decode("utf-8", "replace")
    needles = {name: n for name, n in NEEDLES.items() if pii or name not in PII}
    # The bodies shared by many kinds' examples: no piece of them may survive anywhere.
    needles |= {f"body {b[:16]}": b[:16] for b in BODIES}
    needles |= {
        "shapeless": SHAPELESS,
        "call_key": CALL_KEY,
        "url-encoded": quote(SHAPELESS + "/+="),
        "basic": base64.b64encode(f"user:{SHAPELESS}".encode()).decode()[8:30],
        "names": TOKEN,
        "split": SPLIT,
        "split-half": SPLIT[len(SPLIT) // 2 - 4 :],
        "langfuse secret key": sk,
    }
    for where, blob in (("wire", text), ("HF rows", rows_text), ("logs", logs)):
        for name, needle in needles.items():
            i = blob.find(needle)
            context = blob[max(0, i - 80) : i + 80]
            assert i < 0, f"{name} leaked to the {where} under {preset}: {context!r}"
    # The HF rows are metadata: never the prompt, a tool's path, or a quoted request.
    assert PROMPT_MARKER not in rows_text
    # Every pipeline really ran.
    names = {s["name"] for s in spans}
    assert {"turn", "llm.main", "hf_job.submit", "sandbox.create"} <= names
    assert sum(1 for s in spans if s["name"] == "llm.main") == 4
    rows = read_rows(tmp_path)
    errors = [r for r in rows if r["event_type"] == "llm_call_error"]
    assert sorted(r["data"]["http_status"] for r in errors) == [400, 401]
    assert {r["data"]["error_code"] for r in errors} >= {"invalid_prompt"}
    if preset in ("metadata-only", "strict"):
        # No content in any error: neither the prompt nor the tool's error text.
        assert PROMPT_MARKER not in text
        for s in spans:
            msg = s["attributes"].get("langfuse.observation.status_message") or ""
            assert msg.startswith(("[DROPPED:", "job ", "the turn")) or not msg, msg
    if preset == "no-tool-io":
        (tool,) = [s for s in spans if s["name"].startswith("tool.read_")]
        assert tool["attributes"]["langfuse.observation.status_message"].startswith(
            "[DROPPED:tool_results"
        )
    if preset == "strict":
        assert session.session_id not in rows_text and "user-" not in rows_text
        row_users = {r["user_id"] for r in rows}
        assert len(row_users) == 1 and next(iter(row_users)).startswith("u_")
        (gen, *_) = [s for s in spans if s["name"] == "llm.main"]
        # The HF rows carry the very pseudonyms LangFuse got: joins still work.
        assert gen["attributes"]["user.id"] in row_users
        assert gen["attributes"]["session.id"] in {r["session_id"] for r in rows}
    if preset == "default":
        assert "[REDACTED:known_secret]" in text
        assert "[REDACTED:hf_token]" in text  # the escaped and the split tokens were seen
