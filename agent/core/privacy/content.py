"""One ``redact`` call's walk over a record's content: each piece under its field's action.

``Run`` knows the shapes content comes in (OpenAI chat messages and their parts, tool calls,
tool definitions, keyed dicts such as metadata) and which field each piece belongs to; every
value is then treated by the one scrub walker the compiled policy holds for that field's action
(``agent.core.privacy.compiled``), so structure-aware code never walks values itself.

Contract:

- Structure survives every action: roles, message count and order, tool-call ids, tool names,
  ``tool_call_id``, ``name`` and ``type`` are not content and are never changed, but names are
  scrubbed of secrets under every policy (``name``).
- Fail closed: anything raised while treating one value makes that value ``FAILED`` and counts
  a failure; the failure is logged once per kind (type and field, never the value).
- ``report()`` says which fields were transformed and how many secrets of each kind were
  scrubbed, never a value.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.core import guard
from agent.core.privacy.actions import FAILED, Action
from agent.core.privacy.compiled import CompiledPolicy

__all__ = ["RedactionReport", "Run"]


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


# A message's keys that are neither its content field's content nor structure:
# key -> (run, value) -> treated value.
_MESSAGE_KEYS: dict[str, Callable[[Run, Any], Any]] = {
    "tool_calls": lambda run, v: run.tool_calls(v),
    "function_call": lambda run, v: run.function(v, "tool_calls"),  # legacy OpenAI
    **dict.fromkeys(_REASONING_KEYS, lambda run, v: run.unit("reasoning", v)),
}


class Run:
    """One ``redact`` call: the compiled policy and the report being built."""

    __slots__ = (
        "acts",
        "compiled",
        "failures",
        "fields",
        "policy",
        "scrubber",
        "secrets",
        "unencodable",
    )

    def __init__(self, compiled: CompiledPolicy) -> None:
        self.compiled = compiled
        self.policy = compiled.policy
        self.acts = compiled.actions
        self.scrubber = compiled.scrubber
        self.fields: dict[str, str] = {}
        self.secrets: Counter[str] = Counter()
        self.failures = 0
        # code points replaced after redaction (by a ContentMemo's finish step)
        self.unencodable = 0

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
                out = self._apply(field_name, action, value)
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

    def _apply(self, field_name: str, action: Action, value: Any) -> Any:
        kind = action.kind
        if kind == "drop":
            n = len(value) if isinstance(value, str) else _json_len(value)
            return f"[DROPPED:{field_name} len={n}]"
        if kind == "hash":
            scrubbed = self.compiled.hash_walker.walk(value, self.secrets, field_name)
            text = (
                scrubbed
                if isinstance(scrubbed, str)
                else json.dumps(scrubbed, ensure_ascii=False, sort_keys=True, default=str)
            )
            return f"[HASH:{self.compiled.digest(text)}]"
        return self.compiled.walker(action).walk(value, self.secrets, field_name)

    # -- users and sessions --

    def session_id(self, value: Any) -> Any:
        """What ``session.id`` carries: the id scrubbed of secrets, ``s_<16 hex>`` (HMAC) under
        ``hash``, None under ``drop``. Never the hook: an id is not content."""
        if value is None:
            return None
        action = self.acts["session_id"]
        try:
            value = value if isinstance(value, str) else str(value)
            if action.kind == "hash":
                out = f"s_{self.compiled.digest(value)}"
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
        if action.kind == "keep" and self.compiled.hook is None and isinstance(value, str):
            # An id is kept, but never with a secret in it (names and ids are always scrubbed).
            return self.name(value)
        try:
            if not isinstance(value, str):
                value = str(value)
            if action.kind == "hash":
                # The raw id (not a scrubbed one): pseudonyms must stay distinct per user.
                out = f"u_{self.compiled.digest(value)}"
            elif action.kind == "drop":
                out = None  # no user at all rather than one shared placeholder "user"
            else:
                out = self._apply("user_id", action, value)
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
        if content_field is None:
            role = msg.get("role")
            content_field = _ROLE_FIELD.get(role) if isinstance(role, str) else None
            # A message of unknown role: the strictest message field.
            content_field = content_field or self.compiled.unknown_role_field
        out: dict[str, Any] = {}
        for k, v in msg.items():
            special = _MESSAGE_KEYS.get(k)
            if k == "content":
                out[k] = self.content(content_field, v)
            elif special is not None:
                out[k] = special(self, v)
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

    # -- tools --

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
        dropped = self.acts["tool_definitions"].kind == "drop"
        out: list[Any] = []
        for d in tools:
            if not isinstance(d, Mapping):
                out.append(self.unit("tool_definitions", d))
            elif dropped:
                out.append(self._tool_identity(d))
            else:
                out.append(self._tool(d))
        return tuple(out)

    def _tool(self, d: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, x in d.items():
            if k in ("type", "name") and _plain(x):
                out[k] = self.name(x)
            elif k == "function":
                out[k] = self.function(x, "tool_definitions")
            else:
                out[k] = self.unit("tool_definitions", x)
        return out

    def _tool_identity(self, d: Mapping[str, Any]) -> dict[str, Any]:
        """A dropped tool definition: only what identifies the tool, its type and name."""
        new: dict[str, Any] = {}
        for k in ("type", "name"):
            if k in d and _plain(d[k]):
                new[k] = self.name(d[k])
        fn = d.get("function")
        if isinstance(fn, Mapping) and _plain(fn.get("name")):
            new["function"] = {"name": self.name(fn.get("name"))}
        self.fields["tool_definitions"] = "drop"
        return new

    # -- keyed dicts --

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
            unencodable=self.unencodable,
        )
