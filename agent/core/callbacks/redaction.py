"""The redaction policy (frozen data) and the one pure ``redact()`` every LangFuse record goes through.

Contract:

- ``redact(record, policy) -> (new_record, report)`` is pure: it returns a new record built with
  ``dataclasses.replace`` and never mutates its input (containers are copied, not shared).
- Each piece of content belongs to one of ``FIELDS`` and gets that field's ``Action``:
  ``keep`` < ``scrub`` < ``truncate:N`` (smaller N is stricter) < ``hash`` < ``drop``. Every
  action but ``keep`` runs the named secret patterns (``agent.core.redact``) first, so
  ``truncate`` never keeps half a secret and ``hash`` never hashes one.
- Structure survives every action: roles, message count and order, tool-call ids, tool names,
  ``tool_call_id``, ``name`` and ``type`` are not content and are never changed.
- Fail closed. If anything raises while redacting one value (a pattern, the user hook, a weird
  value, a bug), that value becomes ``[REDACTION_FAILED]`` and ``report.failures`` counts it;
  the raw value never survives. ``redact`` itself never raises for a supported record: if the
  walk as a whole fails, every content field of the returned record is ``[REDACTION_FAILED]``.
  Failures are logged once per distinct kind (type and field, never the value) at WARNING.
- Markers never echo what they replace: ``[REDACTED:<pattern>]``, ``[DROPPED:<field> len=N]``,
  ``[HASH:<16 hex of HMAC-SHA256>]``, ``<first N chars>…[TRUNCATED:<chars cut> chars]``.

Spec grammar (``RedactionPolicy.from_spec``; the ``ML_INTERN_REDACT`` setting)::

    spec   := item ("," item)*            empty items and whitespace around items are ignored
    item   := "preset=" PRESET            applied first, whatever its position; at most one
            | FIELD "=" ACTION            FIELD in FIELDS
            | "metadata." KEY "=" ACTION  one metadata key (KEY is case-sensitive)
            | "patterns.off=" NAME ("+" NAME)*   switch secret kinds (or whole groups) off
            | "patterns.on=" NAME ("+" NAME)*    switch off-by-default kinds on (pii)
            | "hook=" DOTTED              package.module:function or package.module.function
    ACTION := keep | scrub | truncate:N | hash | drop      (N >= 1)

An empty spec (or None) is the ``default`` preset. Field and action names are case-insensitive.

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
never part of ``repr``, ``describe()`` or any report.

Per-call overrides (``CallRecord.redact_override``) may only tighten: the effective policy is
``policy.stricter(from_spec(override))``. A malformed override fails closed to
``policy.stricter(metadata-only)`` and the report says so.

The user hook is called as ``hook(field, value) -> str`` on every string leaf after the built-in
action (never on ``drop``/``hash`` output, never on structural values). If it raises or returns a
non-string, that value fails closed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import importlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agent.core import guard
from agent.core.error_text import content_strings, strip_content
from agent.core.known_secrets import KNOWN_SECRETS
from agent.core.media import replace_media_dict
from agent.core.records import CallRecord, ScoreRecord, SpanRecord
from agent.core.redact import CATALOGUE, GROUPS, Scrubber, SecretPattern, pattern_names

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIONS",
    "FAILED",
    "FIELDS",
    "FIELD_ATTRIBUTES",
    "PRESETS",
    "Action",
    "RedactionPolicy",
    "RedactionReport",
    "RedactionSpecError",
    "default_policy",
    "redact",
]

FIELDS: tuple[str, ...] = (
    "system_prompt",
    "user_messages",
    "assistant_messages",
    "tool_calls",
    "tool_results",
    "tool_definitions",
    "completion",
    "reasoning",
    "metadata",
    "error_message",
    "user_id",
    "model_parameters",
    "feedback_comment",
    "session_id",
)

# Where each field's content reaches on the wire: (observation, attribute) pairs, where an
# observation is `turn`, `llm.*` (every generation), `tool.*` (every tool span), `hf_job.submit`,
# `hf_job.complete`, `sandbox.*`, `*` (every observation) or `score`; attributes are OTLP span
# attributes (`input` is langfuse.observation.input ...) or the score's `comment`. The table in
# agent/README.md is this one; tests/test_field_attributes.py walks it against the wire.
FIELD_ATTRIBUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "system_prompt": (("llm.*", "input"),),
    "user_messages": (("llm.*", "input"), ("turn", "input")),
    "assistant_messages": (("llm.*", "input"),),
    "tool_calls": (
        ("llm.*", "input"),
        ("llm.*", "output"),
        ("tool.*", "input"),
        ("hf_job.submit", "input"),
    ),
    "tool_results": (("llm.*", "input"), ("tool.*", "output"), ("tool.*", "status_message")),
    "tool_definitions": (("llm.*", "input"),),
    "completion": (("llm.*", "output"), ("turn", "output")),
    "reasoning": (("llm.*", "input"), ("llm.*", "output")),
    "metadata": (
        ("tool.*", "metadata"),
        ("hf_job.submit", "metadata"),
        ("hf_job.complete", "metadata"),
        ("sandbox.*", "metadata"),
        ("turn", "metadata"),
    ),
    "error_message": (("llm.*", "status_message"), ("hf_job.complete", "status_message")),
    "user_id": (("*", "user.id"),),
    "session_id": (("*", "session.id"),),
    "model_parameters": (("llm.*", "model_parameters"),),
    "feedback_comment": (("score", "comment"),),
}

ACTIONS: tuple[str, ...] = ("keep", "scrub", "truncate:N", "hash", "drop")

FAILED = "[REDACTION_FAILED]"

HMAC_KEY_ENV = "ML_INTERN_REDACT_HMAC_KEY"


class RedactionSpecError(ValueError):
    """A redaction spec is malformed; the message names the item and lists the valid choices."""


# -- actions ------------------------------------------------------------------------------------

_RANK = {"keep": 0, "scrub": 1, "truncate": 2, "hash": 3, "drop": 4}


@dataclass(frozen=True, slots=True)
class Action:
    """One of ``keep`` | ``scrub`` | ``truncate:N`` | ``hash`` | ``drop``."""

    kind: str
    limit: int = 0  # N of truncate:N; 0 for the other kinds

    def __post_init__(self) -> None:
        if self.kind not in _RANK:
            raise RedactionSpecError(f"unknown action {self.kind!r}; valid: {', '.join(ACTIONS)}")
        if self.kind == "truncate":
            if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
                raise RedactionSpecError(
                    f"truncate needs a whole number of characters >= 1, got {self.limit!r}"
                )
        elif self.limit != 0:
            raise RedactionSpecError(f"action {self.kind!r} takes no limit")

    @classmethod
    def parse(cls, text: str | Action) -> Action:
        """``"keep"``, ``"scrub"``, ``"truncate:200"``, ``"hash"`` or ``"drop"``."""
        if isinstance(text, Action):
            return text
        if not isinstance(text, str):
            raise RedactionSpecError(
                f"an action must be a string, got {type(text).__name__}; "
                f"valid: {', '.join(ACTIONS)}"
            )
        t = text.strip().lower()
        if t.startswith("truncate"):
            _, sep, n = t.partition(":")
            n = n.strip()
            if not sep or not n.isdigit() or int(n) < 1:
                raise RedactionSpecError(
                    f"bad truncate action {text!r}: expected truncate:N with a whole number N >= 1"
                )
            return cls("truncate", int(n))
        if t not in _RANK:
            raise RedactionSpecError(f"unknown action {text!r}; valid: {', '.join(ACTIONS)}")
        return _SIMPLE[t]

    @property
    def rank(self) -> tuple[int, int]:
        """Sort key: larger is stricter (a smaller truncate limit is stricter)."""
        return (_RANK[self.kind], -self.limit)

    def stricter(self, other: Action) -> Action:
        return other if other.rank > self.rank else self

    def __str__(self) -> str:
        return f"truncate:{self.limit}" if self.kind == "truncate" else self.kind


KEEP, SCRUB, HASH, DROP = Action("keep"), Action("scrub"), Action("hash"), Action("drop")
_SIMPLE = {"keep": KEEP, "scrub": SCRUB, "hash": HASH, "drop": DROP}


# -- presets ------------------------------------------------------------------------------------


def _preset(base: Mapping[str, Action], **changes: Action) -> Mapping[str, Action]:
    d = dict(base)
    for name, action in changes.items():
        d[name] = action
    return MappingProxyType(d)


_DEFAULT = _preset({f: SCRUB for f in FIELDS}, user_id=KEEP, session_id=KEEP)
_METADATA_ONLY = _preset(
    {f: DROP for f in FIELDS}, model_parameters=SCRUB, user_id=KEEP, session_id=KEEP
)

PRESETS: dict[str, Mapping[str, Action]] = {
    "default": _DEFAULT,
    "no-tool-io": _preset(_DEFAULT, tool_calls=DROP, tool_results=DROP),
    "metadata-only": _METADATA_ONLY,
    "strict": _preset(_METADATA_ONLY, user_id=HASH, session_id=HASH),
}

# Kinds and groups a spec may switch (`patterns.off=`, `patterns.on=`).
_PATTERN_NAMES: tuple[str, ...] = (*pattern_names(), *GROUPS)
_SPEC_KEYS = (*FIELDS, "metadata.<key>", "preset", "patterns.off", "patterns.on", "hook")

# The message fields content can fall under; a message of unknown role takes the strictest.
_MESSAGE_FIELDS = ("system_prompt", "user_messages", "assistant_messages", "tool_results")


def _hmac_key(key: bytes | str | None) -> bytes | None:
    if key is None:
        return None
    if hasattr(key, "get_secret_value"):  # pydantic SecretStr / SecretBytes from the config
        key = key.get_secret_value()
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes | bytearray):
        raise RedactionSpecError(f"the HMAC key must be bytes or str, not {type(key).__name__}")
    return bytes(key) or None  # an empty key is no key


def _import_hook(path: str) -> Callable[[str, str], str]:
    """``package.module:function`` or ``package.module.function`` -> the callable."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError("expected package.module:function or package.module.function")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{path} is not callable")
    return obj


