"""The secret scrubber shared by the HF Dataset pipeline and LangFuse forwarding.

Contract:

- ``scrub(text)`` replaces every secret by a marker: ``[REDACTED:<kind>]`` for the kinds of the
  catalogue (``agent.core.secret_catalogue``), ``[REDACTED:known_secret]`` for a value the
  process knows (``agent.core.known_secrets``), ``[MEDIA:<type> bytes=N sha256=<16 hex>]`` for
  inline base64 media. A marker never echoes any part of what it replaced. For
  ``NAME=value`` forms only the value is replaced; the name stays so a reader sees what was there.
- ``scrub_obj(obj)`` returns a scrubbed *copy* of a JSON-like value (never mutates it). Besides
  scanning every string (and string key), a string stored under a secret-looking key
  (``{"api_key": "..."}``, ``{"Authorization": "..."}``) is replaced whole.
- ``Scrubber(disabled=..., enabled=..., extra=...)`` switches kinds (or whole groups) off, the
  off-by-default ones (the ``pii`` group) on, and adds patterns of its own (``SecretPattern``).
  Unknown names raise ``ValueError`` naming them.
- Text is matched as a reader would read it, not only as written: besides the text itself, the
  scrubber matches a view with ``\\uXXXX`` escapes decoded (``\\u0070assword``, nested
  escaping too; JSON's ``\\t`` and ``\\/`` are understood by the rules themselves) and one
  with zero-width characters removed; matches in a view are mapped back onto the text.
  ``scrub_parts`` matches a list of texts (a message's multimodal parts) as their joined text,
  and a secret split across parts is replaced in each of them.
- Linear time on every input (see ``agent.core.secret_catalogue`` for how rules are written and
  ``bench/redaction.py`` for the adversarial inputs timed on every run).
- When matches overlap they are merged (nothing of either survives); the marker is the
  earliest match's, and at the same start the kind listed first in the catalogue. Each merged
  secret is counted once.

Why it is fast with a large catalogue (see ``bench/``): rules are not run one by one. All rules
that share an *anchor* (a rare literal every match starts at) are merged into one regex, so a
pass over the text finds every candidate with ``re``'s fast literal scan and the alternatives
are tried only there. Token rules find their prefix with a lookbehind right after the anchor,
grouped by width, so an anchor costs a handful of checks however many kinds share it. The
case-insensitive rules run on ``text.lower()``, computed once. Strings up to 4 KB found clean
are remembered per scrubber (an agent resends its history on every call).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.core.known_secrets import KNOWN_SECRETS, KnownSecrets
from agent.core.secret_catalogue import CATALOGUE, GROUPS, Rule

__all__ = [
    "CATALOGUE",
    "DEFAULT_PATTERNS",
    "DEFAULT_SCRUBBER",
    "GROUPS",
    "KNOWN_SECRETS",
    "SECRET_KEY_RE",
    "Rule",
    "Scrubber",
    "SecretPattern",
    "pattern_names",
    "scrub",
    "scrub_obj",
]

KNOWN_SECRET = "known_secret"


@dataclass(frozen=True, slots=True)
class SecretPattern:
    """A pattern of the operator's own (``Scrubber(extra=...)``), run as a pass of its own.

    ``group`` is the group whose span is replaced (0: the whole match), which lets
    ``NAME=value`` keep the name. With ``lowercase=True`` the regex is matched against
    ``text.lower()`` (write it in lowercase): a cheap way to be case-insensitive.
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


# The built-in kinds that are on by default (kept under this name for callers of the past).
DEFAULT_PATTERNS: tuple[Rule, ...] = tuple(r for r in CATALOGUE if r.default)


def pattern_names(*, default_only: bool = False) -> tuple[str, ...]:
    """Every kind of the catalogue, in catalogue order (each once)."""
    rules = DEFAULT_PATTERNS if default_only else CATALOGUE
    return tuple(dict.fromkeys(r.name for r in rules))


