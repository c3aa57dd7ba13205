"""Approval records as the domain sees them: what may be open where, why, and who decided.

Approvals are records, not flags (PCI DSS 1.2.5 and 1.2.7): each names the expected service,
the business justification, the owner, the requester and the approver, a ticket, when it was
approved and when it must be reviewed. Insecure services need a mitigation note. Records are
retired, never deleted. The registry that stores them is adapters/approvals.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, MutableMapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, NamedTuple

from portconsole.core.errors import UserError
from portconsole.core.timeutil import iso, parse_iso

ACTIVE = "active"
RETIRED = "retired"
PROTOCOLS = ("tcp", "udp", "sctp")

# Words people type to get past a required field; they justify nothing.
PLACEHOLDERS = frozenset({"todo", "tbd", "tba", "n/a", "na", "none", "-", "?", "x", "xxx", "fixme"})

# The fields that say what was approved. Two records with equal content are the same approval,
# whatever their id, source or bookkeeping; import uses this to stay idempotent.
CONTENT_FIELDS = (
    "host",
    "port",
    "proto",
    "service",
    "product_pattern",
    "justification",
    "owner",
    "requester",
    "approver",
    "ticket",
    "approved_at",
    "review_by",
    "mitigation",
)


def person_of(identity: str) -> str:
    """The person an identity string names, for separation-of-duties comparisons.

    `"alice@web1 via 127.0.5.9"`, `"Alice"` and `"alice@example.com"` are all `"alice"`:
    an approver must not pass the check by spelling their own name another way.
    """
    text = identity.strip().lower()
    text = text.split(" via ", 1)[0]
    text = text.split("(", 1)[0].strip()
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1 : text.index(">")]
    return text.split("@", 1)[0].strip()


def is_placeholder(text: str) -> bool:
    return text.strip().lower() in PLACEHOLDERS


def is_insecure(service: str, insecure_services: Iterable[str]) -> bool:
    """True when a service name (or any `|` alternative of it) is on the insecure list."""
    listed = {s.strip().lower() for s in insecure_services}
    names = [s.strip().lower() for s in service.split("|")]
    return any(name in listed for name in names if name and name != "*")


def normalise_host(host: str) -> str:
    """The canonical text of an IP address (as nmap reports it); UserError if not one."""
    try:
        return str(ipaddress.ip_address(host.strip()))
    except ValueError:
        raise UserError(f"{host!r} is not an IP address; approvals name single addresses") from None


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    """What one baseline rule (or a console approval) asks to be approved for one host:port.

    `file` and `line` point back at the baseline rule it came from, for error messages.
    """

    host: str
    port: int
    proto: str
    service: str
    justification: str
    owner: str
    requester: str
    approver: str
    approved_at: datetime
    review_by: datetime
    product_pattern: str = ""
    ticket: str = ""
    mitigation: str = ""
    source: str = "cli"
    file: str = ""
    line: int = 0

    def content(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in CONTENT_FIELDS)


@dataclass(slots=True)
class Approval:
    """One approval record as stored. Times are timezone-aware UTC."""

    id: str
    host: str
    port: int
    proto: str
    service: str
    product_pattern: str
    justification: str
    owner: str
    requester: str
    approver: str
    ticket: str
    approved_at: datetime
    review_by: datetime
    mitigation: str
    source: str  # "baseline:<file name>" | "console" | "cli"
    status: str = ACTIVE  # active | retired
    retired_at: datetime | None = None
    retired_by: str = ""
    retire_reason: str = ""
    created_at: datetime | None = None
    created_by: str = ""
    supersedes: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.host, self.port, self.proto)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def is_expired(self, at: datetime) -> bool:
        """Past its review date: PCI DSS 1.2.7 wants every rule reviewed at least every 6 months."""
        return self.review_by < at

    def in_force(self, at: datetime) -> bool:
        """Recorded by `at` and not retired by then (point-in-time answers)."""
        if self.created_at is not None and self.created_at > at:
            return False
        return self.status == ACTIVE or (self.retired_at is not None and self.retired_at > at)

    def content(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in CONTENT_FIELDS)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("approved_at", "review_by", "retired_at", "created_at"):
            value = data[name]
            data[name] = iso(value) if value is not None else None
        return data

    @classmethod
    def from_json(cls, data: MutableMapping[str, Any] | dict[str, Any]) -> Approval:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("approved_at", "review_by", "retired_at", "created_at"):
            raw = values.get(name)
            values[name] = parse_iso(raw) if raw else None
        values["supersedes"] = list(values.get("supersedes") or [])
        return cls(**values)


class ImportResult(NamedTuple):
    """What an import changed: new records, records already present, records it retired
    (each superseded by a new one with different content, or pruned)."""

    added: list[Approval]
    unchanged: list[Approval]
    retired: list[Approval]
