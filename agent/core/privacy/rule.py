"""What a secret pattern is: the catalogue's ``Rule`` and the operator's own ``SecretPattern``.

Both are plain frozen data; ``agent.core.privacy.passes`` compiles them into the regexes the
scrubber runs.

How a ``Rule`` is written (and why):

- ``anchor`` is a literal every match starts at. Anchors are short and rare (``_``, ``-``, ``.``,
  ``:``, ``A``, ``y`` ... on the text; ``k``, ``c``, ``p``, ``b``, ``z``, ``=`` on the lowered
  text) so ``re`` finds candidates with its fast literal scan. A token's own prefix usually sits
  *before* its anchor (``hf`` in ``hf_...``): the rule checks it with a fixed-width lookbehind
  right after the anchor, and ``back`` says how many characters before the anchor belong to the
  secret (``2`` for ``hf``), so the marker covers the whole token.
- ``regex`` is what follows the anchor. It has no capture group (the whole match, extended by
  ``back``, is the secret) or capture groups marking the value to replace (``NAME=value`` keeps
  the name); the first group that took part in the match is replaced.
- Linear time: alternatives never overlap, repetitions are possessive (``*+``, ``++``,
  ``{m,n}+``) or bounded, so a failed attempt never backtracks, and every attempt's work is
  bounded by what it consumes. ``bench/redaction.py`` times adversarial inputs for each anchor.
- ``lowercase`` rules run on ``text.lower()`` (write them in lowercase): case-insensitive at the
  cost of one ``lower()`` per string, shared by every lowercase pass.
- ``default=False`` rules (the ``pii`` group) run only when switched on (``patterns.on=pii``).
- ``check`` rejects a match (Luhn for card numbers, the IBAN checksum); ``left`` moves the start
  of a match leftwards past a part no lookbehind can see (an e-mail's local part, a ``data:``
  URL's media type); ``marker`` builds a marker from the match (inline media).

Within a pass, alternatives are tried in order at each anchor: list the specific before the
generic. Across passes, when matches overlap the earliest wins, and at the same start the rule
listed first in the catalogue.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BODY", "WORD", "Rule", "SecretPattern", "token"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of secret. See the module docstring for how the fields are used."""

    name: str
    group: str
    anchor: str
    regex: str
    # Literal prefixes ending with the anchor (``hf_``): the rule is ``(?<=P)`` plus a left
    # boundary plus ``regex`` (the body), one alternative per prefix; ``back`` is implied.
    prefixes: tuple[str, ...] = ()
    back: int = 0
    lowercase: bool = False
    default: bool = True
    description: str = ""
    check: Callable[[str], bool] | None = None
    left: Callable[[str, int], int | None] | None = None
    marker: Callable[[str], str] | None = None
    # Substrings one of which every match contains (in the text the rule runs on): a short
    # string holding none of them skips the pass without a regex call.
    keywords: tuple[str, ...] = ()


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


BODY = "A-Za-z0-9"  # token body characters (inside a character class)
WORD = r"[A-Za-z0-9_\-]"  # token body characters, with '_' and '-'


def token(name: str, group: str, prefixes: str, anchor: str, body: str, desc: str = "") -> Rule:
    """A token ``<prefix><body>`` found at the last ``anchor`` of its prefix (space-separated
    prefixes share the body)."""
    ps = tuple(prefixes.split())
    if not all(p.endswith(anchor) for p in ps):
        raise ValueError(f"rule {name}: every prefix must end with its anchor {anchor!r}: {ps}")
    return Rule(name, group, anchor, body, prefixes=ps, description=desc or " / ".join(ps))
