"""The redaction policy and ``redact()`` (agent.core.privacy.redaction), plus the preview helpers.

Assertions are on what would leave the process: the redacted record and its report.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import json
import operator
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.privacy import redaction
from agent.core.privacy import scrubber as redact_mod
from agent.core.privacy.preview import load_call_record, preview, sample_call_record
from agent.core.privacy.redaction import (
    FAILED,
    FIELDS,
    PRESETS,
    Action,
    RedactionPolicy,
    RedactionReport,
    RedactionSpecError,
    redact,
)
from agent.core.privacy.scrubber import SecretPattern
from agent.core.records import CallRecord, ScoreRecord, SpanRecord

KEY = b"test-hmac-key"


def default_policy() -> RedactionPolicy:
    """The ``default`` preset: secrets scrubbed everywhere, everything else kept."""
    return RedactionPolicy.from_spec(None)


T0 = datetime(2025, 1, 1, tzinfo=UTC)


def fake(prefix: str, body: str, n: int) -> str:
    return prefix + (body * (n // len(body) + 1))[:n]


HF = fake("hf_", "Ab3dE5gH7jK9", 34)
OPENAI = fake("sk-", "Xy12Zw34Vu56", 48)
AWS = "AKIA" + fake("", "QW3RT5YU7IO9", 16)


def call(**kw: Any) -> CallRecord:
    base: dict[str, Any] = {
        "event_id": "evt1",
        "kind": "main",
        "session_id": "sess1",
        "user_id": "alice@example.com",
        "turn_index": 0,
        "trace_id": "t" * 32,
        "observation_id": "o" * 16,
        "model": "openai/gpt-4o-mini",
        "start_time": T0,
        "end_time": T0,
    }
    base.update(kw)
    return CallRecord(**base)


def span(**kw: Any) -> SpanRecord:
    base: dict[str, Any] = {
        "event_id": "evt2",
        "event_type": "tool_call",
        "name": "tool.bash",
        "session_id": "sess1",
        "user_id": "alice@example.com",
        "turn_index": 0,
        "trace_id": None,
        "observation_id": None,
        "timestamp": T0,
    }
    base.update(kw)
    return SpanRecord(**base)


def policy(spec: str | None = None, **kw: Any) -> RedactionPolicy:
    return RedactionPolicy.from_spec(spec, hmac_key=kw.pop("hmac_key", KEY), **kw)


def strings(obj: Any) -> str:
    """Every string in a record (values and keys), joined: what could reach the wire."""
    out: list[str] = []

    def walk(v: Any) -> None:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            for f in dataclasses.fields(v):
                walk(getattr(v, f.name))
        elif isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif v is not None:
            out.append(str(v))

    walk(obj)
    return "\x00".join(out)


def mac16(text: str, key: bytes = KEY) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:16]


# -- actions ------------------------------------------------------------------------------------


def test_action_parse_and_str_round_trip() -> None:
    for text in ("keep", "scrub", "truncate:5", "hash", "drop"):
        assert str(Action.parse(text)) == text
    assert Action.parse(" TRUNCATE: 7 ") == Action("truncate", 7)


def test_strictness_order() -> None:
    order = ["keep", "scrub", "truncate:1000", "truncate:10", "hash", "drop"]
    actions = [Action.parse(a) for a in order]
    for i, a in enumerate(actions):
        for b in actions[i:]:
            assert a.stricter(b) == b
            assert b.stricter(a) == b


@pytest.mark.parametrize("bad", ["", "erase", "truncate", "truncate:", "truncate:0", "truncate:-1"])
def test_bad_actions_raise(bad: str) -> None:
    with pytest.raises(RedactionSpecError, match=r"truncate:N"):
        Action.parse(bad)


# -- spec parsing -------------------------------------------------------------------------------


def test_empty_spec_is_the_default_preset() -> None:
    for spec in (None, "", " , "):
        p = RedactionPolicy.from_spec(spec)
        assert p == default_policy()
        assert {f: p.describe()[f] for f in FIELDS} == {
            f: str(a) for f, a in PRESETS["default"].items()
        }
    d = default_policy().describe()
    assert d["user_id"] == "keep" and d["session_id"] == "keep"
    assert all(d[f] == "scrub" for f in FIELDS if f not in ("user_id", "session_id"))


def test_spec_items_fields_metadata_patterns_and_whitespace() -> None:
    p = RedactionPolicy.from_spec(
        "  user_messages = truncate:20 ,tool_results=drop,  metadata.customer=drop, "
        "metadata.Plan=hash, patterns.off=hf_token+openai_key, USER_ID=Hash",
        hmac_key="k",
    )
    d = p.describe()
    assert d["user_messages"] == "truncate:20"
    assert d["tool_results"] == "drop"
    assert d["user_id"] == "hash"
    assert d["metadata.customer"] == "drop"
    assert d["metadata.Plan"] == "hash"  # metadata keys keep their case
    assert d["patterns.off"] == "hf_token+openai_key"
    assert d["system_prompt"] == "scrub"


def test_preset_is_applied_first_whatever_its_position() -> None:
    p = RedactionPolicy.from_spec("user_messages=keep, preset=metadata-only")
    assert p.actions["user_messages"] == Action("keep")
    assert p.actions["system_prompt"] == Action("drop")
    assert p.preset == "metadata-only"


def test_hook_by_colon_or_dotted_path() -> None:
    assert RedactionPolicy.from_spec("hook=operator:add").hook is operator.add
    p = RedactionPolicy.from_spec("hook=operator.add")
    assert p.hook is operator.add
    assert p.describe()["hook"] == "operator.add"


@pytest.mark.parametrize(
    ("spec", "must_mention"),
    [
        ("preset=loose", ["preset=loose", "default", "no-tool-io", "metadata-only", "strict"]),
        ("preset=default,preset=strict", ["preset=strict", "only one preset"]),
        ("user_mesages=drop", ["user_mesages", "user_messages", "metadata.<key>"]),
        ("user_messages=erase", ["user_messages=erase", "keep", "truncate:N", "drop"]),
        ("user_messages=truncate:0", ["user_messages=truncate:0", "truncate:N"]),
        ("user_messages=truncate:many", ["truncate:many", "truncate:N"]),
        ("user_messages", ["'user_messages'", "key=value"]),
        ("=drop", ["'=drop'", "key=value"]),
        ("metadata.=drop", ["metadata.=drop", "key name"]),
        ("patterns.off=hf_tokn", ["hf_tokn", "hf_token", "openai_key"]),
        ("patterns.off=", ["patterns.off=", "hf_token"]),
        ("hook=no_such_module_xyz:fn", ["hook=no_such_module_xyz:fn", "package.module:function"]),
        ("hook=operator:no_such_function", ["no_such_function", "package.module:function"]),
        ("hook=agent.core.privacy.redaction:FIELDS", ["FIELDS", "callable"]),
        ("hook=nodots", ["hook=nodots", "package.module:function"]),
    ],
)
def test_spec_errors_name_the_item_and_the_choices(spec: str, must_mention: list[str]) -> None:
    with pytest.raises(RedactionSpecError) as info:
        RedactionPolicy.from_spec(spec, hmac_key=KEY)
    assert isinstance(info.value, ValueError)
    for text in must_mention:
        assert text in str(info.value)


@pytest.mark.parametrize(
    ("spec", "item"),
    [
        ("user_id=hash", "user_id=hash"),
        ("preset=strict", "preset=strict"),
        ("completion=hash", "completion=hash"),
        ("metadata.customer=hash", "metadata.customer=hash"),
    ],
)
def test_hash_without_a_key_is_an_error_naming_the_env_var(spec: str, item: str) -> None:
    with pytest.raises(RedactionSpecError) as info:
        RedactionPolicy.from_spec(spec)
    assert item in str(info.value)
    assert "ML_INTERN_REDACT_HMAC_KEY" in str(info.value)


def test_hash_without_a_key_is_fine_when_no_field_uses_hash() -> None:
    p = RedactionPolicy.from_spec("preset=strict, user_id=keep, session_id=keep")
    assert p.actions["user_id"] == Action("keep")
    assert RedactionPolicy.from_spec("preset=metadata-only", hmac_key=None).hmac_key is None


def test_str_and_bytes_keys_are_the_same_key() -> None:
    r = call()
    a, _ = redact(r, RedactionPolicy.from_spec("user_id=hash", hmac_key="k1"))
    b, _ = redact(r, RedactionPolicy.from_spec("user_id=hash", hmac_key=b"k1"))
    assert a.user_id == b.user_id


def test_the_key_is_never_described_or_printed() -> None:
    secret_key = "super-secret-hmac-key-value"
    p = RedactionPolicy.from_spec("preset=strict", hmac_key=secret_key)
    assert secret_key not in repr(p)
    assert secret_key not in json.dumps(p.describe())
    assert p.describe()["hmac_key"] == "set"
    _, report = redact(sample_call_record(), p)
    assert secret_key not in json.dumps(report.as_metadata())


# -- presets ------------------------------------------------------------------------------------


def test_presets_are_what_the_docs_say() -> None:
    def d(name: str) -> dict[str, str]:
        return {f: str(a) for f, a in PRESETS[name].items()}

    ids = {"user_id": "keep", "session_id": "keep"}
    default = {f: "scrub" for f in FIELDS} | ids
    assert d("default") == default
    assert d("no-tool-io") == default | {"tool_calls": "drop", "tool_results": "drop"}
    metadata_only = {f: "drop" for f in FIELDS} | {"model_parameters": "scrub"} | ids
    assert d("metadata-only") == metadata_only
    assert d("strict") == metadata_only | {"user_id": "hash", "session_id": "hash"}
    assert set(PRESETS) == {"default", "no-tool-io", "metadata-only", "strict"}


# -- stricter -----------------------------------------------------------------------------------


def test_stricter_takes_the_stricter_action_per_field_and_metadata_key() -> None:
    a = policy(
        "user_messages=truncate:100, completion=drop, metadata.plan=keep, patterns.off=hf_token"
    )
    b = policy(
        "user_messages=truncate:10, completion=keep, metadata.customer=drop, tool_results=hash"
    )
    c = a.stricter(b)
    assert c.actions["user_messages"] == Action("truncate", 10)
    assert c.actions["completion"] == Action("drop")
    assert c.actions["tool_results"] == Action("hash")
    assert c.metadata_action("customer") == Action("drop")
    # `plan` is keep in a and (metadata default) scrub in b: scrub wins.
    assert c.metadata_action("plan") == Action("scrub")
    # A pattern on in either stays on.
    assert c.patterns_off == frozenset()
    assert c.hmac_key == KEY


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(FIELDS),
        st.sampled_from(["keep", "scrub", "truncate:5", "truncate:50", "hash", "drop"]),
    ),
    st.dictionaries(
        st.sampled_from(FIELDS),
        st.sampled_from(["keep", "scrub", "truncate:5", "truncate:50", "hash", "drop"]),
    ),
)
def test_stricter_never_loosens(a: dict[str, str], b: dict[str, str]) -> None:
    pa = policy(",".join(f"{k}={v}" for k, v in a.items()))
    pb = policy(",".join(f"{k}={v}" for k, v in b.items()))
    for p, q in ((pa, pb), (pb, pa)):
        s = p.stricter(q)
        for f in FIELDS:
            assert s.actions[f].rank >= p.actions[f].rank
            assert s.actions[f].rank >= q.actions[f].rank
            assert s.actions[f] in (p.actions[f], q.actions[f])


def test_stricter_runs_both_hooks() -> None:
    a = dataclasses.replace(default_policy(), hook=lambda f, v: v + "<a>", hook_path="x.a")
    b = dataclasses.replace(default_policy(), hook=lambda f, v: v + "<b>", hook_path="x.b")
    out, _ = redact(call(messages=({"role": "user", "content": "hi"},)), a.stricter(b))
    assert out.messages[0]["content"] == "hi<a><b>"
    assert a.stricter(b).describe()["hook"] == "x.a+x.b"


# -- redact: each action ------------------------------------------------------------------------

USER_TEXT = f"please use {HF} for the upload, thanks"


def user_call(text: str = USER_TEXT) -> CallRecord:
    return call(messages=({"role": "user", "content": text},))


def test_keep_leaves_the_value_untouched() -> None:
    out, report = redact(user_call(), policy("user_messages=keep"))
    assert out.messages[0]["content"] == USER_TEXT
    assert "user_messages" not in report.fields


def test_scrub_removes_secrets_and_keeps_the_rest() -> None:
    out, report = redact(user_call(), default_policy())
    assert out.messages[0]["content"] == "please use [REDACTED:hf_token] for the upload, thanks"
    assert report.fields["user_messages"] == "scrub"
    assert report.secrets == {"hf_token": 1}


def test_truncate_scrubs_first_then_cuts() -> None:
    out, report = redact(user_call(), policy("user_messages=truncate:20"))
    scrubbed = "please use [REDACTED:hf_token] for the upload, thanks"
    assert out.messages[0]["content"] == f"{scrubbed[:20]}…[TRUNCATED:{len(scrubbed) - 20} chars]"
    assert report.fields["user_messages"] == "truncate:20"
    assert report.secrets == {"hf_token": 1}
    short, _ = redact(user_call("short"), policy("user_messages=truncate:20"))
    assert short.messages[0]["content"] == "short"


def test_hash_is_an_hmac_of_the_scrubbed_text_and_stable() -> None:
    out, report = redact(user_call(), policy("user_messages=hash"))
    scrubbed = "please use [REDACTED:hf_token] for the upload, thanks"
    assert out.messages[0]["content"] == f"[HASH:{mac16(scrubbed)}]"
    again, _ = redact(user_call(), policy("user_messages=hash"))
    assert again.messages[0]["content"] == out.messages[0]["content"]
    other, _ = redact(user_call(), policy("user_messages=hash", hmac_key=b"another key"))
    assert other.messages[0]["content"] != out.messages[0]["content"]
    assert report.fields["user_messages"] == "hash"


def test_drop_keeps_role_position_and_length() -> None:
    out, report = redact(user_call(), policy("user_messages=drop"))
    assert out.messages == (
        {"role": "user", "content": f"[DROPPED:user_messages len={len(USER_TEXT)}]"},
    )
    assert report.fields == {"user_messages": "drop"}
    assert report.secrets == {}


def test_drop_of_a_structured_value_counts_its_json_length() -> None:
    args = {"command": "ls", "cwd": "/tmp"}
    r = span(input=args, input_field="tool_calls")
    out, _ = redact(r, policy("tool_calls=drop"))
    assert out.input == f"[DROPPED:tool_calls len={len(json.dumps(args, ensure_ascii=False))}]"


# -- redact: call records -----------------------------------------------------------------------


def full_call() -> CallRecord:
    return call(
        messages=(
            {"role": "system", "content": f"sys {HF}"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"look {OPENAI}"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo"},
                    },
                ],
                "name": "participant_1",
            },
            {
                "role": "assistant",
                "content": "let me check",
                "reasoning_content": f"thinking about {AWS}",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "bash",
                            "arguments": json.dumps({"cmd": f"echo {AWS}"}),
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "name": "bash",
                "content": "GITHUB_TOKEN=tokval123",
            },
            {"role": "function", "name": "legacy_fn", "content": "legacy result"},
        ),
        tools=(
            {
                "type": "function",
                "function": {
                    "name": "bash",
                    "description": f"run bash; default key {OPENAI}",
                    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
                },
            },
        ),
        model_parameters={
            "temperature": 0.1,
            "max_tokens": 100,
            "stop": [f"{HF}"],
            "api_key": "plain",
        },
        output={
            "role": "assistant",
            "content": f"done {HF}",
            "reasoning_content": "all good",
            "tool_calls": [
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "grep", "arguments": '{"q": "x"}'},
                }
            ],
        },
        error_message=f"401 for {OPENAI}",
        metadata={"customer": "ACME corp", "plan": "pro", "hf_event_id": "evt1"},
    )


def test_default_policy_scrubs_every_field_and_keeps_structure() -> None:
    r = full_call()
    out, report = redact(r, default_policy())
    blob = strings(out)
    for s in (HF, OPENAI, AWS, "tokval123", "plain"):
        assert s not in blob
    assert out.messages[0]["content"] == "sys [REDACTED:hf_token]"
    assert out.messages[1]["content"][0] == {"type": "text", "text": "look [REDACTED:openai_key]"}
    # Inline media never leaves by default: a marker with its type, size and hash.
    image = out.messages[1]["content"][1]
    assert image["type"] == "image_url"
    assert image["image_url"]["url"].startswith("[MEDIA:image/png bytes=8 sha256=")
    assert out.messages[2]["reasoning_content"] == "thinking about [REDACTED:aws_access_key_id]"
    assert json.loads(out.messages[2]["tool_calls"][0]["function"]["arguments"]) == {
        "cmd": "echo [REDACTED:aws_access_key_id]"
    }
    assert out.messages[3]["content"] == "GITHUB_TOKEN=[REDACTED:secret_assignment]"
    assert out.tools[0]["function"]["description"] == "run bash; default key [REDACTED:openai_key]"
    assert out.tools[0]["function"]["parameters"] == r.tools[0]["function"]["parameters"]
    assert out.model_parameters == {
        "temperature": 0.1,
        "max_tokens": 100,
        "stop": ["[REDACTED:hf_token]"],
        "api_key": "[REDACTED:secret_assignment]",
    }
    assert out.output["content"] == "done [REDACTED:hf_token]"
    assert out.error_message == "401 for [REDACTED:openai_key]"
    assert out.metadata == r.metadata
    assert out.user_id == "alice@example.com"
    assert report.secrets == {
        "hf_token": 3,
        "openai_key": 3,
        "aws_access_key_id": 2,
        "secret_assignment": 2,
        "inline_media": 1,
    }
    assert report.failures == 0
    # Everything else on the record is untouched.
    for f in ("event_id", "kind", "session_id", "trace_id", "observation_id", "model", "usage"):
        assert getattr(out, f) == getattr(r, f)


def structure(r: CallRecord) -> Any:
    def msg(m: dict[str, Any]) -> Any:
        return (
            m.get("role"),
            m.get("tool_call_id"),
            m.get("name"),
            [(tc["id"], tc["type"], tc["function"]["name"]) for tc in m.get("tool_calls") or []],
            [p.get("type") for p in m["content"]] if isinstance(m.get("content"), list) else None,
        )

    return (
        [msg(m) for m in r.messages],
        [(t.get("type"), t.get("function", {}).get("name")) for t in r.tools],
        msg(r.output) if r.output else None,
    )


@pytest.mark.parametrize("preset", list(PRESETS))
def test_structure_survives_every_preset(preset: str) -> None:
    r = full_call()
    out, report = redact(r, policy(f"preset={preset}"))
    assert structure(out) == structure(r)
    assert report.failures == 0


def test_metadata_only_drops_all_content() -> None:
    r = full_call()
    out, report = redact(r, policy("preset=metadata-only"))
    assert (
        out.messages[0]["content"] == f"[DROPPED:system_prompt len={len(r.messages[0]['content'])}]"
    )
    assert out.messages[1]["content"][0] == {
        "type": "text",
        "text": f"[DROPPED:user_messages len={len(r.messages[1]['content'][0]['text'])}]",
    }
    # Non-text parts become placeholders too.
    assert out.messages[1]["content"][1]["image_url"].startswith("[DROPPED:user_messages len=")
    assert out.messages[2]["reasoning_content"].startswith("[DROPPED:reasoning len=")
    assert out.messages[2]["tool_calls"][0]["function"]["arguments"].startswith(
        "[DROPPED:tool_calls"
    )
    assert out.messages[4]["content"].startswith("[DROPPED:tool_results")  # legacy function role
    # Tool definitions keep only type and name.
    assert out.tools == ({"type": "function", "function": {"name": "bash"}},)
    assert out.output["content"].startswith("[DROPPED:completion")
    assert out.output["reasoning_content"].startswith("[DROPPED:reasoning")
    assert out.error_message.startswith("[DROPPED:error_message")
    assert set(out.metadata) == set(r.metadata)
    assert all(v.startswith("[DROPPED:metadata") for v in out.metadata.values())
    assert out.model_parameters["api_key"] == "[REDACTED:secret_assignment]"
    assert out.user_id == "alice@example.com"
    assert report.fields == {
        "system_prompt": "drop",
        "user_messages": "drop",
        "assistant_messages": "drop",
        "tool_calls": "drop",
        "tool_results": "drop",
        "tool_definitions": "drop",
        "completion": "drop",
        "reasoning": "drop",
        "metadata": "drop",
        "error_message": "drop",
        "model_parameters": "scrub",
    }
    for s in ("ACME", "let me check", "legacy result", "run bash", "all good"):
        assert s not in strings(out)


def test_no_tool_io_drops_tool_arguments_and_results_only() -> None:
    out, _ = redact(full_call(), policy("preset=no-tool-io"))
    assert out.messages[2]["tool_calls"][0]["function"]["arguments"].startswith(
        "[DROPPED:tool_calls"
    )
    assert out.output["tool_calls"][0]["function"]["arguments"].startswith("[DROPPED:tool_calls")
    assert out.messages[3]["content"].startswith("[DROPPED:tool_results")
    assert out.messages[2]["content"] == "let me check"
    assert out.tools[0]["function"]["parameters"]["type"] == "object"


def test_strict_hashes_the_user_and_drops_content() -> None:
    out, report = redact(full_call(), policy("preset=strict"))
    assert out.user_id == f"u_{mac16('alice@example.com')}"
    assert re.fullmatch(r"u_[0-9a-f]{16}", out.user_id)
    assert report.fields["user_id"] == "hash"
    assert "alice" not in strings(out)


def test_user_id_hash_is_stable_across_calls_and_policies_and_drop_removes_it() -> None:
    a, _ = redact(call(), policy("user_id=hash"))
    b, _ = redact(call(event_id="evt9"), RedactionPolicy.from_spec("user_id=hash", hmac_key=KEY))
    assert a.user_id == b.user_id
    c, _ = redact(call(user_id="bob"), policy("user_id=hash"))
    assert c.user_id != a.user_id
    d, _ = redact(call(), policy("user_id=drop"))
    assert d.user_id is None


def test_metadata_per_key_actions() -> None:
    r = call(metadata={"customer": "ACME", "plan": "pro", "note": "TOKEN=abc12345"})
    out, report = redact(r, policy("metadata.customer=drop, metadata.plan=keep"))
    assert out.metadata == {
        "customer": "[DROPPED:metadata len=4]",
        "plan": "pro",
        "note": "TOKEN=[REDACTED:secret_assignment]",
    }
    assert report.fields == {"metadata.customer": "drop", "metadata": "scrub"}


def test_unknown_role_takes_the_strictest_message_action() -> None:
    r = call(messages=({"role": "critic", "content": "private notes"},))
    out, _ = redact(r, policy("user_messages=drop"))
    assert out.messages[0] == {"role": "critic", "content": "[DROPPED:user_messages len=13]"}


def test_unknown_message_keys_follow_the_message_field() -> None:
    r = call(messages=({"role": "assistant", "content": None, "refusal": "I cannot share that"},))
    out, _ = redact(r, policy("assistant_messages=drop"))
    assert out.messages[0] == {
        "role": "assistant",
        "content": None,
        "refusal": "[DROPPED:assistant_messages len=19]",
    }


def test_legacy_function_call_arguments_are_tool_calls() -> None:
    r = call(
        messages=(
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": '{"a": 1}'},
            },
        )
    )
    out, _ = redact(r, policy("tool_calls=drop"))
    assert out.messages[0]["function_call"] == {
        "name": "f",
        "arguments": "[DROPPED:tool_calls len=8]",
    }


def test_hook_runs_after_the_action_on_string_leaves_only() -> None:
    seen: list[tuple[str, str]] = []

    def hook(field: str, value: str) -> str:
        seen.append((field, value))
        return value.replace("alice", "[person]")

    p = dataclasses.replace(policy("tool_results=drop"), hook=hook)
    r = call(
        messages=(
            {"role": "user", "content": f"I am alice, key {HF}"},
            {"role": "tool", "tool_call_id": "c1", "name": "bash", "content": "alice's files"},
        ),
        user_id="alice",
    )
    out, _ = redact(r, p)
    assert out.messages[0]["content"] == "I am [person], key [REDACTED:hf_token]"
    assert out.messages[1]["content"] == "[DROPPED:tool_results len=13]"
    assert out.user_id == "[person]"
    # The hook saw scrubbed text, never a secret, never the dropped value, never structure.
    assert ("user_messages", "I am alice, key [REDACTED:hf_token]") in seen
    assert all(HF not in v and "files" not in v for _, v in seen)
    assert all(f in ("user_messages", "user_id") for f, _ in seen)


# -- per-call overrides -------------------------------------------------------------------------


def test_override_can_only_tighten() -> None:
    base = policy("preset=metadata-only")
    r = dataclasses.replace(full_call(), redact_override="user_messages=keep, system_prompt=keep")
    out, report = redact(r, base)
    assert out.messages[0]["content"].startswith("[DROPPED:system_prompt")
    assert report.override == "user_messages=keep, system_prompt=keep"


def test_override_tightens_the_default() -> None:
    r = dataclasses.replace(full_call(), redact_override="tool_results=drop,user_id=hash")
    out, report = redact(r, default_policy().stricter(policy()))
    assert out.messages[3]["content"].startswith("[DROPPED:tool_results")
    assert out.user_id == f"u_{mac16('alice@example.com')}"
    assert report.fields["tool_results"] == "drop"


@pytest.mark.parametrize("bad", ["user_messages=erase", "preset=nope", "user_id=hash", "garbage"])
def test_malformed_override_fails_closed_to_metadata_only(bad: str) -> None:
    # `user_id=hash` is malformed here because the base policy has no key to hash with.
    r = dataclasses.replace(full_call(), redact_override=bad)
    out, report = redact(r, RedactionPolicy.from_spec(None))
    assert out.messages[0]["content"].startswith("[DROPPED:system_prompt")
    assert out.output["content"].startswith("[DROPPED:completion")
    assert report.override is not None and "metadata-only" in report.override
    assert bad not in json.dumps(report.as_metadata())


# -- spans and scores ---------------------------------------------------------------------------


def test_span_input_and_output_follow_their_fields() -> None:
    r = span(
        input={"command": f"echo {HF}", "n": 3},
        input_field="tool_calls",
        output=["line one", f"GITHUB_TOKEN={OPENAI}"],
        output_field="tool_results",
        metadata={"exit_code": 0, "host": "box-1"},
        status_message=f"failed with {AWS}",
    )
    out, report = redact(r, policy("tool_results=truncate:8, metadata.host=drop"))
    assert out.input == {"command": "echo [REDACTED:hf_token]", "n": 3}
    cut = len("GITHUB_TOKEN=[REDACTED:openai_key]") - 8
    assert out.output == ["line one", f"GITHUB_T…[TRUNCATED:{cut} chars]"]
    assert out.metadata == {"exit_code": 0, "host": "[DROPPED:metadata len=5]"}
    assert out.status_message == "failed with [REDACTED:aws_access_key_id]"
    assert report.fields == {
        "tool_calls": "scrub",
        "tool_results": "truncate:8",
        "metadata": "scrub",
        "metadata.host": "drop",
        "error_message": "scrub",
    }
    assert out.name == r.name and out.event_type == r.event_type


def test_span_without_a_field_uses_the_metadata_action() -> None:
    out, _ = redact(span(input="some input", output=42), policy("metadata=drop"))
    assert out.input == "[DROPPED:metadata len=10]"
    assert out.output == "[DROPPED:metadata len=2]"


def test_span_with_an_unknown_field_fails_closed() -> None:
    out, report = redact(span(input="raw", input_field="nonsense"), default_policy())
    assert out.input == FAILED
    assert report.failures == 1


def test_score_comment_is_the_feedback_comment() -> None:
    r = ScoreRecord(
        event_id="e", trace_id="t", name="thumbs", value=1.0, user_id="bob", comment=f"great, {HF}"
    )
    out, report = redact(r, policy("feedback_comment=truncate:5,user_id=hash"))
    assert out.comment == f"great…[TRUNCATED:{len('great, [REDACTED:hf_token]') - 5} chars]"
    assert out.user_id == f"u_{mac16('bob')}"
    assert out.value == 1.0 and out.name == "thumbs"
    assert report.fields == {"feedback_comment": "truncate:5", "user_id": "hash"}


# -- purity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    ["", "preset=metadata-only", "preset=strict", "user_messages=truncate:3,tool_calls=hash"],
)
def test_redact_never_mutates_its_input(spec: str) -> None:
    for r in (full_call(), span(input={"a": [f"{HF}"]}, metadata={"k": {"x": HF}})):
        before = copy.deepcopy(r)
        out, _ = redact(r, policy(spec))
        assert r == before
        assert out is not r
    # The returned containers are not the input's: changing them cannot reach the input.
    r = full_call()
    out, _ = redact(r, policy("user_messages=keep"))
    out.messages[1]["content"][0]["text"] = "changed"
    out.metadata["customer"] = "changed"
    assert r == full_call()


def test_report_as_metadata_is_json_and_holds_no_values() -> None:
    r = full_call()
    _, report = redact(r, default_policy())
    md = report.as_metadata()
    text = json.dumps(md)
    assert set(md) == {"fields", "secrets", "failures", "override"}
    for s in (HF, OPENAI, AWS, "ACME", "alice", "let me check"):
        assert s not in text
    assert RedactionReport().as_metadata() == {
        "fields": {},
        "secrets": {},
        "failures": 0,
        "override": None,
    }


# -- fail closed --------------------------------------------------------------------------------


def test_a_raising_hook_fails_the_value_closed() -> None:
    def hook(field: str, value: str) -> str:
        if "boom" in value:
            raise ValueError(f"cannot handle {value}")
        return value

    p = dataclasses.replace(default_policy(), hook=hook)
    r = call(
        messages=(
            {"role": "user", "content": "boom secret-ish"},
            {"role": "user", "content": "fine"},
        )
    )
    out, report = redact(r, p)
    assert out.messages[0]["content"] == FAILED
    assert out.messages[1]["content"] == "fine"
    assert report.failures == 1
    assert "secret-ish" not in strings(out)


def test_a_hook_returning_a_non_string_fails_closed() -> None:
    p = dataclasses.replace(default_policy(), hook=lambda f, v: None)
    out, report = redact(user_call(), p)
    assert out.messages[0]["content"] == FAILED
    assert out.user_id == FAILED
    assert report.failures == 2


class _ExplodingRegex:
    """Stands in for a compiled regex whose matching raises."""

    pattern = "boom"
    flags = 0
    groups = 0

    def search(self, *a: Any) -> Any:
        raise RuntimeError("regex exploded")

    finditer = search


def test_a_raising_pattern_fails_the_value_closed() -> None:
    p = dataclasses.replace(
        default_policy(), extra_patterns=(SecretPattern("boom", _ExplodingRegex()),)
    )  # type: ignore[arg-type]
    out, report = redact(full_call(), p)
    assert out.messages[0]["content"] == FAILED
    assert out.error_message == FAILED
    assert report.failures > 0
    assert HF not in strings(out) and OPENAI not in strings(out)
    # The shape survives a failure: message count, roles and part types (a fixed vocabulary).
    # Names and ids are scrubbed too, so they fail closed like content.
    assert [m["role"] for m in out.messages] == [m["role"] for m in full_call().messages]
    assert out.model == FAILED


def test_a_raising_scrubber_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Any, *args: Any) -> Any:
        raise RuntimeError("scrubber bug")

    monkeypatch.setattr(redact_mod.Scrubber, "scrub_text", boom)
    monkeypatch.setattr(redact_mod.Scrubber, "scrub_into", boom)
    out, report = redact(full_call(), default_policy())
    blob = strings(out)
    assert HF not in blob and OPENAI not in blob and AWS not in blob
    assert out.messages[0]["content"] == FAILED
    assert report.failures > 0


def test_weird_values_fail_closed() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    loop: list[Any] = []
    loop.append(loop)
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    r = call(metadata={"obj": Unprintable(), "loop": loop, "deep": deep, "ok": "fine"})
    out, report = redact(r, default_policy())
    assert out.metadata == {"obj": FAILED, "loop": FAILED, "deep": FAILED, "ok": "fine"}
    assert report.failures == 3
    dropped, _ = redact(r, policy("metadata=drop"))
    assert dropped.metadata["loop"] == FAILED  # its JSON length cannot be computed
    assert dropped.metadata["ok"] == "[DROPPED:metadata len=4]"


def test_redact_itself_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("bug in the walk")

    monkeypatch.setattr(redaction, "_redact_call", boom)
    monkeypatch.setattr(redaction, "_redact_span", boom)
    monkeypatch.setattr(redaction, "_redact_score", boom)
    r = full_call()
    out, report = redact(r, default_policy())
    assert report.failures >= 1
    blob = strings(out)
    for s in (HF, OPENAI, AWS, "ACME", "let me check", "alice"):
        assert s not in blob
    assert [m["role"] for m in out.messages] == [m["role"] for m in r.messages]
    assert all(m["content"] == FAILED for m in out.messages)
    assert out.output == {"role": "assistant", "content": FAILED}
    assert out.error_message == FAILED
    s_out, _ = redact(
        span(input="raw in", output="raw out", status_message="raw"), default_policy()
    )
    assert (s_out.input, s_out.output, s_out.status_message, s_out.user_id) == (FAILED,) * 4
    c_out, _ = redact(
        ScoreRecord(event_id="e", trace_id="t", name="n", value=0.0, comment="raw"),
        default_policy(),
    )
    assert c_out.comment == FAILED


def test_a_bad_policy_fails_closed_and_an_unknown_record_type_raises() -> None:
    out, report = redact(full_call(), None)  # type: ignore[arg-type]
    assert all(m["content"] == FAILED for m in out.messages)
    assert report.failures == 1
    with pytest.raises(TypeError):
        redact({"messages": []}, default_policy())


# -- property-based: random calls with planted secrets and markers -------------------------------

_WORDS = ["alpha", "beta", "gamma", "delta", "train", "model", "loss", "epoch", "the", "a", "of"]
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _tok(alphabet: str, lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=lo, max_size=hi)


def _pem(body: list[str]) -> tuple[str, list[str]]:
    text = "-----BEGIN EC PRIVATE KEY-----\n" + "\n".join(body) + "\n-----END EC PRIVATE KEY-----"
    return text, body


# Each draws (text to plant, the parts that must never reach the wire).
SECRETS: st.SearchStrategy[tuple[str, list[str]]] = st.one_of(
    _tok(_ALNUM, 34, 40).map(lambda b: ("hf_" + b, ["hf_" + b])),
    st.tuples(st.sampled_from(["", "proj-"]), _tok(_ALNUM + "_-", 24, 60)).map(
        lambda t: (f"sk-{t[0]}{t[1]}", [f"sk-{t[0]}{t[1]}"])
    ),
    _tok(_ALNUM + "_-", 40, 90).map(lambda b: ("sk-ant-api03-" + b, ["sk-ant-api03-" + b])),
    st.tuples(st.sampled_from("pousr"), _tok(_ALNUM, 36, 40)).map(
        lambda t: (f"gh{t[0]}_{t[1]}", [f"gh{t[0]}_{t[1]}"])
    ),
    _tok(_ALNUM + "_", 40, 82).map(lambda b: ("github_pat_" + b, ["github_pat_" + b])),
    _tok("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16, 16).map(lambda b: ("AKIA" + b, ["AKIA" + b])),
    st.tuples(
        st.sampled_from(["Bearer ", "Authorization: Bearer "]), _tok(_ALNUM + "._~+/-", 20, 60)
    ).map(lambda t: (t[0] + t[1], [t[1]])),
    st.lists(_tok(_ALNUM + "+/", 24, 64), min_size=1, max_size=3).map(_pem),
    st.tuples(
        st.sampled_from(
            [
                "GITHUB_TOKEN",
                "db_password",
                "OPENAI_API_KEY",
                "client_secret",
                "aws_secret_access_key",
            ]
        ),
        st.sampled_from(["=", ": ", " = "]),
        _tok(_ALNUM, 14, 30),
    ).map(lambda t: (f"{t[0]}{t[1]}{t[2]}", [t[2]])),
    st.tuples(st.sampled_from(["password", "api_key", "secret"]), _tok(_ALNUM + " ", 14, 30)).map(
        lambda t: (f'"{t[0]}": "{t[1].strip() or "x" * 14}"', [t[1].strip() or "x" * 14])
    ),
)


class Plant:
    """Builds texts that carry a unique marker word (per field) and maybe a secret."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw
        self.secrets: list[str] = []
        self.markers: dict[str, list[str]] = {}
        self.n = 0

    def text(self, field: str, *, secret: bool = True) -> str:
        self.n += 1
        marker = f"zq{field.replace('_', '')}{self.n}x"
        self.markers.setdefault(field, []).append(marker)
        words = self.draw(st.lists(st.sampled_from(_WORDS), max_size=6))
        parts = [*words, marker]
        if secret and self.draw(st.booleans()):
            planted, must_go = self.draw(SECRETS)
            self.secrets.extend(must_go)
            # A line of its own: a password's value runs to the end of its line.
            parts.insert(self.draw(st.integers(0, len(parts))), planted + "\n")
        return " ".join(parts)


