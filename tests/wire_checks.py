"""What a LangFuse user sees, checked on what reached the loopback fake: the invariants of
issue 10 as reusable assertions over HF rows, decoded OTLP spans and posted scores.

They encode how LangFuse reads our traffic (DESIGN.md, "What LangFuse and the HF tools do with
what we send"): it sums every usage key containing "input" (and "output"); a trace attribute is
the last value written on any span; a span that starts with no open parent in the SDK's span
processor is marked an app root (``langfuse.internal.is_app_root``); a span id sent twice is
one observation, the later version winning.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

# Rows whose events become LangFuse objects (all others must carry null ids).
LINKED_ROWS = frozenset(
    {
        "llm_call",
        "llm_call_error",
        "turn_start",
        "turn_complete",
        "tool_call",
        "hf_job_submit",
        "hf_job_complete",
        "sandbox_create",
        "sandbox_destroy",
        "feedback",
        "session_end",
    }
)
APP_ROOT = "langfuse.internal.is_app_root"


def latest(spans: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """One span per (trace id, span id): the last one that arrived (LangFuse keeps it)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for span in spans:
        out[(span["trace_id"], span["span_id"])] = span
    return out


def usage_of(span: dict[str, Any]) -> dict[str, int]:
    raw = span["attributes"].get("langfuse.observation.usage_details")
    return json.loads(raw) if isinstance(raw, str) else (raw or {})


def meta(span: dict[str, Any], key: str) -> Any:
    raw = span["attributes"].get(f"langfuse.observation.metadata.{key}")
    return json.loads(raw) if isinstance(raw, str) else raw


def assert_ids_resolve(
    rows: list[dict[str, Any]], spans: list[dict[str, Any]], scores: list[dict[str, Any]]
) -> None:
    """Every row's (trace id, observation id) names an object that arrived; rows without a
    LangFuse object, and rows of sampled-out turns, hold nulls."""
    by_id = latest(spans)
    score_ids = {(s.get("traceId"), s.get("id")) for s in scores}
    for row in rows:
        t = row["event_type"]
        ids = (row["langfuse_trace_id"], row["langfuse_observation_id"])
        if t not in LINKED_ROWS or row["langfuse_sampled"] is False:
            assert ids == (None, None), row
            continue
        assert None not in ids, row
        if t == "feedback":
            assert ids in score_ids, (row, scores)
            continue
        assert ids in by_id, f"{t} row {row['event_id']} names {ids}, which never arrived"
        span = by_id[ids]
        if t.startswith("turn_"):
            assert span["name"] == "turn", span["name"]
        else:
            assert meta(span, "hf_event_id") == row["event_id"], (t, span["name"])
        if t.startswith("llm_call"):
            assert span["attributes"]["langfuse.observation.type"] == "generation"


def assert_token_sums(rows: list[dict[str, Any]], spans: list[dict[str, Any]]) -> int:
    """For every successful call: the usage keys containing "input" add up to the row's prompt
    tokens, "output" to its completion tokens, and ``total`` is its total. Returns how many
    calls were checked."""
    by_id = latest(spans)
    checked = 0
    for row in rows:
        if row["event_type"] != "llm_call" or row["langfuse_sampled"] is False:
            continue
        usage = usage_of(by_id[(row["langfuse_trace_id"], row["langfuse_observation_id"])])
        data = row["data"]
        assert sum(v for k, v in usage.items() if "input" in k) == data["prompt_tokens"], usage
        assert sum(v for k, v in usage.items() if "output" in k) == data["completion_tokens"]
        assert usage["total"] == data["total_tokens"]
        assert all(v >= 0 for v in usage.values()), usage
        checked += 1
    return checked


def assert_trace_attributes_consistent(
    rows: list[dict[str, Any]],
    spans: list[dict[str, Any]],
    *,
    extra_tags: dict[str, set[str]] | None = None,
) -> None:
    """Per trace: every span that carries tags (or a name) carries the same ones, and the tags
    are the union of the kinds of the trace's calls (plus the caller's tags, when given)."""
    kinds: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["event_type"].startswith("llm_call") and row["langfuse_trace_id"]:
            kinds[row["langfuse_trace_id"]].add(row["kind"])
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in latest(spans).values():
        by_trace[span["trace_id"]].append(span)
    for trace_id, members in by_trace.items():
        tag_sets = {
            tuple(s["attributes"]["langfuse.trace.tags"])
            for s in members
            if "langfuse.trace.tags" in s["attributes"]
        }
        names = {
            s["attributes"]["langfuse.trace.name"]
            for s in members
            if "langfuse.trace.name" in s["attributes"]
        }
        assert len(tag_sets) <= 1, (trace_id, tag_sets)
        assert len(names) <= 1, (trace_id, names)
        if kinds.get(trace_id):
            (tags,) = tag_sets
            expected = kinds[trace_id] | (extra_tags or {}).get(trace_id, set())
            assert set(tags) == expected, (trace_id, tags, expected)


def assert_children_within_parents(
    spans: list[dict[str, Any]], *, external_parents: set[str] = frozenset()
) -> None:
    """Every span's parent arrived (unless it is a caller's span named in
    ``external_parents``) and the child starts and ends within the parent's interval; only
    spans without a parent of ours are app roots, and a trace of ours has one root."""
    by_id = latest(spans)
    roots: dict[str, set[str]] = defaultdict(set)
    for (trace_id, span_id), span in by_id.items():
        parent_id = span["parent_span_id"]
        if parent_id is None or parent_id in external_parents:
            roots[trace_id].add(span_id)
            continue
        parent = by_id.get((trace_id, parent_id))
        assert parent is not None, f"{span['name']} names parent {parent_id}, which never arrived"
        assert parent["start_time_ns"] <= span["start_time_ns"], (span["name"], parent["name"])
        assert span["end_time_ns"] <= parent["end_time_ns"], (span["name"], parent["name"])
        assert span["start_time_ns"] <= span["end_time_ns"]
        assert not span["attributes"].get(APP_ROOT), f"{span['name']} is marked an extra root"
    for trace_id, ids in roots.items():
        assert len(ids) == 1, (trace_id, [by_id[(trace_id, i)]["name"] for i in ids])
