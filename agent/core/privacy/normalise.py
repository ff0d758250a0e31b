"""Text as a reader reads it: the normalised views the scrubber matches besides the text itself.

Contract: ``views(text)`` returns the other ways to read ``text``, each with a map back onto it
(``Map``: a callable from a view position to a text position), possibly none:

- ``\\uXXXX`` escapes decoded (``\\u0070assword``; nested escaping too: one to fifteen
  backslashes), but only for a text holding an escape json.dumps never writes for plain text
  (an ASCII, invisible or full-width character), so ordinary JSON costs nothing extra;
- invisible characters (zero-width spaces, soft hyphens ...) removed, from the unescaped view
  when there is one.

JSON's ``\\t`` and ``\\/`` are understood by the catalogue's rules themselves. A secret found
in a view is mapped back and replaced in the text.
"""

from __future__ import annotations

import re
from bisect import bisect_right

__all__ = ["Map", "views"]


# `\uXXXX` escapes json.dumps never writes for plain text: ASCII characters (an evasion:
# `\u0068f_...`), invisible and full-width ones. Only a text holding one gets an unescaped view,
# so ordinary JSON (ensure_ascii output full of `\u4e2d`) costs nothing extra.
_SUSPICIOUS_ESC = re.compile(
    r"\\u(?:00[0-7][0-9a-fA-F]|00[aA][dD]|20[0-6][0-9a-fA-F]|[fF][eE][fF][fF]|[fF][fF][0-5][0-9a-fA-F])"
)
# Any run of backslashes up to fifteen: an escape inside JSON inside JSON (`\\\\u0068`), and
# deeper, decodes too.
_U_ESC = re.compile(r"\\{1,15}u([0-9a-fA-F]{4})")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]+")


class Map:
    """Maps positions of a view back onto the text it was made from.

    The view is ``text`` with every match of ``rx`` replaced by ``width`` characters (a decoded
    escape: 1, a removed invisible character: 0). ``(d, o)`` pairs: view position ``d`` is text
    position ``o``, and positions after ``d`` (up to the next pair) advance one to one. Built
    on first use: most views hold no secret, and then the pairs are never needed.
    """

    __slots__ = ("ds", "os", "parent", "rx", "text", "width")

    def __init__(self, rx: re.Pattern[str], text: str, width: int, parent: Map | None) -> None:
        self.rx, self.text, self.width = rx, text, width
        self.ds: list[int] | None = None
        self.os: list[int] = []
        self.parent = parent

    def _build(self) -> tuple[list[int], list[int]]:
        ds: list[int] = []
        os: list[int] = []
        width = self.width
        removed = 0
        for m in self.rx.finditer(self.text):
            s, e = m.span()
            d = s - removed
            if width:
                ds.append(d)
                os.append(s)
            ds.append(d + width)
            os.append(e)
            removed += e - s - width
        return ds, os

    def __call__(self, i: int) -> int:
        if self.ds is None:
            self.ds, self.os = self._build()
        k = bisect_right(self.ds, i) - 1
        j = i if k < 0 else self.os[k] + (i - self.ds[k])
        return self.parent(j) if self.parent is not None else j


def _unescape(text: str) -> tuple[str, Map] | None:
    """``text`` with every ``\\uXXXX`` decoded, and the map back."""
    parts = _U_ESC.split(text)  # [text, hex, text, hex, ..., text]
    if len(parts) == 1:
        return None
    out = [parts[0]]
    for h, rest in zip(parts[1::2], parts[2::2], strict=True):
        out.append(chr(int(h, 16)))
        out.append(rest)
    return "".join(out), Map(_U_ESC, text, 1, None)


def _fold(text: str, parent: Map | None) -> tuple[str, Map] | None:
    """``text`` without invisible characters (zero-width spaces, soft hyphens ...), and the map."""
    view = _INVISIBLE.sub("", text)
    if len(view) == len(text):
        return None
    return view, Map(_INVISIBLE, text, 0, parent)


def views(text: str) -> list[tuple[str, Map | None]]:
    """Other ways to read ``text`` (with a map back), beyond the text itself."""
    out: list[tuple[str, Map | None]] = []
    src, parent = text, None
    # Why (performance): a one-character `in` is a memchr; most texts hold no backslash at all,
    # and for them this is the whole cost of the unescaped view (a two-character `in` costs
    # ten times as much on 1 KB).
    if "\\" in text and _SUSPICIOUS_ESC.search(text) is not None:
        unescaped = _unescape(text)
        if unescaped is not None:
            out.append(unescaped)
            src, parent = unescaped
    if not src.isascii():
        folded = _fold(src, parent)
        if folded is not None:
            out.append(folded)
    return out