@st.composite
def planted_calls(draw: Any) -> tuple[CallRecord, Plant]:
    p = Plant(draw)
    messages: list[dict[str, Any]] = []
    call_ids = 0
    for role in draw(
        st.lists(st.sampled_from(["system", "user", "assistant", "tool"]), min_size=1, max_size=8)
    ):
        if role == "system":
            messages.append({"role": "system", "content": p.text("system_prompt")})
        elif role == "user":
            if draw(st.booleans()):
                content: Any = p.text("user_messages")
            else:
                content = [
                    {"type": "text", "text": p.text("user_messages")},
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": "https://example.com/"
                            + p.text("user_messages", secret=False).replace(" ", "/")
                        },
                    },
                ]
            messages.append({"role": "user", "content": content})
        elif role == "assistant":
            m: dict[str, Any] = {"role": "assistant", "content": p.text("assistant_messages")}
            if draw(st.booleans()):
                m["reasoning_content"] = p.text("reasoning")
            calls = []
            for _ in range(draw(st.integers(0, 2))):
                call_ids += 1
                calls.append(
                    {
                        "id": f"call_{call_ids}",
                        "type": "function",
                        "function": {
                            "name": draw(st.sampled_from(["bash", "search", "read_file"])),
                            "arguments": json.dumps({"q": p.text("tool_calls"), "n": call_ids}),
                        },
                    }
                )
            if calls:
                m["tool_calls"] = calls
            messages.append(m)
        else:
            call_ids += 1
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": f"call_{call_ids}",
                    "name": "bash",
                    "content": p.text("tool_results"),
                }
            )
    tools = tuple(
        {
            "type": "function",
            "function": {
                "name": name,
                "description": p.text("tool_definitions"),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "q": {"type": "string", "description": p.text("tool_definitions")}
                    },
                },
            },
        }
        for name in draw(
            st.lists(st.sampled_from(["bash", "search", "read_file"]), max_size=3, unique=True)
        )
    )
    output = None
    if draw(st.booleans()):
        output = {
            "role": "assistant",
            "content": p.text("completion"),
            "reasoning_content": p.text("reasoning"),
        }
        if draw(st.booleans()):
            output["tool_calls"] = [
                {
                    "id": "call_out",
                    "type": "function",
                    "function": {"name": "bash", "arguments": p.text("tool_calls")},
                }
            ]
    record = call(
        messages=tuple(messages),
        tools=tools,
        output=output,
        model_parameters={"temperature": 0.5, "stop": [p.text("model_parameters")]},
        metadata={"note": p.text("metadata"), "nested": {"deep": p.text("metadata")}},
        error_message=p.text("error_message") if draw(st.booleans()) else None,
    )
    return record, p


