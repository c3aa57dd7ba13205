"""Record ids as people type them: a prefix and a zero-padded number (F-000042, A-000007).

Findings, approvals and approval requests number their records the same way, and accept the
id typed in any case, with or without its prefix ("f-42", "42"). The number is also the
record's TinyDB document id.
"""

from __future__ import annotations

from msgspec import Struct


class RecordIds(Struct, frozen=True):
    """The ids of one kind of record, e.g. `RecordIds("F-")` for findings."""

    prefix: str

    def make(self, number: int) -> str:
        return f"{self.prefix}{number:06d}"

    def number(self, record_id: str) -> int | None:
        """The number an id names, or None when the text is not one of these ids."""
        text = record_id.strip().upper()
        if text.startswith(self.prefix):
            text = text[len(self.prefix) :]
        return int(text) if text.isdigit() else None
