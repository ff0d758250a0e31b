"""A short-lived program, run many times: ``python -m tests.short_lived_program URL MODE RUNS DIR``.

Each run is a fresh process (forked from this one after the slow imports, so 20 runs cost
seconds, not a minute) that does what a user's script does: set up observability, make one
``complete_sync`` call with a long history, then either call ``obs.shutdown()`` and exit
(MODE ``shutdown``) or just exit, leaving the flush to the atexit hook (MODE ``atexit``).

Each run writes its shutdown report (MODE ``shutdown``) to DIR/report-N.json. The generation of
run N carries session id ``short-MODE-N``.
"""

from __future__ import annotations

import atexit
import json
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# What setup and the first call would import lazily is imported here, once, so that each forked
# run does not (imports only: no call is made and no thread started before the fork).
import langfuse  # noqa: F401
import litellm.proxy.openai_files_endpoints.common_utils  # noqa: F401

import agent.core.forwarding.logger  # noqa: F401
from agent.config import AgentConfig
from agent.core import llm
from agent.core.observability import Observability
from agent.core.session import Session
from tests.langfuse_helpers import langfuse_env

HISTORY = [
    {
        "role": "user" if i % 2 == 0 else "assistant",
        "content": f"message {i}: " + "the quick brown fox jumps over the lazy dog " * 6,
    }
    for i in range(500)
] + [{"role": "user", "content": "and the last question?"}]


def one_run(url: str, mode: str, index: int, directory: str) -> None:
    # Interpreter finalisation of a process that imported litellm takes about a second (all
    # in C, freeing memory); skip it. Registered first, so it runs last: the threading
    # shutdown (which joins litellm's thread pool) and every other exit hook run before it.
    atexit.register(os._exit, 0)
    os.environ.update(langfuse_env(url))
    obs = Observability.from_config(AgentConfig(telemetry_dir=os.path.join(directory, str(index))))
    session = Session(user_id="u", session_id=f"short-{mode}-{index}", observability=obs)
    llm.complete_sync(
        session, kind="main", model="openai/gpt-4o-mini", messages=HISTORY, mock_response="ok"
    )
    if mode == "shutdown":
        report = obs.shutdown()
        with open(os.path.join(directory, f"report-{index}.json"), "w") as fh:
            json.dump(report.get("langfuse", {}), fh, default=str)


def main() -> int:
    url, mode, runs, directory = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    failed = 0
    for index in range(runs):
        pid = os.fork()
        if pid == 0:
            one_run(url, mode, index, directory)
            sys.exit(0)  # a normal exit: threading shutdown, then the atexit hooks
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
