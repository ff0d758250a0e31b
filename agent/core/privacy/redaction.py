"""The one pure ``redact()`` every LangFuse record goes through, and the names around it.

Contract:

- ``redact(record, policy) -> (new_record, report)`` is pure: it returns a new record built with
  ``dataclasses.replace`` and never mutates its input (containers are copied, not shared).
- Each piece of content belongs to one of ``FIELDS`` and gets that field's ``Action``
  (``agent.core.privacy.actions``): ``keep`` < ``scrub`` < ``truncate:N`` (smaller N is
  stricter) < ``hash`` < ``drop``. Every action but ``keep`` runs the named secret patterns
  (``agent.core.privacy.scrubber``) first, so ``truncate`` never keeps half a secret and
  ``hash`` never hashes one.
- Structure survives every action: roles, message count and order, tool-call ids, tool names,
  ``tool_call_id``, ``name`` and ``type`` are not content and are never changed.
- Fail closed. If anything raises while redacting one value (a pattern, the user hook, a weird
  value, a bug), that value becomes ``[REDACTION_FAILED]`` and ``report.failures`` counts it;
  the raw value never survives. ``redact`` itself never raises for a supported record: if the
  walk as a whole fails, every content field of the returned record is ``[REDACTION_FAILED]``.
  Failures are logged once per distinct kind (type and field, never the value) at WARNING.
- Markers never echo what they replace: ``[REDACTED:<pattern>]``, ``[DROPPED:<field> len=N]``,
  ``[HASH:<16 hex of HMAC-SHA256>]``, ``<first N chars>…[TRUNCATED:<chars cut> chars]``.
- A ``CallRecord``'s per-call override (``redact_override``) only tightens: the effective
  policy is ``policy.stricter(RedactionPolicy.from_spec(override))``; a malformed override
  fails closed to ``policy.stricter(metadata-only)`` and the report says so.

The policy is plain data (``agent.core.privacy.policy``, spec grammar in
``agent.core.privacy.spec``), compiled once per policy (``agent.core.privacy.compiled``); the
walk over a record's content is ``agent.core.privacy.content``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agent.core import guard
from agent.core.privacy.actions import (
    ACTIONS,
    FAILED,
    FIELD_ATTRIBUTES,
    FIELDS,
    PRESETS,
    Action,
    RedactionSpecError,
)
from agent.core.privacy.compiled import compiled
from agent.core.privacy.content import RedactionReport, Run
from agent.core.privacy.error_text import content_strings, strip_content
from agent.core.privacy.known import KNOWN_SECRETS
from agent.core.privacy.memo import ContentMemo
from agent.core.privacy.policy import RedactionPolicy
from agent.core.records import CallRecord, ScoreRecord, SpanRecord

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
    "redact",
]


def redact(
    record: Any, policy: RedactionPolicy, *, memo: ContentMemo | None = None
) -> tuple[Any, RedactionReport]:
    """A new, redacted copy of a ``CallRecord`` / ``SpanRecord`` / ``ScoreRecord`` and a report.

    Never mutates ``record``; never raises for a supported record type (fails closed). A record
    of any other type raises ``TypeError``: there is nothing safe to return for it. With a
    ``memo`` (``agent.core.privacy.memo``), a call's messages and tool definitions seen before
    are not redacted again: the result and the report are the same.
    """
    if not isinstance(record, CallRecord | SpanRecord | ScoreRecord):
        raise TypeError(f"redact() cannot handle {type(record).__name__}")
    KNOWN_SECRETS.refresh_if_stale()
    override_note: str | None = None
    try:
        if not isinstance(policy, RedactionPolicy):
            raise TypeError(f"policy is a {type(policy).__name__}, not a RedactionPolicy")
        c = compiled(policy)
        if isinstance(record, CallRecord) and record.redact_override is not None:
            c, override_note = c.override(record.redact_override)
        run = Run(c)
        if isinstance(record, CallRecord):
            new = _redact_call(run, record, memo)
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


def _redact_call(run: Run, r: CallRecord, memo: ContentMemo | None) -> CallRecord:
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
        messages=run.messages(r.messages)
        if memo is None
        else memo.items(run, "messages", r.messages),
        tools=run.tools(r.tools) if memo is None else memo.items(run, "tools", r.tools),
        model_parameters=run.keyed("model_parameters", r.model_parameters) or {},
        output=output,
        usage=dict(r.usage),
        error_message=run.unit("error_message", _error_without_content(run, r)),
        metadata=run.keyed("metadata", r.metadata, run.policy.metadata_actions) or {},
    )


def _error_without_content(run: Run, r: CallRecord) -> str | None:
    """A provider's error quotes the request back, possibly cut mid-token (where no pattern can
    see a secret): the call's own content and quoted spans are taken out of it first (see
    ``agent.core.privacy.error_text``), unless the operator keeps error messages as they are."""
    if r.error_message is None or run.acts["error_message"].kind == "keep":
        return r.error_message
    try:
        # Scrubbed first, while every token is whole (taking content out may cut one).
        scrubbed = run.scrubber.scrub_into(r.error_message, run.secrets)
        return strip_content(scrubbed, content_strings([r.messages, r.tools]))
    except Exception as exc:
        run.fail("error_message", exc)
        return FAILED


def _span_field(run: Run, name: str | None, value: Any) -> Any:
    if value is None:
        return None
    name = name or "metadata"
    if name not in FIELDS:
        run.fail(f"unknown field {name!r}", KeyError(name))
        return FAILED
    if name == "user_id":
        return run.user_id(value)
    return run.unit(name, value)


def _redact_span(run: Run, r: SpanRecord) -> SpanRecord:
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


def _redact_score(run: Run, r: ScoreRecord) -> ScoreRecord:
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
