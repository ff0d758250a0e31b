"""User hooks for the redaction tests (importable by dotted path: tests.redaction_hooks:...)."""

from __future__ import annotations


def boom(field: str, value: str) -> str:
    raise RuntimeError(f"hook failed on {value}")


def upper(field: str, value: str) -> str:
    return value.upper()
