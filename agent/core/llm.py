"""The one place that calls litellm.

Every LLM call of the agent (the five call sites: ``main``, ``research``, ``compaction``,
``effort_probe``, ``restore``) goes through ``complete`` (or ``complete_sync``). It fixes the
call's ``CallContext`` before the call, hands it to litellm under the namespaced metadata key
``ml_intern`` (litellm reinterprets top-level ``session_id``/``trace_id``/``tags``), and records
one ``llm_call`` or ``llm_call_error`` event after the call. Errors of the call itself are
re-raised to the caller unchanged; telemetry errors never are.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec

import litellm

from agent.core import telemetry
from agent.core.internals import litellm as litellm_internals
from agent.core.privacy.known import KNOWN_SECRETS
from agent.core.session import Session
from agent.core.telemetry import METADATA_KEY, CallContext

__all__ = [
    "adrain_callbacks",
    "complete",
    "complete_sync",
    "drain_callbacks",
    "model_problem",
    "pending_callbacks",
    "pending_sync_callbacks",
]

ChunkCallback = Callable[[Any], None]


async def complete(
    session: Session,
    *,
    kind: str,
    model: str,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    stream: bool = False,
    on_chunk: ChunkCallback | None = None,
    redact: str | None = None,
    **litellm_kwargs: Any,
) -> Any:
    """Call ``litellm.acompletion`` for call site ``kind`` and record the call.

    Returns a ``litellm.ModelResponse``; with ``stream=True`` the chunks are passed to
    ``on_chunk`` as they arrive and the assembled response is returned. ``redact`` is a per-call
    redaction spec for LangFuse forwarding; it can only make the operator's policy stricter.
    ``metadata`` takes litellm's documented LangFuse keys (``tags``, ``trace_name``,
    ``generation_name``, ``trace_metadata``, ``version``, ``trace_version``,
    ``existing_trace_id``, ``parent_observation_id``, ``prompt``); any other key goes to the
    generation's metadata, through redaction. Any other keyword (``temperature``,
    ``mock_response``, ``reasoning_effort`` ...) goes to litellm as is.
    """
    call = _Call(session, kind, model, messages, tools, stream, on_chunk, redact, litellm_kwargs)
    try:
        with call:
            response = await litellm.acompletion(**call.kwargs)
            if stream:
                async for chunk in response:
                    call.chunk(chunk)
                response = call.assembled()
    finally:
        # litellm schedules its async logging as a task; one trip through the loop lets it
        # enqueue, so a caller that leaves the loop now can still drain it (adrain_callbacks).
        await asyncio.sleep(0)
    return call.recorded(response)


_COMPLETE = inspect.signature(complete)
# complete's keyword-only parameters in order, and their defaults: complete_sync reads its
# keywords with these (cheaper per call than Signature.bind).
_NAMED = [(n, p.default) for n, p in _COMPLETE.parameters.items() if p.kind is p.KEYWORD_ONLY]
_REQUIRED = frozenset(n for n, default in _NAMED if default is inspect.Parameter.empty)
P = ParamSpec("P")


def _arguments_of(
    twin: Callable[P, Awaitable[Any]],
) -> Callable[[Callable[..., Any]], Callable[P, Any]]:
    """Give the decorated function the parameters of ``twin``, for type checkers (ParamSpec)
    and at run time (``inspect.signature``, help()): the parameter list is written once."""

    def decorate(fn: Callable[..., Any]) -> Callable[P, Any]:
        fn.__signature__ = inspect.signature(twin).replace(  # type: ignore[attr-defined]
            return_annotation=inspect.signature(fn).return_annotation
        )
        return fn

    return decorate


@_arguments_of(complete)
def complete_sync(session: Session, **arguments: Any) -> Any:
    """The blocking twin of ``complete`` (``litellm.completion``), for code without a loop: the
    same arguments, the same rows."""
    if not arguments.keys() >= _REQUIRED:
        missing = ", ".join(sorted(_REQUIRED - arguments.keys()))
        raise TypeError(f"complete_sync() missing keyword argument(s): {missing}")
    named = [arguments.pop(name, default) for name, default in _NAMED]
    call = _Call(session, *named, arguments)  # what is left goes to litellm
    with call:
        response = litellm.completion(**call.kwargs)
        if call.stream:
            for chunk in response:
                call.chunk(chunk)
            response = call.assembled()
    return call.recorded(response)


class _Call:
    """One LLM call of ``complete`` / ``complete_sync``: its ``CallContext`` and litellm
    keywords, fixed before the call, and the one ``llm_call`` or ``llm_call_error`` row after.
    Its parameters are ``complete``'s, in their order (``complete_sync`` passes them so)."""

    def __init__(
        self,
        session: Session,
        kind: str,
        model: str,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None,
        stream: bool,
        on_chunk: ChunkCallback | None,
        redact: str | None,
        litellm_kwargs: dict[str, Any],
    ) -> None:
        # The caller's metadata= (litellm's LangFuse keys and anything else) goes to litellm
        # unchanged, beside our namespaced key.
        user_md = litellm_kwargs.pop("metadata", None) or {}
        if not isinstance(user_md, dict):
            raise TypeError("metadata must be a dict")
        self.session, self.model, self.stream, self.on_chunk = session, model, stream, on_chunk
        self.ctx = CallContext.new(session, kind, redact=redact, metadata=user_md)
        _learn_secrets(litellm_kwargs)
        self.kwargs: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "metadata": {**user_md, METADATA_KEY: self.ctx.as_metadata()},
            **litellm_kwargs,
        }
        if tools:
            self.kwargs["tools"] = list(tools)
        if stream:
            self.kwargs["stream"] = True
            self.kwargs.setdefault("stream_options", {"include_usage": True})
        self.chunks: list[Any] = []
        self.started = time.monotonic()

    def chunk(self, chunk: Any) -> None:
        self.chunks.append(chunk)
        if self.on_chunk is not None:
            self.on_chunk(chunk)

    def assembled(self) -> Any:
        return litellm.stream_chunk_builder(self.chunks, messages=self.kwargs["messages"])

    # ``with call:`` records a failure of the call (an ``llm_call_error`` row); the exception
    # goes on unchanged. A class, not @contextmanager: this runs on every call.
    def __enter__(self) -> _Call:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is not None:
            messages = self.kwargs["messages"]
            telemetry.record_llm_call_error(
                self.session, self.ctx, exc, messages=messages, **self._row_fields()
            )

    def recorded(self, response: Any) -> Any:
        """Record the successful call (an ``llm_call`` row); returns ``response``."""
        telemetry.record_llm_call(self.session, self.ctx, response, **self._row_fields())
        return response

    def _row_fields(self) -> dict[str, Any]:
        return {"model": self.model, "latency_ms": self._ms(), "stream": self.stream}

    def _ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0