class _HookChain:
    """Two hooks in order (``stricter`` of two policies that both have one)."""

    def __init__(self, first: Callable[[str, str], str], second: Callable[[str, str], str]):
        self.first, self.second = first, second

    def __call__(self, field_name: str, value: str) -> str:
        out = self.first(field_name, value)
        if not isinstance(out, str):
            raise TypeError(f"redaction hook returned {type(out).__name__}, not str")
        return self.second(field_name, out)


# -- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=True)
class RedactionPolicy:
    """What happens to each field on its way to LangFuse. Immutable; build with ``from_spec``.

    ``actions`` maps every name of ``FIELDS`` to an ``Action`` (missing fields take the
    ``default`` preset's action; strings are parsed). ``metadata_actions`` overrides the
    ``metadata`` action per metadata key.
    """

    actions: Mapping[str, Action] = field(default_factory=lambda: _DEFAULT)
    metadata_actions: Mapping[str, Action] = field(default_factory=dict)
    patterns_off: frozenset[str] = frozenset()
    patterns_on: frozenset[str] = frozenset()
    extra_patterns: tuple[SecretPattern, ...] = ()
    hmac_key: bytes | None = field(default=None, repr=False)
    hook: Callable[[str, str], str] | None = field(default=None, compare=False, repr=False)
    hook_path: str | None = None
    preset: str = "default"
    # Inline media forwarded for LangFuse's own upload (the `langfuse_media_upload` setting)
    # instead of replaced by a marker. Never part of a spec: only the operator's config sets it.
    media_upload: bool = False

    def __post_init__(self) -> None:
        unknown = [f for f in self.actions if f not in FIELDS]
        if unknown:
            raise RedactionSpecError(
                f"unknown field(s) {', '.join(map(repr, unknown))}; valid: {', '.join(FIELDS)}"
            )
        acts = {f: Action.parse(self.actions.get(f, _DEFAULT[f])) for f in FIELDS}
        md = {str(k): Action.parse(a) for k, a in self.metadata_actions.items()}
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "actions", MappingProxyType(acts))
        set_(self, "metadata_actions", MappingProxyType(md))
        set_(self, "patterns_off", frozenset(self.patterns_off))
        set_(self, "patterns_on", frozenset(self.patterns_on))
        set_(self, "extra_patterns", tuple(self.extra_patterns))
        set_(self, "hmac_key", _hmac_key(self.hmac_key))
        if self.hmac_key:
            KNOWN_SECRETS.add(self.hmac_key)  # never on the wire, whatever the patterns say
        if self.hook is not None and not callable(self.hook):
            raise RedactionSpecError(f"hook must be callable, got {type(self.hook).__name__}")
        hashed = [f for f, a in acts.items() if a.kind == "hash"]
        hashed += [f"metadata.{k}" for k, a in md.items() if a.kind == "hash"]
        if hashed and self.hmac_key is None:
            raise RedactionSpecError(
                f"{', '.join(f'{h}=hash' for h in hashed)} needs an HMAC key: "
                f"set {HMAC_KEY_ENV} (or pass hmac_key=...)"
            )
        try:
            # With LangFuse's media upload on, data: URLs reach the SDK (which uploads them);
            # otherwise they become markers here (see agent.core.media).
            off = self.patterns_off | ({"inline_media"} if self.media_upload else set())
            scrubber = Scrubber(disabled=off, enabled=self.patterns_on, extra=self.extra_patterns)
        except (ValueError, TypeError) as exc:
            raise RedactionSpecError(f"patterns: {exc}") from exc
        # Precomputed for `redact`: per-call work is then proportional to the content only.
        set_(self, "_scrubber", scrubber)
        set_(
            self,
            "_mac",
            hmac.new(self.hmac_key, digestmod=hashlib.sha256) if self.hmac_key else None,
        )
        strictest = max(_MESSAGE_FIELDS, key=lambda f: acts[f].rank)
        set_(self, "_unknown_role_field", strictest)
        set_(self, "_override_cache", {})

    def __hash__(self) -> int:
        return hash(
            (
                tuple(self.actions.items()),
                tuple(sorted(self.metadata_actions.items())),
                self.patterns_off,
                self.patterns_on,
                self.media_upload,
                self.extra_patterns,
                self.hook_path,
            )
        )

    # -- construction --

    @classmethod
    def from_spec(
        cls,
        spec: str | None,
        *,
        hmac_key: bytes | str | None = None,
        media_upload: bool = False,
    ) -> RedactionPolicy:
        """Parse a spec (see the module docstring). Raises ``RedactionSpecError``."""
        if spec is not None and not isinstance(spec, str):
            raise RedactionSpecError(
                f"a redaction spec must be a string, not {type(spec).__name__}"
            )
        key = _hmac_key(hmac_key)
        items = [it.strip() for it in (spec or "").split(",")]
        items = [it for it in items if it]
        preset_item: str | None = None
        preset_name = "default"
        field_items: dict[str, tuple[Action, str]] = {}
        md_items: dict[str, tuple[Action, str]] = {}
        patterns_off: set[str] = set()
        patterns_on: set[str] = set()
        hook = None
        hook_path = None
        for item in items:
            name, sep, value = item.partition("=")
            name, value = name.strip(), value.strip()
            lname = name.lower()
            if not sep or not name:
                raise RedactionSpecError(
                    f"redaction spec item {item!r} is not key=value; valid keys: "
                    f"{', '.join(_SPEC_KEYS)}"
                )
            if lname == "preset":
                if preset_item is not None:
                    raise RedactionSpecError(
                        f"redaction spec item {item!r}: only one preset allowed "
                        f"(already {preset_item!r})"
                    )
                if value.lower() not in PRESETS:
                    raise RedactionSpecError(
                        f"redaction spec item {item!r}: unknown preset {value!r}; "
                        f"valid: {', '.join(PRESETS)}"
                    )
                preset_item, preset_name = item, value.lower()
            elif lname in ("patterns.off", "patterns.on"):
                names = [n.strip() for n in value.split("+") if n.strip()]
                unknown = [n for n in names if n not in _PATTERN_NAMES]
                if unknown or not names:
                    raise RedactionSpecError(
                        f"redaction spec item {item!r}: unknown secret pattern(s) "
                        f"{', '.join(map(repr, unknown)) or '(none given)'}; valid (joined "
                        f"with '+'): {', '.join(_PATTERN_NAMES)}"
                    )
                (patterns_off if lname == "patterns.off" else patterns_on).update(names)
            elif lname == "hook":
                try:
                    hook = _import_hook(value)
                except Exception as exc:
                    raise RedactionSpecError(
                        f"redaction spec item {item!r}: cannot load hook {value!r} "
                        f"({type(exc).__name__}: {exc}); expected package.module:function "
                        "or package.module.function naming a callable hook(field, value) -> str"
                    ) from exc
                hook_path = value
            elif lname.startswith("metadata."):
                key_name = name[len("metadata.") :]
                if not key_name:
                    raise RedactionSpecError(
                        f"redaction spec item {item!r}: metadata.<key> needs a key name"
                    )
                md_items[key_name] = (cls._parse_action(item, value), item)
            elif lname in FIELDS:
                field_items[lname] = (cls._parse_action(item, value), item)
            else:
                raise RedactionSpecError(
                    f"redaction spec item {item!r}: unknown field {name!r}; valid: "
                    f"{', '.join(_SPEC_KEYS)}"
                )
        actions = dict(PRESETS[preset_name])
        origin = {f: preset_item or f"preset={preset_name}" for f in FIELDS}
        for f, (action, item) in field_items.items():
            actions[f] = action
            origin[f] = item
        if key is None:
            hashed = [origin[f] for f in FIELDS if actions[f].kind == "hash"]
            hashed += [item for a, item in md_items.values() if a.kind == "hash"]
            if hashed:
                first = hashed[0]
                what = (
                    f"{first} pseudonymises user_id and session_id with HMAC-SHA256"
                    if first.lower().startswith("preset=")
                    else f"{first} hashes with HMAC-SHA256"
                )
                raise RedactionSpecError(
                    f"redaction spec item {first!r}: {what} and needs a key: set {HMAC_KEY_ENV} "
                    "(or pass hmac_key=...), or choose another action (keep, scrub, "
                    "truncate:N, drop)"
                )
        return cls(
            actions=actions,
            metadata_actions={k: a for k, (a, _) in md_items.items()},
            patterns_off=frozenset(patterns_off),
            patterns_on=frozenset(patterns_on),
            media_upload=media_upload,
            hmac_key=key,
            hook=hook,
            hook_path=hook_path,
            preset=preset_name,
        )

    @staticmethod
    def _parse_action(item: str, value: str) -> Action:
        try:
            return Action.parse(value)
        except RedactionSpecError as exc:
            raise RedactionSpecError(f"redaction spec item {item!r}: {exc}") from None

    # -- combination and description --

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
        extra = tuple(dict.fromkeys((*self.extra_patterns, *other.extra_patterns)))
        hook, hook_path = self.hook, self.hook_path
        if other.hook is not None and other.hook is not self.hook:
            if hook is None:
                hook, hook_path = other.hook, other.hook_path
            else:
                hook = _HookChain(hook, other.hook)
                hook_path = f"{self.hook_path}+{other.hook_path}"
        preset = self.preset if self.preset == other.preset else f"{self.preset}+{other.preset}"
        return RedactionPolicy(
            actions=actions,
            metadata_actions=md,
            patterns_off=self.patterns_off & other.patterns_off,
            patterns_on=self.patterns_on | other.patterns_on,
            media_upload=self.media_upload and other.media_upload,
            extra_patterns=extra,
            hmac_key=self.hmac_key or other.hmac_key,
            hook=hook,
            hook_path=hook_path,
            preset=preset,
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

    def with_override(self, spec: Any) -> tuple[RedactionPolicy, str]:
        """The effective policy for a per-call override, and a note for the report.

        Cached per override string (a handful of distinct overrides per process at most).
        """
        cache: dict[Any, tuple[RedactionPolicy, str]] = self._override_cache  # type: ignore[attr-defined]
        hit = cache.get(spec) if isinstance(spec, str) else None
        if hit is not None:
            return hit
        try:
            if not isinstance(spec, str):
                raise RedactionSpecError(f"override must be a string, not {type(spec).__name__}")
            result = (
                self.stricter(
                    RedactionPolicy.from_spec(
                        spec, hmac_key=self.hmac_key, media_upload=self.media_upload
                    )
                ),
                spec.strip(),
            )
        except Exception as exc:
            # Fail closed: an override we cannot read was meant to tighten, so tighten fully.
            guard.warn_once(
                f"redaction-override:{type(exc).__name__}",
                "malformed per-call redaction override (%s); using metadata-only for the call",
                type(exc).__name__,
            )
            result = (self.stricter(_metadata_only_policy()), "invalid; metadata-only applied")
        if isinstance(spec, str):
            if len(cache) >= 256:
                cache.clear()
            cache[spec] = result
        return result


_DEFAULT_POLICY: RedactionPolicy | None = None
# Replaces inline media only (for fields kept as they are).
_MEDIA_ONLY = Scrubber(patterns=[r for r in CATALOGUE if r.name == "inline_media"], known=None)
_METADATA_ONLY_POLICY: RedactionPolicy | None = None


def default_policy() -> RedactionPolicy:
    """The ``default`` preset: secrets scrubbed everywhere, everything else kept."""
    global _DEFAULT_POLICY
    if _DEFAULT_POLICY is None:
        _DEFAULT_POLICY = RedactionPolicy.from_spec(None)
    return _DEFAULT_POLICY


def _metadata_only_policy() -> RedactionPolicy:
    global _METADATA_ONLY_POLICY
    if _METADATA_ONLY_POLICY is None:
        _METADATA_ONLY_POLICY = RedactionPolicy.from_spec("preset=metadata-only")
    return _METADATA_ONLY_POLICY


# -- the report ---------------------------------------------------------------------------------


@dataclass
class RedactionReport:
    """What ``redact`` did: never any value, only names and counts."""

    # field (or metadata.<key>) -> action applied; only fields present and not `keep`
    fields: dict[str, str] = field(default_factory=dict)
    # secret pattern name -> how many were scrubbed
    secrets: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    # the per-call override applied (or a note that it was malformed)
    override: str | None = None
    # code points no serializer can take (lone surrogates) replaced by U+FFFD after redaction
    unencodable: int = 0

    def as_metadata(self) -> dict[str, Any]:
        """JSON-serialisable; attached to each LangFuse generation as metadata ``redaction``."""
        out: dict[str, Any] = {
            "fields": dict(sorted(self.fields.items())),
            "secrets": dict(sorted(self.secrets.items())),
            "failures": int(self.failures),
            "override": self.override,
        }
        if self.unencodable:
            out["unencodable"] = int(self.unencodable)
        return out


# -- the walk -----------------------------------------------------------------------------------

# Keys that carry structure, not content: kept as they are when their value is a plain scalar.
_MESSAGE_STRUCT = frozenset({"role", "name", "tool_call_id", "id", "type", "index"})
_TOOL_CALL_STRUCT = frozenset({"id", "type", "index"})
_PART_STRUCT = frozenset({"type", "id", "name", "tool_use_id", "tool_call_id"})
_REASONING_KEYS = frozenset({"reasoning_content", "thinking_blocks", "reasoning"})
# Roles and part / tool types: a fixed vocabulary that cannot hold a secret (kept even when the
# scrubber fails, so the shape of a conversation survives a failure).
_VOCABULARY = frozenset(
    {
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "function",
        "text",
        "image_url",
        "input_audio",
        "file",
        "image",
        "tool_use",
        "tool_result",
        "thinking",
    }
)
_ROLE_FIELD = {
    "system": "system_prompt",
    "developer": "system_prompt",
    "user": "user_messages",
    "assistant": "assistant_messages",
    "tool": "tool_results",
    "function": "tool_results",  # legacy OpenAI function results
}


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float)


