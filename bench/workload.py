"""The realistic LLM calls every overhead configuration makes (and whose record the redaction
benchmark redacts). No provider is ever contacted (``mock_response``).

- ``light`` (``MESSAGES``, ``TOOLS``): a ~1 KB system prompt, ~4 KB of history (user /
  assistant turns, an assistant tool call and its tool result), three tool definitions with
  JSON schemas, and a ``mock_response`` of ~300 characters.
- ``heavy`` (``HEAVY_MESSAGES``, ``HEAVY_TOOLS``): the shape of a call deep into an agent
  session: 16 messages (three tool round trips, short turns) and six tools, about 6 KB in all.
  More, smaller pieces: per-message and per-tool work shows here.
"""

from __future__ import annotations

import json
from typing import Any

MODEL = "openai/gpt-4o-mini"

_SYSTEM = (
    "You are ml-intern, a careful machine-learning engineering assistant. You help users train, "
    "evaluate and ship models on the Hugging Face Hub. Always explain what you are about to do "
    "before you do it, prefer small reproducible steps, and never invent results: when a number "
    "matters, run code to get it. You can run Python in a sandbox, search the Hub for models and "
    "datasets, and submit training jobs. Keep answers short unless the user asks for detail. "
    "When you write code, make it self-contained, pin library versions in comments, and print "
    "the metrics you compute. When a job fails, read its logs before retrying, and say what you "
    "changed. Respect the user's compute budget: estimate GPU hours before submitting any job "
    "larger than one hour and ask first. Never print secrets or tokens from the environment. "
    "Cite the model card or dataset card you relied on. If a request is ambiguous, ask one "
    "precise question instead of guessing."
)

_USER_1 = (
    "I have a text classification dataset on the Hub (imdb-like, ~25k rows, columns text and "
    "label). I want to fine-tune a small encoder, something that trains in under an hour on a "
    "single A10G, and I care about macro-F1 more than accuracy. What would you pick, and can you "
    "check how balanced the labels are first? The dataset is my-org/reviews-2024, split train. "
) * 2

_ASSISTANT_1 = (
    "Good plan to look at the label balance first: macro-F1 punishes a model that ignores a "
    "minority class, so the class weights or the sampling strategy may matter more than the "
    "architecture. I will load the train split and count labels, then suggest a model. For a "
    "one-hour budget on an A10G, distilroberta-base or deberta-v3-small are the usual choices; "
    "deberta-v3-small is a bit slower but tends to win on sentiment tasks. "
)

_TOOL_ARGS = json.dumps(
    {
        "code": (
            "from datasets import load_dataset\n"
            "ds = load_dataset('my-org/reviews-2024', split='train')\n"
            "print(ds)\n"
            "from collections import Counter\n"
            "c = Counter(ds['label'])\n"
            "print(sorted(c.items()))\n"
            "print({k: round(v / len(ds), 4) for k, v in c.items()})\n"
            "lengths = [len(t.split()) for t in ds['text'][:2000]]\n"
            "import statistics\n"
            "print('median words', statistics.median(lengths), 'p95', sorted(lengths)[1900])\n"
        ),
        "timeout_s": 120,
    }
)

_TOOL_RESULT = (
    "Dataset({\n    features: ['text', 'label'],\n    num_rows: 25000\n})\n"
    "[(0, 17412), (1, 7588)]\n{0: 0.6965, 1: 0.3035}\nmedian words 174 p95 612\n"
    + "".join(
        f"row {i}: label={i % 2} text='This film was {'surprisingly good' if i % 2 else 'a slow, overlong mess'} "
        f"and the cast did what they could with a thin script about {i * 7 % 13} friends.'\n"
        for i in range(10)
    )
)

_USER_2 = (
    "OK, 70/30 is more skewed than I thought. Go with deberta-v3-small, use class weights, "
    "3 epochs, max length 256, and tell me the GPU-hour estimate before you submit the job. "
    "Also keep 10% of train as a validation split with the same label ratio. "
) * 2

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": _SYSTEM},
    {"role": "user", "content": _USER_1},
    {"role": "assistant", "content": _ASSISTANT_1},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_7Hq2x",
                "type": "function",
                "function": {"name": "run_python", "arguments": _TOOL_ARGS},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_7Hq2x", "content": _TOOL_RESULT},
    {"role": "user", "content": _USER_2},
]


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


