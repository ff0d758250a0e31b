"""The vocabulary of redaction: the content fields, the actions, and the presets (plain data).

- ``FIELDS``: every kind of content a record can carry. ``FIELD_ATTRIBUTES`` says where each
  field's content reaches on the wire (the table of ``agent/README.md``; walked against the
  wire by ``tests/test_field_attributes.py``).
- ``Action``: ``keep`` < ``scrub`` < ``truncate:N`` (smaller N is stricter) < ``hash`` <
  ``drop``. ``Action.parse`` reads one; ``stricter`` picks the stricter of two.
- ``PRESETS``: field -> action for ``default``, ``no-tool-io``, ``metadata-only`` and ``strict``
  (see ``agent.core.privacy.policy`` for what each promises).
- ``FAILED``: the fixed placeholder for a value that could not be redacted (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "ACTIONS",
    "DROP",
    "FAILED",
    "FIELDS",
    "FIELD_ATTRIBUTES",
    "HASH",
    "HMAC_KEY_ENV",
    "KEEP",
    "PRESETS",
    "SCRUB",
    "Action",
    "RedactionSpecError",
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


def _preset(base: Mapping[str, Action], **changes: Action) -> Mapping[str, Action]:
    return MappingProxyType({**base, **changes})


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
