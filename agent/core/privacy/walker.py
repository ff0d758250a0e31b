"""The one scrub walker: a treated copy of a JSON-like value, for the HF rows and for LangFuse.

``Scrubber.scrub_obj`` (every HF Dataset row) and the redaction of a LangFuse record (every
content field under its action) walk values the same way, with this class; they differ only in
its settings.

Contract of ``Walker(scrubber, ...).walk(value, counts, label)``:

- Returns a copy; never mutates ``value``. Dicts come back as dicts, lists and tuples as lists.
- Every string is passed to ``scrubber.scrub_into`` (when a scrubber is given), then cut to
  ``limit`` characters (``<first N>…[TRUNCATED:<cut> chars]``), then given to
  ``hook(label, text)``, which must return a string (else ``TypeError``).
- ``keys``: string keys are scrubbed too. ``secret_keys``: a non-empty string stored under a
  secret-looking key (``scrubber.secret_key_marker``) is replaced whole by the marker and counted
  as ``secret_assignment``.
- ``media``: a dict holding inline media (``input_audio``, base64 ``source`` blocks,
  ``inline_data``) has its data replaced by a marker (``agent.core.privacy.media``), counted as
  ``inline_media``.
- ``None``, booleans and numbers come back as they are. Any other object comes back as it is,
  or with ``stringify`` as ``str(value)`` treated like any string (what LangFuse would receive
  is text; only the HF rows keep their own scalar types).
- Counts of what was replaced are added to ``counts``. Exceptions propagate: the caller decides
  what fails closed.

The scrubber is read on every string (``self.scrubber.scrub_into``), never bound once, so a
scrubber that changes (or a test that replaces its method) is seen at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.core.privacy.media import replace_media_dict

__all__ = ["Hook", "TextScrubber", "Walker", "truncate"]

Hook = Callable[[str, str], str]


class TextScrubber(Protocol):
    def scrub_into(self, text: str, counts: Counter[str]) -> str: ...

    def secret_key_marker(self, key: object) -> str | None: ...


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many were cut (0: no limit)."""
    if limit and len(text) > limit:
        return f"{text[:limit]}…[TRUNCATED:{len(text) - limit} chars]"
    return text


def _without_media(d: Mapping[str, Any], counts: Counter[str]) -> Mapping[str, Any]:
    media = replace_media_dict(d)
    if media is None:
        return d
    counts["inline_media"] += 1
    return media


class Walker:
    """Walks JSON-like values; see the module docstring. Precomputes in ``__init__``."""

    __slots__ = (
        "_keys",
        "_secret_keys",
        "hook",
        "inline",
        "limit",
        "media",
        "scrubber",
        "stringify",
    )

    def __init__(
        self,
        scrubber: TextScrubber | None,
        *,
        keys: bool = False,
        secret_keys: bool = False,
        limit: int = 0,
        hook: Hook | None = None,
        media: bool = False,
        stringify: bool = False,
    ) -> None:
        self.scrubber = scrubber
        # The scrubber again where keys are scrubbed / secret-looking keys honoured, else None.
        self._keys = scrubber if keys else None
        self._secret_keys = scrubber if secret_keys else None
        self.limit = limit
        self.hook = hook
        self.media = media
        self.stringify = stringify
        # Why (performance): with no limit and no hook a string leaf is only scrubbed, and that
        # is done inline in the container loops, saving a call per leaf.
        self.inline = not limit and hook is None

    def text(self, v: str, counts: Counter[str], label: str = "") -> str:
        """One string: scrubbed, cut, then given to the hook."""
        if self.scrubber is not None:
            v = self.scrubber.scrub_into(v, counts)
        if self.limit:
            v = truncate(v, self.limit)
        if self.hook is not None:
            v = self.hook(label, v)
            if not isinstance(v, str):
                raise TypeError(f"redaction hook returned {type(v).__name__}, not str")
        return v

    def walk(self, v: Any, counts: Counter[str], label: str = "") -> Any:
        """A treated copy of ``v`` (see the module docstring)."""
        t = type(v)
        if t is str:
            return self.text(v, counts, label)
        # Why (performance): exact built-in types first, so the common nodes skip the slow ABC
        # check of ``isinstance(v, Mapping)``.
        if v is None or t is int or t is float or t is bool:
            return v
        if t is dict:
            return self._mapping(v, counts, label)
        if t is list or t is tuple:
            return self._sequence(v, counts, label)
        if isinstance(v, str):
            return self.text(v, counts, label)
        if isinstance(v, Mapping):
            return self._mapping(v, counts, label)
        if isinstance(v, list | tuple):
            return self._sequence(v, counts, label)
        if not self.stringify or isinstance(v, bool | int | float):
            return v
        # Anything else (bytes, datetimes, objects) would be serialised downstream by code we do
        # not control: it becomes text here, treated like any text.
        return self.text(str(v), counts, label)

    def _mapping(self, v: Mapping[Any, Any], counts: Counter[str], label: str) -> dict[Any, Any]:
        if self.media and "data" in v:
            v = _without_media(v, counts)
        scrubber = self.scrubber
        keys, secret = self._keys, self._secret_keys
        marker_of = secret.secret_key_marker if secret is not None else None
        out: dict[Any, Any] = {}
        for k, x in v.items():
            if not isinstance(x, str):
                x = self.walk(x, counts, label)
            elif marker_of is not None and x and (marker := marker_of(k)) is not None:
                counts["secret_assignment"] += 1  # a value under a secret-looking key: a secret
                x = marker
            elif not self.inline:
                x = self.text(x, counts, label)
            elif scrubber is not None:
                x = scrubber.scrub_into(x, counts)
            if keys is not None and isinstance(k, str):
                k = keys.scrub_into(k, counts)
            out[k] = x
        return out

    def _sequence(
        self, v: list[Any] | tuple[Any, ...], counts: Counter[str], label: str
    ) -> list[Any]:
        scrubber = self.scrubber
        if not self.inline:
            return [self.walk(x, counts, label) for x in v]
        if scrubber is None:
            return [x if type(x) is str else self.walk(x, counts, label) for x in v]
        return [
            scrubber.scrub_into(x, counts) if type(x) is str else self.walk(x, counts, label)
            for x in v
        ]
