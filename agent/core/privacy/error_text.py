"""Error text fit for the HF Dataset rows: metadata, never content.

A provider's error message often quotes the request back (a 400 quoting the prompt, a 401
echoing the API key, a 500 with a token from upstream), and a tool's error quotes its arguments
(a path, a token). The HF rows promise metadata, not content, so error text is cut down before
it is written:

1. secrets are scrubbed by pattern and by known value (``agent.core.privacy.scrubber``), first, while
   every token is still whole;
2. the call's own content is removed by value: every prompt or argument string, as written or
   JSON-escaped (and any long fragment of it: a provider may quote a cut piece) found in the
   error text becomes ``[PROMPT len=N]``;
3. quoted spans that are not short identifiers (``'invalid_request_error'`` stays, a quoted
   sentence goes) become ``[QUOTED len=N]``: what a provider quotes is what it was sent;
4. it is cut to ``limit`` characters.

The error's type, HTTP status and provider error code are kept as fields of their own
(``error_details``): they say what went wrong without quoting anything.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from agent.core.privacy.scrubber import scrub

__all__ = ["content_strings", "error_details", "safe_error_text", "strip_content"]

LIMIT = 500
_MAX_INPUT = 20_000
_MAX_SOURCES = 256
_PROBE = 24
_PROBE_EVERY = 128
_MAX_PROBES = 32
_MIN_SOURCE = 12
_QUOTED_RE = re.compile(
    r"""(["'`])((?:(?!\1)[^\\\n]|\\.){0,4000}+)\1""",
)
_IDENT_RE = re.compile(r"[A-Za-z0-9_.:/\[\]\-]{1,48}")
_CODE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def content_strings(obj: Any, cap: int = _MAX_SOURCES) -> list[str]:
    """The strings of a call's messages (or a tool's arguments / result), longest first."""
    out: list[str] = []

    def walk(v: Any, depth: int) -> None:
        if len(out) >= cap * 4 or depth > 12:
            return
        if isinstance(v, str):
            if len(v.strip()) >= _MIN_SOURCE:
                out.append(v)
                # Tool arguments are JSON text: their string values are quoted on their own.
                if v[:1] in "{[":
                    with contextlib.suppress(ValueError):
                        walk(json.loads(v), depth + 1)
        elif isinstance(v, Mapping):
            for x in v.values():
                walk(x, depth + 1)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x, depth + 1)
        elif hasattr(v, "model_dump"):
            try:
                walk(v.model_dump(), depth + 1)
            except Exception:
                return

    walk(obj, 0)
    return sorted(set(out), key=len, reverse=True)[:cap]


def _forms(sources: Iterable[str]) -> list[str]:
    out: list[str] = []
    for source in sources:
        src = source.strip()
        if len(src) < _MIN_SOURCE:
            continue
        out.append(src)
        for ascii_only in (False, True):  # quoted inside a JSON body
            escaped = json.dumps(src, ensure_ascii=ascii_only)[1:-1]
            if escaped not in out:
                out.append(escaped)
    return out


def _quoted_extent(text: str, i: int, src: str, offset: int, n: int) -> tuple[int, int]:
    """The span of ``text`` around ``text[i:i + n] == src[offset:offset + n]`` that quotes
    ``src``: grown forwards and backwards while the two agree, then shrunk to whole words."""
    j, k = i + n, offset + n
    while j < len(text) and k < len(src) and text[j] == src[k]:
        j, k = j + 1, k + 1
    # ... and backwards, for a quote that starts before the probe.
    a, b = i, offset
    while a > 0 and b > 0 and text[a - 1] == src[b - 1]:
        a, b = a - 1, b - 1
    # A fragment that stops inside a word keeps that word (the error's own text that happens
    # to start like the prompt's next word).
    if k < len(src) and j < len(text):
        j = _word_start(text, a, j)
    if b > 0 and a > 0:
        a = _word_end(text, a, j)
    return a, j


def _word_start(text: str, a: int, j: int) -> int:
    """``j`` moved back to the start of the word it cuts, unless that is ``a`` or before."""
    cut = j
    while cut > a and text[cut - 1].isalnum():
        cut -= 1
    return cut if cut > a else j


def _word_end(text: str, a: int, j: int) -> int:
    """``a`` moved on to the end of the word it cuts, unless that is ``j`` or after."""
    cut = a
    while cut < j and text[cut].isalnum():
        cut += 1
    return cut if cut < j else a


def _remove_sources(text: str, sources: Iterable[str]) -> str:
    for src in _forms(sources):
        # Probes every _PROBE_EVERY characters: a provider may quote any part, cut anywhere.
        for offset in range(0, max(1, len(src) - _PROBE + 1), _PROBE_EVERY)[:_MAX_PROBES]:
            probe = src[offset : offset + _PROBE]
            i = text.find(probe)
            while i >= 0:
                a, j = _quoted_extent(text, i, src, offset, len(probe))
                marker = f"[PROMPT len={j - a}]"
                text = text[:a] + marker + text[j:]
                i = text.find(probe, a + len(marker))
    return text


def _remove_quotes(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        inner = m.group(2)
        if _IDENT_RE.fullmatch(inner) or inner.startswith(("[PROMPT", "[QUOTED", "[REDACTED")):
            return m.group(0)
        q = m.group(1)
        return f"{q}[QUOTED len={len(inner)}]{q}"

    return _QUOTED_RE.sub(one, text)


def strip_content(text: str, quoted: Iterable[str] = ()) -> str:
    """Steps 2 and 3: ``text`` without the call's own content and without quoted spans."""
    return _remove_quotes(_remove_sources(text, quoted))


def safe_error_text(text: str, *, quoted: Iterable[str] = (), limit: int = LIMIT) -> str:
    """``text`` without the call's content, quoted spans or secrets, at most ``limit`` chars."""
    text = scrub(str(text)[:_MAX_INPUT])
    text = strip_content(text, quoted)
    if len(text) > limit:
        text = text[:limit] + f"…[TRUNCATED:{len(text) - limit} chars]"
    return text


def _status(error: BaseException) -> int | None:
    for name in ("status_code", "http_status", "status"):
        value = getattr(error, name, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    response = getattr(error, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) and 100 <= value <= 599 else None


def _code(error: BaseException) -> str | None:
    candidates: list[Any] = [getattr(error, "code", None)]
    body = getattr(error, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error") if isinstance(body.get("error"), Mapping) else body
        candidates += [inner.get("code"), inner.get("type")]
    candidates.append(getattr(error, "type", None))
    for c in candidates:
        if isinstance(c, int | str) and _CODE_RE.fullmatch(str(c)):
            return str(c)
    return None


def error_details(
    error: BaseException, *, quoted: Iterable[str] = (), limit: int = LIMIT
) -> dict[str, Any]:
    """``error_type``, ``error_message`` (see ``safe_error_text``), ``http_status``,
    ``error_code`` of an exception, for an HF row."""
    return {
        "error_type": type(error).__name__,
        "error_message": safe_error_text(str(error), quoted=quoted, limit=limit),
        "http_status": _status(error),
        "error_code": _code(error),
    }
