"""The redaction policy: what happens to each field on its way to LangFuse, as plain frozen data.

A ``RedactionPolicy`` holds nothing but its settings: the action per field and per metadata key,
the secret kinds switched off and on, the operator's own patterns, the HMAC key, the user hook.
It is validated when built and never changes. What ``redact`` needs to run it fast (the scrubber,
the HMAC state, the walkers) is compiled from it separately (``agent.core.privacy.compiled``).

Presets (``PRESETS``):

- ``default``: every content field ``scrub`` (secrets removed, the rest kept); ``user_id`` ``keep``.
- ``no-tool-io``: ``default`` with ``tool_calls`` and ``tool_results`` ``drop``.
- ``metadata-only``: no content at all: every field ``drop`` except ``model_parameters``
  (``scrub``) and ``user_id`` (``keep``). Timings, usage, cost, model and ids still go out.
- ``strict``: ``metadata-only`` with ``user_id=hash``, i.e. no content and a pseudonymous user
  (``u_<16 hex>``, HMAC-SHA256, stable across calls and processes for one key). It needs an HMAC
  key: without one, ``from_spec`` raises ``RedactionSpecError`` asking for
  ``ML_INTERN_REDACT_HMAC_KEY``. It fails at startup rather than silently falling back to plain
  user ids, because an operator who asked for ``strict`` asked for pseudonyms.

``hash`` without an HMAC key is an error only when some field actually uses ``hash``. The key is
never part of ``repr``, ``describe()`` or any report; it is scrubbed by value everywhere.

Per-call overrides (``CallRecord.redact_override``) may only tighten: the effective policy is
``policy.stricter(from_spec(override))``.

The user hook is called as ``hook(field, value) -> str`` on every string leaf after the built-in
action (never on ``drop``/``hash`` output, never on structural values). If it raises or returns a
non-string, that value fails closed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from agent.core.privacy.actions import (
    FIELDS,
    HMAC_KEY_ENV,
    PRESETS,
    Action,
    RedactionSpecError,
)
from agent.core.privacy.known import KNOWN_SECRETS
from agent.core.privacy.rule import SecretPattern
from agent.core.privacy.scrubber import check_switches
from agent.core.privacy.spec import parse_spec

__all__ = ["RedactionPolicy"]

Hook = Callable[[str, str], str]


class _HookChain:
    """Two hooks in order (``stricter`` of two policies that both have one)."""

    def __init__(self, first: Hook, second: Hook):
        self.first, self.second = first, second

    def __call__(self, field_name: str, value: str) -> str:
        out = self.first(field_name, value)
        if not isinstance(out, str):
            raise TypeError(f"redaction hook returned {type(out).__name__}, not str")
        return self.second(field_name, out)


def _check_actions(actions: Mapping[str, Action], metadata: Mapping[str, Action]) -> None:
    unknown = [f for f in actions if f not in FIELDS]
    if unknown:
        raise RedactionSpecError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; valid: {', '.join(FIELDS)}"
        )
    missing = [f for f in FIELDS if f not in actions]
    if missing:
        raise RedactionSpecError(f"no action for field(s) {', '.join(missing)}")
    for name, a in [*actions.items(), *(("metadata." + str(k), a) for k, a in metadata.items())]:
        if not isinstance(a, Action):
            raise RedactionSpecError(f"{name}: expected an Action, got {type(a).__name__}")


def _check_hash_key(policy: RedactionPolicy) -> None:
    hashed = [f for f, a in policy.actions.items() if a.kind == "hash"]
    hashed += [f"metadata.{k}" for k, a in policy.metadata_actions.items() if a.kind == "hash"]
    if hashed and policy.hmac_key is None:
        raise RedactionSpecError(
            f"{', '.join(f'{h}=hash' for h in hashed)} needs an HMAC key: "
            f"set {HMAC_KEY_ENV} (or pass hmac_key=...)"
        )


@dataclass(frozen=True, eq=True)
class RedactionPolicy:
    """What happens to each field on its way to LangFuse. Immutable; build with ``from_spec``.

    ``actions`` maps every name of ``FIELDS`` to an ``Action``; ``metadata_actions`` overrides
    the ``metadata`` action per metadata key. Construction validates and never normalises: pass
    complete, parsed values (``from_spec`` and ``stricter`` do).
    """

    actions: Mapping[str, Action] = field(default_factory=lambda: PRESETS["default"])
    metadata_actions: Mapping[str, Action] = field(default_factory=lambda: MappingProxyType({}))
    patterns_off: frozenset[str] = frozenset()
    patterns_on: frozenset[str] = frozenset()
    extra_patterns: tuple[SecretPattern, ...] = ()
    hmac_key: bytes | None = field(default=None, repr=False)
    hook: Hook | None = field(default=None, compare=False, repr=False)
    hook_path: str | None = None
    preset: str = "default"
    # Inline media forwarded for LangFuse's own upload (the `langfuse_media_upload` setting)
    # instead of replaced by a marker. Never part of a spec: only the operator's config sets it.
    media_upload: bool = False

    def __post_init__(self) -> None:
        _check_actions(self.actions, self.metadata_actions)
        if self.hmac_key is not None and (
            not isinstance(self.hmac_key, bytes) or not self.hmac_key
        ):
            raise RedactionSpecError("the HMAC key must be non-empty bytes (or None)")
        if self.hook is not None and not callable(self.hook):
            raise RedactionSpecError(f"hook must be callable, got {type(self.hook).__name__}")
        _check_hash_key(self)
        try:
            check_switches(self.patterns_off, self.patterns_on, self.extra_patterns)
        except (ValueError, TypeError) as exc:
            raise RedactionSpecError(f"patterns: {exc}") from exc
        if self.hmac_key:
            KNOWN_SECRETS.add(self.hmac_key)  # never on the wire, whatever the patterns say

    def __hash__(self) -> int:
        return hash(
            (
                tuple(self.actions[f] for f in FIELDS),
                tuple(sorted(self.metadata_actions.items())),
                self.patterns_off,
                self.patterns_on,
                self.media_upload,
                self.extra_patterns,
                self.hook_path,
            )
        )

    @classmethod
    def from_spec(
        cls,
        spec: str | None,
        *,
        hmac_key: object = None,
        media_upload: bool = False,
    ) -> RedactionPolicy:
        """Parse a spec (grammar: ``agent.core.privacy.spec``). Raises ``RedactionSpecError``."""
        return cls(**parse_spec(spec, hmac_key), media_upload=media_upload)

    def metadata_action(self, key: str) -> Action:
        return self.metadata_actions.get(key, self.actions["metadata"])

    def stricter(self, other: RedactionPolicy) -> RedactionPolicy:
        """Per field (and metadata key) the stricter action of the two; patterns on in either
        stay on; both hooks run. Used for per-call overrides, which can only tighten."""
        if not isinstance(other, RedactionPolicy):
            raise TypeError(f"expected a RedactionPolicy, got {type(other).__name__}")
        actions = {f: self.actions[f].stricter(other.actions[f]) for f in FIELDS}
        md = {
            k: self.metadata_action(k).stricter(other.metadata_action(k))
            for k in (*self.metadata_actions, *other.metadata_actions)
        }
        hook, hook_path = self.hook, self.hook_path
        if other.hook is not None and other.hook is not self.hook:
            if hook is None:
                hook, hook_path = other.hook, other.hook_path
            else:
                hook = _HookChain(hook, other.hook)
                hook_path = f"{self.hook_path}+{other.hook_path}"
        return RedactionPolicy(
            actions=MappingProxyType(actions),
            metadata_actions=MappingProxyType(md),
            patterns_off=self.patterns_off & other.patterns_off,
            patterns_on=self.patterns_on | other.patterns_on,
            media_upload=self.media_upload and other.media_upload,
            extra_patterns=tuple(dict.fromkeys((*self.extra_patterns, *other.extra_patterns))),
            hmac_key=self.hmac_key or other.hmac_key,
            hook=hook,
            hook_path=hook_path,
            preset=self.preset if self.preset == other.preset else f"{self.preset}+{other.preset}",
        )

    def describe(self) -> dict[str, str]:
        """Field -> action string (for ``ml-intern observability check``). Never the key."""
        d = {f: str(self.actions[f]) for f in FIELDS}
        for k in sorted(self.metadata_actions):
            d[f"metadata.{k}"] = str(self.metadata_actions[k])
        d["preset"] = self.preset
        d["patterns.off"] = "+".join(sorted(self.patterns_off)) or "none"
        d["patterns.on"] = "+".join(sorted(self.patterns_on)) or "none"
        d["media_upload"] = "on" if self.media_upload else "off"
        if self.extra_patterns:
            d["patterns.extra"] = "+".join(dict.fromkeys(p.name for p in self.extra_patterns))
        d["hook"] = self.hook_path or ("<callable>" if self.hook else "none")
        d["hmac_key"] = "set" if self.hmac_key else "unset"
        return d
