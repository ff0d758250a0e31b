"""LangFuse forwarding: everything that takes the agent's calls and events to a LangFuse host.

Rooms (imports run down this list, never up):

- ``gate``: whether forwarding is on, from an ``AgentConfig`` (cheap: no SDK import);
- ``linker``: LangFuse ids handed out before the work happens (in the agent's process);
- ``capture``: our records from litellm's callback arguments and from session events;
- ``turns``, ``build``, ``scores``, ``client``: a turn's span, records -> LangFuse objects with
  the SDK, feedback scores, the SDK and OpenTelemetry setup with the span hand-off;
- ``otlp``: spans to an OTLP/HTTP receiver (retries, drops, transport); ``network`` names the
  cause of a failed connection; ``ping``: one authenticated round trip (``check --ping``);
- ``engine``: the forwarding core (redaction, then the above), on one worker thread;
- ``logger``: the litellm ``CustomLogger`` and event sink, with its bounded queue and lifecycle;
- ``register``: one forwarder per process, registered with litellm once.

Nothing here imports the agent loop, its tools or the CLI; ``agent.core.observability``
imports this package lazily (only the gate when forwarding is off).
"""