# A dict key whose string value is a secret as a whole (used by `scrub_obj`, not on text).
SECRET_KEY_RE: re.Pattern[str] = re.compile(
    r"[a-z0-9_.\-]{0,60}(?:secret|token(?!s|iz)|pass(?:w(?:or)?d|phrase)|pwd"
    r"|key(?:(?<=api[_\-]key)|(?<=apikey)|(?<=private[_\-]key)|(?<=privatekey)"
    r"|(?<=access[_\-]key)|(?<=accesskey)|(?<=account[_\-]key)|(?<=accountkey))"
    r"|authorization|cookie|credentials?|signature|(?<![a-z])auth(?![a-z]))[a-z0-9_.\-]{0,60}"
)


# -- compiled passes ----------------------------------------------------------------------------

# Where token rules sit behind an anchor, a cheap look at what follows it first: a token body
# starts right after the anchor, so a run of separators ("-----", "___") costs one check.
_GATE = r"(?=(?:[A-Za-z0-9_]{2}|[A-Za-z0-9_]?-[A-Za-z0-9_])[A-Za-z0-9_\-+/]{5})"
# Below this length, checking that a pass's anchor occurs at all (`in`) is cheaper than a
# regex call that finds nothing.
_PRECHECK_MAX = 8192
# Up to this length a text is matched by all passes in one regex: a pass costs a call and a
# scan however short the text, and one scan with a character-set start is cheaper than fifteen
# (beyond it, the separate literal scans win). The union is searched again from the start of
# every match plus one, so it finds at least what the separate passes find.
_UNION_MAX = 2048


@dataclass(frozen=True, slots=True)
class _Pass:
    anchor: str
    lowercase: bool
    rx: re.Pattern[str]
    rx_ci: re.Pattern[str] | None
    # closing group index -> (priority, back, value groups, rule if it has a hook, marker);
    # for a pattern of its own: {0: (priority, 0, (group,), None, marker)}
    table: Mapping[int, tuple[int, int, tuple[int, ...], Rule | None, str]]
    single: bool = False
    # For short texts: substrings one of which any match needs (empty: the anchor's literal).
    needles: tuple[str, ...] = ()

    @property
    def literal(self) -> bool:
        return bool(self.anchor) and not self.anchor.startswith("[")


def _compile_pass(anchor: str, lowercase: bool, rules: Sequence[tuple[int, Rule]]) -> _Pass:
    table: dict[int, tuple[int, int, tuple[int, ...], Rule | None, str]] = {}
    gi = 1

    def add(regex: str, prio: int, back: int) -> str:
        # An empty group closes each alternative: `m.lastindex` then names the alternative that
        # matched (it is the last group closed), and the alternative still starts with its own
        # first op, which lets `re` skip it at once when the next character cannot start it
        # (an outer group around the alternative would defeat that).
        nonlocal gi
        n = re.compile(regex).groups
        rule = CATALOGUE[prio]
        special = rule if (rule.left or rule.check or rule.marker) else None
        table[gi + n] = (prio, back, tuple(range(gi, gi + n)), special, f"[REDACTED:{rule.name}]")
        gi += 1 + n
        return f"(?:{regex})()"

    alts: list[str] = []
    by_width: dict[int, list[tuple[str, int, Rule]]] = {}
    for prio, r in rules:
        for p in r.prefixes:
            by_width.setdefault(len(p), []).append((p, prio, r))
    if by_width:
        groups = []
        for width in sorted(by_width):
            entries = by_width[width]
            look = "(?<=" + "|".join(re.escape(p) for p, _, _ in entries) + ")"
            inner = "|".join(
                add(
                    f"(?<={re.escape(p)}){_left_boundary(p)}{r.regex}",
                    prio,
                    len(p) - len(anchor),
                )
                for p, prio, r in entries
            )
            groups.append(f"{look}(?:{inner})")
        # First: the gate fails at once on a run of separators, which the other alternatives
        # (led by a literal) then skip at their first character.
        alts.append(_GATE + "(?:" + "|".join(groups) + ")")
    alts += [add(r.regex, prio, r.back) for prio, r in rules if not r.prefixes]
    # An anchor is a literal, or (opt-in pii rules) a character class written as such.
    head = anchor if anchor.startswith("[") else re.escape(anchor)
    source = head + "(?:" + "|".join(alts) + ")"
    rx = re.compile(source)
    rx_ci = re.compile(source, re.IGNORECASE) if lowercase else None
    needles: tuple[str, ...] = ()
    words = [w for _, r in rules for w in (r.keywords or r.prefixes)]
    if all(r.keywords or r.prefixes for _, r in rules) and len(words) <= 4:
        needles = tuple(dict.fromkeys(words))
    elif not anchor.startswith("["):
        needles = (anchor,)
    return _Pass(anchor, lowercase, rx, rx_ci, table, needles=needles)


