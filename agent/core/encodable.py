"""Strings that every serializer can take: one bad code point costs only itself.

A Python ``str`` can hold what no UTF-8 serializer accepts: lone surrogates (U+D800..U+DFFF),
which ``os.fsdecode`` produces for a non-UTF-8 file name and ``os.environ`` for a non-UTF-8
variable. ``str.encode("utf-8")`` raises on them, and so do protobuf (OTLP) and a JSON writer
with ``ensure_ascii=False``. Those are the only code points of a ``str`` that UTF-8 cannot
carry.

Contract:

- ``encodable(value) -> (value, replaced)``: a copy of a JSON-like value (``dict``, ``list``,
  ``tuple``, frozen dataclass records) in which every lone surrogate, in values and in keys, is
  replaced by U+FFFD; ``replaced`` counts the replaced code points. A value without any is
  returned as is (the same object: nothing is copied on the common path).
- ``id_bytes(text)``: the bytes an id is hashed from. For ordinary text this is exactly
  ``text.encode("utf-8")`` (so a trace id equals ``Langfuse.create_trace_id(seed=...)``); a
  lone surrogate is kept as its own code (``surrogatepass``), so two ids that differ only in
  their bad code points still get different hashes, and hashing never raises.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

__all__ = ["REPLACEMENT", "encodable", "encodable_text", "id_bytes"]

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def id_bytes(text: str) -> bytes:
    """``text`` as UTF-8, surrogates passed through (see the module docstring)."""
    return text.encode("utf-8", "surrogatepass")


def encodable_text(text: str) -> tuple[str, int]:
    """``text`` with each lone surrogate replaced by U+FFFD, and how many were replaced."""
    # Why (performance): isascii() is O(1) on CPython's compact strings, and nearly every
    # string is ASCII; the regex scan (in C) runs only on the others.
    if text.isascii():
        return text, 0
    return _SURROGATE.subn(REPLACEMENT, text)


def encodable(value: Any) -> tuple[Any, int]:
    """``value`` with every lone surrogate replaced (see the module docstring)."""
    if not _needs_fix(value):
        return value, 0
    return _fix(value)


# Leaf types with no strings inside (datetimes: the records' timestamps).
_SCALARS = frozenset({int, float, bool, type(None), datetime})


def _needs_fix(v: Any) -> bool:
    """A read-only walk: does any string (value or key) hold a surrogate?"""
    # Why (performance): this runs on every record the forwarder sends, and nearly always finds
    # nothing. String and scalar leaves are handled inline in the container loops (no call per
    # leaf), and ASCII strings cost one O(1) isascii() each.
    t = type(v)
    if t is str:
        return not v.isascii() and _SURROGATE.search(v) is not None
    if t is dict or isinstance(v, dict):
        return _dict_needs_fix(v)
    if t is list or t is tuple or isinstance(v, list | tuple):
        return _items_need_fix(v)
    if t in _SCALARS:
        return False
    names = _FIELD_NAMES.get(t)
    if names is None and dataclasses.is_dataclass(v) and not isinstance(v, type):
        names = _field_names(t)
    return names is not None and any(_needs_fix(getattr(v, name)) for name in names)


def _dict_needs_fix(d: dict[Any, Any]) -> bool:
    for k, x in d.items():
        if type(k) is str and not k.isascii() and _SURROGATE.search(k) is not None:
            return True
        tx = type(x)
        if tx is str:
            if not x.isascii() and _SURROGATE.search(x) is not None:
                return True
        elif tx not in _SCALARS and _WALKS.get(tx, _needs_fix)(x):
            return True
    return False


def _items_need_fix(items: Iterable[Any]) -> bool:
    for x in items:
        tx = type(x)
        if tx is str:
            if not x.isascii() and _SURROGATE.search(x) is not None:
                return True
        elif tx not in _SCALARS and _WALKS.get(tx, _needs_fix)(x):
            return True
    return False


# The walk of each exact container type, so a nested dict or list costs one call, not two.
_WALKS: dict[type, Callable[[Any], bool]] = {
    dict: _dict_needs_fix,
    list: _items_need_fix,
    tuple: _items_need_fix,
}

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(t: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(t)
    if names is None:
        names = _FIELD_NAMES[t] = tuple(f.name for f in dataclasses.fields(t))
    return names


def _fix(v: Any) -> tuple[Any, int]:
    if isinstance(v, str):
        return encodable_text(v)
    if isinstance(v, dict):
        out: dict[Any, Any] = {}
        total = 0
        for k, x in v.items():
            if isinstance(k, str):
                k, n = encodable_text(k)
                total += n
            x, n = _fix(x)
            total += n
            out[k] = x  # two keys that differ only in bad code points: the last one wins
        return out, total
    if isinstance(v, list | tuple):
        items = []
        total = 0
        for x in v:
            x, n = _fix(x)
            total += n
            items.append(x)
        return (tuple(items) if isinstance(v, tuple) else items), total
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        changes = {}
        total = 0
        for f in dataclasses.fields(v):
            current = getattr(v, f.name)
            if _needs_fix(current):
                changes[f.name], n = _fix(current)
                total += n
        return (dataclasses.replace(v, **changes) if changes else v), total
    return v, 0
