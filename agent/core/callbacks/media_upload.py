"""LangFuse's own media upload: off by default, counted when the operator turns it on.

The SDK decodes base64 ``data:`` media (and Anthropic / Gemini inline blocks) it finds in an
observation, asks the LangFuse server for an upload URL (``POST /api/public/media``), PUTs the
raw bytes to whatever URL the server returns (often a storage bucket on another host) and
reports the result (``PATCH /api/public/media/<id>``). By default our redaction replaces inline
media by a marker before the SDK sees it, and this module switches the SDK's media manager off
as well, so no media request is ever made. With ``langfuse_media_upload`` on, the SDK uploads,
and every upload is counted in the forwarder's stats (``media_uploads``,
``media_upload_failures``).

The media manager is private SDK state (langfuse 5.x: ``client._resources._media_manager``):
reached in one place, guarded, and a version without it simply keeps the SDK's behaviour
(which our markers make moot while upload is off).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from typing import Any

__all__ = ["configure_media"]


def configure_media(client: Any, *, enabled: bool, counts: Counter[str]) -> None:
    manager = getattr(getattr(client, "_resources", None), "_media_manager", None)
    if manager is None:
        return
    with contextlib.suppress(Exception):
        manager._enabled = bool(enabled)
        if not enabled:
            return
        upload = manager._process_upload_media_job

        @functools.wraps(upload)
        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                out = upload(*args, **kwargs)
            except BaseException:
                counts["media_upload_failures"] += 1
                raise
            counts["media_uploads"] += 1
            return out

        manager._process_upload_media_job = counted
