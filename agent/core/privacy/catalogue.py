"""The secret catalogue: every kind of credential the scrubber knows, as plain data.

Each ``Rule`` (``agent.core.privacy.rule``) is one kind (its ``name`` is the marker
``[REDACTED:<name>]``) in one ``group``: token rules (``tokens``: a vendor prefix and a body)
and form rules (``forms``: private key blocks, URLs, command lines, headers, config files,
inline media, opt-in PII). Rules are not run one by one: ``agent.core.privacy.passes`` merges
all rules that share an ``anchor`` into one regex (one *pass* over the text), because a pass
costs about the same whatever it holds, and a catalogue of one pass per kind would be far too
slow (see ``bench/``).

Order matters: when matches of two kinds start at the same place, the kind listed first wins
(its marker is the one written). Private keys come first (a key block holds token-like text),
then the tokens, then the forms.
"""

from __future__ import annotations

import re

from agent.core.privacy.forms import FORM_RULES, PRIVATE_KEY_RULES
from agent.core.privacy.rule import Rule
from agent.core.privacy.tokens import TOKEN_RULES

__all__ = ["CATALOGUE", "DEFAULT_PATTERNS", "GROUPS", "SECRET_KEY_RE", "Rule", "pattern_names"]


# -- the catalogue ------------------------------------------------------------------------------

GROUPS: dict[str, str] = {
    "private_key": "private keys of every PEM / OpenSSH / PGP / SSH2 / PuTTY flavour",
    "llm": "LLM and AI providers",
    "cloud": "cloud providers",
    "vcs": "source hosting and CI",
    "chat": "chat and collaboration",
    "payment": "payments",
    "registry": "package and container registries",
    "observability": "observability and secrets vendors",
    "saas": "other SaaS APIs",
    "token": "generic token formats (JWT)",
    "url": "URL userinfo, connection strings and webhooks",
    "header": "HTTP headers (Authorization, Cookie, X-Api-Key ...)",
    "cli": "command-line forms (-p, -u user:pw, --password ...)",
    "config": "config forms: NAME=value in INI/YAML/TOML/.env/XML/JSON, .netrc, .pgpass",
    "media": "inline media (base64 data: URLs)",
    "pii": "personal data (off by default): e-mail, phone, payment card, IBAN, IP addresses",
}

CATALOGUE: tuple[Rule, ...] = (*PRIVATE_KEY_RULES, *TOKEN_RULES, *FORM_RULES)

# The built-in kinds that are on by default (kept under this name for callers of the past).
DEFAULT_PATTERNS: tuple[Rule, ...] = tuple(r for r in CATALOGUE if r.default)


def pattern_names(*, default_only: bool = False) -> tuple[str, ...]:
    """Every kind of the catalogue, in catalogue order (each once)."""
    rules = DEFAULT_PATTERNS if default_only else CATALOGUE
    return tuple(dict.fromkeys(r.name for r in rules))


# A dict key whose string value is a secret as a whole (``{"api_key": "..."}``): the walker
# replaces such a value whole, whatever it looks like. Matched on the lowered key.
SECRET_KEY_RE: re.Pattern[str] = re.compile(
    r"[a-z0-9_.\-]{0,60}(?:secret|token(?!s|iz)|pass(?:w(?:or)?d|phrase)|pwd"
    r"|key(?:(?<=api[_\-]key)|(?<=apikey)|(?<=private[_\-]key)|(?<=privatekey)"
    r"|(?<=access[_\-]key)|(?<=accesskey)|(?<=account[_\-]key)|(?<=accountkey))"
    r"|authorization|cookie|credentials?|signature|(?<![a-z])auth(?![a-z]))[a-z0-9_.\-]{0,60}"
)
