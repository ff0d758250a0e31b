"""The secret catalogue: every kind of credential the scrubber knows, as plain data.

Each ``Rule`` is one kind (its ``name`` is the marker ``[REDACTED:<name>]``) in one ``group``.
Rules are not run one by one: ``agent.core.redact`` merges all rules that share an ``anchor``
into one regex (one *pass* over the text), because a pass costs about the same whatever it
holds, and a catalogue of one pass per kind would be far too slow (see ``bench/``).

How a rule is written (and why):

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
listed first here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CATALOGUE", "GROUPS", "Rule"]


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


# -- building blocks ----------------------------------------------------------------------------

_B = "A-Za-z0-9"  # token body characters


def _tok(name: str, group: str, prefixes: str, anchor: str, body: str, desc: str = "") -> Rule:
    """A token ``<prefix><body>`` found at the last ``anchor`` of its prefix (space-separated
    prefixes share the body)."""
    ps = tuple(prefixes.split())
    assert all(p.endswith(anchor) for p in ps), (name, ps)
    return Rule(name, group, anchor, body, prefixes=ps, description=desc or " / ".join(ps))


# `NAME = value` after a secret-looking keyword, on lowered text. The keyword regexes match from
# the keyword on (only the value is replaced). A quoted value runs to its closing quote (a
# password with spaces goes whole); one opened by an escaped quote (JSON inside a JSON string,
# as in tool-call arguments) runs to the next escaped quote; an unquoted one runs up to
# whitespace, a quote, a comma or a semicolon (for the password family: to the end of the line,
# as a passphrase has spaces). Any whitespace may surround the separator (aligned INI files,
# `kubectl describe` output). XML elements (`<password>x</password>`) count too.
# `(?!\[redacted:)` keeps scrub(scrub(x)) == scrub(x); `(?!=)` skips comparisons (`token == x`).
_NAME_TAIL = r"[a-z0-9_.\-]{0,40}+"
_QUOTE = r"""(?:\\?["'])?+"""
_QUOTED = (
    r"""(?<=\\")(?:[^"\\\n]++|\\[^"])++(?=\\")"""  # \"value\"
    r"""|(?<=")(?:[^"\\\n]++|\\.)++(?=")"""  # "value"
    r"""|(?<=')(?:[^'\\\n]++|\\.)++(?=')"""  # 'value'
)
# Unquoted: a backslash only when it does not escape a quote (the value of `\"token=x\"` must
# not swallow the escape of the closing quote, or the JSON around it would break).
_BARE = r"""(?:[^\s"',;\\]++|\\(?!["'\\]))++"""
_LINE = r"""(?:[^"'\r\n;&<\\]++|\\(?![nr"'\\]))++"""
_XML = r"(?:\s[^<>\n]{0,100}+)?+>(?!\[redacted:)([^<\n]++)(?=</)"


# Whitespace, also as a JSON escape (`password\\t=\\tx` inside tool-call arguments).
_WS = r"(?:\s|\\[tnr])*+"


def _assign(value: str) -> str:
    return (
        rf"{_NAME_TAIL}(?:{_QUOTE}{_WS}[=:]{_WS}{_QUOTE}(?!\[redacted:)(?!=)({_QUOTED}|{value})"
        rf"|{_XML})"
    )


_ASSIGN = _assign(_BARE)
_ASSIGN_LINE = _assign(_LINE)

# Header values run to the end of the line (or a closing quote), the scheme word kept.
_HEADER_SEP = r"""\\?+["']?+(?:[ \t]|\\t)*+[:=](?:[ \t]|\\t)*+\\?+["']?+"""
_HEADER_VALUE = r"""(?!\[redacted:)((?:[^"'\r\n\\]++|\\(?![nr"'\\]))++)"""

_PEM_NAME = r"[A-Z ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_SCHEMES = r"(?:basic|token|digest|bearer|negotiate|ntlm|apikey|sso-key|aws4-hmac-sha256|key)"


# -- media and PII helpers ----------------------------------------------------------------------


def _data_url_start(text: str, start: int) -> int | None:
    """Start of the ``data:<type>`` that precedes ``;base64,`` at ``start`` (None: not one)."""
    i = text.rfind("data:", max(0, start - 128), start)
    if i < 0 or not re.fullmatch(r"[A-Za-z0-9.+\-]+/[A-Za-z0-9.+\-]+", text[i + 5 : start]):
        return None
    return i


def _media_marker(match: str) -> str:
    from agent.core.media import data_url_marker

    return data_url_marker(match)


def _email_start(text: str, start: int) -> int | None:
    i = start
    lo = max(0, start - 64)
    while i > lo and (text[i - 1].isalnum() or text[i - 1] in "._%+-"):
        i -= 1
    return i if i < start else None


def _luhn(match: str) -> bool:
    digits = [int(c) for c in match if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban(match: str) -> bool:
    s = match.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


def _ipv4(match: str) -> bool:
    return all(int(x) <= 255 for x in match.split("."))


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

_CLI_VALUE = r"""('[^'\n]*+'|"[^"\n]*+"|[^\s'"]++)"""
_W = r"[A-Za-z0-9_\-]"

CATALOGUE: tuple[Rule, ...] = (
    # -- private keys ('-' pass) --
    Rule(
        "pem_private_key",
        "private_key",
        "BEGIN ",
        # The whole block. Without an END line (a truncated key) everything after BEGIN goes: a
        # partial key must not leak. The body stops where "-----END " starts; dash runs are
        # taken whole where no END line can start inside them, so dash-heavy bodies stay fast.
        rf"(?<=-----BEGIN ){_PEM_NAME}(?:[^-]++|-{{1,4}}+(?!-)|-++(?!END )|-+(?=-----END ))*+"
        rf"(?:-----END {_PEM_NAME})?",
        back=5,
        description="-----BEGIN … PRIVATE KEY----- blocks (RSA, EC, DSA, OPENSSH, PGP, PKCS8, "
        "ENCRYPTED), truncated ones included",
    ),
    Rule(
        "ssh2_private_key",
        "private_key",
        "BEGIN ",
        r"SSH2 (?<=---- BEGIN SSH2 )(?:ENCRYPTED )?PRIVATE KEY ----(?:[^-]++|-(?!--- END SSH2))*+"
        r"(?:---- END SSH2 (?:ENCRYPTED )?PRIVATE KEY ----)?",
        back=5,
        description="---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ---- blocks",
    ),
    Rule(
        "putty_private_key",
        "private_key",
        "-",
        r"User-Key-File-(?<=PuTTY-User-Key-File-)[0-9]++:[^\n]*+"
        r"(?:\n(?!Private-MAC:)[^\n]*+)*+(?:\nPrivate-MAC:[^\n]*+)?",
        back=5,
        description="PuTTY-User-Key-File-2/3 .ppk keys, header to Private-MAC",
    ),
    # -- LLM providers --
    _tok("anthropic_key", "llm", "sk-ant-", "-", rf"{_W}{{20,}}+", "Anthropic sk-ant-"),
    _tok("langfuse_secret_key", "llm", "sk-lf-", "-", rf"{_W}{{8,}}+", "LangFuse sk-lf-"),
    Rule(
        "openai_key",
        "llm",
        "-",
        # A body that opens like a more specific kind is left to it (unless it could not be).
        rf"(?!ant-[A-Za-z0-9_]|lf-[A-Za-z0-9_]){_W}{{20,}}+",
        prefixes=("sk-",),
        description="OpenAI sk- / sk-proj- / sk-svcacct- / sk-admin- keys (also OpenRouter "
        "sk-or-v1-, DeepSeek sk-)",
    ),
    _tok("hf_token", "llm", "hf_", "_", rf"[{_B}]{{30,}}+", "Hugging Face hf_"),
    _tok("hf_token", "llm", "api_org_", "_", rf"[{_B}]{{30,}}+", "Hugging Face api_org_"),
    _tok("groq_key", "llm", "gsk_", "_", rf"[{_B}]{{48,}}+", "Groq gsk_"),
    _tok("replicate_token", "llm", "r8_", "_", rf"[{_B}]{{30,}}+", "Replicate r8_"),
    _tok("perplexity_key", "llm", "pplx-", "-", rf"[{_B}]{{40,}}+", "Perplexity pplx-"),
    _tok("xai_key", "llm", "xai-", "-", rf"[{_B}]{{40,}}+", "xAI xai-"),
    # -- cloud --
    Rule(
        "aws_secret_access_key",
        "cloud",
        "A",
        # A credentials CSV row: the key id and, after it, the 40-character secret key.
        r"(?:KIA|SIA)(?:(?<![A-Za-z0-9]A[KS]IA)|(?<=\\[nrtbf]A[KS]IA))[A-Z0-9]{16}[,;|\t ]{1,3}+[A-Za-z0-9/+]{40}"
        r"(?![A-Za-z0-9/+])",
        description="an access key id followed by its 40-character secret key (credentials CSV)",
    ),
    Rule(
        "aws_access_key_id",
        "cloud",
        "A",
        r"(?:KIA|SIA|BIA|CCA)(?:(?<![A-Za-z0-9]A(?:KIA|SIA|BIA|CCA))|(?<=\\[nrtbf]A(?:KIA|SIA|BIA|CCA)))[A-Z0-9]{16}",
        description="AWS AKIA / ASIA / ABIA / ACCA access key ids",
    ),
    Rule(
        "google_api_key",
        "cloud",
        "A",
        r"Iza(?:(?<![A-Za-z0-9]AIza)|(?<=\\[nrtbf]AIza))[0-9A-Za-z_\-]{35}",
        description="Google AIza API keys",
    ),
    _tok("google_oauth_secret", "cloud", "GOCSPX-", "-", rf"{_W}{{28}}", "Google GOCSPX-"),
    _tok("google_oauth_token", "cloud", "ya29.", ".", rf"{_W}{{30,}}+", "Google ya29."),
    Rule(
        "azure_ad_client_secret",
        "cloud",
        "Q~",
        r"(?<=[A-Za-z0-9_~.]{3}[0-9]Q~)[A-Za-z0-9_~.\-]{31,34}+",
        back=4,
        description="Azure AD / Entra client secrets (…8Q~…)",
    ),
    Rule(
        "azure_sas_signature",
        "cloud",
        "=",
        r"(?:(?<=[?&;\s]sig=)|(?<=signature=))(?!\[redacted:)([a-z0-9%+/=_\-]{16,}+)",
        lowercase=True,
        keywords=("sig=", "signature="),
        description="sig= / signature= of Azure SAS and presigned URLs (X-Amz-Signature ...)",
    ),
    _tok("digitalocean_token", "cloud", "dop_v1_ doo_v1_ dor_v1_", "_", r"[a-f0-9]{64}"),
    # -- VCS and CI --
    _tok("github_token", "vcs", "ghp_ gho_ ghu_ ghs_ ghr_", "_", rf"[{_B}]{{36,}}+"),
    _tok("github_token", "vcs", "github_pat_", "_", rf"[{_B}_]{{22,}}+"),
    _tok("gitlab_token", "vcs", "glpat- glptt- glcbt- glimt-", "-", rf"{_W}{{20,}}+"),
    _tok("gitlab_token", "vcs", "gldt- glrt- glft-", "-", rf"{_W}{{20,}}+"),
    _tok("gitlab_token", "vcs", "glsoat- glffct-", "-", rf"{_W}{{20,}}+"),
    Rule(
        "atlassian_token",
        "vcs",
        "A",
        r"TATT(?:(?<![A-Za-z0-9]ATATT)|(?<=\\[nrtbf]ATATT))[A-Za-z0-9_\-=]{180,}+",
        description="Atlassian ATATT API tokens",
    ),
    Rule(
        "terraform_token",
        "vcs",
        ".",
        r"atlasv1\.(?<=[A-Za-z0-9]{14}\.atlasv1\.)[A-Za-z0-9_\-=]{60,}+",
        back=14,
        description="Terraform Cloud <14>.atlasv1.<60+> tokens",
    ),
    _tok("pulumi_token", "vcs", "pul-", "-", r"[a-f0-9]{40}", "Pulumi pul-"),
    # -- chat --
    _tok(
        "slack_token",
        "chat",
        "xoxb- xoxp- xoxa- xoxo- xoxs- xoxr- xoxe- xapp-",
        "-",
        rf"[{_B}\-]{{10,}}+",
    ),
    Rule(
        "slack_webhook",
        "chat",
        ":",
        r"[/\\](?:(?<=/)/|(?<=\\)/\\/)hooks\.slack\.com\\?/(?:services|workflows|triggers)/([A-Za-z0-9+/_\-]{20,}+)",
        description="hooks.slack.com webhook URLs (the secret path)",
    ),
    Rule(
        "discord_webhook",
        "chat",
        ":",
        r"[/\\](?:(?<=/)/|(?<=\\)/\\/)(?:ptb\.|canary\.)?discord(?:app)?\.com\\?/api\\?/webhooks\\?/[0-9]{5,30}+\\?/"
        r"([A-Za-z0-9_\-]{40,}+)",
        description="Discord webhook URLs (the token)",
    ),
    Rule(
        "telegram_bot_token",
        "chat",
        ":",
        r"AA(?<=[0-9]{5}:AA)[A-Za-z0-9_\-]{33,}+",
        back=-1,  # the match starts at the colon, which stays
        description="Telegram bot tokens (the part after the bot id)",
    ),
    Rule(
        "discord_bot_token",
        "chat",
        ".",
        r"(?<=[MNO][A-Za-z0-9_\-]{23}\.)[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,}+",
        back=24,
        description="Discord bot tokens",
    ),
    # -- payments --
    _tok(
        "stripe_key",
        "payment",
        "sk_live_ rk_live_ sk_test_ rk_test_ sk_prod_ rk_prod_",
        "_",
        rf"[{_B}]{{10,}}+",
    ),
    _tok("stripe_key", "payment", "whsec_", "_", rf"[{_B}]{{24,}}+", "Stripe whsec_"),
    _tok("square_token", "payment", "sq0atp- sq0csp-", "-", rf"{_W}{{22,}}+"),
    # -- registries --
    _tok("npm_token", "registry", "npm_", "_", rf"[{_B}]{{36,}}+", "npm npm_"),
    _tok(
        "pypi_token",
        "registry",
        "pypi-",
        "-",
        rf"AgEIcHlwaS5vcmc{_W}{{50,}}+",
        "PyPI pypi-AgEIcHlwaS5vcmc…",
    ),
    _tok("docker_token", "registry", "dckr_pat_", "_", rf"{_W}{{27,}}+", "Docker dckr_pat_"),
    # -- observability and secrets vendors --
    _tok("grafana_token", "observability", "glc_", "_", r"[A-Za-z0-9+/]{32,}+={0,2}+"),
    _tok("grafana_token", "observability", "glsa_", "_", r"[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}"),
    _tok("newrelic_key", "observability", "NRAK- NRII-", "-", r"[A-Za-z0-9_\-]{27,}+"),
    _tok("sentry_token", "observability", "sntrys_ sntryu_", "_", r"[A-Za-z0-9+/=_\-]{40,}+"),
    _tok("vault_token", "observability", "hvs. hvb.", ".", rf"{_W}{{24,}}+", "Vault hvs./hvb."),
    _tok(
        "doppler_token",
        "observability",
        "dp.pt. dp.st. dp.ct. dp.sa.",
        ".",
        rf"[{_B}]{{40,}}+",
        "Doppler dp.pt./dp.st./dp.ct./dp.sa.",
    ),
    _tok("onepassword_token", "observability", "ops_", "_", r"eyJ[A-Za-z0-9+/]{100,}+={0,3}+"),
    Rule(
        "age_secret_key",
        "observability",
        "A",
        r"GE-SECRET-KEY-1(?:(?<![A-Za-z0-9]AGE-SECRET-KEY-1)|(?<=\\[nrtbf]AGE-SECRET-KEY-1))[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
        description="age encryption secret keys",
    ),
    # -- other SaaS --
    _tok("sendgrid_key", "saas", "SG.", ".", rf"{_W}{{22}}\.{_W}{{43}}", "SendGrid SG."),
    _tok("mailgun_key", "saas", "key-", "-", r"[0-9a-f]{32}(?![A-Za-z0-9])", "Mailgun key-"),
    _tok("shopify_token", "saas", "shpat_ shpss_ shpca_ shppa_", "_", r"[a-fA-F0-9]{32}"),
    _tok("linear_key", "saas", "lin_api_", "_", rf"[{_B}]{{40}}", "Linear lin_api_"),
    _tok("notion_token", "saas", "ntn_", "_", rf"[{_B}]{{40,}}+", "Notion ntn_"),
    _tok("notion_token", "saas", "secret_", "_", rf"[{_B}]{{43}}(?![{_B}])", "Notion secret_"),
    _tok("figma_token", "saas", "figd_", "_", rf"{_W}{{40,}}+", "Figma figd_"),
    _tok("postman_key", "saas", "PMAK-", "-", r"[a-f0-9]{24}-[a-f0-9]{34}", "Postman PMAK-"),
    _tok("heroku_key", "saas", "HRKU-", "-", rf"{_W}{{20,}}+", "Heroku HRKU-"),
    Rule(
        "airtable_token",
        "saas",
        ".",
        r"(?<=pat[A-Za-z0-9]{14}\.)[a-f0-9]{64}",
        back=17,
        description="Airtable pat….<64 hex> personal access tokens",
    ),
    _tok("mapbox_token", "saas", "sk.", ".", rf"eyJ{_W}{{20,}}+\.{_W}{{20,}}+", "Mapbox sk.eyJ"),
    # -- generic token formats --
    Rule(
        "jwt",
        "token",
        "y",
        r"J(?<=eyJ)(?:(?<![A-Za-z0-9_\-]eyJ)|(?<=\\[nrtbf]eyJ))[A-Za-z0-9_\-]{8,}+\.eyJ[A-Za-z0-9_\-]{8,}+"
        r"\.[A-Za-z0-9_\-]*+",
        back=1,
        keywords=("eyJ",),
        description="JSON Web Tokens (eyJ….eyJ….<signature>)",
    ),
    # -- URLs and connection strings (':' pass) --
    Rule(
        "url_userinfo",
        "url",
        ":",
        # scheme://user:password@host (any scheme: postgres, mysql, redis, mongodb+srv, https,
        # amqp ...). Greedy within a bounded run, so a password with an unescaped '@' goes
        # whole up to the last '@'. A long token used as the user (no password) goes too.
        r"""[/\\](?:(?<=/)/|(?<=\\)/\\/)(?:[^\s/?#@:'"<>\[\]{}\\]{0,256}+:([^\s/?#'"<>\\]{1,256})"""
        r"""|([A-Za-z0-9_\-.~%]{20,256}+))@""",
        description="passwords in URL userinfo (scheme://user:pw@host) and token-only userinfo",
    ),
    Rule(
        "docker_auth",
        "config",
        ":",
        # ~/.docker/config.json and similar: "auth": "<base64 of user:password>"
        r'(?<="auth":)[ \t]*+\\?+"([A-Za-z0-9+/]{12,}+={0,2}+)\\?+"',
        keywords=('"auth":',),
        description='"auth": "<base64 user:password>" (docker config.json, npm/yarn rc)',
    ),
    Rule(
        "pgpass_password",
        "config",
        ":",
        # host:port:database:user:password lines (.pgpass): the last field, to end of line.
        r"(?<=[A-Za-z0-9*\]]:)(?:[0-9]{1,5}+|\*):[^:\s]{1,128}+:[^:\s]{1,128}+:"
        r"((?:[^\s:\\]|\\:)(?:[^\r\n:\\]|\\:){0,255}+)(?=\r?\n|\\[nr]|$)",
        description=".pgpass lines (host:port:db:user:password): the password",
    ),
    # -- media (';base64,' pass) --
    Rule(
        "inline_media",
        "media",
        ";base64,",
        r"[A-Za-z0-9+/=_\-]++",
        description="base64 data: URLs, replaced by [MEDIA:<type> bytes=N sha256=<16 hex>]",
        left=_data_url_start,
        marker=_media_marker,
    ),
    # -- command-line forms --
    Rule(
        "cli_password",
        "cli",
        "-",
        # --password X, --pass X, --token X, --api-key X, --client-secret X, --hf-token X ...
        # (found at the first dash of the flag's "--").
        r"""-(?=[a-z])(?:[a-z0-9]{1,20}+-)?+(?:password|passwd|pass|token|secret|api-?key)"""
        r"""[ \t=]++""" + _CLI_VALUE,
        description="--password / --token / --secret / --api-key flags and their value",
    ),
    Rule(
        "cli_password",
        "cli",
        "-",
        # curl -u user:pw, curl --user user:pw (the password part)
        r"""u[ \t]++['"]?+[^\s:'"@/]{1,256}+:([^\s'"]{1,256}+)""",
        description="-u user:password (curl, httpie ...)",
    ),
    Rule(
        "cli_password",
        "cli",
        "-",
        r"""-user[ \t=]++['"]?+[^\s:'"@/]{1,256}+:([^\s'"]{1,256}+)""",
        description="--user user:password",
    ),
    Rule(
        "cli_password",
        "cli",
        "-",
        r"""p(?<=sshpass -p)[ \t]*+""" + _CLI_VALUE,
        description="sshpass -p password",
    ),
    Rule(
        "cli_password",
        "cli",
        "y",
        # mysql -pSECRET (attached), anywhere on a mysql / mysqldump / mysqladmin command line
        # (the arguments before it taken one by one, at most 12, each at once: linear)
        r"""sql(?<=mysql)(?:dump|admin|import|check|slap|sh)?+"""
        r"""(?:[ \t]++(?!-p)[^\s;&|]{1,80}+){0,12}+[ \t]++-p(?=[^\s\-])"""
        r"""('[^'\n]*+'|"[^"\n]*+"|[^\s'"]++)""",
        keywords=("mysql",),
        description="mysql -p<password>",
    ),
    # -- headers (lowercase) --
    Rule(
        "bearer_token",
        "header",
        "b",
        r"earer\s{1,20}+(?!\[redacted:)([a-z0-9\-._~+/]{16,}+=*+)",
        lowercase=True,
        keywords=("bearer",),
        description="Bearer <token> anywhere",
    ),
    Rule(
        "authorization_header",
        "header",
        "z",
        # After a scheme word, its credentials (one token); without one, the rest of the line.
        r"ation(?<=authorization)" + _HEADER_SEP + rf"(?:{_SCHEMES}[ \t]++(?!\[redacted:)"
        r"([^\s\"'\\]++)|(?!" + _SCHEMES + r"[ \t])" + _HEADER_VALUE + ")",
        lowercase=True,
        keywords=("authorization",),
        description="Authorization / Proxy-Authorization header values (Basic, token ...)",
    ),
    Rule(
        "cookie",
        "header",
        "c",
        r"ookie" + _HEADER_SEP + _HEADER_VALUE,
        lowercase=True,
        keywords=("cookie",),
        description="Cookie / Set-Cookie header values",
    ),
    # -- config forms (lowercase): NAME=value for secret-looking names --
    Rule(
        "secret_assignment",
        "config",
        "c",
        r"ret(?<=secret)" + _ASSIGN + r"|redentials?+" + _ASSIGN,
        lowercase=True,
        keywords=("secret", "credential"),
        description="…secret… / …credential… = value",
    ),
    Rule(
        "netrc_password",
        "config",
        "c",
        r"hine(?<=machine)[ \t]++\S++(?:\s++(?:login|account|port)[ \t]++\S++)++\s++password"
        r"[ \t]++(\S++)",
        lowercase=True,
        keywords=("machine",),
        description=".netrc: machine … login … password <value>",
    ),
    Rule(
        "secret_assignment",
        "config",
        "k",
        # `token` not followed by `s` / `iz`: `max_tokens: 512`, `tokenizer: gpt2` stay.
        r"en(?<=token)(?!s|iz)"
        + _ASSIGN
        + r"|ey(?:(?<=api[_\-]key)|(?<=apikey)|(?<=private[_\-]key)|(?<=privatekey)"
        r"|(?<=access[_\-]key)|(?<=accesskey)|(?<=account[_\-]key)|(?<=accountkey)"
        r"|(?<=secret[_\-]key)|(?<=secretkey)|(?<=client[_\-]key)|(?<=signing[_\-]key)"
        r"|(?<=master[_\-]key)|(?<=encryption[_\-]key))" + _ASSIGN,
        lowercase=True,
        keywords=("token", "key"),
        description="…token… / …api_key… / …access_key… / AccountKey … = value",
    ),
    Rule(
        "secret_assignment",
        "config",
        "p",
        # .NET config: <add key="Password" value="..."/>
        r"""ass(?:w(?:or)?d|phrase)\\?+["'][ \t]++value[ \t]*+=[ \t]*+\\?+["']"""
        r"""(?!\[redacted:)([^"'\\\n]{1,256}+)""",
        lowercase=True,
        keywords=("pass",),
        description='<add key="Password" value="..."/> (XML attributes)',
    ),
    Rule(
        "secret_assignment",
        "config",
        "p",
        r"ass(?:w(?:or)?d|phrase)" + _ASSIGN_LINE + r"|wd" + _ASSIGN_LINE,
        lowercase=True,
        keywords=("pass", "pwd"),
        description="…password… / …passwd… / …passphrase… / …pwd… = value (to end of line)",
    ),
    # -- PII (off by default) --
    Rule(
        "email",
        "pii",
        "@",
        r"(?:[A-Za-z0-9][A-Za-z0-9\-]{0,62}+\.){1,8}+[A-Za-z]{2,24}+(?![A-Za-z0-9\-])",
        default=False,
        left=_email_start,
        description="e-mail addresses",
    ),
    Rule(
        "ipv6",
        "pii",
        ":",
        r"(?<=[0-9A-Fa-f]{4}:)(?:[0-9A-Fa-f]{0,4}+:){1,6}+[0-9A-Fa-f]{1,4}+(?![0-9A-Fa-f:])",
        back=4,
        default=False,
        description="IPv6 addresses (with a full first group)",
    ),
    # Digit-led PII formats: their anchor is a character class (`re` scans for it with a set,
    # slower than a literal scan: the pii group is opt-in and costs about as much again).
    Rule(
        "payment_card",
        "pii",
        "[0-9]",
        r"(?<![0-9][0-9])(?:[0-9]{3}(?:[ \-][0-9]{4}){3}|[0-9]{3}[ \-][0-9]{6}[ \-][0-9]{5}"
        r"|[0-9]{12,18}+)(?![0-9])",
        default=False,
        check=_luhn,
        description="payment card numbers (13-19 digits, Luhn-checked)",
    ),
    Rule(
        "ipv4",
        "pii",
        "[0-9]",
        r"(?<![0-9.][0-9])[0-9]{0,2}+(?:\.[0-9]{1,3}+){3}(?![0-9]|\.[0-9])",
        default=False,
        check=_ipv4,
        description="IPv4 addresses",
    ),
    Rule(
        "phone",
        "pii",
        "[0-9]",
        r"(?<![\w+][0-9])[0-9]{1,3}+([ .\-])[0-9]{2,4}+(?:\1[0-9]{2,4}+){1,2}+(?![0-9])",
        default=False,
        description="phone numbers: groups of digits",
    ),
    Rule(
        "phone",
        "pii",
        "+",
        r"(?<![\w+]\+)[0-9]{1,3}+[ .\-]?+(?:\([0-9]{2,4}+\)[ .\-]?+)?[0-9]{2,4}+"
        r"(?:[ .\-][0-9]{2,4}+){1,3}+(?![0-9])",
        default=False,
        description="phone numbers: +<country code> …",
    ),
    Rule(
        "phone",
        "pii",
        "(",
        r"(?<![\w+]\()[0-9]{2,4}+\)[ .\-]?+[0-9]{2,4}+(?:[ .\-][0-9]{2,4}+){1,3}+(?![0-9])",
        default=False,
        description="phone numbers: (<area>) …",
    ),
    Rule(
        "iban",
        "pii",
        "[A-Z]",
        r"[A-Z](?:(?<![A-Za-z0-9][A-Z][A-Z])|(?<=\\[nrtbf][A-Z][A-Z]))[0-9]{2}"
        r"(?:[ ]?+[A-Z0-9]{4}){2,7}+(?:[ ]?+[A-Z0-9]{1,4})?+(?![A-Za-z0-9])",
        default=False,
        check=_iban,
        description="IBANs (checksum-verified)",
    ),
)
