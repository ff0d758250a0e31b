"""A redaction policy compiled for ``redact``: its scrubber, HMAC state and walkers.

``RedactionPolicy`` is plain data; everything ``redact`` derives from it to run fast lives here,
built once per policy: ``compiled(policy)`` returns the ``CompiledPolicy`` of a policy object
(remembered per object, bounded), so per-call work is proportional to the content only.

Contract of ``CompiledPolicy``:

- ``scrubber``: the policy's secret kinds (``inline_media`` off when LangFuse's media upload is
  on: the SDK then receives ``data:`` URLs and uploads them).
- ``walker(action)``: the one scrub walker (``agent.core.privacy.walker``) set for a field
  action: ``keep`` only replaces inline media (unless media upload is on), ``scrub`` and
  ``truncate:N`` scrub (and cut) every string and key, and the user hook runs on every string.
  ``hash_walker`` scrubs what ``hash`` hashes (never with the hook).
- ``digest(text)``: 16 hex digits of HMAC-SHA256 with the policy's key.
- ``override(spec)``: the compiled policy for a per-call override (``policy.stricter(from_spec
  (spec))``) and a note for the report. A malformed override fails closed to
  ``policy.stricter(metadata-only)``. Cached per override string.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
from collections import Counter
from typing import Any

from agent.core import guard
from agent.core.privacy.actions import Action, RedactionSpecError
from agent.core.privacy.catalogue import CATALOGUE
from agent.core.privacy.policy import RedactionPolicy
from agent.core.privacy.scrubber import Scrubber
from agent.core.privacy.walker import Walker

__all__ = ["MESSAGE_FIELDS", "CompiledPolicy", "compiled"]

# The message fields content can fall under; a message of unknown role takes the strictest.
MESSAGE_FIELDS = ("system_prompt", "user_messages", "assistant_messages", "tool_results")

_OVERRIDES_MAX = 256
_TOKENS = itertools.count(1)
_COMPILED_MAX = 16  # a process runs one or two policies; tests build many


class _MediaOnly:
    """Replaces inline media only (for fields kept as they are): media never leaves by surprise."""

    _scrubber = Scrubber(patterns=[r for r in CATALOGUE if r.name == "inline_media"], known=None)

    def scrub_into(self, text: str, counts: Counter[str]) -> str:
        return self._scrubber.scrub_into(text, counts) if ";base64," in text else text

    def secret_key_marker(self, key: object) -> str | None:
        return None


_MEDIA_ONLY = _MediaOnly()


class CompiledPolicy:
    """What ``redact`` runs for one policy (see the module docstring)."""

    __slots__ = (
        "_lock",
        "_overrides",
        "_walkers",
        "actions",
        "hash_walker",
        "hook",
        "mac",
        "policy",
        "scrubber",
        "token",
        "unknown_role_field",
    )

    def __init__(self, policy: RedactionPolicy) -> None:
        # Unique per compiled policy and never reused (unlike id()): what a ContentMemo keys on.
        self.token = next(_TOKENS)
        self.policy = policy
        self.actions = policy.actions
        self.hook = policy.hook
        off = policy.patterns_off | ({"inline_media"} if policy.media_upload else frozenset())
        self.scrubber = Scrubber(
            disabled=off, enabled=policy.patterns_on, extra=policy.extra_patterns
        )
        self.mac = hmac.new(policy.hmac_key, digestmod=hashlib.sha256) if policy.hmac_key else None
        self.unknown_role_field = max(MESSAGE_FIELDS, key=lambda f: policy.actions[f].rank)
        media = not policy.media_upload
        self.hash_walker = Walker(
            self.scrubber, keys=True, secret_keys=True, media=media, stringify=True
        )
        self._walkers: dict[Action, Walker] = {}
        self._overrides: dict[str, tuple[CompiledPolicy, str]] = {}
        self._lock = threading.Lock()

    def walker(self, action: Action) -> Walker:
        """The walker for a field action other than ``drop`` and ``hash``."""
        w = self._walkers.get(action)
        if w is None:
            scrub = action.kind != "keep"
            media = not self.policy.media_upload
            if scrub:
                text: Any = self.scrubber
            else:
                text = _MEDIA_ONLY if media else None
            w = Walker(
                text,
                keys=scrub,
                secret_keys=scrub,
                limit=action.limit,
                hook=self.hook,
                media=media,
                stringify=True,
            )
            self._walkers[action] = w
        return w

    def digest(self, text: str) -> str:
        if self.mac is None:
            raise RuntimeError("hash action without an HMAC key")
        mac = self.mac.copy()
        mac.update(text.encode("utf-8", "surrogatepass"))
        return mac.hexdigest()[:16]

    def override(self, spec: Any) -> tuple[CompiledPolicy, str]:
        """The compiled policy for a per-call override, and a note for the report."""
        hit = self._overrides.get(spec) if isinstance(spec, str) else None
        if hit is not None:
            return hit
        policy = self.policy
        try:
            if not isinstance(spec, str):
                raise RedactionSpecError(f"override must be a string, not {type(spec).__name__}")
            other = RedactionPolicy.from_spec(
                spec, hmac_key=policy.hmac_key, media_upload=policy.media_upload
            )
            result = (CompiledPolicy(policy.stricter(other)), spec.strip())
        except Exception as exc:
            # Fail closed: an override we cannot read was meant to tighten, so tighten fully.
            guard.warn_once(
                f"redaction-override:{type(exc).__name__}",
                "malformed per-call redaction override (%s); using metadata-only for the call",
                type(exc).__name__,
            )
            strict = policy.stricter(RedactionPolicy.from_spec("preset=metadata-only"))
            result = (CompiledPolicy(strict), "invalid; metadata-only applied")
        if isinstance(spec, str):
            with self._lock:
                if len(self._overrides) >= _OVERRIDES_MAX:
                    self._overrides.clear()
                self._overrides[spec] = result
        return result


# id(policy) -> (policy, its compiled form). The policy is held so its id cannot be reused
# while the entry lives.
_compiled: dict[int, tuple[RedactionPolicy, CompiledPolicy]] = {}
_compiled_lock = threading.Lock()


def compiled(policy: RedactionPolicy) -> CompiledPolicy:
    """The compiled form of ``policy`` (built on first use, then remembered)."""
    hit = _compiled.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    c = CompiledPolicy(policy)
    with _compiled_lock:
        if len(_compiled) >= _COMPILED_MAX:
            _compiled.clear()
        _compiled[id(policy)] = (policy, c)
    return c
