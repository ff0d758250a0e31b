"""Privacy: what may leave the process, for the HF Dataset rows, LangFuse and the logs.

Secrets (both pipelines and the logs):

- ``rule`` (what a pattern is), ``tokens`` and ``forms`` (the rules, plain data),
  ``catalogue`` (their order and groups);
- ``passes`` (the catalogue compiled into regexes), ``normalise`` (the views a text is also
  read as), ``known`` (values the process knows, scrubbed by value), ``scrubber`` (``scrub``,
  ``Scrubber``: the hot loop);
- ``walker`` (the one walker over JSON-like values: HF rows and every LangFuse field);
- ``error_text`` (error text fit for HF rows), ``log_scrub`` (log records), ``media`` (inline
  media as markers), ``pseudonym`` (user and session pseudonyms for HF rows).

Redaction (LangFuse):

- ``actions`` (fields, actions, presets), ``spec`` (the spec parser), ``policy``
  (``RedactionPolicy``: plain frozen data), ``compiled`` (a policy compiled for ``redact``),
  ``content`` (the walk over a record's messages, tools and keyed fields), ``redaction``
  (``redact()``, the one entry), ``preview`` (what a policy would send). LangFuse's own
  media upload (off by default) is switched by the forwarder (``agent.core.forwarding.client``,
  through ``agent.core.internals.langfuse``).

Nothing is imported here: import the module you need (``agent.core.privacy.scrubber``,
``agent.core.privacy.redaction`` ...).
"""
