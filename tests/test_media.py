"""Inline media never leaves by surprise.

With default settings a base64 image or audio part becomes a marker (type, size, hash): no
``/api/public/media`` request, no upload, no image byte on the wire. With
``langfuse_media_upload`` on, LangFuse's own media upload runs (the SDK asks the server for an
upload URL and PUTs the bytes there) and every upload is counted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

from agent.core import llm
from agent.core.observability import Observability
from agent.core.session import Session
from tests.langfuse_helpers import (
    LANGFUSE,
    PROVIDER,
    attr_json,
    forwarding,
    mocked_world,
    spans_of,
    use_langfuse,
    wire_bytes,
)


def _image(n: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + os.urandom(n - 8)


def _call(obs: Observability, png: bytes, audio: bytes) -> None:
    session = Session(user_id="u", observability=obs)
    llm.complete_sync(
        session,
        kind="main",
        model="openai/gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in this picture?"},
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": "data:image/png;base64," + base64.b64encode(png).decode()
                        },
                    },
                    {
                        "type": "input_audio",
                        "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"},
                    },
                ],
            }
        ],
        api_base=PROVIDER,
        api_key="sk-provider-" + "Zz9" * 10,
        num_retries=0,
    )


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config: object) -> Observability:
    use_langfuse(monkeypatch, LANGFUSE)
    return forwarding(tmp_path, **config)[0]


def test_default_sends_no_media_request_and_no_image_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png, audio = _image(2 * 1024 * 1024), _image(64 * 1024)
    with mocked_world() as router:
        media = router.route(url__regex=r".*/api/public/media.*").mock(
            return_value=httpx.Response(200, json={"uploadUrl": None, "mediaId": "m"})
        )
        obs = _setup(tmp_path, monkeypatch)
        _call(obs, png, audio)
        assert obs.flush(15)
        report = obs.shutdown(15)
        raw = wire_bytes(router)
        (gen,) = [s for s in spans_of(router) if s["name"] == "llm.main"]
        hosts = {c.request.url.host for c in router.calls}
    # Nothing asked for a media upload, from this process (respx) or the sidecar (the fake).
    assert not media.called and not [c for c in router.calls if "/media" in c.request.url.path]
    assert hosts <= {httpx.URL(LANGFUSE).host, "provider.example.test"}
    b64 = base64.b64encode(png).decode()
    for i in range(0, len(b64) - 64, 256 * 1024):  # no piece of the image, encoded or not
        assert b64[i : i + 64].encode() not in raw
    assert png[1000:1064] not in raw
    assert len(raw) < 200 * 1024  # the 2 MB image did not travel in any form
    parts = attr_json(gen, "langfuse.observation.input")[0]["content"]
    digest = hashlib.sha256(png).hexdigest()[:16]
    assert parts[1]["image_url"]["url"] == (f"[MEDIA:image/png bytes={len(png)} sha256={digest}]")
    assert parts[2]["input_audio"]["data"].startswith(f"[MEDIA:audio/wav bytes={len(audio)} ")
    assert "media_uploads" not in report["langfuse"]


def test_media_upload_setting_forwards_and_counts_uploads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = _image(4096)
    upload_url = "https://uploads.example.test/bucket/object"

    def upload_url_for(request: httpx.Request) -> httpx.Response:
        digest = json.loads(request.content)["sha256Hash"]
        media_id = digest.replace("+", "-").replace("/", "_")[:22]  # as the SDK derives it
        return httpx.Response(200, json={"uploadUrl": upload_url, "mediaId": media_id})

    with mocked_world() as router:
        router.post(f"{LANGFUSE}/api/public/media").mock(side_effect=upload_url_for)
        router.patch(url__startswith=f"{LANGFUSE}/api/public/media/").mock(
            return_value=httpx.Response(204)
        )
        put = router.put(upload_url).mock(return_value=httpx.Response(200))
        # The SDK's media manager and the upload URL it is given are respx's, in this process:
        # the forwarding core runs on a thread here.
        obs = _setup(tmp_path, monkeypatch, langfuse_media_upload=True, langfuse_forwarder="thread")
        assert obs.langfuse.policy.media_upload
        manager = obs.langfuse.engine.sdk.client._resources._media_manager
        assert manager._enabled is True
        _call(obs, png, png)
        obs.langfuse.flush(10)
        report = obs.shutdown(15)
        paths = [c.request.url.path for c in router.calls]
    # The SDK asked the LangFuse server for an upload URL, then PUT the bytes where it said.
    assert "/api/public/media" in paths
    assert put.called and put.calls[0].request.read() == png
    assert report["langfuse"]["media_uploads"] >= 1
