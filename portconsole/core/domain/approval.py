"""Approval records as the domain sees them: what may be open where, why, and who decided.

Approvals are records, not flags (PCI DSS 1.2.5 and 1.2.7): each names the expected service,
the business justification, the owner, the requester and the approver, a ticket, when it was
approved and when it must be reviewed. Insecure services need a mitigation note. Records are
retired, never deleted. The registry that stores them is adapters/approvals.py.

Four eyes are real, not declared: a request (ApprovalRequest) is its own step, recorded under
the requester's identity; the approval is recorded under the approver's. They are met when
the two recorded persons differ. A name typed by the approver ("on behalf of", a baseline's
`requester:`) is kept but proves nothing. Each review (PCI DSS 1.2.7) is kept on the approval
with who, when, the outcome and the next review date.

An approval made from a finding before -sV identified its port names the sweep's guess,
nmap's port table (8081 -> `sunproxyadmin`): its `service_basis` is PORT_TABLE, and the
port's first identification replaces the guess with what -sV named (`adopts_from` says
when; services/fingerprint_after.py does it). Any other approval's service was stated (a
baseline rule, or an identified finding's) and is held to as it is.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, MutableMapping
from datetime import datetime
from typing import Any, Literal, NamedTuple

from msgspec import Struct, field

from portconsole.core.domain.records import asdict
from portconsole.core.errors import UserError
from portconsole.core.timeutil import iso, parse_iso

ACTIVE = "active"
RETIRED = "retired"
PROTOCOLS = ("tcp", "udp", "sctp")


# service_basis: "" (stated) or PORT_TABLE (a sweep's guess, awaiting -sV).
PORT_TABLE = "port-table"

PENDING = "pending"
REQUEST_APPROVED = "approved"
RequestStatus = Literal["pending", "approved"]

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
    listed = _normalised(tuple(insecure_services))
    names = [s.strip().lower() for s in service.split("|")]
    return any(name in listed for name in names if name and name != "*")


@functools.lru_cache(maxsize=16)
def _normalised(names: tuple[str, ...]) -> frozenset[str]:
    """The insecure list as compared (a detection asks once per port, with the same list)."""
    return frozenset(s.strip().lower() for s in names)


def normalise_host(host: str) -> str:
    """The canonical text of an IP address (as nmap reports it); UserError if not one."""
    try:
        return str(ipaddress.ip_address(host.strip()))
    except ValueError:
        raise UserError(f"{host!r} is not an IP address; approvals name single addresses") from None


class ApprovalSpec(Struct, frozen=True):
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
    # Four eyes, for approvals recorded in the console (see Approval).
    request_id: str = ""
    requested_by: str = ""
    requested_at: datetime | None = None
    on_behalf_of: str = ""
    four_eyes: bool = False
    four_eyes_basis: str = ""
    service_basis: str = ""  # see Approval

    def content(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in CONTENT_FIELDS)


class Review(Struct, frozen=True):
    """One review of an approval: who, when, what they concluded, when it is next due.

    `previous_review_by` is the due date the review replaced, so the due date at any past
    moment stays answerable (Approval.review_by_at).
    """

    at: datetime
    reviewer: str  # the recorded identity (Actor display form)
    reviewer_person: str
    outcome: str  # one of approval_terms.REVIEW_OUTCOMES
    note: str
    next_review_by: datetime | None  # None when the review retired the approval
    previous_review_by: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "reviewer": self.reviewer,
            "reviewer_person": self.reviewer_person,
            "outcome": self.outcome,
            "note": self.note,
            "next_review_by": iso(self.next_review_by) if self.next_review_by else None,
            "previous_review_by": iso(self.previous_review_by),
        }

    def summary(self) -> dict[str, Any]:
        """The review as the evidence pack shows it (contract keys)."""
        return {
            "at": iso(self.at),
            "reviewer": self.reviewer,
            "outcome": self.outcome,
            "note": self.note,
            "next_review_by": iso(self.next_review_by) if self.next_review_by else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Review:
        nxt = data.get("next_review_by")
        return cls(
            at=parse_iso(str(data["at"])),
            reviewer=str(data.get("reviewer", "")),
            reviewer_person=str(data.get("reviewer_person", "")),
            outcome=str(data.get("outcome", "")),
            note=str(data.get("note", "")),
            next_review_by=parse_iso(str(nxt)) if nxt else None,
            previous_review_by=parse_iso(str(data["previous_review_by"])),
        )


class ApprovalRequest(Struct):
    """A request to approve a finding's port, recorded under the requester's identity.

    `requested_by` is the recorded identity (Actor display form) and `requester_person` the
    person behind it (Actor.person), the one four eyes are checked against. `on_behalf_of`
    is free text, kept but never counted.
    """

    id: str
    finding_id: str
    host: str
    port: int
    proto: str
    service: str
    justification: str
    owner: str
    ticket: str
    review_by: datetime | None
    mitigation: str
    on_behalf_of: str
    requested_by: str
    requester_person: str
    requested_at: datetime
    status: str = PENDING  # pending | approved
    approval_id: str = ""
    approved_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("review_by", "requested_at", "approved_at"):
            value = data[name]
            data[name] = iso(value) if value is not None else None
        return data

    @classmethod
    def from_json(cls, data: MutableMapping[str, Any] | dict[str, Any]) -> ApprovalRequest:
        known = set(cls.__struct_fields__)
        values = {k: v for k, v in data.items() if k in known}
        for name in ("review_by", "requested_at", "approved_at"):
            raw = values.get(name)
            values[name] = parse_iso(raw) if raw else None
        return cls(**values)


def four_eyes(requester_person: str, approver_person: str, request_id: str) -> tuple[bool, str]:
    """Whether four eyes were met by a recorded request and approval, and why (or why not)."""
    if not request_id:
        return False, "no request was recorded: the approver alone recorded this approval"
    if requester_person == approver_person:
        return (
            False,
            f"{request_id} was requested and approved by the same person ({approver_person})",
        )
    return True, (
        f"{request_id} requested by {requester_person}, approved by {approver_person}: "
        "two recorded identities"
    )


class Approval(Struct):
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
    # Four eyes (see the module docstring): the request this approval came from, who made
    # it and when, whether four eyes were met and why. Empty for baseline imports.
    request_id: str = ""
    requested_by: str = ""
    requested_at: datetime | None = None
    on_behalf_of: str = ""
    four_eyes: bool = False
    four_eyes_basis: str = ""
    reviews: list[Review] = field(default_factory=list)
    # PORT_TABLE: `service` is the sweep's guess, awaiting the port's first -sV (see the
    # module docstring); "": stated. Not stored when stated, so older records read the same.
    service_basis: str = ""

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.host, self.port, self.proto)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def is_expired(self, at: datetime) -> bool:
        """Past its review date: PCI DSS 1.2.7 wants every rule reviewed at least every 6 months."""
        return self.review_by_at(at) < at

    def review_by_at(self, at: datetime) -> datetime:
        """The review due date as it stood at `at` (reviews recorded later do not count)."""
        due = self.reviews[0].previous_review_by if self.reviews else self.review_by
        for review in self.reviews:
            if review.at <= at and review.next_review_by is not None:
                due = review.next_review_by
        return due

    def last_review(self, at: datetime | None = None) -> Review | None:
        """The newest review recorded by `at` (default: any)."""
        done = [r for r in self.reviews if at is None or r.at <= at]
        return done[-1] if done else None

    @property
    def awaits_identification(self) -> bool:
        """Its service is a port-table guess that the port's first -sV replaces."""
        return self.service_basis == PORT_TABLE

    def adopts_from(self, first_seen: datetime, fingerprinted_at: datetime | None) -> bool:
        """Whether the fingerprint landing now on its port (open since `first_seen`, last
        fingerprinted at `fingerprinted_at` before it) is the identification it awaits: the
        first of the open period it was approved in. A port fingerprinted meanwhile by
        another path, or closed and opened again since, is not the port it guessed about."""
        return (
            self.active
            and self.awaits_identification
            and fingerprinted_at is None
            and first_seen <= self.recorded_at
        )

    def four_eyes_basis_text(self) -> str:
        """Why four eyes were or were not met, also for records made before requests existed."""
        if self.four_eyes_basis:
            return self.four_eyes_basis
        if self.source.startswith("baseline:"):
            return (
                f"imported from {self.source[len('baseline:') :]}: requester "
                f"{self.requester or '(none)'} and approver {self.approver} are names in the "
                "file, not recorded identities"
            )
        return four_eyes("", self.approver, self.request_id)[1]

    @property
    def recorded_at(self) -> datetime:
        """When the record was made (records from before `created_at` existed: approved_at)."""
        return self.created_at or self.approved_at

    def in_force(self, at: datetime) -> bool:
        """Recorded at or before `at` and not retired by then: the one rule for "approved at
        T" (detection of a scan finished at T, point-in-time reports, populations, packs).
        An approval recorded after T never counts at T, whatever date it says it was given."""
        if self.recorded_at > at:
            return False
        return self.status == ACTIVE or (self.retired_at is not None and self.retired_at > at)

    def content(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in CONTENT_FIELDS)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in _APPROVAL_TIMES:
            value = data[name]
            data[name] = iso(value) if value is not None else None
        data["reviews"] = [review.to_json() for review in self.reviews]
        if not self.service_basis:
            del data["service_basis"]
        return data

    @classmethod
    def from_json(cls, data: MutableMapping[str, Any] | dict[str, Any]) -> Approval:
        known = set(cls.__struct_fields__)
        values = {k: v for k, v in data.items() if k in known}
        for name in _APPROVAL_TIMES:
            raw = values.get(name)
            values[name] = parse_iso(raw) if raw else None
        values["supersedes"] = list(values.get("supersedes") or [])
        values["reviews"] = [Review.from_json(r) for r in values.get("reviews") or []]
        return cls(**values)


