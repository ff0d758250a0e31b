"""The scrubber's fast paths find exactly what the plain paths they stand for find.

Each speed-up of the scrubber (``agent.core.privacy``) has a reference here, the way it was
written before: the rules rewritten for speed (docker_auth and pgpass_password led by their
first character, the ``…key`` class check before the lookbehinds, the one-character '>' look of
the XML form) as their plain forms, no ``REJECT`` look after the '-' anchor, and the scrubber's
own steps (one alternative per prefix rather than per rule and width, the direct union search
of short ASCII texts, ``Pass.quick``, a pass going on from its first match, ``_apply``'s
single loop) as the code they replaced. Random texts with a
planted secret of every catalogue kind (its true positives, the pii group switched on), in
every casing, inside filler built to reach the fast paths (dash runs, '>' and '</', flags,
keywords, backslashes, non-ASCII, texts over and under the union's length) must come out the
same from both, with the same counts.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter
from collections.abc import Iterable

import pytest

from agent.core.privacy import passes as passes_mod
from agent.core.privacy.passes import UNION_MAX, Pass
from agent.core.privacy.scrubber import CATALOGUE, Scrubber, Span
from tests.test_secret_catalogue import CASES

# The rules as they were written before they were rewritten for speed.
_XML_LOOK = "(?=[^>]{0,100}+>)"
_KEY_CLASS = r"(?<=[_\-iest]key)"
_PLAIN_FORMS = {
    "docker_auth": r'(?<="auth":)[ \t]*+\\?+"([A-Za-z0-9+/]{12,}+={0,2}+)\\?+"',
    "pgpass_password": r"(?<=[A-Za-z0-9*\]]:)(?:[0-9]{1,5}+|\*):[^:\s]{1,128}+:[^:\s]{1,128}+:"
    r"((?:[^\s:\\]|\\:)(?:[^\r\n:\\]|\\:){0,255}+)(?=\r?\n|\\[nr]|$)",
}


def _plain(rule: object) -> object:
    regex = _PLAIN_FORMS.get(rule.name, rule.regex)  # type: ignore[attr-defined]
    regex = regex.replace(_XML_LOOK, "").replace(_KEY_CLASS, "")
    return dataclasses.replace(rule, regex=regex)  # type: ignore[type-var]


def _token_alternative_plain(anchor, rules, add):  # type: ignore[no-untyped-def]
    """passes._token_alternative as it was: one alternative (and closing group) per prefix."""
    by_width: dict[int, list] = {}
    for prio, r in rules:
        for p in r.prefixes:
            by_width.setdefault(len(p), []).append((p, prio, r))
    if not by_width:
        return []
    groups = []
    for width in sorted(by_width):
        entries = by_width[width]
        look = "(?<=" + "|".join(re.escape(p) for p, _, _ in entries) + ")"
        inner = "|".join(
            add(
                f"(?<={re.escape(p)}){passes_mod._left_boundary(p)}{r.regex}",
                prio,
                len(p) - len(anchor),
            )
            for p, prio, r in entries
        )
        groups.append(f"{look}(?:{inner})")
    return [passes_mod._GATE + "(?:" + "|".join(groups) + ")"]


class _Reference(Scrubber):
    """The scrubber's steps as they were before the fast paths."""

    def _run(self, p: Pass, subject: str, text: str, out: list[Span]) -> None:
        rx = p.rx
        if p.lowercase and subject is text and p.rx_ci is not None:
            rx = p.rx_ci
        elif (
            len(subject) <= passes_mod.PRECHECK_MAX
            and p.needles
            and not any(n in subject for n in p.needles)
        ):
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
        self._take_all(rx.finditer(subject, first.start()), p, text, out)

    def _run_union(self, u: Pass, subject: str, text: str, out: list[Span]) -> None:
        found = []
        m = u.rx.search(subject)
        while m is not None:
            found.append(m)
            m = u.rx.search(subject, m.start() + 1)
        self._take_all(found, u, text, out)

    @staticmethod
    def _take_all(found: Iterable[re.Match[str]], p: Pass, text: str, out: list[Span]) -> None:
        for m in found:
            prio, back, vgroups, special, marker = p.table[m.lastindex]  # type: ignore[index]
            if vgroups:
                spans = [m.span(g) for g in vgroups if m.span(g)[0] >= 0]
                if not spans:
                    continue
                s, e = spans[0]
            else:
                s, e = m.start() - back, m.end()
            if special is not None:
                if special.left is not None:
                    left = special.left(text, m.start())
                    if left is None:
                        continue
                    s = left
                if s >= e or (special.check is not None and not special.check(text[s:e])):
                    continue
                if special.marker is not None:
                    marker = special.marker(text[s:e])
            if s < e:
                out.append((s, prio, e, marker))

    def _apply(self, text: str, spans: list[Span], counts: Counter[str] | None) -> str:
        spans.sort()
        out: list[str] = []
        pos = 0
        hits: Counter[str] = Counter()
        cur_s, cur_p, cur_e, cur_m = spans[0]
        for s, p, e, m in spans[1:]:
            if s < cur_e:
                cur_e = max(cur_e, e)
                continue
            out += [text[pos:cur_s], cur_m]
            hits[self._names[cur_p]] += 1
            pos = cur_e
            cur_s, cur_p, cur_e, cur_m = s, p, e, m
        out += [text[pos:cur_s], cur_m, text[cur_e:]]
        hits[self._names[cur_p]] += 1
        if counts is not None:
            counts.update(hits)
        return "".join(out)


