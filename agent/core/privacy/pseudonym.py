"""Keyed pseudonyms for user and session ids, the same in both pipelines.

``pseudonym(key, value, "u_")`` is ``u_`` + the first 16 hex digits of HMAC-SHA256(key, value):
what LangFuse receives as ``user.id`` under ``user_id=hash`` (and ``s_…`` as ``session.id``
under ``session_id=hash``). ``HFRowPseudonyms`` writes the very same values into the HF Dataset
rows (``hf_user_id=hash``), so rows still join with traces by user and session, and nobody
holding the dataset can map a pseudonym back to the raw id.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

__all__ = ["HFRowPseudonyms", "pseudonym"]


def pseudonym(key: bytes, value: str, prefix: str) -> str:
    mac = hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return prefix + mac.hexdigest()[:16]


class HFRowPseudonyms:
    """A row hook for the HF Dataset sink: ``user_id`` (and ``session_id``) as pseudonyms."""

    def __init__(self, key: bytes, *, sessions: bool) -> None:
        if not key:
            raise ValueError("pseudonyms need an HMAC key")
        self._key = key
        self.sessions = sessions

    def __repr__(self) -> str:  # never the key
        return f"HFRowPseudonyms(sessions={self.sessions})"

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row)
        if row.get("user_id") is not None:
            row["user_id"] = pseudonym(self._key, str(row["user_id"]), "u_")
        if self.sessions and row.get("session_id") is not None:
            row["session_id"] = pseudonym(self._key, str(row["session_id"]), "s_")
        return row
