"""The secret scrubber shared by the HF Dataset pipeline and LangFuse forwarding.

Contract:

- ``scrub(text)`` replaces every secret by a marker: ``[REDACTED:<kind>]`` for the kinds of the
  catalogue (``agent.core.privacy.catalogue``), ``[REDACTED:known_secret]`` for a value the
  process knows (``agent.core.privacy.known``), ``[MEDIA:<type> bytes=N sha256=<16 hex>]`` for
  inline base64 media. A marker never echoes any part of what it replaced. For
  ``NAME=value`` forms only the value is replaced; the name stays so a reader sees what was there.
- ``scrub_obj(obj)`` returns a scrubbed *copy* of a JSON-like value (never mutates it), walked
  by ``agent.core.privacy.walker`` (the walker LangFuse redaction uses too). Besides scanning
  every string (and string key), a string stored under a secret-looking key
  (``{"api_key": "..."}``, ``{"Authorization": "..."}``) is replaced whole.
- ``Scrubber(disabled=..., enabled=..., extra=...)`` switches kinds (or whole groups) off, the
  off-by-default ones (the ``pii`` group) on, and adds patterns of its own (``SecretPattern``).
  Unknown names raise ``ValueError`` naming them.
- Text is matched as a reader would read it, not only as written: besides the text itself, in
  its normalised views (``agent.core.privacy.normalise``); matches in a view are mapped back
  onto the text. ``scrub_parts`` matches a list of texts (a message's multimodal parts) as their
  joined text, and a secret split across parts is replaced in each of them.
- Linear time on every input (see ``agent.core.privacy.rule`` for how rules are written and
  ``bench/redaction.py`` for the adversarial inputs timed on every run).
- When matches overlap they are merged (nothing of either survives); the marker is the
  earliest match's, and at the same start the kind listed first in the catalogue. Each merged
  secret is counted once.

Why it is fast with a large catalogue (see ``bench/``): the catalogue runs as a few passes
(``agent.core.privacy.passes``), each one regex for every rule sharing an anchor; the
case-insensitive passes run on ``text.lower()``, computed once. A short ASCII text is matched by
all passes as one regex (``passes.ascii_union``), searched directly when the text has no
normalised view. Strings up to 4 KB found clean are remembered per scrubber (an agent resends
its history on every call). ``tests/test_scrub_fastpaths.py`` holds each fast path to the plain
form it stands for.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

from agent.core.privacy.catalogue import (
    CATALOGUE,
    DEFAULT_PATTERNS,
    GROUPS,
    SECRET_KEY_RE,
    pattern_names,
)
from agent.core.privacy.known import KNOWN_SECRETS, KnownSecrets
from agent.core.privacy.normalise import views
from agent.core.privacy.passes import (
    PRECHECK_MAX,
    UNION_MAX,
    Pass,
    ascii_union,
    passes_for,
    pattern_pass,
    union,
)
from agent.core.privacy.rule import Rule, SecretPattern
from agent.core.privacy.walker import Walker

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
    "check_switches",
    "pattern_names",
    "scrub",
    "scrub_obj",
]

KNOWN_SECRET = "known_secret"

# Strings up to this length that held no secret are remembered per scrubber (see __init__),
# up to this many strings and this many characters in all.
_CLEAN_MAX_LEN = 4096
_CLEAN_MAX_COUNT = 8192
_CLEAN_MAX_CHARS = 4 * 1024 * 1024

Span = tuple[int, int, int, str]  # (start, priority, end, marker)


def check_switches(
    disabled: Iterable[str], enabled: Iterable[str], extra: Iterable[SecretPattern]
) -> tuple[frozenset[str], frozenset[str], tuple[SecretPattern, ...]]:
    """The kinds switched off and on and the operator's own patterns, checked: a name that is
    neither a kind, a group nor an own pattern raises ``ValueError``; a bad own pattern
    ``TypeError`` or ``ValueError``."""
    off = frozenset({disabled} if isinstance(disabled, str) else disabled)
    on = frozenset({enabled} if isinstance(enabled, str) else enabled)
    extra = tuple(extra)
    for p in extra:
        if not isinstance(p, SecretPattern):
            raise TypeError(f"extra patterns must be SecretPattern, not {type(p).__name__}")
        if not 0 <= p.group <= p.regex.groups:
            raise ValueError(f"secret pattern {p.name!r}: no group {p.group} in its regex")
    known_names = set(pattern_names()) | set(GROUPS) | {p.name for p in extra}
    unknown = (off | on) - known_names
    if unknown:
        raise ValueError(
            f"unknown secret pattern(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known_names))}"
        )
    return off, on, extra


def _active(
    patterns: Iterable[Rule] | None, off: frozenset[str], on: frozenset[str]
) -> tuple[int, ...]:
    """Indexes of the catalogue rules a scrubber runs."""
    allowed = None if patterns is None else {id(r) for r in patterns}
    return tuple(
        i
        for i, r in enumerate(CATALOGUE)
        if (allowed is None or id(r) in allowed)
        and (r.default or r.name in on or r.group in on)
        and r.name not in off
        and r.group not in off
    )


def _by_case(passes: Sequence[Pass]) -> tuple[list[Pass], list[Pass]]:
    """(the passes run on the text, the passes run on its lowered form)."""
    return [p for p in passes if not p.lowercase], [p for p in passes if p.lowercase]


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
        off, on, own = check_switches(disabled, enabled, extra)
        own = tuple(p for p in own if p.name not in off)
        active = _active(patterns, off, on)
        self._passes = passes_for(active)
        # Marker names by priority: the catalogue's, the operator's patterns', known values'.
        self._names: list[str] = [r.name for r in CATALOGUE]
        extra_passes = [pattern_pass(p, len(CATALOGUE) + i) for i, p in enumerate(own)]
        self._names += [p.name for p in own]
        self._known_prio = len(self._names)
        self._names.append(KNOWN_SECRET)
        self._known_marker = f"[REDACTED:{KNOWN_SECRET}]"
        self.names: frozenset[str] = frozenset(
            [CATALOGUE[i].name for i in active] + [p.name for p in own]
        )
        self.known = known
        # (plain passes, lowercase passes) and the same as one union regex each (short texts).
        self._all = _by_case([*self._passes, *extra_passes])
        self._unions = tuple(union(p) for p in _by_case(self._passes))
        # ... and both as one regex, for short ASCII texts (see passes.ascii_union).
        self._ascii = ascii_union(*_by_case(self._passes))
        # The operator's own patterns: not in the unions, run on their own.
        self._singles = _by_case(extra_passes)
        # The one-regex search of a short ASCII text without a backslash (no normalised view):
        # when it finds nothing, the text holds no catalogue match (see scrub_into).
        self._quick = self._ascii.rx.search if self._ascii and not any(self._singles) else None
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
        self._walker = Walker(self, keys=True, secret_keys=True)

    # -- spans --

    def _run(self, p: Pass, subject: str, text: str, out: list[Span]) -> None:
        rx = p.rx
        if p.lowercase and subject is text and p.rx_ci is not None:
            rx = p.rx_ci  # lowering changed the length: match the text, ignoring case
        elif len(subject) <= PRECHECK_MAX and p.needles:
            for needle in p.needles:
                if needle in subject:
                    break
            else:
                return
        first = rx.search(subject)
        if first is None:
            return
        # Why (performance): go on from the first match instead of matching it again. A match
        # can be the whole text (a PEM block without its END line): searching twice doubled
        # that pass. finditer from the first match's end yields what finditer from its start
        # would after it (an empty match at that end included).
        found: Iterable[re.Match[str]] = (
            chain((first,), rx.finditer(subject, first.end()))
            if first.end() > first.start()
            else rx.finditer(subject, first.start())
        )
        if p.single:
            prio, _, (g,), _, marker = p.table[0]
            for m in found:
                s, e = m.span(g)
                if s < e:
                    out.append((s, prio, e, marker))
            return
        self._take(found, p, text, out)

    def _run_union(self, u: Pass, subject: str, text: str, out: list[Span]) -> None:
        search = u.rx.search
        m = search(subject)
        if m is None:
            return

        def matches() -> Iterator[re.Match[str]]:
            nonlocal m
            while m is not None:
                yield m
                m = search(subject, m.start() + 1)

        self._take(matches(), u, text, out)

    @staticmethod
    def _take(found: Iterable[re.Match[str]], p: Pass, text: str, out: list[Span]) -> None:
        append = out.append
        table = p.table
        quick = p.quick
        for m in found:
            # Why (performance): in text dense with secrets this is a step per match; most
            # matches are one value group of a rule without hooks (`Pass.quick`).
            k = m.lastindex
            q = quick.get(k)
            if q is not None:
                s, e = m.span(q[1])
                if s < e:
                    append((s, q[0], e, q[2]))
                continue
            prio, back, vgroups, special, marker = table[k]
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
        # The scrubber's hot loop: every string of both pipelines passes here at least once.
        short = len(text) <= UNION_MAX
        u_ascii = self._ascii
        if short and u_ascii is not None and text.isascii():
            self._spans_ascii(u_ascii, text, out)
        else:
            self._spans_by_case(text, short, out)
        out.extend(self._known_spans(text))

    def _known_spans(self, text: str) -> list[Span]:
        known = self.known
        if known is None or not known.literals:
            return []
        prio, marker = self._known_prio, self._known_marker
        return [(s, prio, e, marker) for s, e in known.spans(text)]

    def _spans_ascii(self, u_ascii: Pass, text: str, out: list[Span]) -> None:
        """A short ASCII text: every catalogue pass in one regex over the text itself."""
        self._run_union(u_ascii, text, text, out)
        singles_plain, singles_lower = self._singles
        for p in singles_plain:
            self._run(p, text, text, out)
        if singles_lower:
            low = text.lower()
            for p in singles_lower:
                self._run(p, low, text, out)

    def _spans_by_case(self, text: str, short: bool, out: list[Span]) -> None:
        """The plain passes over the text, the lowercase ones over ``text.lower()``."""
        plain, lower = self._all
        u_plain, u_lower = self._unions
        singles_plain, singles_lower = self._singles
        self._run_passes(u_plain if short else None, singles_plain, plain, text, text, out)
        if not lower:
            return
        low = text.lower()
        if len(low) != len(text):
            for p in lower:  # lowering moved positions: match the text, ignoring case
                self._run(p, text, text, out)
        else:
            self._run_passes(u_lower if short else None, singles_lower, lower, low, text, out)

    def _run_passes(
        self,
        u: Pass | None,
        singles: list[Pass],
        passes: list[Pass],
        subject: str,
        text: str,
        out: list[Span],
    ) -> None:
        """``passes`` over ``subject``: as the union ``u`` and the patterns of the operator's
        own (``singles``) when there is a union, else one by one."""
        if u is not None:
            self._run_union(u, subject, text, out)
            passes = singles
        for p in passes:
            self._run(p, subject, text, out)

    def spans(self, text: str) -> list[Span]:
        """Every secret span of ``text`` (in the text and in its normalised views)."""
        out: list[Span] = []
        self._spans_of(text, out)
        for view, mapping in views(text):
            found: list[Span] = []
            self._spans_of(view, found)
            if mapping is None:
                out.extend(found)
            else:
                out.extend((mapping(s), p, mapping(e), mk) for s, p, e, mk in found)
        return out

    # -- applying --

    def _apply(self, text: str, spans: list[Span], counts: Counter[str] | None) -> str:
        spans.sort()  # runs already in order (one per pass): cheap
        # `pos` is where the text resumes: the end of the last written span, extended by every
        # span that overlaps it (merged: the first one's marker stands for all of them).
        # Why (performance): in text dense with secrets this loop is a good part of the work
        # (a step per span): no priorities are noted when nobody counts (`scrub()`), and they
        # are counted at the end in one go.
        out: list[str] = []
        add = out.append
        pos = 0
        if counts is None:
            for s, _, e, m in spans:
                if s < pos:
                    if e > pos:
                        pos = e
                    continue
                add(text[pos:s])
                add(m)
                pos = e
        else:
            prios: list[int] = []
            note = prios.append
            for s, p, e, m in spans:
                if s < pos:
                    if e > pos:
                        pos = e
                    continue
                add(text[pos:s])
                add(m)
                note(p)
                pos = e
            names = self._names
            for p, n in Counter(prios).items():
                counts[names[p]] += n
        add(text[pos:])
        return "".join(out)

    def scrub_text(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` with every secret replaced by its marker, and the count per kind."""
        counts: Counter[str] = Counter()
        return self.scrub_into(text, counts), counts

    def scrub_into(self, text: str, counts: Counter[str] | None) -> str:
        """``text`` scrubbed; the count per kind is added to ``counts`` (None: not counted).

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
        # Why (performance): most strings are short, ASCII and clean. For those `spans()` is
        # one regex search that finds nothing, plus calls that find nothing to do (no view to
        # match: `views` needs a backslash or a non-ASCII character); search directly, and go
        # the whole way only on a hit.
        quick = self._quick
        if quick is not None and len(text) <= UNION_MAX and text.isascii() and "\\" not in text:
            spans = self.spans(text) if quick(text) is not None else self._known_spans(text)
        else:
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
        return self._walker.walk(obj, counts), counts


DEFAULT_SCRUBBER = Scrubber()
KNOWN_SECRETS.refresh_env()


def scrub(text: str) -> str:
    """``text`` with every secret replaced by its marker."""
    KNOWN_SECRETS.refresh_if_stale()
    return DEFAULT_SCRUBBER.scrub_into(text, None)


def scrub_obj(obj: Any) -> Any:
    """A copy of a JSON-like value with every string scrubbed."""
    KNOWN_SECRETS.refresh_if_stale()
    return DEFAULT_SCRUBBER.scrub_obj(obj)[0]
