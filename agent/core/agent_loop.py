"""The agent: a turn loop with tools, and the five LLM call sites.

- ``main``: the turn loop. The model answers or calls tools; tool results go back to it until
  it answers (at most ``config.max_steps`` model calls per turn).
- ``research``: a sub-agent tool with its own loop and its own messages.
- ``compaction``: when the history exceeds ``config.context_token_budget`` tokens, older
  messages are summarised and replaced by the summary.
- ``effort_probe``: when the provider rejects the requested ``reasoning_effort``, lower levels
  are probed with a one-token call and the first accepted one is kept for the session.
- ``restore``: a saved session is resumed, re-seeded with a summary of its transcript.

``main`` and ``research`` run the same tool loop (``_ToolLoop``): call the model, run the tools
it asks for, hand their results back, until it answers or the step limit is reached.

The same code drives a real model (``--model openai/gpt-4o-mini`` with its key) and, offline
(no model configured), ``agent.testing.scripted_model.ScriptedModel``: a deterministic script that answers
through litellm's ``mock_response`` / ``mock_tool_calls``, so every call site, tool and
telemetry path runs without network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import litellm

from agent.config import AgentConfig
from agent.core import llm, telemetry
from agent.core.messages import message_dict
from agent.core.session import Session
from agent.testing.scripted_model import ScriptedModel
from agent.tools.base import Tool, ToolRegistry
from agent.tools.hf_jobs import LocalJobRunner
from agent.tools.sandbox import LocalSandbox

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are ml-intern, an ML engineering assistant. Work step by step. Use run_python for "
    "computations, research for background questions and hf_job to run training scripts. "
    "Answer concisely."
)
RESEARCH_PROMPT = (
    "You are a research sub-agent. Investigate the question, use run_python if a computation "
    "helps, and reply with concise findings."
)
COMPACTION_PROMPT = (
    "Summarise the conversation so far for your own later use: the task, decisions, results "
    "and open questions. Be brief and factual."
)
RESTORE_PROMPT = (
    "You are resuming an earlier session. Summarise its transcript into the context needed to "
    "continue: the goal, what was done, and what remains."
)

# The values of litellm's ``reasoning_effort``, highest first (the order effort_probe walks).
EFFORT_LEVELS: tuple[str, ...] = ("high", "medium", "low", "minimal")


def _is_effort_rejection(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "reasoning_effort" in text or "reasoning effort" in text


# -- the agent --


class Agent:
    """One agent bound to a session. Not thread-safe; one turn at a time."""

    def __init__(
        self,
        session: Session,
        config: AgentConfig,
        *,
        scripted: ScriptedModel | None = None,
        reasoning_effort: str | None = None,
        stream: bool = False,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        if config.model is None and scripted is None:
            scripted = ScriptedModel()
        if reasoning_effort is not None and reasoning_effort not in EFFORT_LEVELS:
            raise ValueError(
                f"reasoning_effort must be one of {', '.join(EFFORT_LEVELS)}, "
                f"not {reasoning_effort!r}"
            )
        self.session = session
        self.config = config
        self.scripted = scripted
        self.model = scripted.model if scripted is not None else str(config.model)
        self.effort = reasoning_effort
        self.stream = stream
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
        if session.hardware_prices is None:
            # The session's sandbox and job rows (and record_* calls of the caller's own code
            # on this session) are costed with the configured prices.
            session.hardware_prices = config.hf_hardware_prices
        self.sandbox = LocalSandbox(session)
        self.jobs = LocalJobRunner(session, prices=config.hf_hardware_prices)
        self.tools = ToolRegistry([self.sandbox.tool(), self.jobs.tool(), self._research_tool()])
        self.llm_calls = 0

    # -- the one way this class calls the model --

    async def _call(
        self,
        kind: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        **params: Any,
    ) -> Any:
        stream = self.stream
        if self.scripted is not None:
            params.update(self.scripted.mock_kwargs(kind, messages, tools, params))
            # litellm's mock stream carries text only: a scripted tool call is not streamed.
            stream = stream and not params.get("mock_tool_calls")
        self.llm_calls += 1
        return await llm.complete(
            self.session,
            kind=kind,
            model=self.model,
            messages=messages,
            tools=tools,
            stream=stream,
            **params,
        )

    # -- main --

    async def run_turn(self, user_message: str) -> str:
        """Run one turn: the user's message in, the final reply out."""
        started = time.monotonic()
        calls_before = self.llm_calls
        telemetry.record_turn_start(self.session, user_message=user_message)
        self.messages.append({"role": "user", "content": user_message})
        loop = _ToolLoop(self.session, self.tools, self.config.max_steps)
        reply: str | None = None
        try:
            # Compaction replaces self.messages: the loop reads the current list at each step.
            reply = await loop.run(self._main_step, lambda: self.messages)
        finally:
            telemetry.record_turn_complete(
                self.session,
                final_reply=reply or "",
                duration_ms=(time.monotonic() - started) * 1000.0,
                steps=loop.steps,
                llm_calls=self.llm_calls - calls_before,
                ok=reply is not None,
            )
            self.session.turn_index += 1
        return (
            "Stopped: the step limit was reached before a final answer." if reply is None else reply
        )

    async def _main_step(self) -> Any:
        await self._maybe_compact()
        return await self._call_main()

    async def _call_main(self) -> Any:
        params: dict[str, Any] = {}
        if self.effort is not None:
            params["reasoning_effort"] = self.effort
        try:
            return await self._call("main", self.messages, self.tools.definitions(), **params)
        except Exception as exc:
            if self.effort is None or not _is_effort_rejection(exc):
                raise
        self.effort = await self.probe_effort(below=self.effort)
        params = {"reasoning_effort": self.effort} if self.effort else {}
        return await self._call("main", self.messages, self.tools.definitions(), **params)

    # -- effort_probe --

    async def probe_effort(self, *, below: str | None) -> str | None:
        """The highest effort level under ``below`` that the provider accepts (None: none)."""
        start = EFFORT_LEVELS.index(below) + 1 if below in EFFORT_LEVELS else 0
        for level in EFFORT_LEVELS[start:]:
            try:
                await self._call(
                    "effort_probe",
                    [{"role": "user", "content": "ping"}],
                    reasoning_effort=level,
                    max_tokens=1,
                )
            except Exception as exc:
                if _is_effort_rejection(exc):
                    continue
                raise
            logger.info("reasoning_effort %s accepted by %s", level, self.model)
            return level
        return None

    # -- compaction --

    def context_tokens(self) -> int:
        try:
            return int(litellm.token_counter(model=self.model, messages=self.messages))
        except Exception:
            return sum(len(str(m.get("content") or "")) for m in self.messages) // 4

    async def _maybe_compact(self) -> bool:
        if self.context_tokens() <= self.config.context_token_budget:
            return False
        # Keep the system prompt and the current turn (from its user message on) verbatim;
        # summarise everything between. Cutting at a user message keeps tool calls paired.
        last_user = max(
            (i for i, m in enumerate(self.messages) if m.get("role") == "user"), default=1
        )
        middle = self.messages[1:last_user]
        if len(middle) < 2:
            return False
        transcript = _render(middle)
        response = await self._call(
            "compaction",
            [
                {"role": "system", "content": COMPACTION_PROMPT},
                {"role": "user", "content": transcript},
            ],
        )
        summary = response.choices[0].message.content or ""
        self.messages = [
            self.messages[0],
            {"role": "user", "content": f"[Summary of earlier conversation]\n{summary}"},
            {"role": "assistant", "content": "Understood."},
            *self.messages[last_user:],
        ]
        return True

    # -- research --

    def _research_tool(self) -> Tool:
        return Tool(
            name="research",
            description="Ask a research sub-agent a background question; returns its findings.",
            parameters={
                "type": "object",
                "properties": {"question": {"type": "string"}},
                "required": ["question"],
            },
            fn=self.research,
        )

    async def research(self, question: str) -> str:
        """The research sub-agent: its own messages and tools (the sandbox), the same loop."""
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": RESEARCH_PROMPT},
            {"role": "user", "content": question},
        ]
        sub_tools = ToolRegistry([self.sandbox.tool()])
        loop = _ToolLoop(self.session, sub_tools, self.config.max_steps)
        reply = await loop.run(
            lambda: self._call("research", messages, sub_tools.definitions()), lambda: messages
        )
        return "Research stopped at the step limit." if reply is None else reply

    # -- save / restore --

    def save(self, path: str | Path) -> Path:
        """Write the session to ``path`` (JSON), whole or not at all.

        Raises ``OSError`` when it cannot be written (a full disk ...); a file already at
        ``path`` is then left as it was, and no partial file is left behind.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "session_id": self.session.session_id,
            "user_id": self.session.user_id,
            "model": self.model,
            "messages": self.messages,
        }
        # ASCII (json's default escaping): a lone surrogate in a tool result cannot fail it.
        body = json.dumps(data, indent=1, default=str).encode("ascii")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return path

    async def restore(self, path: str | Path) -> str:
        """Re-seed this agent with a summary of the session saved at ``path``."""
        try:
            saved = json.loads(Path(path).read_text(encoding="utf-8"))
            messages = saved["messages"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot restore from {path}: {exc}") from exc
        response = await self._call(
            "restore",
            [
                {"role": "system", "content": RESTORE_PROMPT},
                {"role": "user", "content": _render(messages[1:])},
            ],
        )
        summary = response.choices[0].message.content or ""
        self.messages = [
            self.messages[0],
            {
                "role": "user",
                "content": f"[Restored from session {saved.get('session_id')}]\n{summary}",
            },
            {"role": "assistant", "content": "Understood, continuing."},
        ]
        return summary

    def close(self) -> None:
        """End the session: tear the sandbox down, then record ``session_end`` (its rollup)."""
        self.sandbox.destroy()
        telemetry.record_session_end(self.session)


class _ToolLoop:
    """The one tool loop of ``main`` and ``research``.

    ``run(ask, messages)`` calls ``ask()`` (one model call) until the model answers without
    tool calls, running each tool call it makes through ``tools`` and appending the assistant
    message and the tool results to ``messages()``; at most ``max_steps`` model calls. Returns
    the answer, or None at the step limit. ``steps`` counts the model calls made so far, also
    when one raised.
    """

    def __init__(self, session: Session, tools: ToolRegistry, max_steps: int) -> None:
        self.session = session
        self.tools = tools
        self.max_steps = max_steps
        self.steps = 0

    async def run(
        self, ask: Callable[[], Awaitable[Any]], messages: Callable[[], list[dict[str, Any]]]
    ) -> str | None:
        while self.steps < self.max_steps:
            self.steps += 1
            message = (await ask()).choices[0].message
            messages().append(message_dict(message))
            if not getattr(message, "tool_calls", None):
                return message.content or ""
            for tc in message.tool_calls:
                result = await self.tools.call(
                    self.session,
                    name=tc.function.name,
                    arguments=tc.function.arguments,
                    tool_call_id=tc.id,
                )
                messages().append(
                    {
                        "role": "tool",
                        "tool_call_id": tc.id,
                        "name": tc.function.name,
                        "content": result,
                    }
                )
        return None


def _render(messages: list[dict[str, Any]]) -> str:
    lines = []
    for m in messages:
        content = m.get("content")
        if m.get("tool_calls"):
            calls = ", ".join(tc["function"]["name"] for tc in m["tool_calls"])
            content = f"{content or ''} [called {calls}]"
        lines.append(f"{m.get('role')}: {content}")
    return "\n".join(lines)