@pytest.fixture(scope="module")
def pair() -> tuple[Scrubber, Scrubber]:
    fast = Scrubber(enabled=["pii"], known=None)
    saved = (passes_mod.CATALOGUE, dict(passes_mod.REJECT), dict(passes_mod._PASS_CACHE))
    merged = passes_mod._token_alternative
    try:
        passes_mod.CATALOGUE = tuple(_plain(r) for r in CATALOGUE)  # type: ignore[misc]
        passes_mod._token_alternative = _token_alternative_plain  # type: ignore[assignment]
        passes_mod.REJECT.clear()
        passes_mod._PASS_CACHE.clear()
        ref = _Reference(enabled=["pii"], known=None)
        ref._quick = None
    finally:
        passes_mod.CATALOGUE = saved[0]  # type: ignore[misc]
        passes_mod._token_alternative = merged  # type: ignore[assignment]
        passes_mod.REJECT.update(saved[1])
        passes_mod._PASS_CACHE.clear()
        passes_mod._PASS_CACHE.update(saved[2])
    # The reference really runs the plain forms (else this test compares a thing with itself).
    ref_sources = "".join(p.rx.pattern for p in ref._passes)
    fast_sources = "".join(p.rx.pattern for p in fast._passes)
    assert _XML_LOOK in fast_sources and _XML_LOOK not in ref_sources
    assert _KEY_CLASS in fast_sources and _KEY_CLASS not in ref_sources
    assert r"\-(?!--)" in fast_sources and r"\-(?!--)" not in ref_sources
    assert fast._quick is not None
    pairs = zip(fast._passes, ref._passes, strict=True)
    dash = [(f.rx.groups, r.rx.groups) for f, r in pairs if f.anchor == "-"]
    assert dash and dash[0][0] < dash[0][1]  # Slack's prefixes: one alternative, not eight
    return fast, ref


_FILLER = [
    "the model trains on the dataset ",
    "tokenizer max_tokens keyboard monkey passage ",
    "-----",
    "---- ",
    "-- ",
    "-u a:",
    "--password ",
    "--user ",
    "pwd ",
    "password >",
    "<password>",
    "</password>",
    '<db_password type="x">',
    "cookie: ",
    "token: ",
    '"auth": ',
    "host:5432:db:user:",
    "*:*:",
    ":",
    "\n",
    "\\n",
    '\\"',
    "\\u0041",
    "é",
    "\u200b",
    ">",
    "<",
    "=",
    " ",
    "AKIA",
    "eyJ",
    "mysql -u x ",
    "BEGIN ",
]


def _case(rng: random.Random, text: str) -> str:
    return rng.choice([text, text.upper(), text.lower(), text.swapcase(), text.title()])


