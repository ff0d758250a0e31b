"""The documented privacy promises, checked on the wire (gunzipped bytes a mocked LangFuse got).

- ``NAME = value`` is scrubbed whatever whitespace surrounds the separator;
- under ``no-tool-io`` a tool's error text (which quotes its arguments) never goes out;
- names (model, tool names, span names, tool definitions) are scrubbed under every preset;
- under ``metadata-only`` and ``strict`` no error carries content (a provider quoting the prompt).

Fake secrets are assembled at run time so secret scanners do not flag this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from agent.config import AgentConfig
from agent.core import llm, telemetry
from agent.core.observability import Observability
from agent.core.privacy.scrubber import scrub
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

TOKEN = "ghp_" + "Wq4Er5Ty6" * 4
PROMPT = "PROMPTTEXTnovember please summarise the quarterly numbers"


@pytest.mark.parametrize(
    "text",
    [
        "password         = hunter2hunter2",
        "DB_PASSWORD =     hunter2hunter2",
        "api_key:\t\t\t\thunter2hunter2",
        "token:      hunter2hunter2",
        "[db]\nuser     = app\npassword\t\t=\thunter2hunter2\n",
        "Name:         default-token\nData\n====\ntoken:      hunter2hunter2\n",
        '{"client_secret"  :   "hunter2hunter2"}',
    ],
)
def test_assignment_with_any_whitespace_around_the_separator(text: str) -> None:
    out = scrub(text)
    assert "hunter2hunter2" not in out
    assert "[REDACTED:secret_assignment]" in out


def _obs(tmp_path: Path, spec: str, monkeypatch: pytest.MonkeyPatch) -> Observability:
    use_langfuse(monkeypatch, LANGFUSE)
    return forwarding(tmp_path, redact=spec, redact_hmac_key="k" * 16)[0]


def test_no_tool_io_sends_no_tool_error_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mocked_world() as router:
        obs = _obs(tmp_path, "preset=no-tool-io", monkeypatch)
        session = Session(user_id="u", observability=obs)
        telemetry.record_tool_call(
            session,
            name="read_file",
            duration_ms=1.0,
            ok=False,
            arguments=json.dumps({"path": "/home/alice/ERRPATHsierra/creds.txt"}),
            error="FileNotFoundError: /home/alice/ERRPATHsierra/creds.txt (token " + TOKEN + ")",
        )
        obs.shutdown(10)
        text = wire_bytes(router).decode("utf-8", "replace")
        spans = spans_of(router)
    (tool,) = [s for s in spans if s["name"] == "tool.read_file"]
    assert tool["attributes"]["langfuse.observation.level"] == "ERROR"
    assert "ERRPATHsierra" not in text and TOKEN not in text
    assert tool["attributes"]["langfuse.observation.status_message"].startswith(
        "[DROPPED:tool_results"
    )


@pytest.mark.parametrize("preset", ["default", "no-tool-io", "metadata-only", "strict"])
def test_names_are_scrubbed_under_every_preset(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool_name = "run_" + TOKEN
    model = "openai/gpt-" + TOKEN
    with mocked_world() as router:
        obs = _obs(tmp_path, f"preset={preset}", monkeypatch)
        session = Session(user_id="u", observability=obs)
        telemetry.record_turn_start(session, user_message="hi")
        llm.complete_sync(
            session,
            kind="main",
            model=model,
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": tool_name, "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "name": tool_name, "content": "ok"},
            ],
            tools=[{"type": "function", "function": {"name": tool_name, "parameters": {}}}],
            api_base=PROVIDER,
            api_key="sk-provider-" + "Zz9" * 10,
            num_retries=0,
        )
        telemetry.record_tool_call(session, name=tool_name, duration_ms=1.0, ok=True)
        telemetry.record_turn_complete(
            session, final_reply="done", duration_ms=5, steps=1, llm_calls=1
        )
        obs.shutdown(10)
        raw = wire_bytes(router)
        names = {s["name"] for s in spans_of(router)}
    assert TOKEN.encode() not in raw
    assert "tool.run_[REDACTED:github_token]" in names
    rows = read_rows(tmp_path)
    assert rows and TOKEN not in json.dumps(rows)


def _quoting_provider(request: httpx.Request) -> httpx.Response:
    """A provider that answers 400 and quotes the prompt back, as real ones do."""
    body = json.loads(request.content)
    quoted = json.dumps(body["messages"])[:400]
    return httpx.Response(
        400,
        json={
            "error": {
                "message": f"Invalid request: messages={quoted}",
                "type": "invalid_request_error",
                "code": "invalid_prompt",
            }
        },
    )


@pytest.mark.parametrize("preset", ["metadata-only", "strict"])
def test_content_free_presets_send_no_content_in_any_error(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mocked_world() as router:
        router.post(f"{PROVIDER}/chat/completions").mock(side_effect=_quoting_provider)
        obs = _obs(tmp_path, f"preset={preset}", monkeypatch)
        session = Session(user_id="u", observability=obs)
        telemetry.record_turn_start(session, user_message=PROMPT)
        with pytest.raises(Exception, match="PROMPTTEXTnovember"):  # the caller still sees it
            llm.complete_sync(
                session,
                kind="main",
                model="openai/gpt-4o-mini",
                messages=[{"role": "user", "content": PROMPT}],
                api_base=PROVIDER,
                api_key="sk-provider-" + "Zz9" * 10,
                num_retries=0,
            )
        telemetry.record_tool_call(
            session,
            name="bash",
            duration_ms=1.0,
            ok=False,
            arguments=json.dumps({"cmd": PROMPT}),
            error=f"CalledProcessError: {PROMPT}",
        )
        telemetry.record_turn_complete(
            session, final_reply="", duration_ms=5, steps=1, llm_calls=1, ok=False
        )
        obs.shutdown(10)
        text = wire_bytes(router).decode("utf-8", "replace")
        spans = spans_of(router)
    assert "PROMPTTEXTnovember" not in text
    (gen,) = [s for s in spans if s["name"] == "llm.main"]
    assert gen["attributes"]["langfuse.observation.level"] == "ERROR"


def test_hf_user_id_hash_needs_a_key(tmp_path: Path) -> None:
    from agent.config import ConfigError

    with pytest.raises(ConfigError, match=r"hf_user_id=hash.*ML_INTERN_REDACT_HMAC_KEY"):
        Observability.from_config(
            AgentConfig(telemetry_dir=tmp_path, hf_user_id="hash", observability_backend="none")
        )


def test_hf_user_id_hash_writes_the_langfuse_pseudonym(tmp_path: Path) -> None:
    from agent.core.privacy.pseudonym import pseudonym

    obs = Observability.from_config(
        AgentConfig(
            telemetry_dir=tmp_path,
            hf_user_id="hash",
            redact_hmac_key="k" * 16,
            observability_backend="none",
        )
    )
    session = Session(user_id="alice@example.com", observability=obs)
    telemetry.record_sandbox_create(session, sandbox_id="sb")
    obs.shutdown(5)
    (row,) = read_rows(tmp_path)
    assert row["user_id"] == pseudonym(b"k" * 16, "alice@example.com", "u_")
    assert row["session_id"] == session.session_id  # sessions are hashed only when the policy does
