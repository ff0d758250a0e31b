"""Secrets the process knows outright, scrubbed by value wherever they appear.

Patterns find credentials by their shape; some credentials have none (a Mistral or Cohere key
is 32 random characters) but the process holds them: the provider keys in its environment, the
``api_key=`` passed to a call, the LangFuse secret key, the HMAC key. ``KNOWN_SECRETS`` holds
their exact values (and their common encodings) and every ``Scrubber`` replaces any occurrence
with ``[REDACTED:known_secret]``, in both pipelines, whatever the patterns say.

Contract:

- Sources: ``SECRET_ENV_VARS`` (the one list of provider key variables), plus any environment
  variable whose name looks secret (``SECRET_NAME_RE``) and whose value looks like one (at least
  ``MIN_LENGTH`` characters, not a number or a boolean, two classes of characters); and values
  added with ``add()`` (an ``api_key=`` of a call, a key from the config).
- Encodings: the value itself, its URL-encoded forms, and base64 of any ``<something>:<value>``
  (``Authorization: Basic ...``): for each of the three alignments a secret can have inside a
  base64 stream, the part of the encoding that depends only on the secret; a hit redacts the
  whole base64 run around it.
- Cheap: the literals are rebuilt only when the set changes (``version`` counts changes, so a
  scrubber can drop what it cached). The environment is re-read at most every
  ``ENV_REFRESH_S`` seconds (``refresh_if_stale``), or at once with ``refresh_env()``.
  Matching uses ``str.find`` per literal: every literal is long (>= 8 characters), and CPython's
  search skips ahead by about the needle's length, so a literal costs a small fraction of a
  regex pass. The set is bounded (``MAX_VALUES``): past it the oldest added value is evicted.
- Values are never logged, never part of a repr, never in a report.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from urllib.parse import quote, quote_plus

__all__ = [
    "KNOWN_SECRETS",
    "MIN_LENGTH",
    "SECRET_ENV_VARS",
    "SECRET_NAME_RE",
    "KnownSecrets",
]

# The provider and service keys the process may hold (one place; add new providers here).
SECRET_ENV_VARS: tuple[str, ...] = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACEHUB_API_TOKEN",
    "LANGFUSE_SECRET_KEY",
    "ML_INTERN_REDACT_HMAC_KEY",
    "AZURE_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "VERTEXAI_API_KEY",
    "GROQ_API_KEY",
    "MISTRAL_API_KEY",
    "COHERE_API_KEY",
    "CO_API_KEY",
    "TOGETHER_API_KEY",
    "TOGETHERAI_API_KEY",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
    "XAI_API_KEY",
    "PERPLEXITYAI_API_KEY",
    "PERPLEXITY_API_KEY",
    "FIREWORKS_API_KEY",
    "FIREWORKS_AI_API_KEY",
    "REPLICATE_API_TOKEN",
    "REPLICATE_API_KEY",
    "NVIDIA_NIM_API_KEY",
    "CEREBRAS_API_KEY",
    "VOYAGE_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "WANDB_API_KEY",
)

# Other variables whose name looks secret (and that are not known to hold something else).
SECRET_NAME_RE = re.compile(
    r"(?i)(?:secret|token|passw(?:or)?d|passphrase|pwd|api_?key|access_?key|private_?key"
    r"|credential|auth)"
)
_NOT_SECRET_NAME_RE = re.compile(
    r"(?i)(?:public|_id$|_url$|_host$|_file$|_path$|_dir$|_sock$|_socket$|_type$|_mode$"
    r"|_name$|^tokenizers_|_enabled$|_timeout$|_ttl$|^oldpwd$|^pwd$)"
)

MIN_LENGTH = 8
MAX_VALUES = 256
ENV_REFRESH_S = 2.0
_BASE64_RUN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_"


def _looks_secret(value: str, strict: bool) -> bool:
    if len(value) < MIN_LENGTH or len(value) > 4096 or value.strip() != value:
        return False
    if not strict:
        return True
    low = value.lower()
    if low in ("true", "false", "none", "null") or re.fullmatch(r"[0-9.:\-]+", value):
        return False
    classes = sum(
        (
            any(c.islower() for c in value),
            any(c.isupper() for c in value),
            any(c.isdigit() for c in value),
            any(not c.isalnum() for c in value),
        )
    )
    return classes >= 2 and " " not in value


def _base64_forms(value: str) -> list[str]:
    """The parts of base64(<anything> + value) that depend only on ``value``, one per alignment
    (the standard alphabet, as in ``Authorization: Basic``)."""
    raw = value.encode("utf-8", "surrogatepass")
    out: list[str] = []
    for shift in range(3):
        chunk = raw[shift:]
        chunk = chunk[: len(chunk) - len(chunk) % 3]
        if len(chunk) < 9:  # < 12 base64 characters: too short to be specific
            continue
        out.append(base64.b64encode(chunk).decode("ascii"))
    return out


class KnownSecrets:
    """A thread-safe, versioned set of exact secret values and the literals to search for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._added: OrderedDict[str, None] = OrderedDict()
        self._env: frozenset[str] = frozenset()
        self._env_checked = 0.0
        self._env_fingerprint: tuple[tuple[str, str], ...] | None = None
        # (literal, is_base64_form) pairs, longest first; replaced whole on every change.
        self.literals: tuple[tuple[str, bool], ...] = ()
        self.version = 0

    def __repr__(self) -> str:  # never the values
        return f"KnownSecrets({len(self._added) + len(self._env)} values, version {self.version})"

    def add(self, value: object) -> None:
        """Scrub ``value`` from now on (no-op for None, short or already known values)."""
        if hasattr(value, "get_secret_value"):  # pydantic SecretStr
            value = value.get_secret_value()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str) or not _looks_secret(value, strict=False):
            return
        if value in self._added or value in self._env:  # the common case: no lock, no rebuild
            return
        with self._lock:
            self._added[value] = None
            while len(self._added) > MAX_VALUES:
                self._added.popitem(last=False)
            self._rebuild()

    def values(self) -> tuple[str, ...]:
        """Every value known now (for the forwarding sidecar, which holds none of its own)."""
        with self._lock:
            return (*self._env, *self._added)

    def refresh_env(self, environ: Mapping[str, str] | None = None) -> None:
        """Re-read the environment now."""
        env = os.environ if environ is None else environ
        found: set[str] = set()
        fingerprint = []
        for name, value in list(env.items()):
            if name in SECRET_ENV_VARS:
                ok = _looks_secret(value, strict=False)
            elif SECRET_NAME_RE.search(name) and not _NOT_SECRET_NAME_RE.search(name):
                ok = _looks_secret(value, strict=True)
            else:
                continue
            if ok:
                found.add(value)
                fingerprint.append((name, value))
        fp = tuple(sorted(fingerprint))
        with self._lock:
            self._env_checked = time.monotonic()
            if fp == self._env_fingerprint:
                return
            self._env_fingerprint = fp
            self._env = frozenset(found)
            self._rebuild()

    def refresh_if_stale(self) -> None:
        """Re-read the environment if the last read is older than ``ENV_REFRESH_S``."""
        if time.monotonic() - self._env_checked >= ENV_REFRESH_S:
            self.refresh_env()

    def _rebuild(self) -> None:
        literals: dict[str, bool] = {}
        for value in (*self._env, *self._added):
            literals.setdefault(value, False)
            for enc in (quote(value, safe=""), quote_plus(value, safe="")):
                if enc != value:
                    literals.setdefault(enc, False)
            for enc in _base64_forms(value):
                literals.setdefault(enc, True)
        self.literals = tuple(sorted(literals.items(), key=lambda kv: -len(kv[0])))
        self.version += 1

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Spans of ``text`` holding a known value (a base64 hit: the whole base64 run)."""
        out: list[tuple[int, int]] = []
        for lit, is_b64 in self.literals:
            i = text.find(lit)
            while i >= 0:
                s, e = i, i + len(lit)
                if is_b64:
                    while s > 0 and text[s - 1] in _BASE64_RUN:
                        s -= 1
                    while e < len(text) and text[e] in _BASE64_RUN:
                        e += 1
                out.append((s, e))
                i = text.find(lit, e)
        return out


KNOWN_SECRETS = KnownSecrets()
