"""Every kind of the secret catalogue: true positives, false positives, markers, linear time.

Fake secrets are assembled at run time (never written out whole) so secret scanners do not flag
this file. Every kind must have at least one true and one false positive here: a new rule
without examples fails ``test_every_kind_has_examples``.
"""

from __future__ import annotations

import time

import pytest

from agent.core.privacy.scrubber import CATALOGUE, Scrubber, pattern_names

S = Scrubber(enabled=["pii"])


def r(body: str, n: int) -> str:
    return (body * (n // len(body) + 1))[:n]


A = r("Ab3dE5gH7jK9mN1p", 64)
HEX = r("0123456789abcdef", 64)
PEM_BODY = r("MIIEvQIBADANBgkqhkiG9w0B", 64)
B64 = r("QUJDREVGR0hJSktMTU5PUA", 40)

# kind -> ([(text, the part that must disappear), ...], [text left alone, ...])
CASES: dict[str, tuple[list[tuple[str, str]], list[str]]] = {
    "pem_private_key": (
        [
            (f"-----BEGIN EC PRIVATE KEY-----\n{PEM_BODY}\n-----END EC PRIVATE KEY-----", PEM_BODY),
            (f'"private_key": "-----BEGIN PRIVATE KEY-----\\n{PEM_BODY}\\n', PEM_BODY),
        ],
        ["-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n-----END CERTIFICATE-----"],
    ),
    "ssh2_private_key": (
        [(f"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\n{PEM_BODY}\n", PEM_BODY)],
        ["---- BEGIN SSH2 PUBLIC KEY ----\nAAAAB3NzaC1yc2E"],
    ),
    "putty_private_key": (
        [
            (
                "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nPublic-Lines: 1\nAAAAB3Nza\n"
                f"Private-Lines: 1\n{PEM_BODY}\nPrivate-MAC: {HEX[:40]}",
                PEM_BODY,
            )
        ],
        ["PuTTY is an SSH client; User-Key-File is its format"],
    ),
    "anthropic_key": ([(f"k=sk-ant-api03-{A}", A[:30])], ["sk-ant-short"]),
    "langfuse_secret_key": ([("LF sk-lf-1234abcd-5678efgh", "1234abcd-5678efgh")], ["sk-lf-"]),
    "openai_key": (
        [(f"sk-proj-{A}", A[:30]), (f"sk-{A[:48]}", A[:30]), (f"or: sk-or-v1-{HEX}", HEX)],
        ["task-" + A[:30], "sk-short", "risk-assessment-document-for-q3"],
    ),
    "hf_token": ([(f"hf_{A[:34]}", A[:30]), (f"api_org_{A[:34]}", A[:30])], ["hf_hub_download"]),
    "groq_key": ([(f"gsk_{A[:52]}", A[:40])], ["gsk_short"]),
    "replicate_token": ([(f"r8_{A[:37]}", A[:30])], ["r8_short"]),
    "perplexity_key": ([(f"pplx-{A[:48]}", A[:40])], ["pplx-short"]),
    "xai_key": ([(f"xai-{A[:80]}", A[:40])], ["xai-grok-beta"]),
    "aws_secret_access_key": (
        [
            (
                f"AKIA{r('QW3RT5YU7IO9', 16)},wJalrXUtnFEMIK7MDENGbPxRfiCY{r('EXAMPLEKEY', 12)}",
                "wJalrX",
            )
        ],
        ["AKIA short,wJalrXUtnFEMI"],
    ),
    "aws_access_key_id": ([(f"id AKIA{r('QW3RT5YU7IO9', 16)}", "QW3RT5YU7IO9")], ["AKIA1234"]),
    "google_api_key": ([(f"AIza{A[:35]}", A[:35])], ["AIzaShort"]),
    "google_oauth_secret": ([(f"GOCSPX-{A[:28]}", A[:28])], ["GOCSPX-short"]),
    "google_oauth_token": ([(f"ya29.{A[:60]}", A[:40])], ["ya29.short"]),
    "azure_ad_client_secret": ([(f"abc8Q~{A[:34]}", A[:31])], ["Q~ and 8Q~x"]),
    "azure_sas_signature": (
        [(f"https://a.blob.core.windows.net/c?sv=2021&sig={A[:30]}%3D", A[:30])],
        ["the signature is valid"],
    ),
    "digitalocean_token": ([(f"dop_v1_{HEX}", HEX)], ["dop_v1_short"]),
    "github_token": (
        [(f"ghp_{A[:36]}", A[:36]), (f"github_pat_11ABCDEFG0_{A[:59]}", A[:40])],
        ["ghp_short"],
    ),
    "gitlab_token": ([(f"glpat-{A[:20]}", A[:20]), (f"glrt-{A[:24]}", A[:24])], ["glpat-x"]),
    "atlassian_token": ([(f"ATATT3x{r(A, 190)}", A[:40])], ["ATATT3 short"]),
    "terraform_token": (
        [(f"abcdefghijklmn.atlasv1.{r(A, 70)}", A[:40])],
        ["atlasv1 is a word"],
    ),
    "pulumi_token": ([(f"pul-{HEX[:40]}", HEX[:40])], ["pul-short"]),
    "slack_token": ([("xoxb-1234567890-1234567890123-" + A[:24], A[:24])], ["xoxb-"]),
    "slack_webhook": (
        [(f"https://hooks.slack.com/services/T0000/B0000/{A[:24]}", A[:24])],
        ["https://hooks.slack.com/"],
    ),
    "discord_webhook": (
        [(f"https://discord.com/api/webhooks/123456789012/{A[:64]}", A[:40])],
        ["https://discord.com/api/"],
    ),
    "telegram_bot_token": ([(f"123456789:AA{A[:33]}", A[:33])], ["12:30:45 AA"]),
    "discord_bot_token": (
        [(f"M{A[:23]}.{A[:6]}.{A[:27]}", A[:23])],
        ["file.name.ext", "www.example.com"],
    ),
    "stripe_key": ([(f"sk_live_{A[:24]}", A[:24]), (f"whsec_{A[:32]}", A[:32])], ["sk_live"]),
    "square_token": ([(f"sq0atp-{A[:22]}", A[:22])], ["sq0atp-x"]),
    "npm_token": ([(f"npm_{A[:36]}", A[:36])], ["npm_install"]),
    "pypi_token": ([(f"pypi-AgEIcHlwaS5vcmc{A[:60]}", A[:40])], ["pypi-upload"]),
    "docker_token": ([(f"dckr_pat_{A[:27]}", A[:27])], ["dckr_pat_"]),
    "grafana_token": (
        [(f"glc_{A[:40]}==", A[:40]), (f"glsa_{A[:32]}_{HEX[:8]}", A[:32])],
        ["glc_x"],
    ),
    "newrelic_key": ([(f"NRAK-{r('ABCDEFGHIJ0123456789', 27)}", "ABCDEFGHIJ0123456789")], ["NRAK"]),
    "sentry_token": ([(f"sntrys_{A[:60]}", A[:40])], ["sntrys_"]),
    "vault_token": ([(f"hvs.{A[:30]}", A[:30])], ["hvs.short"]),
    "doppler_token": ([(f"dp.pt.{A[:43]}", A[:40])], ["dp.pt.x"]),
    "onepassword_token": ([(f"ops_eyJ{r(A, 120)}", A[:40])], ["ops_eyJ"]),
    "age_secret_key": (
        [("AGE-SECRET-KEY-1" + r("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58), "QPZRY9X8GF2TVDW0S3JN")],
        ["AGE-SECRET-KEY-1 short"],
    ),
    "sendgrid_key": ([(f"SG.{A[:22]}.{A[:43]}", A[:40])], ["SG.short"]),
    "mailgun_key": ([(f"key-{HEX[:32]}", HEX[:32])], ["monkey-" + HEX[:32], "key-value"]),
    "shopify_token": ([(f"shpat_{HEX[:32]}", HEX[:32])], ["shpat_x"]),
    "linear_key": ([(f"lin_api_{A[:40]}", A[:40])], ["lin_api_x"]),
    "notion_token": ([(f"ntn_{A[:46]}", A[:40]), (f"secret_{A[:43]}", A[:43])], ["secret_sauce"]),
    "figma_token": ([(f"figd_{A[:43]}", A[:40])], ["figd_x"]),
    "postman_key": ([(f"PMAK-{HEX[:24]}-{HEX[:34]}", HEX[:34])], ["PMAK-x"]),
    "heroku_key": ([(f"HRKU-AA{A[:58]}", A[:40])], ["HRKU-x"]),
    "airtable_token": ([(f"pat{A[:14]}.{HEX}", HEX)], ["pat.x"]),
    "mapbox_token": ([(f"sk.eyJ{A[:60]}.{A[:22]}", A[:40])], ["sk.eyJ"]),
    "jwt": (
        [(f"t: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOi{A[:20]}.{A[:43]}", A[:20])],
        ["eyJ alone", "keyJoin"],
    ),
    "url_userinfo": (
        [
            ("postgres://app:pg-s3cret@db:5432/x", "pg-s3cret"),
            ("https://user:p@ss@host/x", "p@ss"),
            (f"https://{A[:40]}@github.com/x", A[:40]),
            ("redis://:redispw9@cache", "redispw9"),
        ],
        ["https://example.com/path", "mailto:bob@example.com"],
    ),
    "docker_auth": (
        [('{"auths": {"ghcr.io": {"auth": "' + B64 + '"}}}', B64)],
        ['{"auth": "oauth"}', '"author": "' + B64 + '"'],
    ),
    "pgpass_password": ([("db.internal:5432:app:bob:pgpassw0rd\n", "pgpassw0rd")], ["12:30"]),
    "inline_media": (
        [("see data:image/png;base64," + r("iVBORw0KGgo", 400), "iVBORw0KGgo")],
        ["base64 is an encoding; data: is a scheme"],
    ),
    "cli_password": (
        [
            ("mysql -u root -pMyS3cret db", "MyS3cret"),
            ("curl -u bob:curlpass99 https://x", "curlpass99"),
            ("cmd --password hunter2x --verbose", "hunter2x"),
            ("sshpass -p sshpw123 ssh host", "sshpw123"),
            ("huggingface-cli login --token tokval123", "tokval123"),
        ],
        ["mkdir -p /tmp/x", "git push -u origin main", "pip install --upgrade pip"],
    ),
    "bearer_token": ([(f"Bearer {A[:40]}", A[:40])], ["the bearer of bad news"]),
    "authorization_header": (
        [("Authorization: Basic " + B64, B64), (f"Authorization: token {HEX[:40]}", HEX[:40])],
        ["authorization is required"],
    ),
    "cookie": ([("Cookie: sessionid=abcdef0123; csrftoken=zz", "abcdef0123")], ["cookie jar"]),
    "secret_assignment": (
        [
            ("password         = aligned-pw", "aligned-pw"),
            ("api_key:\t\t\tkey-v4lue", "key-v4lue"),
            ("<password>xml-secret</password>", "xml-secret"),
            ("<password>a>b>xml-gt-secret</password>", "xml-gt-secret"),
            ("MYSQL_PWD=mysqlpw1", "mysqlpw1"),
            ("AccountKey=abc+def/ghi==;", "abc+def/ghi=="),
            ("passphrase: correct horse battery staple", "horse battery"),
            ('<add key="Password" value="xml-attr-pw"/>', "xml-attr-pw"),
            ('{"client_secret"  :   "cs-123"}', "cs-123"),
        ],
        ["max_tokens: 512", "tokenizer: gpt2", "if token == expected:", "monkey=banana"],
    ),
    "netrc_password": (
        [("machine api.example.com\n  login bob\n  password netrcpw77\n", "netrcpw77")],
        ["machine learning password policy"],
    ),
    # -- pii (switched on for this scrubber) --
    "email": ([("mail alice.smith@example.co.uk now", "alice.smith")], ["a@b", "user@localhost"]),
    "ipv6": ([("addr 2001:0db8:85a3::8a2e:0370:7334 ok", "85a3::8a2e")], ["10:30:45"]),
    "payment_card": (
        [("card 4111 1111 1111 1111 exp", "4111 1111 1111 1111")],
        ["4111 1111 1111 1112"],
    ),
    "iban": (
        [("IBAN GB82 WEST 1234 5698 7654 32 ok", "WEST 1234 5698")],
        ["GB00 WEST 1234 5698 7654 32"],
    ),
    "ipv4": ([("host 192.168.10.20 up", "192.168.10.20")], ["version 1.2.3", "999.1.1.1"]),
    "phone": ([("call +1 415 555 0132 now", "415 555 0132")], ["in 2024 we"]),
}


def test_every_kind_has_examples() -> None:
    for name in pattern_names():
        pos, neg = CASES.get(name, ([], []))
        assert pos and neg, f"{name}: add true and false positive examples to CASES"


@pytest.mark.parametrize("name", sorted(CASES))
def test_true_positives_are_replaced_by_their_marker(name: str) -> None:
    for text, secret in CASES[name][0]:
        out, counts = S.scrub_text(text)
        assert secret not in out, (name, text, out)
        assert counts.get(name), (name, text, out, counts)
        assert S.scrub_text(out)[0] == out  # idempotent: markers are never matched again


@pytest.mark.parametrize("name", sorted(CASES))
def test_false_positives_are_left_alone(name: str) -> None:
    for text in CASES[name][1]:
        out, counts = S.scrub_text(text)
        assert name not in counts, (name, text, out)


def test_pii_is_off_by_default_and_on_by_group() -> None:
    from agent.core.privacy.scrubber import DEFAULT_SCRUBBER

    text = "alice@example.com 4111 1111 1111 1111 192.168.1.1"
    assert DEFAULT_SCRUBBER.scrub_text(text)[0] == text
    _, counts = Scrubber(enabled=["pii"]).scrub_text(text)
    assert set(counts) == {"email", "payment_card", "ipv4"}
    assert Scrubber(enabled=["email"]).scrub_text(text)[1] == {"email": 1}


def test_media_marker_has_type_length_and_hash() -> None:
    import base64

    raw = bytes(range(256)) * 8
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    out = S.scrub_text(f"x {url} y")[0]
    assert out.startswith("x [MEDIA:image/png bytes=2048 sha256=") and out.endswith("] y")


def test_every_rule_is_in_a_known_group() -> None:
    from agent.core.privacy.scrubber import GROUPS

    assert {rule.group for rule in CATALOGUE} <= set(GROUPS)


# -- linear time on each anchor's adversarial input --


def _fill(unit: str, n: int) -> str:
    return (unit * (n // len(unit) + 1))[:n]


ADVERSARIAL = [
    "-a",
    "-abc",
    "_ab",
    "a_b_",
    ".x",
    "x.yy",
    ":/",
    "://a:",
    "1:AA",
    "AKIA",
    "AIza",
    "eyJ",
    "eyJa.",
    "mysql -u x ",
    "BEGIN ",
    "Q~",
    ";base64,",
    "sig=",
    "kkk",
    "token ",
    "cookie: ",
    "ccc",
    "machine x login ",
    "password=",
    "pwd ",
    "authorization: ",
    "bearer ",
    "--password ",
    "-u a:",
    "\\u0041",
    "\\\\\\\\",
    "\u200bx",
]


@pytest.mark.parametrize("unit", ADVERSARIAL)
def test_adversarial_runs_are_linear(unit: str) -> None:
    small, big = _fill(unit, 50_000), _fill(unit, 500_000)

    def best(text: str, runs: int) -> float:
        out = float("inf")
        for _ in range(runs):
            t0 = time.perf_counter()
            S.scrub_text(text)
            out = min(out, time.perf_counter() - t0)
        return out

    t_small, t_big = best(small, 3), best(big, 2)
    assert t_big < 2.0, f"{unit!r}: {t_big:.2f}s for 500 KB"
    assert t_big < 40 * t_small or t_big < 0.05, (unit, t_big, t_small)


def test_every_kind_and_group_is_documented() -> None:
    from pathlib import Path

    from agent.core.privacy.scrubber import GROUPS

    readme = (Path(__file__).parent.parent / "agent" / "README.md").read_text(encoding="utf-8")
    for name in (*pattern_names(), *GROUPS):
        assert f"`{name}`" in readme, f"agent/README.md does not mention {name}"
