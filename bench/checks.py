"""Equivalence checks for the fast paths added for performance (run inside the (d) worker,
which has litellm, the SDK and a live forwarder loaded; outside any timed region).

- ``wire_value`` (agent/core/forwarding/build.py) must make the SDK write exactly the span
  attributes it writes when handed the original object.
"""

from __future__ import annotations

from typing import Any


def run(fwd: Any) -> dict[str, bool]:
    import dataclasses

    from langfuse import LangfuseGeneration

    from agent.core.forwarding.build import wire_value
    from agent.core.forwarding.engine import Engine
    from bench import workload

    engine = fwd.engine
    if engine is None:  # the core runs in the sidecar: a core of our own here (a key of its own)
        settings = dataclasses.replace(fwd.settings, public_key=fwd.settings.public_key + "-c")
        engine = Engine(settings, policy=fwd.policy, options=fwd.options)
    sdk = engine.sdk
    wire_ok = True
    for payload in (
        {"messages": workload.MESSAGES, "tools": workload.TOOLS},
        {"messages": workload.HEAVY_MESSAGES, "tools": workload.HEAVY_TOOLS},
        [{"role": "user", "content": 'h\u00e9llo \u2603 \U0001d11e \u2028 "q" \\ </script>'}],
        {"a": [1, -2, 2**53 - 1, 1.5, -0.0, True, None, ""], "b": {}},
    ):
        attrs = []
        usage = {"input": 1500, "output": 70, "total": 1570}
        params = {"temperature": 0.2, "max_tokens": 512, "stop": ["\n\n"], "tool_choice": "auto"}
        for wire in (lambda v: v, wire_value):
            span = sdk.tracer.start_span("bench-check")
            LangfuseGeneration(
                otel_span=span,
                langfuse_client=sdk.client,
                input=wire(payload),
                output=wire(payload),
                usage_details=wire(usage),
                cost_details=wire({"total": 0.00027}),
                model_parameters=wire(params),
            )
            attrs.append(dict(span.attributes or {}))
            # never ended: it is not exported
        wire_ok = wire_ok and attrs[0] == attrs[1] and isinstance(wire_value(payload), str)
    return {"wire_value_identical": wire_ok}