def _left_boundary(prefix: str) -> str:
    """The character before ``prefix`` is not alphanumeric, or is the letter of a JSON escape
    (``\\n``, ``\\t``: a token at the start of a line inside JSON-encoded text)."""
    p = re.escape(prefix)
    return rf"(?:(?<![A-Za-z0-9]{p})|(?<=\\[nrtbf]{p}))"


def _union(passes: Sequence[_Pass]) -> _Pass | None:
    """All ``passes`` as one regex, for short texts (see ``_UNION_MAX``)."""
    if not passes:
        return None
    table: dict[int, tuple[int, int, tuple[int, ...], Rule | None, str]] = {}
    offset = 0
    for p in passes:
        for k, (prio, back, groups, special, marker) in p.table.items():
            table[k + offset] = (prio, back, tuple(g + offset for g in groups), special, marker)
        offset += p.rx.groups
    rx = re.compile("|".join(f"(?:{p.rx.pattern})" for p in passes))
    return _Pass("", passes[0].lowercase, rx, None, table)


_PASS_CACHE: dict[tuple[int, ...], tuple[_Pass, ...]] = {}


def _passes_for(active: tuple[int, ...]) -> tuple[_Pass, ...]:
    """The compiled passes for the catalogue rules at indexes ``active`` (cached)."""
    cached = _PASS_CACHE.get(active)
    if cached is not None:
        return cached
    groups: dict[tuple[str, bool], list[tuple[int, Rule]]] = {}
    standalone: list[tuple[int, Rule]] = []
    for i in active:
        r = CATALOGUE[i]
        if r.anchor:
            groups.setdefault((r.anchor, r.lowercase), []).append((i, r))
        else:
            standalone.append((i, r))
    passes = [_compile_pass(a, low, rules) for (a, low), rules in groups.items()]
    passes += [_compile_pass("", r.lowercase, [(i, r)]) for i, r in standalone]
    # Case-sensitive passes first (they run on the text), then the lowercase ones.
    result = tuple(sorted(passes, key=lambda p: p.lowercase))
    if len(_PASS_CACHE) > 64:
        _PASS_CACHE.clear()
    _PASS_CACHE[active] = result
    return result


# -- normalised views ---------------------------------------------------------------------------

# `\uXXXX` escapes json.dumps never writes for plain text: ASCII characters (an evasion:
# `\u0068f_...`), invisible and full-width ones. Only a text holding one gets an unescaped view,
# so ordinary JSON (ensure_ascii output full of `\u4e2d`) costs nothing extra.
_SUSPICIOUS_ESC = re.compile(
    r"\\u(?:00[0-7][0-9a-fA-F]|00[aA][dD]|20[0-6][0-9a-fA-F]|[fF][eE][fF][fF]|[fF][fF][0-5][0-9a-fA-F])"
)
# One to three backslashes: an escape inside JSON inside JSON (`\\\\u0068`) decodes too.
_U_ESC = re.compile(r"\\{1,15}u([0-9a-fA-F]{4})")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]+")


class _Map:
    """Maps positions of a view back onto the text it was made from.

    ``(d, o)`` pairs: view position ``d`` is text position ``o``, and positions after ``d`` (up
    to the next pair) advance one to one. Built on first use: most views hold no secret, and
    then the pairs are never needed.
    """

    __slots__ = ("_build", "ds", "os", "parent")

    def __init__(self, build: Any, parent: _Map | None) -> None:
        self._build = build
        self.ds: list[int] | None = None
        self.os: list[int] = []
        self.parent = parent

    def __call__(self, i: int) -> int:
        if self.ds is None:
            self.ds, self.os = self._build()
        k = bisect_right(self.ds, i) - 1
        j = i if k < 0 else self.os[k] + (i - self.ds[k])
        return self.parent(j) if self.parent is not None else j


