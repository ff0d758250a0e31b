"""Inline media (base64 ``data:`` URLs, audio, image parts) as markers.

By default no image or audio byte leaves the process: the LangFuse SDK would decode base64
``data:`` media and upload the bytes to whatever URL the server hands back, so every inline
medium is replaced, before anything is forwarded, by ``[MEDIA:<type> bytes=<N> sha256=<16 hex>]``
(the decoded size, and a hash of the decoded bytes to tell media apart). The setting
``langfuse_media_upload`` turns LangFuse's own media upload on instead (``agent/README.md``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["data_url_marker", "is_data_url", "media_marker", "replace_media_dict"]

_DATA_URL_RE = re.compile(r"data:([A-Za-z0-9.+\-]+/[A-Za-z0-9.+\-]+)(?:;[^,;]{0,64})*?;base64,")
_B64_RE = re.compile(r"[A-Za-z0-9+/=_\-\s]*")
_AUDIO_FORMATS = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "pcm16": "audio/pcm",
}
# A `data` field of at least this many base64 characters next to a media type is media.
_MIN_INLINE = 64


def media_marker(b64: str, media_type: str) -> str:
    """The marker for base64 ``b64`` of ``media_type``."""
    compact = "".join(b64.split())
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=b"-_")
    except (binascii.Error, ValueError):
        raw = compact.encode("ascii", "replace")
    digest = hashlib.sha256(raw).hexdigest()[:16]
    kind = re.sub(r"[^A-Za-z0-9.+/\-]", "", media_type)[:64] or "application/octet-stream"
    return f"[MEDIA:{kind} bytes={len(raw)} sha256={digest}]"


def is_data_url(value: str) -> bool:
    return value.startswith("data:") and _DATA_URL_RE.match(value) is not None


def data_url_marker(value: str) -> str:
    """The marker for a ``data:<type>;base64,<data>`` URL."""
    m = _DATA_URL_RE.match(value)
    if m is None:
        return "[MEDIA:application/octet-stream]"
    return media_marker(value[m.end() :], m.group(1))


def replace_media_dict(d: Mapping[str, Any]) -> dict[str, Any] | None:
    """A copy of ``d`` with its inline media replaced, or None when ``d`` holds none.

    Covers the shapes providers use besides ``data:`` URLs: ``input_audio`` (``{"data",
    "format"}``), Anthropic ``source`` blocks (``{"type": "base64", "media_type", "data"}``),
    Gemini ``inline_data`` / Vertex media (``{"mime_type", "data"}``).
    """
    data = d.get("data")
    if not isinstance(data, str) or len(data) < _MIN_INLINE:
        return None
    media_type = d.get("media_type") or d.get("mime_type") or d.get("mimeType")
    fmt = d.get("format")
    if not media_type and isinstance(fmt, str):
        media_type = _AUDIO_FORMATS.get(fmt.lower(), f"audio/{fmt}")
    if not isinstance(media_type, str) or not media_type:
        return None
    if _B64_RE.fullmatch(data[:4096]) is None:
        return None
    out = dict(d)
    out["data"] = media_marker(data, media_type)
    return out