def _texts() -> list[str]:
    rng = random.Random(20261130)
    secrets = [t for positives, _ in CASES.values() for t, _ in positives]
    out = []
    for i in range(700):
        parts = []
        target = rng.choice([200, 1500, UNION_MAX, 6000])
        while sum(map(len, parts)) < target:
            if rng.random() < 0.15:
                parts.append(_case(rng, rng.choice(secrets)))
            else:
                parts.append(rng.choice(_FILLER) * rng.choice([1, 1, 2, 5, 40]))
        text = "".join(parts)
        if i % 3 == 0:  # just over / under the union's length
            text = text[: rng.choice([UNION_MAX, UNION_MAX + 1, len(text)])]
        out.append(text)
    # The rewritten rules at their edges: every port width of a .pgpass line, each spacing and
    # escaping of docker's "auth", element forms with attribute runs around the 100-character
    # bound, and every name of the key family beside look-alikes.
    pw = "s3cr3t-Pa55word"
    for port in ("5", "54", "543", "5432", "54321", "543210", "*", "*5", "5*", "a"):
        for end in ("\n", "\\n", "", " x\n"):
            for head in ("db.example.com", "*", "h]", "x y"):
                out.append(f"{head}:{port}:mydb:alice:{pw}{end}")
    b64 = "QUJDREVGR0hJSktMTU5PUA=="
    for sep in ('"auth":"', '"auth": "', '"auth":\t"', '"auth": \\"', '"auth":\\"', '"auth":x"'):
        out += [f'{{{sep}{b64}"}}', f'{sep}{b64}\\"']
    for n in (0, 1, 50, 98, 99, 100, 101, 102, 150):
        attrs = ("a" * n)[:n]
        for name in ("password", "db_pwd", "api_key", "secret", "Token"):
            out += [f"<{name} {attrs}>v4lue</{name}>", f"{name} {attrs}>v4lue</x>"]
            out += [f"{name} {attrs}>v4lue", f"{name} {attrs}<>v4lue</x>"]
    for name in (
        "api_key",
        "api-key",
        "apikey",
        "privatekey",
        "private_key",
        "accountkey",
        "access-key",
        "secret_key",
        "client_key",
        "signing-key",
        "master_key",
        "encryption_key",
        "monkey",
        "turkey",
        "keyboard",
        "hotkey",
        "AccountKey",
    ):
        for sep in ("=", ": ", " = ", '": "'):
            out.append(f"{name}{sep}Zx9{pw}")
    # Every secret alone, and in dashes and flags, in each casing.
    for s in secrets:
        for wrap in ("{}", "---{}---", "--{} ", "<password>{}</password>", "x: {}\n"):
            out.append(wrap.format(s))
            out.append(_case(rng, wrap.format(s)))
    return out


def test_fast_paths_find_what_the_plain_paths_find(pair: tuple[Scrubber, Scrubber]) -> None:
    fast, ref = pair
    texts = _texts()
    assert any(t.isascii() and "\\" not in t and len(t) <= UNION_MAX for t in texts)
    assert any(len(t) > UNION_MAX for t in texts) and any(not t.isascii() for t in texts)
    redacted = 0
    for text in texts:
        assert sorted(fast.spans(text)) == sorted(ref.spans(text)), text
        got, got_counts = fast.scrub_text(text)
        want, want_counts = ref.scrub_text(text)
        assert got == want and got_counts == want_counts, text
        assert fast.scrub_into(text, None) == want  # the uncounted loop of _apply too
        redacted += got != text
    assert redacted > len(texts) // 2  # the samples do hold secrets


def test_overlapping_spans_merge_as_before(pair: tuple[Scrubber, Scrubber]) -> None:
    # Overlaps are rare in real text: random span lists, most of them overlapping.
    fast, ref = pair
    rng = random.Random(7)
    text = "".join(rng.choice("abcdef ") for _ in range(300))
    for _ in range(2000):
        spans = []
        for _ in range(rng.randint(1, 12)):
            s = rng.randrange(0, 300)
            e = min(300, s + rng.choice([0, 1, 5, 30, 120]))
            p = rng.randrange(0, len(fast._names))
            spans.append((s, p, e, f"[M{p}]"))
        c1: Counter[str] = Counter()
        c2: Counter[str] = Counter()
        assert fast._apply(text, list(spans), c1) == ref._apply(text, list(spans), c2)
        assert c1 == c2
        assert fast._apply(text, list(spans), None) == ref._apply(text, list(spans), None)


def test_dash_runs_are_turned_away_only_where_no_dash_rule_can_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # REJECT's claim: the '-' pass as it is without the look (the token rules behind their gate,
    # the flags, the PuTTY header) matches nowhere an anchor is followed by two more dashes,
    # whatever comes before or after.
    rules = [(i, r) for i, r in enumerate(CATALOGUE) if r.anchor == "-"]
    monkeypatch.setattr(passes_mod, "REJECT", {})
    rx = passes_mod._compile_pass("-", False, rules).rx
    assert not rx.pattern.startswith(r"\-(?!--)")
    rng = random.Random(3)
    tails = ["-", "--", "-a", "-password x", "-user a:b", "u a:b", "p x", "x" * 40, "A" * 60]
    heads = ["", "sshpass ", "PuTTY-User-Key-File", "a", "\\n", " "]
    heads += [p[:-1] for _, r in rules for p in r.prefixes]
    for _ in range(3000):
        head = rng.choice(heads)
        text = head + "---" + rng.choice(tails) + rng.choice(tails)
        assert rx.match(text, len(head)) is None, text
