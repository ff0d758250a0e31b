"""The catalogue's form rules: credentials recognised by where they stand rather than by their
own shape (private key blocks, URL userinfo and connection strings, command-line flags, HTTP
headers, ``NAME = value`` in config files), inline media, and the opt-in personal data (``pii``).
Plain data and the small checks some rules need; see ``agent.core.privacy.rule`` for how a rule
is written."""

from __future__ import annotations

import re

from agent.core.privacy.media import data_url_marker
from agent.core.privacy.rule import Rule

__all__ = ["FORM_RULES", "PRIVATE_KEY_RULES"]

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
# The attributes' run is looked over first for a '>' alone (a one-character scan, several
# times faster than the class's): where no '>' follows within reach (prose, JSON: most text),
# the element form fails after that cheap look. The look is implied by what follows, so the
# matches are the same.
# The element's text may hold a few raw '>' (XML allows them; serialisers usually write &gt;):
# up to seven runs and '>'s in all (three '>' inside a value), so that a line of `pwd >pwd >...` without a '<' is scanned a bounded number
# of times per keyword (linear), not to its end from every keyword (quadratic: 100 KB took 2 s).
_XML = (
    r"(?:\s(?=[^>]{0,100}+>)[^<>\n]{0,100}+)?+>(?!\[redacted:)"
    r"((?:[^<>\n]++|>){1,7}+)(?=</)"
)


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


_CLI_VALUE = r"""('[^'\n]*+'|"[^"\n]*+"|[^\s'"]++)"""

PRIVATE_KEY_RULES: tuple[Rule, ...] = (
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
)

FORM_RULES: tuple[Rule, ...] = (
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
        # ~/.docker/config.json and similar: "auth": "<base64 of user:password>". Matches what
        # `(?<="auth":)[ \t]*+\\?+"` would, with its first character taken first: an
        # alternative led by a class is skipped at once at every other ':' (not so a lookbehind).
        r'[ \t\\"](?<="auth":[ \t\\"])(?:(?<=[ \t])[ \t]*+\\?+"|(?<=\\)"|(?<="))'
        r'([A-Za-z0-9+/]{12,}+={0,2}+)\\?+"',
        keywords=('"auth":',),
        description='"auth": "<base64 user:password>" (docker config.json, npm/yarn rc)',
    ),
    Rule(
        "pgpass_password",
        "config",
        ":",
        # host:port:database:user:password lines (.pgpass): the last field, to end of line.
        # The port (1-5 digits or '*') is written with its first character taken first (see
        # docker_auth): `(?<=[A-Za-z0-9*\]]:)(?:[0-9]{1,5}+|\*):` would be the same.
        r"[0-9*](?<=[A-Za-z0-9*\]]:[0-9*])(?:(?<=\*)|(?<=[0-9])[0-9]{0,4}+):"
        r"[^:\s]{1,128}+:[^:\s]{1,128}+:"
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
        marker=data_url_marker,
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
        # (the class first: one check turns away `keyboard`, `monkey` before 14 lookbehinds)
        + r"|ey(?<=[_\-iest]key)(?:(?<=api[_\-]key)|(?<=apikey)|(?<=private[_\-]key)|(?<=privatekey)"
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
