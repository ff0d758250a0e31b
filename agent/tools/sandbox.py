"""A local sandbox: runs Python in a temporary directory, in a subprocess, with a timeout.

Emits ``sandbox_create`` when the directory is made and ``sandbox_destroy`` when it is removed.
It isolates the working directory and the interpreter (``-I``), not the machine: it is for the
agent's own scratch computations, not for untrusted code.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from agent.core import telemetry
from agent.core.session import Session, new_id
from agent.tools.base import Tool

MAX_OUTPUT = 8_000
# This machine: no HF charge (agent.core.dataset.pricing prices "local" at 0).
HARDWARE = "local"


class LocalSandbox:
    def __init__(self, session: Session, *, timeout_s: float = 20.0) -> None:
        self.session = session
        self.timeout_s = timeout_s
        self.sandbox_id: str | None = None
        self.path: Path | None = None
        self.runs = 0
        self._created = 0.0
        self._create_latency_s = 0.0

    def _ensure(self) -> Path:
        if self.path is None:
            requested = time.monotonic()
            self.path = Path(tempfile.mkdtemp(prefix="ml-intern-sandbox-"))
            self.sandbox_id = "sbx_" + new_id()[:12]
            self._created = time.monotonic()
            self._create_latency_s = self._created - requested
            telemetry.record_sandbox_create(
                self.session,
                sandbox_id=self.sandbox_id,
                backend="local",
                hardware=HARDWARE,
                create_latency_s=self._create_latency_s,
            )
        return self.path

    async def run_python(self, code: str, timeout_s: float | None = None) -> str:
        """Run ``code``; returns exit code, stdout and stderr (truncated)."""
        cwd = self._ensure()
        self.runs += 1
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            code,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s or self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"timeout after {timeout_s or self.timeout_s:.0f}s"
        text = f"exit={proc.returncode}\n{out.decode(errors='replace')}"
        if err:
            text += f"\nstderr:\n{err.decode(errors='replace')}"
        return text[:MAX_OUTPUT]

    def destroy(self) -> None:
        if self.path is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        telemetry.record_sandbox_destroy(
            self.session,
            sandbox_id=self.sandbox_id or "",
            lifetime_s=time.monotonic() - self._created,
            runs=self.runs,
            backend="local",
            hardware=HARDWARE,
            create_latency_s=self._create_latency_s,
        )
        self.path = None

    def tool(self) -> Tool:
        return Tool(
            name="run_python",
            description="Run a Python snippet in a scratch directory and return its output.",
            parameters={
                "type": "object",
                "properties": {"code": {"type": "string", "description": "Python source"}},
                "required": ["code"],
            },
            fn=self._tool_fn,
        )

    async def _tool_fn(self, code: str) -> str:
        return await self.run_python(code)