def _learn_secrets(litellm_kwargs: dict[str, Any]) -> None:
    """The call's own credentials are scrubbed by value everywhere from now on (both pipelines),
    whatever they look like: ``api_key=`` and credential headers."""
    from agent.core.privacy.catalogue import SECRET_KEY_RE

    KNOWN_SECRETS.add(litellm_kwargs.get("api_key"))
    for name in ("extra_headers", "headers"):
        headers = litellm_kwargs.get(name)
        if not isinstance(headers, dict):
            continue
        for key, value in headers.items():
            if (
                isinstance(key, str)
                and isinstance(value, str)
                and (SECRET_KEY_RE.fullmatch(key.lower()) or key.lower() == "x-api-key")
            ):
                KNOWN_SECRETS.add(value)
                KNOWN_SECRETS.add(value.partition(" ")[2])  # "Bearer <token>"


def model_problem(model: str, *, need_key: bool = True) -> str | None:
    """Why ``model`` cannot be called here, or None. Used by the CLI to fail early and clearly."""
    try:
        _, provider, _, _ = litellm.get_llm_provider(model)
    except Exception:
        return (
            f"unknown model {model!r}: litellm cannot tell its provider. "
            "Use a provider-prefixed id such as openai/gpt-4o-mini or anthropic/claude-sonnet-4-5."
        )
    if need_key:
        try:
            env = litellm.validate_environment(model)
        except Exception:
            env = {}
        missing = env.get("missing_keys") or []
        if missing:
            return f"model {model!r} ({provider}) needs {', '.join(missing)} in the environment"
        blank = _blank_provider_keys(provider)
        if blank:
            return f"model {model!r} ({provider}) needs {', '.join(blank)}, which is set but empty"
    return None


