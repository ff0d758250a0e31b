"""Shared helpers for the LangFuse tests: fresh keys and a forwarding ``Observability`` (defined
here once), a respx-mocked LangFuse + OpenAI-compatible provider, and readers for what reached
the wire."""

from __future__ import annotations

import contextlib
import gzip
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from agent.config import AgentConfig
from agent.core.observability import Observability
from agent.core.session import InMemorySink
from agent.testing.otlp import decode_respx_calls

LANGFUSE = "https://langfuse.example.test"
PROVIDER = "https://provider.example.test/v1"
PROVIDER_KEY = "sk-provider-" + "Zz9" * 10


def fresh_keys(secret: str = "secret") -> tuple[str, str]:
    """A LangFuse public and secret key never used before in this process: the SDK caches one
    client per public key, so each setup needs its own. The secret key ends in ``secret``, a
    marker a test can look for where it must never appear."""
    tag = uuid.uuid4().hex[:10]
    return f"pk-lf-{tag}", f"sk-lf-{tag}-{secret}"


def langfuse_env(host: str, *, secret: str = "secret") -> dict[str, str]:
    """``LANGFUSE_HOST`` and fresh keys, as the environment of a process would hold them."""
    pk, sk = fresh_keys(secret)
    return {"LANGFUSE_HOST": host, "LANGFUSE_PUBLIC_KEY": pk, "LANGFUSE_SECRET_KEY": sk}


def use_langfuse(
    monkeypatch: pytest.MonkeyPatch, host: str | None, *, secret: str = "secret"
) -> tuple[str, str]:
    """Point this test's environment at ``host`` (None: leave ``LANGFUSE_HOST`` as it is) with
    fresh keys, the documented way to configure forwarding; returns the keys."""
    pk, sk = fresh_keys(secret)
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", pk)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", sk)
    if host is not None:
        monkeypatch.setenv("LANGFUSE_HOST", host)
    return pk, sk


def forwarding(
    telemetry_dir: Path, *, env: Mapping[str, str] | None = None, **config: Any
) -> tuple[Observability, InMemorySink]:
    """An ``Observability`` built as a run builds it, from ``AgentConfig`` with ``config`` as
    arguments over the environment (``os.environ``, see ``use_langfuse``; or ``env`` alone, e.g.
    ``langfuse_env(url)``), with LangFuse forwarding on (asserted) and an ``InMemorySink``
    beside the HF sink, which sees every event."""
    sink = InMemorySink()
    if env is None:
        built = AgentConfig(telemetry_dir=telemetry_dir, **config)
    else:
        built = AgentConfig.load(env=env, telemetry_dir=telemetry_dir, **config)
    obs = Observability.from_config(built, extra_sinks=[sink])
    assert obs.forwarding, obs.gate.reason if obs.gate else "no gate"
    return obs, sink


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:8],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "gpt-4o-mini"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 42,
            "completion_tokens": 7,
            "total_tokens": 49,
            "prompt_tokens_details": {"cached_tokens": 12},
        },
    }


def _sse(body: dict[str, Any], text: str) -> bytes:
    base = {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "gpt-4o-mini"),
    }
    parts = []
    words = text.split(" ")
    for i, w in enumerate(words):
        delta = {"content": (w if i == 0 else " " + w)}
        if i == 0:
            delta["role"] = "assistant"
        parts.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    parts.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    parts.append(
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
        }
    )
    out = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in parts)
    return out + b"data: [DONE]\n\n"


def provider_handler(request: httpx.Request) -> httpx.Response:
    """An OpenAI-compatible provider: replies, streams, or fails when the last message's text
    says FAIL."""
    body = json.loads(request.content)
    last = body["messages"][-1].get("content") or ""
    if not isinstance(last, str):  # parts: only the text counts (base64 media may spell FAIL)
        last = " ".join(str(p.get("text", "")) for p in last if isinstance(p, dict))
    if "FAIL" in last:
        return httpx.Response(
            500, json={"error": {"message": "upstream exploded", "type": "server_error"}}
        )
    text = "provider reply number one"
    if body.get("stream"):
        return httpx.Response(
            200, content=_sse(body, text), headers={"content-type": "text/event-stream"}
        )
    return httpx.Response(200, json=_completion(body, text))


@contextlib.contextmanager
def mocked_world() -> Iterator[respx.Router]:
    """respx routes for the LangFuse host and the provider; everything else is refused."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        router.post(f"{LANGFUSE}/api/public/otel/v1/traces").mock(return_value=httpx.Response(200))
        router.post(f"{LANGFUSE}/api/public/scores").mock(
            return_value=httpx.Response(200, json={"id": "score-1"})
        )
        router.post(url__startswith=f"{LANGFUSE}/api/public/ingestion").mock(
            return_value=httpx.Response(207, json={"successes": [], "errors": []})
        )
        router.post(f"{PROVIDER}/chat/completions").mock(side_effect=provider_handler)
        yield router


def langfuse_calls(router: respx.Router) -> list[Any]:
    return [c for c in router.calls if c.request.url.host == httpx.URL(LANGFUSE).host]


def spans_of(router: respx.Router) -> list[dict[str, Any]]:
    return decode_respx_calls(langfuse_calls(router))


def wire_bytes(router: respx.Router) -> bytes:
    """Everything sent to the LangFuse host, decompressed."""
    out = []
    for call in langfuse_calls(router):
        req = call.request
        body = req.read()
        if req.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        out.append(str(req.url).encode() + b"\n" + body)
        out.append(json.dumps(dict(req.headers)).encode())
    return b"\n".join(out)


def scores_of(router: respx.Router) -> list[dict[str, Any]]:
    out = []
    for call in langfuse_calls(router):
        if call.request.url.path.endswith("/scores"):
            data = json.loads(call.request.read())
            out.extend(data if isinstance(data, list) else [data])
    return out


def meta(span: dict[str, Any], key: str) -> Any:
    raw = span["attributes"].get(f"langfuse.observation.metadata.{key}")
    return json.loads(raw) if isinstance(raw, str) else raw


def attr_json(span: dict[str, Any], key: str) -> Any:
    raw = span["attributes"].get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw
