"""Named secret patterns, shared by the HF Dataset pipeline and LangFuse forwarding.

``scrub(text)`` replaces every match of a named pattern by ``[REDACTED:<name>]``; the marker
never echoes the secret. Patterns are linear-time (no nested quantifiers). A ``Scrubber`` can
switch built-in patterns off and add its own.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SecretPattern:
    name: str
    regex: re.Pattern[str]
    # Group whose span is replaced (0: the whole match). Lets `NAME=value` keep the name.
    group: int = 0


def _p(name: str, pattern: str, group: int = 0, flags: int = 0) -> SecretPattern:
    return SecretPattern(name, re.compile(pattern, flags), group)


DEFAULT_PATTERNS: tuple[SecretPattern, ...] = (
    _p(
        "pem_private_key",
        r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----[\s\S]{0,20000}?-----END [A-Z ]{0,40}PRIVATE KEY-----",
    ),
    _p("hf_token", r"\bhf_[A-Za-z0-9]{30,}"),
    _p("anthropic_key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
    _p("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    _p("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    _p("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    _p("bearer_token", r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{16,}=*)", group=1),
    _p(
        "secret_assignment",
        r"(?i)\b[A-Z0-9_]{0,40}(?:SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|APIKEY|PRIVATE_KEY|ACCESS_KEY)[A-Z0-9_]{0,40}\s{0,3}[=:]\s{0,3}[\"']?([^\s\"',;]{4,})",
        group=1,
    ),
)


class Scrubber:
    """Applies a set of named patterns. Precomputes in ``__init__`` so calls are cheap."""

    def __init__(
        self,
        patterns: Iterable[SecretPattern] = DEFAULT_PATTERNS,
        *,
        disabled: Iterable[str] = (),
        extra: Iterable[SecretPattern] = (),
    ) -> None:
        off = set(disabled)
        known = {p.name for p in patterns} | {p.name for p in extra}
        unknown = off - known
        if unknown:
            raise ValueError(f"unknown secret pattern(s): {', '.join(sorted(unknown))}")
        self.patterns: tuple[SecretPattern, ...] = tuple(
            p for p in (*patterns, *extra) if p.name not in off
        )

    def scrub_text(self, text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()
        for pat in self.patterns:
            marker = f"[REDACTED:{pat.name}]"
            if pat.group == 0:
                text, n = pat.regex.subn(marker, text)
            else:
                n = 0

                def _sub(m: re.Match[str], _g: int = pat.group, _mk: str = marker) -> str:
                    nonlocal n
                    n += 1
                    s, e = m.span(_g)
                    base = m.start()
                    whole = m.group(0)
                    return whole[: s - base] + _mk + whole[e - base :]

                text = pat.regex.sub(_sub, text)
            if n:
                counts[pat.name] += n
        return text, counts

    def scrub_obj(self, obj: Any) -> tuple[Any, Counter[str]]:
        """A scrubbed copy of a JSON-like value (dicts, lists, strings); never mutates ``obj``."""
        counts: Counter[str] = Counter()

        def walk(v: Any) -> Any:
            if isinstance(v, str):
                out, c = self.scrub_text(v)
                counts.update(c)
                return out
            if isinstance(v, Mapping):
                return {k: walk(x) for k, x in v.items()}
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
