"""Redacted messages and tool definitions, remembered by their content (performance).

An agent sends its whole history with every call: the system prompt, the tool definitions and
every earlier message come again, unchanged, call after call. Redacting them is the largest
part of the forwarder's work per call (``bench/``), and its result depends only on the item's
content, the compiled policy and the secret values known at the time. So each is redacted once
and remembered.

Contract of ``ContentMemo``:

- ``items(run, kind, values)`` (``kind``: ``"messages"`` or ``"tools"``) returns what
  ``run.messages(values)`` / ``run.tools(values)`` would, each item passed through
  ``finish(item) -> (item, code points replaced)`` (the caller's last step, e.g. making strings
  encodable), and adds to ``run``'s report exactly what redacting them would have added:
  fields, secret counts per kind, replaced code points.
  A remembered item is the same object every time: callers must not mutate it.
- The key is the item's pickle (an exact image of its content: types, keys in their order,
  every value), the kind and the compiled policy's ``token`` (unique per compiled policy, never
  reused: a per-call override has its own). Why pickle: it is four times faster to compute than
  JSON text for a message, and it is what the sidecar's records carry anyway. All of it is
  forgotten when the known secret values change (``KNOWN_SECRETS.version``).
- An item may come packed: ``bytes``, its pickle (the forwarding sidecar's records cross the
  pipe so). Those bytes are then its key, and it is unpickled only when it is not remembered: a
  remembered item costs one dictionary lookup. (A message or tool definition is never ``bytes``
  itself, so the two cannot be confused.) One that does not unpickle fails closed.
- Never remembered: an item that does not pickle, one whose redaction failed, and every item
  of a policy with a user hook (a hook need not be a pure function of its input). Those are
  redacted on every call, as without the memo.
- ``wire_text(item)`` is ``text_of(item)`` of a remembered item (or None), computed once, when
  it is remembered (never for an item that is not).
- Bounded: least recently used items are forgotten past ``max_bytes``: what an entry holds in
  memory (its key, its text and the redacted item's objects, from ``sys.getsizeof``);
  ``stats()`` counts hits, misses and evictions.
- One thread at a time (the forwarder's worker).
"""

from __future__ import annotations

import pickle
import sys
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from agent.core.privacy.actions import FAILED
from agent.core.privacy.content import Run
from agent.core.privacy.known import KNOWN_SECRETS

__all__ = ["MEMO_MAX_BYTES", "ContentMemo", "Finish", "TextOf"]

# Several sessions' worth of distinct history (a long session is a few hundred KB of text, a few
# times that as Python objects).
MEMO_MAX_BYTES = 8 * 1024 * 1024
# Per entry, beyond its texts: the key tuple, the entry and its report (an estimate).
_ENTRY_OVERHEAD = 400

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_dumps = pickle.dumps

# finish(item) -> (item as sent, code points replaced); text_of(item) -> its wire text or None
Finish = Callable[[Any], tuple[Any, int]]
TextOf = Callable[[Any], str | None]


# What stands for an item that could not be unpickled (fail closed).
_FAILED_ITEM = {"messages": {"role": "unknown", "content": FAILED}, "tools": {"type": FAILED}}


class _Entry:
    """One remembered item: the item as returned, what its redaction added to a report
    (fields, secret counts by kind, code points replaced), its wire text, its size."""

    __slots__ = ("fields", "item", "replaced", "secrets", "size", "text")

    def __init__(
        self,
        item: Any,
        fields: dict[str, str],
        secrets: dict[str, int],
        replaced: int,
    ) -> None:
        self.item, self.fields, self.secrets = item, fields, secrets
        self.replaced, self.size = replaced, 0
        self.text: str | None = None  # set when it is remembered (ContentMemo._store)


def _footprint(value: Any) -> int:
    """Bytes held by ``value`` and every container and leaf in it, each object counted once
    (an estimate from ``sys.getsizeof``: shared small values are counted as if not shared)."""
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        total += sys.getsizeof(v)
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple | set | frozenset):
            stack.extend(v)
    return total


def _no_finish(item: Any) -> tuple[Any, int]:
    return item, 0