_APPROVAL_TIMES = ("approved_at", "review_by", "retired_at", "created_at", "requested_at")

APPROVED = "approved"
UNAPPROVED = "unapproved"
EXPIRED = "expired"


def approval_in_force(
    approvals: Iterable[Approval], host: str, port: int, proto: str, at: datetime
) -> Approval | None:
    """The approval in force for host:port/proto at `at` (Approval.in_force), the newest
    (by approved_at, then id) when several are."""
    found = [a for a in approvals if a.key == (host, port, proto) and a.in_force(at)]
    return max(found, key=lambda a: (a.approved_at, a.id)) if found else None


def approvals_in_force(
    approvals: Iterable[Approval], at: datetime
) -> dict[tuple[str, int, str], Approval]:
    """Per host:port/proto, the approval in force at `at` (as approval_in_force, for many)."""
    index: dict[tuple[str, int, str], Approval] = {}
    for approval in approvals:
        if not approval.in_force(at):
            continue
        current = index.get(approval.key)
        if current is None or (approval.approved_at, approval.id) > (
            current.approved_at,
            current.id,
        ):
            index[approval.key] = approval
    return index


def approval_status(approval: Approval | None, at: datetime) -> str:
    """`approved`, `unapproved` (none in force) or `expired` (in force, past its review date)."""
    if approval is None:
        return UNAPPROVED
    return EXPIRED if approval.is_expired(at) else APPROVED


class ImportResult(NamedTuple):
    """What an import changed: new records, records already present, records it retired
    (each superseded by a new one with different content, or pruned)."""

    added: list[Approval]
    unchanged: list[Approval]
    retired: list[Approval]