def _unescape(text: str) -> tuple[str, _Map] | None:
    """``text`` with every ``\\uXXXX`` decoded, and the map back."""
    parts = _U_ESC.split(text)  # [text, hex, text, hex, ..., text]
    if len(parts) == 1:
        return None
    out = [parts[0]]
    for h, rest in zip(parts[1::2], parts[2::2], strict=True):
        out.append(chr(int(h, 16)))
        out.append(rest)

    def build() -> tuple[list[int], list[int]]:
        ds: list[int] = []
        os: list[int] = []
        removed = 0
        for m in _U_ESC.finditer(text):
            o, e = m.span()
            d = o - removed
            ds += (d, d + 1)
            os += (o, e)
            removed += e - o - 1
        return ds, os

    return "".join(out), _Map(build, None)


def _fold(text: str, parent: _Map | None) -> tuple[str, _Map] | None:
    """``text`` without invisible characters (zero-width spaces, soft hyphens ...), and the map."""
    view = _INVISIBLE.sub("", text)
    if len(view) == len(text):
        return None

    def build() -> tuple[list[int], list[int]]:
        ds: list[int] = []
        os: list[int] = []
        removed = 0
        for m in _INVISIBLE.finditer(text):
            s, e = m.span()
            ds.append(s - removed)
            os.append(e)
            removed += e - s
        return ds, os

    return view, _Map(build, parent)


def _views(text: str) -> list[tuple[str, _Map | None]]:
    """Other ways to read ``text`` (with a map back), beyond the text itself."""
    out: list[tuple[str, _Map | None]] = []
    src, parent = text, None
    if "\\u" in text and _SUSPICIOUS_ESC.search(text) is not None:
        unescaped = _unescape(text)
        if unescaped is not None:
            out.append(unescaped)
            src, parent = unescaped
    if not src.isascii():
        folded = _fold(src, parent)
        if folded is not None:
            out.append(folded)
    return out


# -- the scrubber -------------------------------------------------------------------------------

# Strings up to this length that held no secret are remembered per scrubber (see __init__),
# up to this many strings and this many characters in all.
_CLEAN_MAX_LEN = 4096
_CLEAN_MAX_COUNT = 8192
_CLEAN_MAX_CHARS = 4 * 1024 * 1024

Span = tuple[int, int, int, str]  # (start, priority, end, marker)