def _no_text(item: Any) -> str | None:
    return None


class ContentMemo:
    """See the module docstring."""

    def __init__(
        self,
        finish: Finish = _no_finish,
        *,
        text_of: TextOf = _no_text,
        max_bytes: int = MEMO_MAX_BYTES,
    ) -> None:
        self._finish = finish
        self._text_of = text_of
        self._max_bytes = max(0, int(max_bytes))
        self._entries: OrderedDict[tuple[int, str, Any], _Entry] = OrderedDict()
        self._by_id: dict[int, _Entry] = {}
        self._bytes = 0
        self._version = KNOWN_SECRETS.version
        self.counts = Counter[str]()

    def items(self, run: Run, kind: str, values: Iterable[Any]) -> tuple[Any, ...]:
        if KNOWN_SECRETS.version != self._version:
            self.clear()
            self._version = KNOWN_SECRETS.version
        remember = run.compiled.hook is None and self._max_bytes > 0
        token = run.compiled.token
        entries, move = self._entries, self._entries.move_to_end
        fields, secrets = run.fields, run.secrets
        out = []
        hits = replaced = 0
        # Why (performance): the hit path runs for every message of every call; it is kept to
        # a key, a lookup and the report's merge, its counts added once.
        for value in values:
            key: Any = None
            if remember:
                if type(value) is bytes:
                    key = (token, kind, value)
                else:
                    try:
                        key = (token, kind, _dumps(value, _PROTOCOL))
                    except Exception:
                        key = None  # does not pickle: redacted every time
            entry = entries.get(key) if key is not None else None
            if entry is not None:
                move(key)
                hits += 1
                if entry.fields:
                    fields.update(entry.fields)
                if entry.secrets:
                    secrets.update(entry.secrets)
                replaced += entry.replaced
                out.append(entry.item)
                continue
            self.counts["misses"] += 1
            item, entry = self._redact(run, kind, value)
            if key is not None and entry is not None:
                self._store(key, entry)
            out.append(item)
        if hits:
            self.counts["hits"] += hits
            run.unencodable += replaced
        return tuple(out)

    def wire_text(self, item: Any) -> str | None:
        entry = self._by_id.get(id(item))
        return entry.text if entry is not None and entry.item is item else None

    def clear(self) -> None:
        self._entries.clear()
        self._by_id.clear()
        self._bytes = 0

    def stats(self) -> dict[str, int]:
        return {**self.counts, "items": len(self._entries), "bytes": self._bytes}

    # -- internals --

    def _redact(self, run: Run, kind: str, value: Any) -> tuple[Any, _Entry | None]:
        """Redact one item in a run of its own and merge its report into ``run``: the item,
        and its entry to remember (None when it must not be: its redaction failed)."""
        sub = Run(run.compiled)
        if type(value) is bytes:
            try:
                value = pickle.loads(value)
            except Exception as exc:
                run.fail(kind, exc)
                return dict(_FAILED_ITEM[kind]), None
        red = sub.message(value) if kind == "messages" else sub.tools((value,))[0]
        item, replaced = self._finish(red)
        run.fields.update(sub.fields)
        run.secrets.update(sub.secrets)
        run.failures += sub.failures
        run.unencodable += replaced
        if sub.failures:
            return item, None
        return item, _Entry(item, dict(sub.fields), dict(sub.secrets), replaced)

    def _store(self, key: tuple[int, str, Any], entry: _Entry) -> None:
        entry.text = self._text_of(entry.item)
        # What the entry holds in memory: its key, its text and the redacted item's objects
        # (a structure of many small values takes several times its pickle's length).
        text_size = sys.getsizeof(entry.text) if entry.text is not None else 0
        size = sys.getsizeof(key[2]) + text_size + _footprint(entry.item) + _ENTRY_OVERHEAD
        if size > self._max_bytes:
            return
        entry.size = size
        self._entries[key] = entry
        self._by_id[id(entry.item)] = entry
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.size
            if self._by_id.get(id(old.item)) is old:
                del self._by_id[id(old.item)]
            self.counts["evicted"] += 1
