"""The catalogue's token rules: credentials recognised by their own shape (a vendor prefix and a
body), grouped by kind of service. Plain data; see ``agent.core.privacy.rule`` for how a rule is
written and ``agent.core.privacy.catalogue`` for the order rules are listed in (which decides
ties)."""

from __future__ import annotations

from agent.core.privacy.rule import BODY as _B
from agent.core.privacy.rule import WORD as _W
from agent.core.privacy.rule import Rule
from agent.core.privacy.rule import token as _tok

__all__ = ["TOKEN_RULES"]

TOKEN_RULES: tuple[Rule, ...] = (
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
)
