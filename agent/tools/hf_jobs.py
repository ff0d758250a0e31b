"""HF Jobs: run a training or evaluation command as a job and wait for it.

``LocalJobRunner`` runs the job as a local subprocess (isolated Python, a timeout), which is how
the agent rehearses a job before paying for hardware. Its events are those of a Hub job
(``hf_job_submit``, ``hf_job_complete``) with ``backend="local"`` in their data, so a local run
costs nothing in the rows.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping

from agent.core import telemetry
from agent.core.session import Session, new_id
from agent.tools.base import Tool


class LocalJobRunner:
    def __init__(
        self,
        session: Session,
        *,
        timeout_s: float = 60.0,
        prices: Mapping[str, float] | None = None,
    ) -> None:
        self.session = session
        self.timeout_s = timeout_s
        self.prices = prices

    async def run(self, script: str, flavor: str = "cpu-basic") -> str:
        job_id = "job_" + new_id()[:12]
        telemetry.record_hf_job_submit(
            self.session,
            job_id=job_id,
            image="local-python",
            flavor=flavor,
            command=script,
            timeout_s=self.timeout_s,
            backend="local",
        )
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            script,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
            status = "completed" if proc.returncode == 0 else "error"
        except TimeoutError:
            proc.kill()
            await proc.wait()
            out, status = b"", "timeout"
        elapsed = time.monotonic() - started
        telemetry.record_hf_job_complete(
            self.session,
            job_id=job_id,
            status=status,
            duration_s=elapsed,
            wall_time_s=elapsed,
            flavor=flavor,
            backend="local",
            prices=self.prices,
        )
        return f"job {job_id} {status}\n{out.decode(errors='replace')[:4000]}"

    def tool(self) -> Tool:
        return Tool(
            name="hf_job",
            description="Submit a Python script as an HF job and wait for its logs.",
            parameters={
                "type": "object",
                "properties": {
                    "script": {"type": "string"},
                    "flavor": {"type": "string", "default": "cpu-basic"},
                },
                "required": ["script"],
            },
            fn=self.run,
        )
