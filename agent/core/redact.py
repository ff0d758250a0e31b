"""Named secret patterns, shared by the HF Dataset pipeline and LangFuse forwarding.

Contract:

- ``scrub(text)`` replaces every match of a named pattern by ``[REDACTED:<name>]``. The marker is
  fixed per pattern and never echoes any part of the match. For ``NAME=value`` assignments only
  the value is replaced; the name is kept so a reader still sees which setting was there.
- ``scrub_obj(obj)`` returns a scrubbed *copy* of a JSON-like value (never mutates it). Besides
  scanning every string (and string key), a string stored under a secret-looking key
  (``{"api_key": "..."}``, ``{"Authorization": "..."}``) is replaced whole, because a bare value
  carries no prefix a text pattern could see.
- ``Scrubber(patterns=..., disabled=..., extra=...)`` switches built-in patterns off by name
  (unknown names raise ``ValueError`` naming them) and adds patterns of its own.
- Linear time on every input. No two quantifiers can match the same characters (alternatives
  are disjoint, nested repetitions are possessive), every repetition followed by something that
  can fail is bounded, and the unbounded ones (a secret's body, consumed whole so that no tail
  leaks) are possessive: the engine never backtracks into them.
- When matches overlap, the earliest wins, and at the same start the pattern listed first: the
  case-sensitive patterns in order (the specific ``hf_token`` ...), then the lowercase ones
  (``bearer_token``, the generic ``secret_assignment``). Each secret is counted once.

Why it is fast (about 100-170 MB/s on ordinary text, measured on a 2-core box): every built-in
regex begins with a literal (``-----BEGIN ``, ``hf_``, ``sk-``, ``g``, ``A``, ``bearer``,
``token`` ...), which lets ``re`` use its C-level literal-prefix search; left word boundaries are
written as a lookbehind *after* the literal for that reason (a leading ``\\b`` would disable
it). The case-insensitive patterns are written in lowercase and run on ``text.lower()`` with the
same search; their spans map back onto the original text because lowering keeps the length
(when it does not, for a few exotic characters, an ``re.IGNORECASE`` twin runs on the original
instead). All patterns report spans; overlapping spans are merged and the text is rebuilt once,
so a value is never redacted twice and markers are never re-matched. ``scrub_into`` is the
allocation-free form walkers use on many small strings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

__all__ = [
    "DEFAULT_PATTERNS",
    "DEFAULT_SCRUBBER",
    "SECRET_KEY_RE",
    "Scrubber",
    "SecretPattern",
    "scrub",
    "scrub_obj",
]


@dataclass(frozen=True, slots=True)
class SecretPattern:
    """One named secret pattern.

    ``group`` is the group whose span is replaced (0: the whole match), which lets
    ``NAME=value`` keep the name. With ``lowercase=True`` the regex is matched against
    ``text.lower()`` (write it in lowercase): a cheap way to be case-insensitive and fast.
    """

    name: str
    regex: re.Pattern[str]
    group: int = 0
    lowercase: bool = False

    @classmethod
    def compile(
        cls, name: str, pattern: str, group: int = 0, *, flags: int = 0, lowercase: bool = False
    ) -> SecretPattern:
        return cls(name, re.compile(pattern, flags), group, lowercase)


def _p(name: str, pattern: str, group: int = 0, *, lowercase: bool = False) -> SecretPattern:
    return SecretPattern(name, re.compile(pattern), group, lowercase)


def _after(literal: str) -> str:
    """A left boundary written after ``literal``: the character before it is not alphanumeric."""
    return f"(?<![A-Za-z0-9]{re.escape(literal)})"


# -- built-in patterns --------------------------------------------------------------------------

# The value of a `NAME=value` / `NAME: value` / `"NAME": "value"` assignment. The keyword regexes
# below match from the keyword on (the start of the name does not matter: only the value is
# replaced). A quoted value runs to its closing quote, so a password with spaces goes whole; a
# value opened by an escaped quote (JSON inside a JSON string, as in tool-call arguments) runs to
# the next escaped quote; an unquoted value runs up to whitespace, a quote, a comma or a
# semicolon. `(?!\[redacted:)` keeps `scrub(scrub(x)) == scrub(x)`; `(?!=)` skips comparisons
# (`token == x`). Every repetition is possessive or bounded and its alternatives are disjoint.
_NAME_TAIL = r"[a-z0-9_.\-]{0,40}+"
_QUOTE = r"""(?:\\?["'])?+"""
# Why (performance): quoted values take runs of plain characters at once (`[^"\\\n]++`), not
# one character per repetition; the alternatives start with different characters, so each
# matches exactly what `(?:[^"\\\n]|\\.)++` matched.
_VALUE = (
    r"(?!\[redacted:)(?!=)("
    r"""(?<=\\")(?:[^"\\\n]++|\\[^"])++(?=\\")"""  # \"value\"
    r"""|(?<=")(?:[^"\\\n]++|\\.)++(?=")"""  # "value"
    r"""|(?<=')(?:[^'\\\n]++|\\.)++(?=')"""  # 'value'
    r"""|[^\s"',;\\][^\s"',;]*+"""  # value
    r")"
)
_ASSIGN = rf"{_NAME_TAIL}{_QUOTE}\s{{0,3}}+[=:]\s{{0,3}}+{_QUOTE}{_VALUE}"

# Secret-looking names. `token` is not followed by `s` / `iz` so `max_tokens: 512` and
# `tokenizer: gpt2` are left alone.
_SECRET_KEYWORDS: tuple[str, ...] = (
    r"secret",
    r"token(?!s|iz)",
    r"pass(?:w(?:or)?d|phrase)",
    # One pass over `key` instead of three over `api` / `private` / `access` (each pass costs
    # about the same however rare its literal): the lookbehinds pick the secret-looking names.
    r"key(?:(?<=api[_\-]key)|(?<=apikey)|(?<=private[_\-]key)|(?<=privatekey)"
    r"|(?<=access[_\-]key)|(?<=accesskey))",
)

# A dict key whose string value is a secret as a whole (used by `scrub_obj`, not on text).
SECRET_KEY_RE: re.Pattern[str] = re.compile(
    r"[a-z0-9_.\-]{0,60}(?:"
    + "|".join(_SECRET_KEYWORDS)
    + r"|authorization|cookie|credentials?)[a-z0-9_.\-]{0,60}"
)

_PEM_NAME = r"[A-Z ]{0,40}PRIVATE KEY(?: BLOCK)?-----"

DEFAULT_PATTERNS: tuple[SecretPattern, ...] = (
    # The whole block. Without an END line (a truncated key) everything after BEGIN goes: a
    # partial key must not leak. Possessive: the body is consumed once, never backtracked.
    _p(
        "pem_private_key",
        # The body stops where "-----END " starts. Dash runs are taken whole where no END line
        # can start inside them (1-4 dashes, or a run not followed by "END "), and a run that
        # ends in an END line is taken up to its last five dashes: per run, not per dash, so
        # dash-heavy bodies stay fast. Same stopping point as the one-dash-at-a-time
        # `(?:[^-]++|-(?!----END ))*+`.
        rf"-----BEGIN {_PEM_NAME}(?:[^-]++|-{{1,4}}+(?!-)|-++(?!END )|-+(?=-----END ))*+"
        rf"(?:-----END {_PEM_NAME})?",
    ),
    _p("hf_token", rf"hf_{_after('hf_')}[A-Za-z0-9]{{30,}}+"),
    _p("anthropic_key", rf"sk-ant-{_after('sk-ant-')}[A-Za-z0-9_\-]{{20,}}+"),
    _p("openai_key", rf"sk-{_after('sk-')}(?!ant-)[A-Za-z0-9_\-]{{20,}}+"),
    _p(
        "github_token",
        rf"g{_after('g')}(?:h[pousr]_[A-Za-z0-9]{{36,}}+|ithub_pat_[A-Za-z0-9_]{{22,}}+)",
    ),
    _p("aws_access_key_id", rf"A{_after('A')}(?:KIA|SIA)[A-Z0-9]{{16}}"),
    _p(
        "bearer_token",
        r"bearer\s{1,20}([a-z0-9\-._~+/]{16,}+=*)",
        group=1,
        lowercase=True,
    ),
    *(_p("secret_assignment", kw + _ASSIGN, group=1, lowercase=True) for kw in _SECRET_KEYWORDS),
)


# -- the scrubber -------------------------------------------------------------------------------

# Strings up to this length that held no secret are remembered per scrubber (see __init__),
# up to this many strings and this many characters in all.
_CLEAN_MAX_LEN = 4096
_CLEAN_MAX_COUNT = 8192
_CLEAN_MAX_CHARS = 4 * 1024 * 1024


class Scrubber:
    """Applies a set of named patterns. Precomputes in ``__init__`` so calls are cheap."""

    def __init__(
        self,
        patterns: Iterable[SecretPattern] = DEFAULT_PATTERNS,
        *,
        disabled: Iterable[str] = (),
        extra: Iterable[SecretPattern] = (),
    ) -> None:
        off = {disabled} if isinstance(disabled, str) else set(disabled)
        patterns = tuple(patterns)
        extra = tuple(extra)
        for p in extra:
            if not isinstance(p, SecretPattern):
                raise TypeError(f"extra patterns must be SecretPattern, not {type(p).__name__}")
        all_patterns = (*patterns, *extra)
        known = {p.name for p in all_patterns}
        unknown = off - known
        if unknown:
            raise ValueError(
                f"unknown secret pattern(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        for p in all_patterns:
            if not 0 <= p.group <= p.regex.groups:
                raise ValueError(f"secret pattern {p.name!r}: no group {p.group} in its regex")
        self.patterns: tuple[SecretPattern, ...] = tuple(
            p for p in all_patterns if p.name not in off
        )
        self.names: frozenset[str] = frozenset(p.name for p in self.patterns)
        # Case-sensitive patterns run on the text, lowercase ones on `text.lower()`; the
        # priority of a pattern (which name wins on overlap) is its index in `_order`.
        plain = [p for p in self.patterns if not p.lowercase]
        lower = [p for p in self.patterns if p.lowercase]
        self._order: tuple[SecretPattern, ...] = (*plain, *lower)
        self._markers = tuple(f"[REDACTED:{p.name}]" for p in self._order)
        self._plain = tuple((p.regex, p.group) for p in plain)
        self._lower = tuple(p.regex for p in lower)
        self._lower_ci = tuple(
            re.compile(p.regex.pattern, p.regex.flags | re.IGNORECASE) for p in lower
        )
        self._lower_groups = tuple(p.group for p in lower)
        self._key_marker = (
            "[REDACTED:secret_assignment]" if "secret_assignment" in self.names else None
        )
        # Why (performance): a record is mostly strings that repeat from call to call: dict
        # keys, roles, names, schema words and tool descriptions (each costs a dozen regex calls
        # whatever its length), and the system prompt and history, which every call of an agent
        # loop resends. Strings up to _CLEAN_MAX_LEN found to hold *no* match are remembered
        # (never one that held a secret), so the next sighting is a hash and a set lookup.
        # Bounded (count and characters): cleared when full. Same result either way: the
        # patterns are fixed per scrubber.
        self._clean: set[str] = set()
        self._clean_chars = 0
        self._secret_keys: dict[str, bool] = {}

    def scrub_text(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` with every match replaced by its marker, and the count per pattern name."""
        counts: Counter[str] = Counter()
        return self.scrub_into(text, counts), counts

    def scrub_into(self, text: str, counts: Counter[str]) -> str:
        """``text`` scrubbed; the count per pattern name is added to ``counts``.

        The allocation-free form of ``scrub_text`` for walkers that scrub many small strings.
        """
        if not text:
            return text
        cacheable = len(text) <= _CLEAN_MAX_LEN
        if cacheable and text in self._clean:
            return text
        # (priority, [(start, end), ...]) per pattern that matched, spans in text order
        matched: list[tuple[int, list[tuple[int, int]]]] = []
        prio = 0
        for rx, group in self._plain:
            # `search` first: most texts have no match and it is cheaper than an iterator.
            first = rx.search(text)
            if first is not None:
                # Why (performance): comprehensions, not an append per match: text dense with
                # matches is bound by this per-match work.
                found = [m.span(group) for m in rx.finditer(text, first.start())]
                # an empty or non-participating group redacts nothing
                found = [span for span in found if span[0] < span[1]]
                if found:
                    matched.append((prio, found))
            prio += 1
        if self._lower:
            low = text.lower()
            if len(low) == len(text):
                rx_low = self._lower
            else:  # a few characters lengthen when lowered: match the original, ignoring case
                rx_low, low = self._lower_ci, text
            for rx, group in zip(rx_low, self._lower_groups, strict=True):
                first = rx.search(low)
                if first is not None:
                    found = [m.span(group) for m in rx.finditer(low, first.start())]
                    found = [span for span in found if span[0] < span[1]]
                    if found:
                        matched.append((prio, found))
                prio += 1
        if not matched:
            if cacheable:
                if len(self._clean) >= _CLEAN_MAX_COUNT or self._clean_chars > _CLEAN_MAX_CHARS:
                    self._clean.clear()  # the next line may race another thread: harmless
                    self._clean_chars = 0
                self._clean.add(text)
                self._clean_chars += len(text)
            return text
        markers, order = self._markers, self._order
        if len(matched) == 1:
            # One pattern matched: its spans are already in order and never overlap (they come
            # from one finditer), so there is nothing to merge. Why (performance): this is the
            # common case, and text dense with one kind of match is bound by this step.
            prio, found = matched[0]
            bounds = [0, *chain.from_iterable(found), len(text)]
            counts[order[prio].name] += len(found)
            return markers[prio].join(
                [text[a:b] for a, b in zip(bounds[::2], bounds[1::2], strict=True)]
            )
        spans = [(s, p, e) for p, found in matched for s, e in found]
        # Merge overlaps: the earliest span wins, and at the same start the pattern listed first
        # (the specific `hf_token` before the generic `secret_assignment`).
        spans.sort()
        out: list[str] = []
        pos = 0
        hits = [0] * len(order)  # per priority; added to `counts` once at the end
        it = iter(spans)
        cur_s, cur_p, cur_e = next(it)
        for s, p, e in it:
            if s < cur_e:
                if e > cur_e:
                    cur_e = e
                continue
            out.append(text[pos:cur_s])
            out.append(markers[cur_p])
            hits[cur_p] += 1
            pos = cur_e
            cur_s, cur_p, cur_e = s, p, e
        out.append(text[pos:cur_s])
        out.append(markers[cur_p])
        hits[cur_p] += 1
        out.append(text[cur_e:])
        for p, n in enumerate(hits):
            if n:
                counts[order[p].name] += n
        return "".join(out)

    def secret_key_marker(self, key: object) -> str | None:
        """The marker for a value stored under a secret-looking dict key, else None."""
        if self._key_marker is None or not isinstance(key, str) or len(key) > 160:
            return None
        # Why (performance): the same few keys come back on every record; remember the answer.
        known = self._secret_keys.get(key)
        if known is None:
            known = SECRET_KEY_RE.fullmatch(key.lower()) is not None
            if len(self._secret_keys) >= _CLEAN_MAX_COUNT:
                self._secret_keys.clear()
            self._secret_keys[key] = known
        return self._key_marker if known else None

    def scrub_obj(self, obj: Any) -> tuple[Any, Counter[str]]:
        """A scrubbed copy of a JSON-like value (dicts, lists, strings); never mutates ``obj``.

        Tuples come back as lists; keys are scrubbed too; other scalars are returned as they are.
        """
        counts: Counter[str] = Counter()
        text = self.scrub_into

        def walk(v: Any) -> Any:
            if isinstance(v, str):
                return text(v, counts)
            if isinstance(v, Mapping):
                new: dict[Any, Any] = {}
                for k, x in v.items():
                    marker = self.secret_key_marker(k) if isinstance(x, str) and x else None
                    if marker is not None:
                        counts["secret_assignment"] += 1
                        x = marker
                    else:
                        x = walk(x)
                    new[text(k, counts) if isinstance(k, str) else k] = x
                return new
            if isinstance(v, list | tuple):
                return [walk(x) for x in v]
            return v

        return walk(obj), counts


DEFAULT_SCRUBBER = Scrubber()


def scrub(text: str) -> str:
    """``text`` with every named secret replaced by its marker."""
    return DEFAULT_SCRUBBER.scrub_text(text)[0]


def scrub_obj(obj: Any) -> Any:
    """A copy of a JSON-like value with every string scrubbed."""
    return DEFAULT_SCRUBBER.scrub_obj(obj)[0]
