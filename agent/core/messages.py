"""Chat messages in OpenAI format, whatever shape litellm hands them over in.

litellm gives responses as pydantic objects (``Message``, ``ChatCompletionMessageToolCall``) and
requests as dicts; the agent loop and the LangFuse records both need plain dicts. One reader,
``field``, and one converter, ``message_dict``, used by both.
"""

from __future__ import annotations

from typing import Any

__all__ = ["field", "message_dict"]


def field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for a dict, ``obj.name`` for anything else; ``default`` when absent."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def message_dict(message: Any) -> dict[str, Any] | None:
    """A message (dict or litellm object) as a plain chat-format dict; None for None.

    Keeps the role (``assistant`` when absent), the content, the tool calls (id, type,
    function name and arguments) and the reasoning text when there is one.
    """
    if message is None:
        return None
    out: dict[str, Any] = {
        "role": field(message, "role", "assistant") or "assistant",
        "content": field(message, "content"),
    }
    tool_calls = field(message, "tool_calls") or []
    if tool_calls:
        out["tool_calls"] = [
            {
                "id": field(tc, "id"),
                "type": "function",
                "function": {
                    "name": field(field(tc, "function"), "name"),
                    "arguments": field(field(tc, "function"), "arguments"),
                },
            }
            for tc in tool_calls
        ]
    reasoning = field(message, "reasoning_content")
    if reasoning:
        out["reasoning_content"] = reasoning
    return out