def _json_len(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str))


class _Run:
    """One ``redact`` call: the policy's precomputed parts and the report being built."""

    __slots__ = ("acts", "failures", "fields", "hook", "mac", "policy", "scrubber", "secrets")

    def __init__(self, policy: RedactionPolicy) -> None:
        self.policy = policy
        self.acts = policy.actions
        self.scrubber: Scrubber = policy._scrubber  # type: ignore[attr-defined]
        self.mac = policy._mac  # type: ignore[attr-defined]
        self.hook = policy.hook
        self.fields: dict[str, str] = {}
        self.secrets: Counter[str] = Counter()
        self.failures = 0

    # -- one value --

    def unit(
        self,
        field_name: str,
        value: Any,
        action: Action | None = None,
        *,
        label: str = "",
        key: Any = None,
    ) -> Any:
        """``value`` under ``action`` (default: the field's); fails closed to ``FAILED``."""
        if value is None:
            return None
        if action is None:
            action = self.acts[field_name]
        try:
            # Counts go straight into the report (a failed value's count is harmless there).
            marker = (
                self.scrubber.secret_key_marker(key)
                if key is not None
                and action.kind in ("scrub", "truncate")
                and isinstance(value, str)
                and value
                else None
            )
            if marker is not None:
                # A value under a secret-looking key is a secret as a whole.
                out: Any = marker
                self.secrets["secret_assignment"] += 1
            else:
                out = self._apply(field_name, action, value, self.secrets)
        except Exception as exc:
            self.fail(field_name, exc)
            return FAILED
        if action.kind != "keep":
            self.fields[label or field_name] = str(action)
        return out

    def name(self, value: Any) -> Any:
        """A name or other structural string (model, tool and span names, roles, ids): not
        content, so no field action applies, but scrubbed of secrets under every policy."""
        if not isinstance(value, str) or not value or value in _VOCABULARY:
            return value
        try:
            return self.scrubber.scrub_into(value, self.secrets)
        except Exception as exc:
            self.fail("name", exc)
            return FAILED

    def fail(self, field_name: str, exc: BaseException) -> None:
        self.failures += 1
        # The exception's message may quote the value: log its type and the field only.
        guard.report(
            "redaction", RuntimeError(f"{type(exc).__name__} while redacting {field_name}")
        )

    def _apply(self, field_name: str, action: Action, value: Any, counts: Counter[str]) -> Any:
        kind = action.kind
        if kind == "drop":
            n = len(value) if isinstance(value, str) else _json_len(value)
            return f"[DROPPED:{field_name} len={n}]"
        if kind == "hash":
            scrubbed = self._walk(field_name, value, True, 0, False, counts)
            text = (
                scrubbed
                if isinstance(scrubbed, str)
                else json.dumps(scrubbed, ensure_ascii=False, sort_keys=True, default=str)
            )
            return f"[HASH:{self._digest(text)}]"
        return self._walk(
            field_name, value, kind != "keep", action.limit, self.hook is not None, counts
        )

    def _digest(self, text: str) -> str:
        if self.mac is None:
            raise RuntimeError("hash action without an HMAC key")
        mac = self.mac.copy()
        mac.update(text.encode("utf-8", "surrogatepass"))
        return mac.hexdigest()[:16]

    def _walk(
        self, field_name: str, v: Any, scrub: bool, limit: int, hook: bool, counts: Counter[str]
    ) -> Any:
        """A copy of a JSON-like value with every string leaf (and key, when scrubbing) treated."""
        if isinstance(v, str):
            if scrub:
                v = self.scrubber.scrub_into(v, counts)
            elif not self.policy.media_upload and ";base64," in v:
                # Inline media never leaves by surprise, even from a field kept as it is.
                v = _MEDIA_ONLY.scrub_into(v, counts)
            if limit and len(v) > limit:
                v = f"{v[:limit]}…[TRUNCATED:{len(v) - limit} chars]"
            if hook:
                v = self.hook(field_name, v)  # type: ignore[misc]
                if not isinstance(v, str):
                    raise TypeError(f"redaction hook returned {type(v).__name__}, not str")
            return v
        t = type(v)
        # Why (performance): exact built-in types first, so the common list / scalar nodes skip
        # the slow ABC check of ``isinstance(v, Mapping)`` (none of them is a Mapping anyway).
        if v is None or t is int or t is float or t is bool:
            return v
        # Why (performance): a plain string leaf with no limit and no hook is handled inline
        # (exactly what the str branch above does for it), saving a call per leaf.
        plain_leaf = not limit and not hook and (scrub or self.policy.media_upload)
        if t is dict or (t is not list and t is not tuple and isinstance(v, Mapping)):
            if not self.policy.media_upload and "data" in v:
                media = replace_media_dict(v)
                if media is not None:  # input_audio, base64 source blocks, inline_data
                    counts["inline_media"] += 1
                    v = media
            out: dict[Any, Any] = {}
            for k, x in v.items():
                marker = (
                    self.scrubber.secret_key_marker(k)
                    if scrub and isinstance(x, str) and x
                    else None
                )
                if marker is not None:
                    counts["secret_assignment"] += 1
                    x = marker
                elif plain_leaf and type(x) is str:
                    if scrub:
                        x = self.scrubber.scrub_into(x, counts)
                else:
                    x = self._walk(field_name, x, scrub, limit, hook, counts)
                if scrub and isinstance(k, str):
                    k = self.scrubber.scrub_into(k, counts)
                out[k] = x
            return out
        if isinstance(v, list | tuple):
            if plain_leaf:
                return [
                    (self.scrubber.scrub_into(x, counts) if scrub else x)
                    if type(x) is str
                    else self._walk(field_name, x, scrub, limit, hook, counts)
                    for x in v
                ]
            return [self._walk(field_name, x, scrub, limit, hook, counts) for x in v]
        if v is None or isinstance(v, bool | int | float):
            return v
        # Anything else (bytes, datetimes, objects) would be serialised downstream by code we do
        # not control: turn it into text here, under the same action.
        return self._walk(field_name, str(v), scrub, limit, hook, counts)

    # -- users --

    def session_id(self, value: Any) -> Any:
        """What ``session.id`` carries: the id scrubbed of secrets, ``s_<16 hex>`` (HMAC) under
        ``hash``, None under ``drop``. Never the hook: an id is not content."""
        if value is None:
            return None
        action = self.acts["session_id"]
        try:
            value = value if isinstance(value, str) else str(value)
            if action.kind == "hash":
                out = f"s_{self._digest(value)}"
            elif action.kind == "drop":
                out = None
            else:
                out = self.scrubber.scrub_into(value, self.secrets)
        except Exception as exc:
            self.fail("session_id", exc)
            return FAILED
        if action.kind in ("hash", "drop"):
            self.fields["session_id"] = str(action)
        return out

    def user_id(self, value: Any) -> Any:
        if value is None:
            return None
        action = self.acts["user_id"]
        if action.kind == "keep" and self.hook is None and isinstance(value, str):
            # An id is kept, but never with a secret in it (names and ids are always scrubbed).
            return self.name(value)
        try:
            if not isinstance(value, str):
                value = str(value)
            if action.kind == "hash":
                # The raw id (not a scrubbed one): pseudonyms must stay distinct per user.
                out = f"u_{self._digest(value)}"
            elif action.kind == "drop":
                out = None  # no user at all rather than one shared placeholder "user"
            else:
                out = self._apply("user_id", action, value, self.secrets)
        except Exception as exc:
            self.fail("user_id", exc)
            return FAILED
        if action.kind != "keep":
            self.fields["user_id"] = str(action)
        return out

    # -- messages --

    def messages(self, messages: Iterable[Any]) -> tuple[dict[str, Any], ...]:
        return tuple(self.message(m) for m in messages)

    def message(self, msg: Any, content_field: str | None = None) -> dict[str, Any]:
        if not isinstance(msg, Mapping) and hasattr(msg, "model_dump"):
            msg = msg.model_dump()  # a litellm/pydantic message object
        if not isinstance(msg, Mapping):
            self.fail("messages", TypeError(f"message is a {type(msg).__name__}"))
            return {"role": "unknown", "content": FAILED}
        role = msg.get("role")
        if content_field is None:
            content_field = _ROLE_FIELD.get(role) if isinstance(role, str) else None
            if content_field is None:  # unknown role: the strictest message field
                content_field = self.policy._unknown_role_field  # type: ignore[attr-defined]
        out: dict[str, Any] = {}
        for k, v in msg.items():
            if k == "content":
                out[k] = self.content(content_field, v)
            elif k == "tool_calls":
                out[k] = self.tool_calls(v)
            elif k == "function_call":  # legacy OpenAI: {"name", "arguments"}
                out[k] = self.function(v, "tool_calls")
            elif k in _REASONING_KEYS:
                out[k] = self.unit("reasoning", v)
            elif k in _MESSAGE_STRUCT and _plain(v):
                out[k] = self.name(v)
            else:  # unknown keys may carry content: they follow the message's field
                out[k] = self.unit(content_field, v)
        return out

    def content(self, field_name: str, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [self.part(field_name, p) for p in self.joined_text_parts(field_name, v)]
        return self.unit(field_name, v)

    def joined_text_parts(self, field_name: str, parts: Any) -> list[Any]:
        """The parts, with a secret split across text parts replaced in each of them: the model
        reads a message's text parts as one text, and so does the scrubber."""
        parts = list(parts)
        if self.acts[field_name].kind not in ("scrub", "truncate"):
            return parts
        at = [
            i
            for i, p in enumerate(parts)
            if isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        if len(at) < 2:
            return parts
        try:
            texts = self.scrubber.scrub_parts([parts[i]["text"] for i in at], self.secrets)
        except Exception as exc:
            self.fail(field_name, exc)
            texts = [FAILED] * len(at)
        for i, text in zip(at, texts, strict=True):
            parts[i] = {**parts[i], "text": text}
        return parts

    def part(self, field_name: str, p: Any) -> Any:
        if not isinstance(p, Mapping):
            return self.unit(field_name, p)
        return {
            k: self.name(x) if k in _PART_STRUCT and _plain(x) else self.unit(field_name, x)
            for k, x in p.items()
        }

    def tool_calls(self, v: Any) -> Any:
        if not isinstance(v, list | tuple):
            return self.unit("tool_calls", v)
        out: list[Any] = []
        for tc in v:
            if not isinstance(tc, Mapping):
                out.append(self.unit("tool_calls", tc))
                continue
            new: dict[str, Any] = {}
            for k, x in tc.items():
                if k == "function":
                    new[k] = self.function(x, "tool_calls")
                elif k in _TOOL_CALL_STRUCT and _plain(x):
                    new[k] = self.name(x)
                else:
                    new[k] = self.unit("tool_calls", x)
            out.append(new)
        return out

    def function(self, fn: Any, field_name: str) -> Any:
        """``{"name": kept, "arguments"/"description"/...: under field_name}``."""
        if not isinstance(fn, Mapping):
            return self.unit(field_name, fn)
        return {
            k: self.name(x) if k == "name" and _plain(x) else self.unit(field_name, x)
            for k, x in fn.items()
        }

    def tools(self, tools: Iterable[Any]) -> tuple[Any, ...]:
        action = self.acts["tool_definitions"]
        out: list[Any] = []
        for d in tools:
            if not isinstance(d, Mapping):
                out.append(self.unit("tool_definitions", d))
                continue
            if action.kind == "drop":
                # Only what identifies the tool: its type and name.
                new: dict[str, Any] = {}
                for k in ("type", "name"):
                    if k in d and _plain(d[k]):
                        new[k] = self.name(d[k])
                fn = d.get("function")
                if isinstance(fn, Mapping) and _plain(fn.get("name")):
                    new["function"] = {"name": self.name(fn.get("name"))}
                self.fields["tool_definitions"] = "drop"
                out.append(new)
                continue
            out.append(
                {
                    k: (
                        self.name(x)
                        if k in ("type", "name") and _plain(x)
                        else self.function(x, "tool_definitions")
                        if k == "function"
                        else self.unit("tool_definitions", x)
                    )
                    for k, x in d.items()
                }
            )
        return tuple(out)

    def keyed(self, field_name: str, d: Any, per_key: Mapping[str, Action] | None = None) -> Any:
        """A dict field (metadata, model parameters) redacted key by key."""
        if d is None:
            return None
        if not isinstance(d, Mapping):
            return self.unit(field_name, d)
        out: dict[Any, Any] = {}
        for k, v in d.items():
            action = per_key.get(str(k)) if per_key else None
            label = f"{field_name}.{k}" if action is not None else field_name
            out[self.name(k)] = self.unit(field_name, v, action, label=label, key=k)
        return out

    def report(self, override: str | None) -> RedactionReport:
        return RedactionReport(
            fields=self.fields,
            secrets=dict(self.secrets),
            failures=self.failures,
            override=override,
        )


# -- redact -------------------------------------------------------------------------------------


def redact(record: Any, policy: RedactionPolicy) -> tuple[Any, RedactionReport]:
    """A new, redacted copy of a ``CallRecord`` / ``SpanRecord`` / ``ScoreRecord`` and a report.

    Never mutates ``record``; never raises for a supported record type (fails closed). A record
    of any other type raises ``TypeError``: there is nothing safe to return for it.
    """
    if not isinstance(record, CallRecord | SpanRecord | ScoreRecord):
        raise TypeError(f"redact() cannot handle {type(record).__name__}")
    KNOWN_SECRETS.refresh_if_stale()
    override_note: str | None = None
    try:
        if not isinstance(policy, RedactionPolicy):
            raise TypeError(f"policy is a {type(policy).__name__}, not a RedactionPolicy")
        if isinstance(record, CallRecord) and record.redact_override is not None:
            policy, override_note = policy.with_override(record.redact_override)
        run = _Run(policy)
        if isinstance(record, CallRecord):
            new = _redact_call(run, record)
        elif isinstance(record, SpanRecord):
            new = _redact_span(run, record)
        else:
            new = _redact_score(run, record)
        return new, run.report(override_note)
    except Exception as exc:
        guard.report("redaction", RuntimeError(f"{type(exc).__name__} in redact()"))
        return _all_failed(record), RedactionReport(
            fields={"*": "failed"}, failures=1, override=override_note
        )


def _redact_call(run: _Run, r: CallRecord) -> CallRecord:
    output = r.output
    if output is not None:
        output = (
            run.message(output, "completion")
            if isinstance(output, Mapping) or hasattr(output, "model_dump")
            else run.unit("completion", output)
        )
    return dataclasses.replace(
        r,
        model=run.name(r.model),
        wire_session_id=run.session_id(r.session_id),
        user_id=run.user_id(r.user_id),
        messages=run.messages(r.messages),
        tools=run.tools(r.tools),
        model_parameters=run.keyed("model_parameters", r.model_parameters) or {},
        output=output,
        usage=dict(r.usage),
        error_message=run.unit("error_message", _error_without_content(run, r)),
        metadata=run.keyed("metadata", r.metadata, run.policy.metadata_actions) or {},
    )


def _error_without_content(run: _Run, r: CallRecord) -> str | None:
    """A provider's error quotes the request back, possibly cut mid-token (where no pattern can
    see a secret): the call's own content and quoted spans are taken out of it first (see
    ``agent.core.error_text``), unless the operator keeps error messages as they are."""
    if r.error_message is None or run.acts["error_message"].kind == "keep":
        return r.error_message
    try:
        # Scrubbed first, while every token is whole (taking content out may cut one).
        scrubbed = run.scrubber.scrub_into(r.error_message, run.secrets)
        return strip_content(scrubbed, content_strings([r.messages, r.tools]))
    except Exception as exc:
        run.fail("error_message", exc)
        return FAILED


def _span_field(run: _Run, name: str | None, value: Any) -> Any:
    if value is None:
        return None
    name = name or "metadata"
    if name not in FIELDS:
        run.fail(f"unknown field {name!r}", KeyError(name))
        return FAILED
    if name == "user_id":
        return run.user_id(value)
    return run.unit(name, value)


def _redact_span(run: _Run, r: SpanRecord) -> SpanRecord:
    return dataclasses.replace(
        r,
        wire_session_id=run.session_id(r.session_id),
        user_id=run.user_id(r.user_id),
        input=_span_field(run, r.input_field, r.input),
        output=_span_field(run, r.output_field, r.output),
        metadata=run.keyed("metadata", r.metadata, run.policy.metadata_actions) or {},
        status_message=run.unit(r.status_field or "error_message", r.status_message),
        name=run.name(r.name),
    )


def _redact_score(run: _Run, r: ScoreRecord) -> ScoreRecord:
    return dataclasses.replace(
        r,
        wire_session_id=run.session_id(r.session_id),
        user_id=run.user_id(r.user_id),
        comment=run.unit("feedback_comment", r.comment),
        name=run.name(r.name),
    )


def _all_failed(record: CallRecord | SpanRecord | ScoreRecord) -> Any:
    """The last resort: every content field replaced, structure kept only where it is cheap."""

    def failed(v: Any) -> Any:
        return None if v is None else FAILED

    if isinstance(record, CallRecord):
        try:
            messages = tuple(
                {
                    "role": m.get("role") if isinstance(m.get("role"), str) else "unknown",
                    "content": FAILED,
                }
                for m in record.messages
            )
        except Exception:
            messages = ()
        return dataclasses.replace(
            record,
            user_id=failed(record.user_id),
            messages=messages,
            tools=(),
            model_parameters={},
            output=None if record.output is None else {"role": "assistant", "content": FAILED},
            usage={},
            error_message=failed(record.error_message),
            metadata={},
        )
    if isinstance(record, SpanRecord):
        return dataclasses.replace(
            record,
            user_id=failed(record.user_id),
            input=failed(record.input),
            output=failed(record.output),
            metadata={},
            status_message=failed(record.status_message),
        )
    return dataclasses.replace(
        record, user_id=failed(record.user_id), comment=failed(record.comment)
    )
