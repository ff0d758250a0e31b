"""The agent: a turn loop with tools, and the five LLM call sites.

- ``main``: the turn loop. The model answers or calls tools; tool results go back to it until
  it answers (at most ``config.max_steps`` model calls per turn).
- ``research``: a sub-agent tool with its own loop and its own messages.
- ``compaction``: when the history exceeds ``config.context_token_budget`` tokens, older
  messages are summarised and replaced by the summary.
- ``effort_probe``: when the provider rejects the requested ``reasoning_effort``, lower levels
  are probed with a one-token call and the first accepted one is kept for the session.
- ``restore``: a saved session is resumed, re-seeded with a summary of its transcript.

The same code drives a real model (``--model openai/gpt-4o-mini`` with its key) and, offline,
``ScriptedModel``: a deterministic script that answers through litellm's ``mock_response`` /
``mock_tool_calls``, so every call site, tool and telemetry path runs without network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import litellm

from agent.config import AgentConfig
from agent.core import llm, telemetry
from agent.core.messages import message_dict
from agent.core.session import Session
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

EFFORT_LEVELS: tuple[str, ...] = ("high", "medium", "low", "minimal")
SCRIPTED_MODEL = "openai/gpt-5-mini"


def _is_effort_rejection(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "reasoning_effort" in text or "reasoning effort" in text


# -- the offline model --


@dataclass
class ScriptedModel:
    """A deterministic stand-in for a provider, answering through litellm's mock parameters.

    It behaves like a deployment that caps ``reasoning_effort`` at ``max_effort`` (rejecting
    higher levels), calls ``run_python`` then ``research`` on a new task, ``hf_job`` when asked
    for a job, and answers from the tool results.
    """

    model: str = SCRIPTED_MODEL
    max_effort: str = "low"
    _counter: int = field(default=0, repr=False)

    def _call_id(self) -> str:
        self._counter += 1
        return f"call_{self._counter:04d}"

    def _tool_call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "mock_response": "",
            "mock_tool_calls": [
                {
                    "id": self._call_id(),
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
            ],
        }

    def mock_kwargs(
        self,
        kind: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        effort = params.get("reasoning_effort")
        if effort is not None and EFFORT_LEVELS.index(effort) < EFFORT_LEVELS.index(
            self.max_effort
        ):
            return {
                "mock_response": litellm.BadRequestError(
                    message=f"reasoning_effort={effort!r} is not supported by this deployment",
                    model=self.model,
                    llm_provider="openai",
                )
            }
        last = messages[-1] if messages else {}
        if kind == "effort_probe":
            return {"mock_response": "pong"}
        if kind == "compaction":
            n = len(messages) - 2
            return {
                "mock_response": f"Summary of {n} earlier messages: the user asked for "
                "word statistics and background research; both were completed."
            }
        if kind == "restore":
            return {
                "mock_response": "Restored context: the previous session computed word "
                "statistics, researched background and ran a local training job."
            }
        tool_names = {t["function"]["name"] for t in tools or []}
        done_tools = [m.get("name") for m in messages if m.get("role") == "tool"]
        since_user = _since_last_user(messages)
        used_this_turn = [m.get("name") for m in since_user if m.get("role") == "tool"]
        if kind == "research":
            if not done_tools and "run_python" in tool_names:
                return self._tool_call(
                    "run_python", {"code": "import math\nprint(round(math.pi, 6))"}
                )
            return {
                "mock_response": "Findings: the computation checks out (pi = 3.141593); "
                "no further sources needed."
            }
        # kind == "main"
        task = (
            next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
            or ""
        )
        if "job" in task.lower() and "hf_job" in tool_names and "hf_job" not in used_this_turn:
            return self._tool_call(
                "hf_job", {"script": "print('epoch 1 loss 0.42')", "flavor": "cpu-basic"}
            )
        if (
            "run_python" in tool_names
            and "run_python" not in used_this_turn
            and last.get("role") == "user"
        ):
            code = f"text = {task!r}\nprint(len(text.split()), 'words')"
            return self._tool_call("run_python", {"code": code})
        if (
            "research" in tool_names
            and "research" not in used_this_turn
            and "research" in (task.lower())
        ):
            return self._tool_call("research", {"question": f"Background for: {task[:80]}"})
        results = [str(m.get("content", ""))[:60] for m in since_user if m.get("role") == "tool"]
        summary = "; ".join(r.replace("\n", " ") for r in results) or "no tools needed"
        return {"mock_response": f"Done. {summary}"}


def _since_last_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return messages[i + 1 :]
    return messages


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
        reply = ""
        steps = 0
        ok = False
        try:
            for steps in range(1, self.config.max_steps + 1):  # noqa: B007
                await self._maybe_compact()
                response = await self._call_main()
                message = response.choices[0].message
                self.messages.append(message_dict(message))
                if not getattr(message, "tool_calls", None):
                    reply = message.content or ""
                    ok = True
                    break
                for tc in message.tool_calls:
                    result = await self.tools.call(
                        self.session,
                        name=tc.function.name,
                        arguments=tc.function.arguments,
                        tool_call_id=tc.id,
                    )
                    self.messages.append(
                        {
                            "role": "tool",
                            "tool_call_id": tc.id,
                            "name": tc.function.name,
                            "content": result,
                        }
                    )
            else:
                reply = "Stopped: the step limit was reached before a final answer."
        finally:
            telemetry.record_turn_complete(
                self.session,
                final_reply=reply,
                duration_ms=(time.monotonic() - started) * 1000.0,
                steps=steps,
                llm_calls=self.llm_calls - calls_before,
                ok=ok,
            )
            self.session.turn_index += 1
        return reply

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
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": RESEARCH_PROMPT},
            {"role": "user", "content": question},
        ]
        sub_tools = ToolRegistry([self.sandbox.tool()])
        for _ in range(self.config.max_steps):
            response = await self._call("research", messages, sub_tools.definitions())
            message = response.choices[0].message
            messages.append(message_dict(message))
            if not getattr(message, "tool_calls", None):
                return message.content or ""
            for tc in message.tool_calls:
                result = await sub_tools.call(
                    self.session,
                    name=tc.function.name,
                    arguments=tc.function.arguments,
                    tool_call_id=tc.id,
                )
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": tc.id,
                        "name": tc.function.name,
                        "content": result,
                    }
                )
        return "Research stopped at the step limit."

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


def _render(messages: list[dict[str, Any]]) -> str:
    lines = []
    for m in messages:
        content = m.get("content")
        if m.get("tool_calls"):
            calls = ", ".join(tc["function"]["name"] for tc in m["tool_calls"])
            content = f"{content or ''} [called {calls}]"
        lines.append(f"{m.get('role')}: {content}")
    return "\n".join(lines)
