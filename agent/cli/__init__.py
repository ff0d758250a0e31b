"""The commands of the ``ml-intern`` CLI (the parser and entry point are ``agent.main``).

- ``common``: exit codes, ``UsageError``, the ``AgentConfig`` built from a command's flags.
- ``output``: the stdout / stderr consoles, messages, and the tables of the dataset.
- ``run``: ``demo`` and ``run``, sessions of the agent with both pipelines on.
- ``events``: ``events summary|tail|show``, DuckDB queries of the local dataset.
- ``observability``: ``observability check [--ping]`` and ``observability preview``.

The CLI is the edge of the house: it imports the agent and the core, and nothing imports it.
"""
