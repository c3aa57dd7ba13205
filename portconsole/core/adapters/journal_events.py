"""The journal's event types: an event as stored, an event to append, and an anchor's text.

`AuditEvent` is one event read back from the journal (adapters/journal.py writes them);
`AuditEntry` is what a caller asks to append. They live apart from the journal itself
because most of the product only names them (services build entries, screens show events)
and never touches the segment files. An anchor is the `SEQ:HASH` text that names one event
of the chain, as `audit head` prints it and `audit verify --anchor` reads it back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from msgspec import Struct

from portconsole.core.errors import StoreError
from portconsole.core.identity import Actor
from portconsole.core.timeutil import iso, parse_iso


class AuditEvent(Struct, frozen=True):
    """One event as stored. `actor` is the stored {user, sudo_user, ssh_client, host} map."""

    seq: int
    id: str
    at: datetime
    actor: dict[str, Any]
    origin: str
    action: str
    outcome: str
    resource: dict[str, Any]
    details: dict[str, Any]
    prev_hash: str
    hash: str
    recorded_at: datetime | None = None

    @property
    def who(self) -> str:
        """The display form, "alice@myhost via 127.0.5.3"."""
        return str(Actor.from_json(self.actor, origin=self.origin))

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "at": iso(self.at),
            "recorded_at": iso(self.recorded_at or self.at),
            "actor": dict(self.actor),
            "origin": self.origin,
            "action": self.action,
            "outcome": self.outcome,
            "resource": dict(self.resource),
            "details": dict(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> AuditEvent:
        actor = record.get("actor")
        recorded = record.get("recorded_at")
        return cls(
            seq=int(record["seq"]),
            id=str(record.get("id", "")),
            at=parse_iso(str(record["at"])),
            actor=dict(actor) if isinstance(actor, dict) else {},
            origin=str(record.get("origin", "")),
            action=str(record.get("action", "")),
            outcome=str(record.get("outcome", "")),
            resource=dict(record.get("resource") or {}),
            details=dict(record.get("details") or {}),
            prev_hash=str(record.get("prev_hash", "")),
            hash=str(record.get("hash", "")),
            recorded_at=parse_iso(str(recorded)) if recorded else None,
        )


class AuditEntry(Struct, frozen=True):
    """An event to append (see `AuditLog.append` for the fields)."""

    action: str
    actor: Actor
    outcome: str = "success"
    resource: Mapping[str, Any] | None = None
    details: Mapping[str, Any] | None = None
    at: datetime | None = None


def parse_anchor(text: str) -> tuple[int, str]:
    """`SEQ:HASH` as printed by `audit head`; a UserError-style StoreError if malformed."""
    seq_text, _, digest = text.strip().partition(":")
    if (
        not seq_text.isascii()
        or not seq_text.isdigit()
        or not re.fullmatch(r"[0-9a-f]{64}", digest)
    ):
        raise StoreError(f"anchor {text!r} is not SEQ:HASH (e.g. 42:{'ab' * 32})")
    return int(seq_text), digest