class Scrubber:
    """Applies the catalogue (and known values). Precomputes in ``__init__`` so calls are cheap."""

    def __init__(
        self,
        patterns: Iterable[Rule] | None = None,
        *,
        disabled: Iterable[str] = (),
        enabled: Iterable[str] = (),
        extra: Iterable[SecretPattern] = (),
        known: KnownSecrets | None = KNOWN_SECRETS,
    ) -> None:
        off = {disabled} if isinstance(disabled, str) else set(disabled)
        on = {enabled} if isinstance(enabled, str) else set(enabled)
        extra = tuple(extra)
        for p in extra:
            if not isinstance(p, SecretPattern):
                raise TypeError(f"extra patterns must be SecretPattern, not {type(p).__name__}")
            if not 0 <= p.group <= p.regex.groups:
                raise ValueError(f"secret pattern {p.name!r}: no group {p.group} in its regex")
        allowed = None if patterns is None else {id(r) for r in patterns}
        known_names = set(pattern_names()) | set(GROUPS) | {p.name for p in extra}
        unknown = (off | on) - known_names
        if unknown:
            raise ValueError(
                f"unknown secret pattern(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known_names))}"
            )
        active = tuple(
            i
            for i, r in enumerate(CATALOGUE)
            if (allowed is None or id(r) in allowed)
            and (r.default or r.name in on or r.group in on)
            and r.name not in off
            and r.group not in off
        )
        self.rules: tuple[Rule, ...] = CATALOGUE
        self._passes = _passes_for(active)
        self._extra: list[_Pass] = []
        n = len(CATALOGUE)
        self._names: list[str] = [r.name for r in CATALOGUE]
        for p in extra:
            if p.name in off:
                continue
            self._extra.append(
                _Pass(
                    "",
                    p.lowercase,
                    p.regex,
                    re.compile(p.regex.pattern, p.regex.flags | re.IGNORECASE)
                    if p.lowercase
                    else None,
                    {
                        0: (
                            n + len(self._names) - len(CATALOGUE),
                            0,
                            (p.group,),
                            None,
                            f"[REDACTED:{p.name}]",
                        )
                    },
                    single=True,
                )
            )
            self._names.append(p.name)
        self._known_prio = len(self._names)
        self._names.append(KNOWN_SECRET)
        self._markers = [f"[REDACTED:{name}]" for name in self._names]
        self.names: frozenset[str] = frozenset(
            [CATALOGUE[i].name for i in active] + [p.name for p in extra if p.name not in off]
        )
        self.known = known
        self._all = (
            [p for p in self._passes if not p.lowercase]
            + [p for p in self._extra if not p.lowercase],
            [p for p in self._passes if p.lowercase] + [p for p in self._extra if p.lowercase],
        )
        self._unions = (
            _union([p for p in self._passes if not p.lowercase]),
            _union([p for p in self._passes if p.lowercase]),
        )
        self._key_marker = (
            "[REDACTED:secret_assignment]" if "secret_assignment" in self.names else None
        )
        # Why (performance): a record is mostly strings that repeat from call to call: dict
        # keys, roles, names, schema words and tool descriptions, and the system prompt and
        # history, which every call of an agent loop resends. Strings up to _CLEAN_MAX_LEN found
        # to hold *no* match are remembered (never one that held a secret), so the next sighting
        # is a hash and a set lookup. Bounded; cleared when full, and whenever the set of known
        # values changes (a string clean before may hold a value learnt since).
        self._clean: set[str] = set()
        self._clean_chars = 0
        self._clean_version = -1
        self._secret_keys: dict[str, bool] = {}

    # -- spans --

    def _run(self, p: _Pass, subject: str, text: str, out: list[Span]) -> None:
        rx = p.rx
        if p.lowercase and subject is text and p.rx_ci is not None:
            rx = p.rx_ci  # lowering changed the length: match the text, ignoring case
        elif len(subject) <= _PRECHECK_MAX and p.needles:
            for needle in p.needles:
                if needle in subject:
                    break
            else:
                return
        first = rx.search(subject)
        if first is None:
            return
        if p.single:
            prio, _, (g,), _, marker = p.table[0]
            for m in rx.finditer(subject, first.start()):
                s, e = m.span(g)
                if s < e:
                    out.append((s, prio, e, marker))
            return
        self._take(rx.finditer(subject, first.start()), p.table, text, out)

    def _run_union(self, u: _Pass, subject: str, text: str, out: list[Span]) -> None:
        search = u.rx.search
        m = search(subject)
        if m is None:
            return

        def matches() -> Any:
            nonlocal m
            while m is not None:
                yield m
                m = search(subject, m.start() + 1)

        self._take(matches(), u.table, text, out)

    @staticmethod
    def _take(found: Iterable[re.Match[str]], table: Any, text: str, out: list[Span]) -> None:
        append = out.append
        for m in found:
            prio, back, vgroups, special, marker = table[m.lastindex]
            if vgroups:
                for g in vgroups:
                    s, e = m.span(g)
                    if s >= 0:
                        break
                else:
                    continue
            else:
                s, e = m.start() - back, m.end()
            if special is None:
                if s < e:
                    append((s, prio, e, marker))
                continue
            if special.left is not None:
                left = special.left(text, m.start())
                if left is None:
                    continue
                s = left
            if s >= e or (special.check is not None and not special.check(text[s:e])):
                continue
            out.append((s, prio, e, special.marker(text[s:e]) if special.marker else marker))

    def _spans_of(self, text: str, out: list[Span]) -> None:
        plain, lower = self._all
        short = len(text) <= _UNION_MAX
        u_plain, u_lower = self._unions
        if short and u_plain is not None:
            self._run_union(u_plain, text, text, out)
            for p in plain:
                if p.single:
                    self._run(p, text, text, out)
        else:
            for p in plain:
                self._run(p, text, text, out)
        if lower:
            low = text.lower()
            if len(low) != len(text):
                for p in lower:
                    self._run(p, text, text, out)
            elif short and u_lower is not None:
                self._run_union(u_lower, low, text, out)
                for p in lower:
                    if p.single:
                        self._run(p, low, text, out)
            else:
                for p in lower:
                    self._run(p, low, text, out)
        known = self.known
        if known is not None and known.literals:
            marker = self._markers[self._known_prio]
            out.extend((s, self._known_prio, e, marker) for s, e in known.spans(text))

    def spans(self, text: str) -> list[Span]:
        """Every secret span of ``text`` (in the text and in its normalised views)."""
        out: list[Span] = []
        self._spans_of(text, out)
        for view, mapping in _views(text):
            found: list[Span] = []
            self._spans_of(view, found)
            if mapping is None:
                out.extend(found)
            else:
                out.extend((mapping(s), p, mapping(e), mk) for s, p, e, mk in found)
        return out

    # -- applying --

    def _apply(self, text: str, spans: list[Span], counts: Counter[str]) -> str:
        spans.sort()  # runs already in order (one per pass): cheap
        out: list[str] = []
        add = out.append
        pos = 0
        hits = [0] * len(self._names)  # per priority; added to `counts` once at the end
        it = iter(spans)
        cur_s, cur_p, cur_e, cur_m = next(it)
        for s, p, e, m in it:
            if s < cur_e:
                if e > cur_e:
                    cur_e = e
                continue
            add(text[pos:cur_s])
            add(cur_m)
            hits[cur_p] += 1
            pos = cur_e
            cur_s, cur_p, cur_e, cur_m = s, p, e, m
        add(text[pos:cur_s])
        add(cur_m)
        hits[cur_p] += 1
        add(text[cur_e:])
        names = self._names
        for p, n in enumerate(hits):
            if n:
                counts[names[p]] += n
        return "".join(out)

    def scrub_text(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` with every secret replaced by its marker, and the count per kind."""
        counts: Counter[str] = Counter()
        return self.scrub_into(text, counts), counts

    def scrub_into(self, text: str, counts: Counter[str]) -> str:
        """``text`` scrubbed; the count per kind is added to ``counts``.

        The allocation-free form of ``scrub_text`` for walkers that scrub many small strings.
        """
        if not text:
            return text
        known = self.known
        if known is not None and known.version != self._clean_version:
            self._clean.clear()
            self._clean_chars = 0
            self._clean_version = known.version
        cacheable = len(text) <= _CLEAN_MAX_LEN
        if cacheable and text in self._clean:
            return text
        spans = self.spans(text)
        if not spans:
            if cacheable:
                if len(self._clean) >= _CLEAN_MAX_COUNT or self._clean_chars > _CLEAN_MAX_CHARS:
                    self._clean.clear()  # the next line may race another thread: harmless
                    self._clean_chars = 0
                self._clean.add(text)
                self._clean_chars += len(text)
            return text
        return self._apply(text, spans, counts)

    def scrub_parts(self, texts: Sequence[str], counts: Counter[str]) -> list[str]:
        """Scrub texts that are read as one (a message's text parts): a secret split across
        parts is matched in the joined text and replaced in every part holding a piece."""
        bounds = [0]
        for t in texts:
            bounds.append(bounds[-1] + len(t))
        joined = "".join(texts)
        crossing: list[list[Span]] = [[] for _ in texts]
        for s, p, e, m in self.spans(joined):
            first = bisect_right(bounds, s) - 1
            last = bisect_right(bounds, e - 1) - 1
            if first == last:
                continue  # inside one part: found when the part is scrubbed itself
            for i in range(first, last + 1):
                a = max(s, bounds[i]) - bounds[i]
                b = min(e, bounds[i + 1]) - bounds[i]
                if a < b:
                    crossing[i].append((a, p, b, m))
        out = []
        for t, extra in zip(texts, crossing, strict=True):
            if extra:
                out.append(self._apply(t, self.spans(t) + extra, counts))
            else:
                out.append(self.scrub_into(t, counts))
        return out

    # -- objects --

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
KNOWN_SECRETS.refresh_env()


def scrub(text: str) -> str:
    """``text`` with every secret replaced by its marker."""
    KNOWN_SECRETS.refresh_if_stale()
    return DEFAULT_SCRUBBER.scrub_text(text)[0]


def scrub_obj(obj: Any) -> Any:
    """A copy of a JSON-like value with every string scrubbed."""
    KNOWN_SECRETS.refresh_if_stale()
    return DEFAULT_SCRUBBER.scrub_obj(obj)[0]
