"""A deterministic stand-in for an LLM provider: the offline demo's model and the tests'.

Contract: ``ScriptedModel().mock_kwargs(kind, messages, tools, params)`` returns the litellm
keywords (``mock_response``, ``mock_tool_calls``) that make ``litellm.acompletion`` answer one
call of call site ``kind`` the way a small, predictable deployment would, so every call site,
tool and telemetry path of the agent runs without network or API key. Nothing else about the
call changes: it still goes through ``agent.core.llm`` and litellm's callbacks.

The script, by call site:

- any call whose ``reasoning_effort`` is not in ``accepted_efforts`` (default: ``low`` and
  ``minimal``) is rejected with a ``litellm.BadRequestError`` naming ``reasoning_effort``, like a
  deployment with capped effort (the agent then runs ``effort_probe``);
- ``main``: on a new user message, ``hf_job`` when the task mentions a job, else ``run_python``
  (count the task's words), then ``research`` when the task mentions research; each tool once
  per turn; then a reply quoting the turn's tool results;
- ``research``: ``run_python`` once, then findings;
- ``effort_probe``, ``compaction``, ``restore``: a fixed short answer of that kind.

It lives in ``agent.testing`` because it is a test double; ``agent.core.agent_loop`` uses it
as the model of an agent configured without one (``ml-intern demo``, ``run`` without
``--model``). It imports nothing of the agent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import litellm

__all__ = ["SCRIPTED_MODEL", "ScriptedModel"]

# The model name the offline runs report (rows, LangFuse generations); litellm knows its price.
SCRIPTED_MODEL = "openai/gpt-5-mini"


@dataclass(frozen=True)
class _Turn:
    """What the script looks at in a call's messages."""

    messages: list[dict[str, Any]]
    tools: frozenset[str]  # the tools offered to this call
    task: str  # the last user message
    last_role: str | None
    results: tuple[str, ...]  # tool results since the last user message
    used_this_turn: frozenset[str]  # tools called since the last user message
    used_ever: bool  # any tool result in the whole conversation

    @classmethod
    def of(cls, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> _Turn:
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        since_user = [m for m in messages[last_user + 1 :] if m.get("role") == "tool"]
        return cls(
            messages=messages,
            tools=frozenset(t["function"]["name"] for t in tools or []),
            task=str(messages[last_user].get("content") or "") if last_user >= 0 else "",
            last_role=messages[-1].get("role") if messages else None,
            results=tuple(str(m.get("content", ""))[:60] for m in since_user),
            used_this_turn=frozenset(m.get("name") for m in since_user),
            used_ever=any(m.get("role") == "tool" for m in messages),
        )


@dataclass(frozen=True)
class _Step:
    """Call ``tool`` with ``arguments(turn)`` when it is offered, not used yet this turn, and
    ``wanted(turn)``."""

    tool: str
    wanted: Callable[[_Turn], bool]
    arguments: Callable[[_Turn], dict[str, Any]]


_MAIN_STEPS = (
    _Step(
        "hf_job",
        lambda t: "job" in t.task.lower(),
        lambda t: {"script": "print('epoch 1 loss 0.42')", "flavor": "cpu-basic"},
    ),
    _Step(
        "run_python",
        lambda t: t.last_role == "user",
        lambda t: {"code": f"text = {t.task!r}\nprint(len(text.split()), 'words')"},
    ),
    _Step(
        "research",
        lambda t: "research" in t.task.lower(),
        lambda t: {"question": f"Background for: {t.task[:80]}"},
    ),
)
_RESEARCH_STEPS = (
    _Step(
        "run_python",
        lambda t: not t.used_ever,
        lambda t: {"code": "import math\nprint(round(math.pi, 6))"},
    ),
)


def _done(turn: _Turn) -> str:
    summary = "; ".join(r.replace("\n", " ") for r in turn.results) or "no tools needed"
    return f"Done. {summary}"


# call site -> (the tool steps it may take, its final answer)
_SCRIPT: dict[str, tuple[tuple[_Step, ...], Callable[[_Turn], str]]] = {
    "main": (_MAIN_STEPS, _done),
    "research": (
        _RESEARCH_STEPS,
        lambda t: (
            "Findings: the computation checks out (pi = 3.141593); no further sources needed."
        ),
    ),
    "effort_probe": ((), lambda t: "pong"),
    "compaction": (
        (),
        lambda t: (
            f"Summary of {len(t.messages) - 2} earlier messages: the user asked for word "
            "statistics and background research; both were completed."
        ),
    ),
    "restore": (
        (),
        lambda t: (
            "Restored context: the previous session computed word statistics, researched "
            "background and ran a local training job."
        ),
    ),
}


@dataclass
class ScriptedModel:
    """See the module docstring."""

    model: str = SCRIPTED_MODEL
    accepted_efforts: tuple[str, ...] = ("low", "minimal")
    _counter: int = field(default=0, repr=False)

    def mock_kwargs(
        self,
        kind: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """litellm's mock keywords for one call of call site ``kind``."""
        effort = params.get("reasoning_effort")
        if effort is not None and effort not in self.accepted_efforts:
            return {
                "mock_response": litellm.BadRequestError(
                    message=f"reasoning_effort={effort!r} is not supported by this deployment",
                    model=self.model,
                    llm_provider="openai",
                )
            }
        turn = _Turn.of(messages, tools)
        steps, answer = _SCRIPT.get(kind, _SCRIPT["main"])
        for step in steps:
            offered = step.tool in turn.tools and step.tool not in turn.used_this_turn
            if offered and step.wanted(turn):
                return self._tool_call(step.tool, step.arguments(turn))
        return {"mock_response": answer(turn)}

    def _tool_call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self._counter += 1
        call = {
            "id": f"call_{self._counter:04d}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        return {"mock_response": "", "mock_tool_calls": [call]}
