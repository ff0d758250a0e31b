"""Tools the agent can call: a name, a JSON schema and an async function.

``ToolRegistry.call`` runs one tool call from the model, times it and records one ``tool_call``
event (arguments and result go to LangFuse only, through redaction; the HF row holds the name,
duration and outcome).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.core import telemetry
from agent.core.session import Session

ToolFn = Callable[..., Awaitable[str]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: ToolFn

    def definition(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        self._tools[tool.name] = tool

    def definitions(self) -> list[dict[str, Any]]:
        return [t.definition() for t in self._tools.values()]

    def names(self) -> list[str]:
        return list(self._tools)

    async def call(
        self, session: Session, *, name: str, arguments: str | None, tool_call_id: str | None
    ) -> str:
        """Run one tool call; never raises: errors become the tool's result text."""
        started = time.monotonic()
        ok = True
        error: str | None = None
        try:
            args = json.loads(arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("tool arguments must be a JSON object")
            tool = self._tools.get(name)
            if tool is None:
                raise KeyError(f"unknown tool {name!r}; available: {', '.join(self._tools)}")
            result = await tool.fn(**args)
        except Exception as exc:
            ok = False
            error = f"{type(exc).__name__}: {exc}"
            result = f"error: {error}"
        telemetry.record_tool_call(
            session,
            name=name,
            duration_ms=(time.monotonic() - started) * 1000.0,
            ok=ok,
            tool_call_id=tool_call_id,
            arguments=arguments,
            result=result,
            error=error,
        )
        return result
