"""The redaction spec (the ``ML_INTERN_REDACT`` setting) parsed into a policy's settings.

Grammar::

    spec   := item ("," item)*            empty items and whitespace around items are ignored
    item   := "preset=" PRESET            applied first, whatever its position; at most one
            | FIELD "=" ACTION            FIELD in FIELDS
            | "metadata." KEY "=" ACTION  one metadata key (KEY is case-sensitive)
            | "patterns.off=" NAME ("+" NAME)*   switch secret kinds (or whole groups) off
            | "patterns.on=" NAME ("+" NAME)*    switch off-by-default kinds on (pii)
            | "hook=" DOTTED              package.module:function or package.module.function
    ACTION := keep | scrub | truncate:N | hash | drop      (N >= 1)

An empty spec (or None) is the ``default`` preset. Field and action names are case-insensitive.

Contract: ``parse_spec(spec, hmac_key)`` returns the keyword arguments of a
``RedactionPolicy`` (``RedactionPolicy.from_spec`` is the public entry), or raises
``RedactionSpecError`` naming the item and the valid choices. Each item key has one handler
(``_HANDLERS``); a spec that hashes without an HMAC key names the item that asked for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agent.core.privacy.actions import FIELDS, HMAC_KEY_ENV, PRESETS, Action, RedactionSpecError
from agent.core.privacy.catalogue import GROUPS, pattern_names

__all__ = ["SPEC_KEYS", "hmac_key_bytes", "parse_spec"]

# Kinds and groups a spec may switch (`patterns.off=`, `patterns.on=`).
_PATTERN_NAMES: tuple[str, ...] = (*pattern_names(), *GROUPS)
SPEC_KEYS = (*FIELDS, "metadata.<key>", "preset", "patterns.off", "patterns.on", "hook")


def hmac_key_bytes(key: object) -> bytes | None:
    """The HMAC key as bytes (from bytes, str or a pydantic secret); None for none or empty."""
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


@dataclass
class _Parsed:
    """What the items of one spec said so far."""

    preset_item: str | None = None
    preset: str = "default"
    fields: dict[str, tuple[Action, str]] = field(default_factory=dict)
    metadata: dict[str, tuple[Action, str]] = field(default_factory=dict)
    patterns: dict[str, set[str]] = field(
        default_factory=lambda: {"patterns.off": set(), "patterns.on": set()}
    )
    hook: Callable[[str, str], str] | None = None
    hook_path: str | None = None


def _action(item: str, value: str) -> Action:
    try:
        return Action.parse(value)
    except RedactionSpecError as exc:
        raise RedactionSpecError(f"redaction spec item {item!r}: {exc}") from None


# -- one handler per item key: (parsed, item, name as written, lowered name, value) -------------


def _preset(p: _Parsed, item: str, name: str, lname: str, value: str) -> None:
    if p.preset_item is not None:
        raise RedactionSpecError(
            f"redaction spec item {item!r}: only one preset allowed (already {p.preset_item!r})"
        )
    if value.lower() not in PRESETS:
        raise RedactionSpecError(
            f"redaction spec item {item!r}: unknown preset {value!r}; valid: {', '.join(PRESETS)}"
        )
    p.preset_item, p.preset = item, value.lower()


def _patterns(p: _Parsed, item: str, name: str, lname: str, value: str) -> None:
    names = [n.strip() for n in value.split("+") if n.strip()]
    unknown = [n for n in names if n not in _PATTERN_NAMES]
    if unknown or not names:
        raise RedactionSpecError(
            f"redaction spec item {item!r}: unknown secret pattern(s) "
            f"{', '.join(map(repr, unknown)) or '(none given)'}; valid (joined "
            f"with '+'): {', '.join(_PATTERN_NAMES)}"
        )
    p.patterns[lname].update(names)


def _hook(p: _Parsed, item: str, name: str, lname: str, value: str) -> None:
    try:
        p.hook = _import_hook(value)
    except Exception as exc:
        raise RedactionSpecError(
            f"redaction spec item {item!r}: cannot load hook {value!r} "
            f"({type(exc).__name__}: {exc}); expected package.module:function "
            "or package.module.function naming a callable hook(field, value) -> str"
        ) from exc
    p.hook_path = value


def _metadata_key(p: _Parsed, item: str, name: str, lname: str, value: str) -> None:
    key_name = name[len("metadata.") :]
    if not key_name:
        raise RedactionSpecError(f"redaction spec item {item!r}: metadata.<key> needs a key name")
    p.metadata[key_name] = (_action(item, value), item)


def _field(p: _Parsed, item: str, name: str, lname: str, value: str) -> None:
    p.fields[lname] = (_action(item, value), item)


_Handler = Callable[[_Parsed, str, str, str, str], None]
_HANDLERS: dict[str, _Handler] = {
    "preset": _preset,
    "patterns.off": _patterns,
    "patterns.on": _patterns,
    "hook": _hook,
    **dict.fromkeys(FIELDS, _field),
}


def _handler(item: str, name: str, lname: str) -> _Handler:
    handler = _HANDLERS.get(lname)
    if handler is None and lname.startswith("metadata."):
        handler = _metadata_key
    if handler is None:
        raise RedactionSpecError(
            f"redaction spec item {item!r}: unknown field {name!r}; valid: {', '.join(SPEC_KEYS)}"
        )
    return handler


def _require_key(hashed: list[str]) -> None:
    """Raise for the first item that hashes (there is no HMAC key)."""
    if not hashed:
        return
    first = hashed[0]
    what = (
        f"{first} pseudonymises user_id and session_id with HMAC-SHA256"
        if first.lower().startswith("preset=")
        else f"{first} hashes with HMAC-SHA256"
    )
    raise RedactionSpecError(
        f"redaction spec item {first!r}: {what} and needs a key: set {HMAC_KEY_ENV} "
        "(or pass hmac_key=...), or choose another action (keep, scrub, truncate:N, drop)"
    )


def _parse_items(spec: str) -> _Parsed:
    p = _Parsed()
    for item in (it.strip() for it in spec.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise RedactionSpecError(
                f"redaction spec item {item!r} is not key=value; valid keys: {', '.join(SPEC_KEYS)}"
            )
        _handler(item, name, name.lower())(p, item, name, name.lower(), value)
    return p


def parse_spec(spec: str | None, hmac_key: object = None) -> dict[str, Any]:
    """The ``RedactionPolicy`` keyword arguments of ``spec`` (see the module docstring)."""
    if spec is not None and not isinstance(spec, str):
        raise RedactionSpecError(f"a redaction spec must be a string, not {type(spec).__name__}")
    key = hmac_key_bytes(hmac_key)
    p = _parse_items(spec or "")
    # The preset first, whatever its position; then each field item over it.
    actions = dict(PRESETS[p.preset])
    origin = dict.fromkeys(FIELDS, p.preset_item or f"preset={p.preset}")
    for f, (action, item) in p.fields.items():
        actions[f], origin[f] = action, item
    if key is None:
        hashed = [origin[f] for f in FIELDS if actions[f].kind == "hash"]
        _require_key(hashed + [it for a, it in p.metadata.values() if a.kind == "hash"])
    return {
        "actions": MappingProxyType(actions),
        "metadata_actions": MappingProxyType({k: a for k, (a, _) in p.metadata.items()}),
        "patterns_off": frozenset(p.patterns["patterns.off"]),
        "patterns_on": frozenset(p.patterns["patterns.on"]),
        "hmac_key": key,
        "hook": p.hook,
        "hook_path": p.hook_path,
        "preset": p.preset,
    }
