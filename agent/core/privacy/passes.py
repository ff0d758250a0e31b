"""The catalogue compiled into passes: the regexes the scrubber runs over a text.

Contract: ``passes_for(active)`` returns the compiled passes for the catalogue rules at the
indexes ``active`` (cached per set); ``union(passes)`` is all of them as one regex (for short
texts); ``pattern_pass(pattern, priority)`` is an operator's own ``SecretPattern`` as a pass.
A match is turned into a span by the pass's ``table`` (see ``Pass``).

Why passes (see ``bench/``): rules are not run one by one. All rules that share an *anchor* (a
rare literal every match starts at) are merged into one regex, so a pass over the text finds
every candidate with ``re``'s fast literal scan and the alternatives are tried only there. Token
rules find their prefix with a lookbehind right after the anchor, grouped by width, so an
anchor costs a handful of checks however many kinds share it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.core.privacy.catalogue import CATALOGUE
from agent.core.privacy.rule import Rule, SecretPattern

__all__ = [
    "PRECHECK_MAX",
    "REJECT",
    "UNION_MAX",
    "Entry",
    "Pass",
    "ascii_union",
    "passes_for",
    "pattern_pass",
    "union",
]

# Where token rules sit behind an anchor, a cheap look at what follows it first: a token body
# starts right after the anchor, so a run of separators ("-----", "___") costs one check.
_GATE = r"(?=(?:[A-Za-z0-9_]{2}|[A-Za-z0-9_]?-[A-Za-z0-9_])[A-Za-z0-9_\-+/]{5})"
# Where no rule of an anchor's pass can match, checked once right after the anchor. A run of
# dashes (a PEM body, a Markdown rule, an ASCII table) is a candidate at every dash, and no '-'
# rule matches where two more dashes follow its anchor (each needs a letter, a digit or '_'
# within the two characters after it: token bodies behind _GATE, `--password`, `-u`, `--user`,
# `-p`, `User-Key`): one check turns such a dash away instead of trying every alternative.
# tests/test_scrub_fastpaths.py checks every rule of the pass against it.
REJECT: dict[str, str] = {"-": "(?!--)"}
# Below this length, checking that a pass's anchor occurs at all (`in`) is cheaper than a
# regex call that finds nothing.
PRECHECK_MAX = 8192
# Up to this length a text is matched by all passes in one regex: a pass costs a call and a
# scan however short the text, and one scan with a character-set start is cheaper than fifteen
# (beyond it, the separate literal scans win). The union is searched again from the start of
# every match plus one, so it finds at least what the separate passes find.
UNION_MAX = 2048

# What a match of one alternative means: (priority, back, value groups, the rule if it has a
# hook (left / check / marker), marker). The priority is the rule's index in the catalogue (an
# operator's pattern: after the catalogue); `back` extends the span leftwards past the anchor;
# the first value group that took part is the span (none: the whole match).
Entry = tuple[int, int, tuple[int, ...], Rule | None, str]


@dataclass(frozen=True, slots=True)
class Pass:
    """One regex over the text (or over ``text.lower()`` when ``lowercase``)."""

    anchor: str
    lowercase: bool
    rx: re.Pattern[str]
    # The same regex ignoring case, for a text whose lowering changes its length.
    rx_ci: re.Pattern[str] | None
    # closing group index (``m.lastindex``) -> Entry; an operator's pattern: {0: Entry}
    table: Mapping[int, Entry]
    single: bool = False
    # For short texts: substrings one of which any match needs (empty: none known).
    needles: tuple[str, ...] = ()
    # The entries of ``table`` that are one value group and no hook, as (priority, group,
    # marker): the common case, taken without unpacking an Entry (see Scrubber._take).
    quick: Mapping[int, tuple[int, int, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        quick = {
            k: (prio, groups[0], marker)
            for k, (prio, _, groups, special, marker) in self.table.items()
            if len(groups) == 1 and special is None
        }
        object.__setattr__(self, "quick", quick)


class _Alternatives:
    """The alternatives of one pass, each closed by an empty group (see ``add``)."""

    def __init__(self) -> None:
        self.table: dict[int, Entry] = {}
        self._next_group = 1

    def add(self, regex: str, prio: int, back: int) -> str:
        # An empty group closes each alternative: `m.lastindex` then names the alternative that
        # matched (it is the last group closed), and the alternative still starts with its own
        # first op, which lets `re` skip it at once when the next character cannot start it
        # (an outer group around the alternative would defeat that).
        gi = self._next_group
        n = re.compile(regex).groups
        rule = CATALOGUE[prio]
        special = rule if (rule.left or rule.check or rule.marker) else None
        self.table[gi + n] = (
            prio,
            back,
            tuple(range(gi, gi + n)),
            special,
            f"[REDACTED:{rule.name}]",
        )
        self._next_group = gi + 1 + n
        return f"(?:{regex})()"


def _left_boundary(prefix: str, any_of_width: bool = False) -> str:
    """The character before ``prefix`` is not alphanumeric, or is the letter of a JSON escape
    (``\\n``, ``\\t``: a token at the start of a line inside JSON-encoded text). With
    ``any_of_width``, before whichever prefix of that width a lookbehind has just checked."""
    p = rf"[\s\S]{{{len(prefix)}}}" if any_of_width else re.escape(prefix)
    return rf"(?:(?<![A-Za-z0-9]{p})|(?<=\\[nrtbf]{p}))"


def _token_alternative(
    anchor: str, rules: Sequence[tuple[int, Rule]], add: Callable[[str, int, int], str]
) -> list[str]:
    """One alternative for every rule with literal prefixes: the prefixes of one width share a
    lookbehind, so an anchor costs a check per width before any rule is tried."""
    by_width: dict[int, list[tuple[str, int, Rule]]] = {}
    for prio, r in rules:
        for p in r.prefixes:
            by_width.setdefault(len(p), []).append((p, prio, r))
    if not by_width:
        return []
    groups = []
    for width in sorted(by_width):
        entries = by_width[width]
        look = "(?<=" + "|".join(re.escape(p) for p, _, _ in entries) + ")"
        # Why (performance): the prefixes of one rule and one width share an alternative (and
        # its closing group): a match's cost grows with the groups of its regex, and Slack's
        # eight prefixes were eight alternatives. At most one prefix of a width can end at a
        # position, so their order does not matter; the boundary is checked past the width.
        by_rule: dict[int, tuple[list[str], Rule]] = {}
        for p, prio, r in entries:
            by_rule.setdefault(prio, ([], r))[0].append(p)
        inner = "|".join(
            add(
                f"(?<={'|'.join(map(re.escape, ps))}){_left_boundary(ps[0], len(ps) > 1)}{r.regex}",
                prio,
                width - len(anchor),
            )
            for prio, (ps, r) in by_rule.items()
        )
        groups.append(f"{look}(?:{inner})")
    # First: the gate fails at once on a run of separators, which the other alternatives (led
    # by a literal) then skip at their first character.
    return [_GATE + "(?:" + "|".join(groups) + ")"]


def _needles(anchor: str, rules: Sequence[tuple[int, Rule]]) -> tuple[str, ...]:
    words = [w for _, r in rules for w in (r.keywords or r.prefixes)]
    if all(r.keywords or r.prefixes for _, r in rules) and len(words) <= 4:
        return tuple(dict.fromkeys(words))
    return () if anchor.startswith("[") else (anchor,)


def _compile_pass(anchor: str, lowercase: bool, rules: Sequence[tuple[int, Rule]]) -> Pass:
    alts = _Alternatives()
    branches = _token_alternative(anchor, rules, alts.add)
    branches += [alts.add(r.regex, prio, r.back) for prio, r in rules if not r.prefixes]
    # An anchor is a literal, or (opt-in pii rules) a character class written as such.
    head = anchor if anchor.startswith("[") else re.escape(anchor)
    source = head + REJECT.get(anchor, "") + "(?:" + "|".join(branches) + ")"
    rx = re.compile(source)
    rx_ci = re.compile(source, re.IGNORECASE) if lowercase else None
    return Pass(anchor, lowercase, rx, rx_ci, alts.table, needles=_needles(anchor, rules))


def pattern_pass(p: SecretPattern, prio: int) -> Pass:
    """An operator's own pattern as a pass of its own (``prio``: its place after the catalogue)."""
    rx_ci = re.compile(p.regex.pattern, p.regex.flags | re.IGNORECASE) if p.lowercase else None
    entry: Entry = (prio, 0, (p.group,), None, f"[REDACTED:{p.name}]")
    return Pass("", p.lowercase, p.regex, rx_ci, {0: entry}, single=True)