PRESET_POLICIES = {name: policy(f"preset={name}") for name in PRESETS}


def _shape(r: CallRecord) -> Any:
    return (
        [(m["role"], m.get("tool_call_id"), m.get("name")) for m in r.messages],
        [
            [(tc["id"], tc["type"], tc["function"]["name"]) for tc in m.get("tool_calls", [])]
            for m in r.messages
        ],
        [t["function"]["name"] for t in r.tools],
        None if r.output is None else [tc["id"] for tc in r.output.get("tool_calls", [])],
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(planted_calls())
def test_no_planted_secret_or_dropped_marker_ever_leaves(case: tuple[CallRecord, Plant]) -> None:
    record, plant = case
    before = copy.deepcopy(record)
    for name, pol in PRESET_POLICIES.items():
        out, report = redact(record, pol)
        blob = strings(out) + repr(out)
        for secret in plant.secrets:
            assert secret not in blob, (name, secret)
        for field, markers in plant.markers.items():
            dropped = pol.actions[field].kind == "drop"
            for marker in markers:
                if dropped:
                    assert marker not in blob, (name, field, marker)
                elif name == "default":
                    assert marker in blob, (name, field, marker)  # scrub keeps ordinary words
        assert _shape(out) == _shape(record)
        assert report.failures == 0
        json.dumps(report.as_metadata())
    assert record == before


# -- preview ------------------------------------------------------------------------------------


def test_sample_call_record_plants_a_secret_in_each_kind_of_content() -> None:
    r = sample_call_record()
    _, report = redact(r, default_policy())
    assert report.secrets == {
        "hf_token": 1,
        "openai_key": 1,
        "aws_access_key_id": 1,
        "github_token": 1,
    }
    assert r.user_id == "alice@example.com"
    assert r.output is not None and r.output["reasoning_content"]
    assert len(r.tools) == 1 and r.model_parameters


def test_preview_shows_original_redacted_and_report() -> None:
    r = sample_call_record()
    view = preview(r, policy("preset=strict"))
    assert set(view) == {"original", "redacted", "report"}
    keys = {
        "messages",
        "tools",
        "model_parameters",
        "output",
        "metadata",
        "error_message",
        "user_id",
    }
    assert set(view["original"]) == keys == set(view["redacted"])
    json.dumps(view)
    assert view["original"]["user_id"] == "alice@example.com"
    assert view["redacted"]["user_id"].startswith("u_")
    assert view["report"]["fields"]["user_id"] == "hash"
    assert "alice@example.com" not in json.dumps(view["redacted"])


def test_load_call_record_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "call.json"
    path.write_text(
        json.dumps(
            {
                "messages": [{"role": "user", "content": f"hi {HF}"}],
                "model": "openai/gpt-4o",
                "start_time": "2025-01-01T10:00:00Z",
                "output": {"role": "assistant", "content": "hello"},
            }
        )
    )
    r = load_call_record(path)
    assert r.messages == ({"role": "user", "content": f"hi {HF}"},)
    assert r.start_time == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert r.end_time == r.start_time
    assert r.event_id and r.session_id and r.kind == "main"
    out, _ = redact(r, default_policy())
    assert out.messages[0]["content"] == "hi [REDACTED:hf_token]"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"model": "x"}', "missing 'messages'"),
        ('{"messages": [], "mesages": []}', "unknown field(s) mesages"),
        ('{"messages": "hi"}', "messages must be a list"),
        ('{"messages": ["hi"]}', "messages[0] must be an object"),
        ('{"messages": [], "start_time": "yesterday"}', "start_time is not an ISO 8601"),
        ('{"messages": [], "tools": {}}', "tools must be a list"),
        ('{"messages": [], "turn_index": "3"}', "turn_index must be an integer"),
    ],
)
def test_load_call_record_rejects_bad_files_clearly(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        load_call_record(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_load_call_record_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read call record"):
        load_call_record(tmp_path / "nope.json")
