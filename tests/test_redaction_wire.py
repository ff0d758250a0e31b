"""Redaction proven on the wire: planted secrets and dropped content never reach LangFuse.

Every test drives real litellm calls and telemetry events through the forwarder and inspects the
gzip-decoded bytes that reached the respx-mocked LangFuse API.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig
from agent.core import llm, telemetry
from agent.core.observability import Observability
from agent.core.privacy.scrubber import DEFAULT_SCRUBBER
from agent.core.session import InMemorySink, Session
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import (
    LANGFUSE,
    attr_json,
    forwarding,
    fresh_keys,
    langfuse_calls,
    meta,
    mocked_world,
    spans_of,
    use_langfuse,
    wire_bytes,
)

SECRETS = {
    "hf_token": "hf_" + "Qw8" * 12,
    "openai_key": "sk-proj-" + "T5u" * 12,
    "anthropic_key": "sk-ant-api03-" + "Zx7" * 12,
    "github_classic": "ghp_" + "Ab1" * 12,
    "github_fine": "github_pat_" + "11ABCDEFG0" + "x9Y" * 10,
    "aws": "AKIA" + "QWERTYUIOPASDFGH",
    "bearer": "Bearer " + "eyJhbGciOi" + "J9Kq" * 8,
    "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA"
    + "k" * 64
    + "\n-----END RSA PRIVATE KEY-----",
    "assignment": "DB_PASSWORD=" + "hunter2hunter2xyz",
}
# What must not appear on the wire: the secret part of each (a bearer's scheme word may stay).
NEEDLES = {
    k: (v.split(" ", 1)[1] if k == "bearer" else v.split("=", 1)[1] if k == "assignment" else v)
    for k, v in SECRETS.items()
}
NEEDLES["pem"] = "MIIEowIBAAKCAQEA"

PRESETS = {
    "default": ("preset=default", None),
    "no-tool-io": ("preset=no-tool-io", None),
    "metadata-only": ("preset=metadata-only", None),
    "strict": ("preset=strict", "an-hmac-key-for-tests"),
}

MARKERS = {
    "system": "MARKERSYSTEMalpha",
    "user": "MARKERUSERbravo",
    "tooldef": "MARKERTOOLDEFcharlie",
    "args": "MARKERARGSdelta",
    "result": "MARKERRESULTecho",
    "reply": "provider reply number one",
}


def _setup(
    tmp_path: Path, spec: str, hmac_key: str | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[Observability, InMemorySink]:
    use_langfuse(monkeypatch, LANGFUSE)
    return forwarding(tmp_path, redact=spec, redact_hmac_key=hmac_key)


def _planted_turn(session: Session) -> None:
    all_secrets = " ".join(SECRETS.values())
    tools = [
        {
            "type": "function",
            "function": {
                "name": "run_python",
                "description": f"{MARKERS['tooldef']} run code; admin token {SECRETS['github_classic']}",
                "parameters": {"type": "object", "properties": {"code": {"type": "string"}}},
            },
        }
    ]
    args = json.dumps(
        {"code": f"# {MARKERS['args']}\nkey = '{SECRETS['aws']}'\n{SECRETS['assignment']}"}
    )
    messages = [
        {
            "role": "system",
            "content": f"{MARKERS['system']} You are careful. {SECRETS['hf_token']}\n{SECRETS['pem']}",
        },
        {"role": "user", "content": f"{MARKERS['user']} use my key {SECRETS['openai_key']} please"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "run_python", "arguments": args},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "name": "run_python",
            "content": f"{MARKERS['result']} GITHUB_TOKEN={SECRETS['github_fine']} Authorization: {SECRETS['bearer']}",
        },
        {"role": "user", "content": f"{MARKERS['user']} and {SECRETS['anthropic_key']}"},
    ]
    telemetry.record_turn_start(session, user_message=f"{MARKERS['user']} {all_secrets}")
    llm.complete_sync(
        session,
        kind="main",
        model="openai/gpt-4o-mini",
        messages=messages,
        tools=tools,
        api_base="https://provider.example.test/v1",
        api_key="sk-provider-" + "Zz9" * 10,
        num_retries=0,
    )
    telemetry.record_tool_call(
        session,
        name="run_python",
        duration_ms=3.0,
        ok=True,
        tool_call_id="call_1",
        arguments=args,
        result=f"{MARKERS['result']} {all_secrets}",
    )
    telemetry.record_feedback(session, value=1.0, comment=f"great {SECRETS['openai_key']}")
    telemetry.record_turn_complete(
        session,
        final_reply=f"{MARKERS['reply']} {all_secrets}",
        duration_ms=10,
        steps=1,
        llm_calls=1,
    )
    session.turn_index += 1


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_no_planted_secret_reaches_the_wire(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, key = PRESETS[preset]
    with mocked_world() as router:
        obs, sink = _setup(tmp_path, spec, key, monkeypatch)
        session = Session(user_id="alice@example.com", observability=obs)
        _planted_turn(session)
        report = obs.shutdown(10)
        raw = wire_bytes(router)
        spans = spans_of(router)
    assert report["langfuse"]["completed_in_time"]
    for name, needle in NEEDLES.items():
        assert needle.encode() not in raw, f"{name} leaked under {preset}"
    # The HF rows hold no string a named pattern matches.
    for event in sink.events:
        _, counts = DEFAULT_SCRUBBER.scrub_text(json.dumps(event.to_row()))
        assert not counts, (event.event_type, counts)
    (gen,) = [s for s in spans if s["name"] == "llm.main"]
    # Whatever the preset: usage, cost, kind, ids and the user still arrive.
    usage = attr_json(gen, "langfuse.observation.usage_details")
    assert sum(v for k, v in usage.items() if "input" in k) == 42 and usage["output"] == 7
    assert usage["input"] == 30 and usage["cache_read_input_tokens"] == 12
    assert attr_json(gen, "langfuse.observation.cost_details")["total"] > 0
    assert meta(gen, "kind") == "main"
    (row,) = sink.of_type("llm_call")
    assert meta(gen, "hf_event_id") == row.event_id
    assert gen["span_id"] == row.langfuse_observation_id
    if preset == "strict":  # pseudonymous sessions too
        assert gen["attributes"]["session.id"].startswith("s_")
        assert session.session_id not in raw.decode("utf-8", "replace")
    else:
        assert gen["attributes"]["session.id"] == session.session_id
    user = gen["attributes"].get("user.id")
    assert user
    if preset == "strict":
        assert user != "alice@example.com" and "alice" not in raw.decode("utf-8", "replace")
    else:
        assert user == "alice@example.com"
    redaction = meta(gen, "redaction")
    assert isinstance(redaction, dict)
    # Structure survives every preset: roles, order, tool call ids and tool names.
    gen_input = attr_json(gen, "langfuse.observation.input")
    assert [m["role"] for m in gen_input["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "user",
    ]
    assert gen_input["messages"][2]["tool_calls"][0]["id"] == "call_1"
    assert gen_input["messages"][2]["tool_calls"][0]["function"]["name"] == "run_python"
    assert gen_input["messages"][3]["tool_call_id"] == "call_1"
    assert gen_input["tools"][0]["function"]["name"] == "run_python"
    text = raw.decode("utf-8", "replace")
    if preset in ("metadata-only", "strict"):
        for marker in MARKERS.values():
            assert marker not in text, f"{marker} on the wire under {preset}"
    if preset == "no-tool-io":
        assert MARKERS["args"] not in text and MARKERS["result"] not in text
        assert MARKERS["user"] in text  # the rest is kept (scrubbed)
    if preset == "default":
        assert MARKERS["user"] in text and MARKERS["result"] in text
        assert "[REDACTED:hf_token]" in text


def test_per_call_override_only_tightens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with mocked_world() as router:
        obs, _ = _setup(tmp_path, "preset=default", None, monkeypatch)
        session = Session(user_id="u", observability=obs)
        common = dict(
            kind="research",
            model="openai/gpt-4o-mini",
            api_base="https://provider.example.test/v1",
            api_key="sk-provider-" + "Zz9" * 10,
            num_retries=0,
        )
        llm.complete_sync(
            session,
            messages=[{"role": "user", "content": "TIGHTENme"}],
            redact="user_messages=drop",
            **common,
        )
        llm.complete_sync(
            session,
            messages=[{"role": "user", "content": "LOOSENme " + SECRETS["hf_token"]}],
            redact="user_messages=keep",
            **common,
        )
        obs.shutdown(10)
        text = wire_bytes(router).decode("utf-8", "replace")
    assert "TIGHTENme" not in text
    assert "LOOSENme" in text
    assert SECRETS["hf_token"] not in text  # "keep" in an override cannot undo the operator's scrub


# Never the mocked provider's failure trigger (tests/langfuse_helpers: a last user message that
# says FAIL gets a 500): hypothesis also draws string literals from the code under test.
texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40
).filter(lambda t: "FAIL" not in t)


@st.composite
def planted(draw: st.DrawFn) -> tuple[list[dict], list[dict], list[str]]:
    secrets = draw(st.lists(st.sampled_from(sorted(SECRETS)), min_size=1, max_size=4))
    pieces = []

    def content() -> str:
        parts = [draw(texts)]
        if draw(st.booleans()) and secrets:
            name = secrets[len(pieces) % len(secrets)]
            pieces.append(NEEDLES[name])
            parts.append(SECRETS[name])
        parts.append(draw(texts))
        return " ".join(parts)

    messages: list[dict] = [{"role": "system", "content": content()}]
    for i in range(draw(st.integers(0, 3))):
        messages.append({"role": "user", "content": content()})
        cid = f"call_{i}"
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": cid,
                        "type": "function",
                        "function": {"name": "t", "arguments": json.dumps({"a": content()})},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": cid, "name": "t", "content": content()})
    messages.append({"role": "user", "content": content()})
    tools = [
        {
            "type": "function",
            "function": {"name": "t", "description": content(), "parameters": {"type": "object"}},
        }
    ]
    return messages, tools, pieces


@pytest.mark.parametrize("preset", ["default", "no-tool-io", "metadata-only"])
def test_property_no_planted_secret_on_the_wire(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mocked_world() as router:
        obs, _ = _setup(tmp_path, f"preset={preset}", None, monkeypatch)

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(planted())
        def check(case: tuple[list[dict], list[dict], list[str]]) -> None:
            messages, tools, needles = case
            session = Session(user_id="p", observability=obs)
            before = len(langfuse_calls(router))
            llm.complete_sync(
                session,
                kind="main",
                model="openai/gpt-4o-mini",
                messages=messages,
                tools=tools,
                api_base="https://provider.example.test/v1",
                api_key="sk-provider-" + "Zz9" * 10,
                num_retries=0,
            )
            assert obs.flush(10)
            raw = b"".join(
                c.request.read()
                if c.request.headers.get("content-encoding") != "gzip"
                else __import__("gzip").decompress(c.request.read())
                for c in langfuse_calls(router)[before:]
            )
            for needle in needles:
                assert needle.encode() not in raw

        try:
            check()
        finally:
            obs.shutdown(10)


def test_marker_never_echoes_the_secret() -> None:
    for name, value in SECRETS.items():
        out, counts = DEFAULT_SCRUBBER.scrub_text(f"x {value} y")
        assert NEEDLES[name] not in out and counts, name


def test_unique_keys_per_setup_do_not_reuse_a_cached_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same public key twice, different hosts: the second setup must talk to the second host.
    pk, _ = fresh_keys()
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", pk)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-x")
    hosts = []
    with FakeLangfuse() as first, FakeLangfuse() as second:
        for host in (first.url, second.url):
            monkeypatch.setenv("LANGFUSE_HOST", host)
            obs = Observability.from_config(AgentConfig(telemetry_dir=tmp_path))
            session = Session(observability=obs)
            llm.complete_sync(
                session,
                kind="main",
                model="openai/gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                mock_response="ok",
            )
            obs.shutdown(5)
        hosts = [len(fake.otlp_requests) for fake in (first, second)]
    assert hosts[0] >= 1 and hosts[1] >= 1


@pytest.mark.parametrize(
    ("hook", "expect"), [("boom", "[REDACTION_FAILED]"), ("upper", "MARKERUSERBRAVO")]
)
def test_user_hook_runs_and_fails_closed_on_the_wire(
    hook: str, expect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mocked_world() as router:
        obs, _ = _setup(tmp_path, f"hook=tests.redaction_hooks:{hook}", None, monkeypatch)
        session = Session(user_id="u", observability=obs)
        llm.complete_sync(
            session,
            kind="main",
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": f"{MARKERS['user']} hello"}],
            mock_response="fine",
        )
        obs.shutdown(10)
        text = wire_bytes(router).decode("utf-8", "replace")
    assert expect in text
    if hook == "boom":
        assert MARKERS["user"] not in text  # the raw value never goes out