def _joined(parts: Sequence[tuple[str, Pass]], lowercase: bool) -> Pass | None:
    """One regex of alternatives (each the pattern of a pass, or a variant of one); each keeps
    its pass's table, its groups renumbered."""
    if not parts:
        return None
    table: dict[int, Entry] = {}
    offset = 0
    for _, p in parts:
        for k, (prio, back, groups, special, marker) in p.table.items():
            table[k + offset] = (prio, back, tuple(g + offset for g in groups), special, marker)
        offset += p.rx.groups
    rx = re.compile("|".join(f"(?:{pattern})" for pattern, _ in parts))
    return Pass("", lowercase, rx, None, table)


def union(passes: Sequence[Pass]) -> Pass | None:
    """All ``passes`` as one regex, for short texts (see ``UNION_MAX``)."""
    if not passes:
        return None
    return _joined([(p.rx.pattern, p) for p in passes], passes[0].lowercase)


def ascii_union(plain: Sequence[Pass], lower: Sequence[Pass]) -> Pass | None:
    """The plain and the lowercase passes as one regex over an ASCII text itself, for short
    texts (one scan instead of two, and no ``lower()``).

    On ASCII text, matching a lowercase pattern case-insensitively is matching it on
    ``text.lower()``: each lowercase pass becomes ``<anchor>(?i:<rest>)`` once per case of its
    anchor's first character. The first character stays a plain literal in every alternative:
    that is what lets ``re`` scan for candidates with a character set instead of trying every
    position. None when a lowercase pass has no literal anchor.
    """
    parts = [(p.rx.pattern, p) for p in plain]
    for p in lower:
        head = re.escape(p.anchor)
        if not p.anchor or p.anchor.startswith("[") or not p.rx.pattern.startswith(head):
            return None
        rest = re.escape(p.anchor[1:]) + p.rx.pattern[len(head) :]
        for first in dict.fromkeys((p.anchor[0].lower(), p.anchor[0].upper())):
            parts.append((f"{re.escape(first)}(?i:{rest})", p))
    return _joined(parts, False)


_PASS_CACHE: dict[tuple[int, ...], tuple[Pass, ...]] = {}


def passes_for(active: tuple[int, ...]) -> tuple[Pass, ...]:
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