TOOLS: list[dict[str, Any]] = [
    _tool(
        "run_python",
        "Run Python code in the sandbox and return stdout, stderr and the exit code.",
        {
            "code": {"type": "string", "description": "the code to run"},
            "timeout_s": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 60},
        },
        ["code"],
    ),
    _tool(
        "hub_search",
        "Search the Hugging Face Hub for models or datasets.",
        {
            "query": {"type": "string"},
            "kind": {"type": "string", "enum": ["model", "dataset", "space"]},
            "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
            "sort": {"type": "string", "enum": ["downloads", "likes", "trending", "updated"]},
        },
        ["query", "kind"],
    ),
    _tool(
        "submit_job",
        "Submit a training job on Hugging Face infrastructure and return its id.",
        {
            "command": {"type": "array", "items": {"type": "string"}},
            "flavor": {"type": "string", "enum": ["cpu-basic", "t4-small", "a10g-small"]},
            "timeout_minutes": {"type": "integer", "minimum": 5, "maximum": 1440},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        ["command", "flavor"],
    ),
]


def _heavy_history() -> list[dict[str, Any]]:
    def call(i: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_h{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
            ],
        }

    def result(i: int, text: str) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": f"call_h{i}", "content": text}

    return [
        {"role": "system", "content": _SYSTEM[:820]},
        {
            "role": "user",
            "content": "Fine-tune a small encoder on my-org/reviews-2024 for macro-F1.",
        },
        {
            "role": "assistant",
            "content": "First I will check the label balance of the train split.",
        },
        call(1, "run_python", {"code": "ds = load_dataset('my-org/reviews-2024')\nprint(ds)"}),
        result(1, _TOOL_RESULT[:320]),
        call(2, "run_python", {"code": "print(Counter(ds['train']['label']))"}),
        result(2, "Counter({0: 17412, 1: 7588}) -> 69.6% / 30.4%; median 174 words, p95 612"),
        {"role": "assistant", "content": _ASSISTANT_1[:330]},
        {"role": "user", "content": _USER_2[:330]},
        call(3, "hub_search", {"query": "deberta-v3-small", "kind": "model", "limit": 3}),
        result(3, "microsoft/deberta-v3-small (2.1M downloads), ...-xsmall, ...-base"),
        {"role": "assistant", "content": "deberta-v3-small it is; estimating the GPU hours now."},
        {"role": "user", "content": "Go ahead, and keep 10% of train for validation."},
        {"role": "assistant", "content": "3 epochs x 22.5k rows at 256 tokens: about 0.7 h."},
        {"role": "user", "content": "Submit it on an A10G and tell me the job id."},
        {"role": "assistant", "content": "Submitting the job with class weights 0.72 / 1.65."},
    ]


HEAVY_MESSAGES: list[dict[str, Any]] = _heavy_history()

HEAVY_TOOLS: list[dict[str, Any]] = [
    *TOOLS,
    _tool(
        "read_file",
        "Read a file from the sandbox.",
        {"path": {"type": "string"}, "max_bytes": {"type": "integer", "default": 65536}},
        ["path"],
    ),
    _tool(
        "job_logs",
        "Return the last lines of a job's logs.",
        {"job_id": {"type": "string"}, "tail": {"type": "integer", "default": 200}},
        ["job_id"],
    ),
    _tool(
        "write_file",
        "Write a file in the sandbox.",
        {"path": {"type": "string"}, "content": {"type": "string"}},
        ["path", "content"],
    ),
]

WORKLOADS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "light": (MESSAGES, TOOLS),
    "heavy": (HEAVY_MESSAGES, HEAVY_TOOLS),
}

REPLY = (
    "Label balance is 70/30 (17,412 negatives vs 7,588 positives), so I will use class weights "
    "of about 0.72 / 1.65. deberta-v3-small at max length 256 for 3 epochs on 22.5k training "
    "rows should take roughly 35-45 minutes on one A10G, about 0.7 GPU-hours. Shall I submit it?"
)


def call_arguments(name: str) -> dict[str, Any]:
    """``llm.complete``'s arguments for one call of workload ``name`` (session aside)."""
    messages, tools = WORKLOADS[name]
    return {
        "kind": "main",
        "model": MODEL,
        "messages": messages,
        "tools": tools,
        "mock_response": REPLY,
        "temperature": 0.2,
        "max_tokens": 512,
    }


def sizes(name: str = "light") -> dict[str, int]:
    """Bytes of each part of a workload (for the report)."""
    messages, tools = WORKLOADS[name]
    return {
        "messages": len(messages),
        "system": len(messages[0]["content"]),
        "history": sum(len(json.dumps(m)) for m in messages[1:]),
        "tools": len(tools),
        "tool_bytes": len(json.dumps(tools)),
        "reply": len(REPLY),
    }


if __name__ == "__main__":
    for name in WORKLOADS:
        print(name, sizes(name))
