"""Shared helpers for the LangFuse tests: fresh keys and a forwarding ``Observability`` (defined
here once), a respx-mocked OpenAI-compatible provider beside a loopback fake LangFuse, and
readers for what reached the wire.

LangFuse is a real HTTP server on 127.0.0.1 (``FakeLangfuse``, one for the whole session:
``LANGFUSE`` is its URL), not a respx route: the forwarder sends from its sidecar process by
default, which respx in this process cannot see. ``mocked_world()`` yields a ``World``: the
respx router (the provider, and any route a test adds) whose ``calls`` also list what reached
the fake LangFuse since the world began, as httpx requests, so a test reads both the same way."""

from __future__ import annotations

import contextlib
import gzip
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from agent.config import AgentConfig
from agent.core.observability import Observability
from agent.core.session import InMemorySink
from agent.testing.fake_langfuse import FakeLangfuse
from agent.testing.otlp import decode_respx_calls

_FAKE = FakeLangfuse().start()  # a daemon thread on 127.0.0.1 for the whole test session
LANGFUSE = _FAKE.url
_PASS_THROUGH = "fake-langfuse"
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


class _Call:
    """What the fake LangFuse received, shaped like a respx call (``.request``)."""

    __slots__ = ("request",)

    def __init__(self, request: httpx.Request) -> None:
        self.request = request


class World:
    """The respx router (provider routes and any a test adds) and the fake LangFuse as one:
    ``calls`` are the router's calls, then the requests the fake LangFuse received since the
    world began; anything else is the router's."""

    def __init__(self, router: respx.Router) -> None:
        self.router = router
        self._mark = len(_FAKE.requests)
        self._passed: list[Any] = []  # calls of pass-through routes since replaced
        self._through: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)

    def _pass_through_last(self, add: Any) -> Any:
        """Add a route ahead of the pass-through route to the fake LangFuse (respx takes the
        first route that matches): a test's own route for a LangFuse path wins."""
        old = self.router.routes.pop(_PASS_THROUGH, None)
        if old is not None:
            self._passed.extend(old.calls)
        route = add()
        self._through = self.router.route(
            host="127.0.0.1", port=_FAKE.port, name=_PASS_THROUGH
        ).pass_through()
        return route

    def route(self, *args: Any, **kwargs: Any) -> Any:
        return self._pass_through_last(lambda: self.router.route(*args, **kwargs))

    def post(self, *args: Any, **kwargs: Any) -> Any:
        return self._pass_through_last(lambda: self.router.post(*args, **kwargs))

    def patch(self, *args: Any, **kwargs: Any) -> Any:
        return self._pass_through_last(lambda: self.router.patch(*args, **kwargs))

    def put(self, *args: Any, **kwargs: Any) -> Any:
        return self._pass_through_last(lambda: self.router.put(*args, **kwargs))

    def langfuse_calls(self) -> list[_Call]:
        return [
            _Call(
                httpx.Request(
                    r.method,
                    f"{LANGFUSE}{r.path}" + (f"?{r.query}" if r.query else ""),
                    headers=r.headers,
                    content=r.body,
                )
            )
            for r in _FAKE.requests[self._mark :]
        ]

    @property
    def calls(self) -> list[Any]:
        # A forwarder in this process reaches the fake through respx's pass-through route:
        # those calls are listed once, from the fake's side.
        through = self._through.calls if self._through is not None else []
        passed = {id(c) for c in [*self._passed, *through]}
        mine = [c for c in self.router.calls if id(c) not in passed]
        return [*mine, *self.langfuse_calls()]


@contextlib.contextmanager
def mocked_world() -> Iterator[World]:
    """respx routes for the provider (everything else in this process is refused, but for the
    fake LangFuse on loopback), as a ``World``."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        world = World(router)
        world.post(f"{PROVIDER}/chat/completions").mock(side_effect=provider_handler)
        yield world


def langfuse_calls(router: World) -> list[Any]:
    return router.langfuse_calls()


def spans_of(router: World) -> list[dict[str, Any]]:
    return decode_respx_calls(langfuse_calls(router))


def wire_bytes(router: World) -> bytes:
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


def scores_of(router: World) -> list[dict[str, Any]]:
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


@dataclass
class Direct:
    """What ``direct_forwarder`` yields; ``report`` is the forwarder's shutdown report, filled
    on leaving the block."""

    sink: FakeLangfuse
    forwarder: Any
    session: Any
    report: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def direct_forwarder(
    tmp_path: Path, *, mode: str, spec: str | None = None, user_id: str = "u", **options: Any
) -> Iterator[Direct]:
    """A ``LangfuseForwardingLogger`` built directly (no config layers: ``mode``, the policy
    ``spec`` and any other ``ForwarderOptions``) with fresh keys, registered with litellm and
    sending to a loopback LangFuse of its own, and a session (turn 1) whose calls it forwards.
    On leaving: shut down (report kept), unregistered, the LangFuse stopped."""
    from agent.core.forwarding.logger import LangfuseForwardingLogger
    from agent.core.forwarding.register import register, unregister
    from agent.core.forwarding.settings import ForwarderOptions, LangfuseSettings
    from agent.core.privacy.redaction import RedactionPolicy
    from agent.core.session import Session

    sink = FakeLangfuse().start()
    pk, sk = fresh_keys()
    fwd = LangfuseForwardingLogger(
        LangfuseSettings(host=sink.url, public_key=pk, secret_key=sk),
        policy=RedactionPolicy.from_spec(spec),
        options=ForwarderOptions(mode=mode, **options),
    )
    register(fwd)
    direct = Direct(sink, fwd, None)
    try:
        obs = Observability(AgentConfig(telemetry_dir=tmp_path / mode), hf_sink=None, forwarder=fwd)
        direct.session = Session(user_id=user_id, observability=obs)
        direct.session.turn_index = 1
        yield direct
    finally:
        direct.report = fwd.shutdown(10)
        unregister(fwd)
        sink.stop()