def _blank_provider_keys(provider: str) -> list[str]:
    """The provider's key variables (``OPENAI_API_KEY`` ...) when every one of them is set but
    empty: litellm counts a variable that is set as present, and the call then fails late."""
    prefix = provider.upper().replace("-", "_") + "_"
    keys = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(prefix) and name.endswith(("_KEY", "_TOKEN"))
    }
    if not keys or any(value.strip() for value in keys.values()):
        return []
    return sorted(keys)


# -- litellm's callbacks: the async logging worker and the sync thread pool --
#
# litellm runs callbacks in two places. Async success/failure callbacks (our LangFuse
# forwarder's included) run from a logging queue on the caller's event loop; a program that
# leaves its loop right after its last call (``asyncio.run(main())``) would strand them. Sync
# callbacks of a sync call (``complete_sync``) run on litellm's own thread pool, submitted just
# before ``litellm.completion`` returns: with a long history the pool needs a while to build its
# logging payload, so a program that shuts telemetry down right after its last call would close
# the forwarder before the call reaches it. Await ``adrain_callbacks()`` before leaving the
# loop, or call ``drain_callbacks()`` from plain code; ``Observability.flush`` / ``shutdown`` do
# the latter. Both wait for the worker's queue and for the pool's queued and running tasks.

# Counted from here on, before the first call: the drains below wait on a condition for them.
litellm_internals.watch_sync_pool()


def pending_callbacks() -> int:
    """Async callbacks litellm has queued and not run yet."""
    return litellm_internals.pending_async_callbacks()


def pending_sync_callbacks() -> int:
    """Tasks litellm's sync logging thread pool has queued or is running (0 when unknown)."""
    return litellm_internals.pending_sync_callbacks()


async def adrain_callbacks(timeout: float = 5.0) -> bool:
    """Wait (at most ``timeout`` s) until litellm has run every queued async callback and its
    sync pool is idle. False on timeout."""
    deadline = time.monotonic() + timeout
    worker = litellm_internals.logging_worker()
    ok = True
    if worker is not None and pending_callbacks() > 0:
        try:
            await asyncio.wait_for(worker.flush(), timeout)
        except Exception:
            ok = False
    if pending_sync_callbacks() > 0:
        remaining = deadline - time.monotonic()
        if not await asyncio.to_thread(litellm_internals.wait_sync_pool, remaining):
            return False
    return ok


def _wait_sync_pool(deadline: float) -> bool:
    return litellm_internals.wait_sync_pool(deadline - time.monotonic())


def drain_callbacks(timeout: float = 5.0) -> bool:
    """``adrain_callbacks`` for blocking code. False on timeout.

    Called from inside a running event loop (a sync ``obs.shutdown()`` in async code), the loop
    is blocked by this very call, so the queued async callbacks are run on a private loop in a
    helper thread; litellm's logging worker carries its queue over to whichever loop flushes it.
    """
    deadline = time.monotonic() + timeout
    if pending_callbacks() == 0:
        return _wait_sync_pool(deadline)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    if not in_loop:
        try:
            return asyncio.run(adrain_callbacks(timeout))
        except Exception:
            return False
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(asyncio.run(adrain_callbacks(timeout)))
        except Exception:
            result.append(False)

    thread = threading.Thread(target=run, name="litellm-callback-drain", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])
