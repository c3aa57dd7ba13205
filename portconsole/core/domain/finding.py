"""Findings as the domain sees them: one problem on one host[:port/proto], with its timeline.

Status:
    new ─► acknowledged ─► approved | flagged | risk_accepted | resolved | closed
    (flagged and risk_accepted may still be approved; any open status may be resolved by a
    later scan; resolved reopens within the flap window; a lapsed risk acceptance reopens;
    closed is a person's verdict with a root cause: the same problem seen again is a new
    finding; a person may reopen a flagged or closed finding, and revoking an approval
    reopens the finding it approved)

The book that stores them and applies the lifecycle is adapters/findings.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from portconsole.core.domain.model import FindingKind, port_key
from portconsole.core.timeutil import iso, parse_iso

SYSTEM_ACTOR = "portconsole"

NEW = "new"
ACKNOWLEDGED = "acknowledged"
APPROVED = "approved"
FLAGGED = "flagged"
RISK_ACCEPTED = "risk_accepted"
RESOLVED = "resolved"
CLOSED = "closed"
STATUSES = (NEW, ACKNOWLEDGED, APPROVED, FLAGGED, RISK_ACCEPTED, RESOLVED, CLOSED)
# Still wanting a person's attention (the open queue).
OPEN_STATUSES = frozenset({NEW, ACKNOWLEDGED, FLAGGED})
# Statuses a later scan may resolve because the condition went away.
RESOLVABLE_STATUSES = frozenset({NEW, ACKNOWLEDGED, FLAGGED, RISK_ACCEPTED})

# Where each person's decision may start from: the book enforces it, the console offers
# only these (and says why not, before any dialog). Reopen undoes a flag or a close.
DECISION_STATUSES: dict[str, frozenset[str]] = {
    "acknowledge": frozenset({NEW}),
    "note": frozenset(STATUSES),
    "flag": frozenset({NEW, ACKNOWLEDGED, RISK_ACCEPTED}),
    "accept the risk of": frozenset({NEW, ACKNOWLEDGED, FLAGGED}),
    "approve": frozenset({NEW, ACKNOWLEDGED, FLAGGED, RISK_ACCEPTED}),
    "close": OPEN_STATUSES,
    "reopen": frozenset({FLAGGED, CLOSED}),
}
# Findings an approval answers: a port open without one, or open otherwise than approved.
APPROVABLE_KINDS = frozenset({"unapproved_port", "service_changed", "insecure_service"})


def refusal(finding: Finding, decision: str) -> str:
    """Why `decision` (a DECISION_STATUSES key) cannot be taken on `finding` ("" if it can)."""
    allowed = DECISION_STATUSES[decision]
    if finding.status not in allowed:
        return (
            f"cannot {decision} {finding.id}: it is {finding.status.replace('_', ' ')} "
            f"(allowed when {', '.join(s.replace('_', ' ') for s in sorted(allowed))})"
        )
    if decision == "approve" and finding.kind not in APPROVABLE_KINDS:
        return (
            f"cannot approve {finding.id}: a {finding.kind.replace('_', ' ')} finding is not "
            "an open port to approve (note or close it; review an approval that is due)"
        )
    return ""


STEPS = (
    "detected",
    "notified",
    "acknowledged",
    "noted",
    "decided",
    "remediated",
    "verified",
    "reopened",
    "closed",  # closed by a person with a root cause (text = the cause)
)

# Kinds raised by detection from scans; only these are auto-resolved by a later scan.
SCAN_KINDS = frozenset(FindingKind) - {FindingKind.MONITORING_GAP}


def finding_key(kind: str, host: str, port: int | None, proto: str | None) -> str:
    """The identity of a problem: the same key raised twice is the same finding."""
    if port is None:
        return f"{kind}|{host}"
    return f"{kind}|{port_key(host, port, proto or '')}"


@dataclass(frozen=True, slots=True)
class FindingCandidate:
    """A problem detection saw in one scan, before it is matched against the book.

    Host-level kinds (unknown_host, host_gone) have `port` and `proto` None.
    """

    kind: str
    host: str
    port: int | None
    proto: str | None
    service: str
    severity: str
    scan_id: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return finding_key(self.kind, self.host, self.port, self.proto)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    step: str  # one of STEPS
    at: datetime
    actor: str
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "at": iso(self.at), "actor": self.actor, "text": self.text}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TimelineEntry:
        return cls(
            step=str(data["step"]),
            at=parse_iso(str(data["at"])),
            actor=str(data.get("actor", "")),
            text=str(data.get("text", "")),
        )


_TIME_FIELDS = ("first_seen", "last_seen", "risk_until", "resolved_at")


@dataclass(slots=True)
class Finding:
    """One finding as stored. Text from the network (service, details) is untrusted."""

    id: str
    kind: str
    severity: str
    host: str
    port: int | None
    proto: str | None
    service: str
    status: str
    first_seen: datetime
    last_seen: datetime
    scan_id: str  # the scan that first raised it
    last_scan_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    flap_count: int = 0
    timeline: list[TimelineEntry] = field(default_factory=list)
    justification: str = ""
    reason: str = ""
    risk_until: datetime | None = None
    approval_id: str = ""
    ticket: str = ""
    notifications: list[dict[str, Any]] = field(default_factory=list)
    resolved_at: datetime | None = None
    # The open status a finding had before a scan resolved it: a flap restores it.
    resolved_from: str = ""

    @property
    def key(self) -> str:
        return finding_key(self.kind, self.host, self.port, self.proto)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def step_time(self, step: str) -> datetime | None:
        """When `step` first happened, if it did (for time-to-respond reports)."""
        for entry in self.timeline:
            if entry.step == step:
                return entry.at
        return None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            data[name] = iso(value) if value is not None else None
        data["timeline"] = [entry.to_json() for entry in self.timeline]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in _TIME_FIELDS:
            raw = values.get(name)
            values[name] = parse_iso(raw) if raw else None
        values["timeline"] = [TimelineEntry.from_json(e) for e in values.get("timeline") or []]
        values["details"] = dict(values.get("details") or {})
        values["notifications"] = list(values.get("notifications") or [])
        return cls(**values)


@dataclass(slots=True)
class RaiseOutcome:
    """What raising one scan's candidates did to the book.

    new: findings created (notify these). reopened: resolved findings that came back within
    the flap window (one finding, no new alert). lapsed: risk-accepted findings whose
    acceptance ran out and are open again (worth a notification). refreshed: open findings
    seen again (last_seen moved).
    """

    new: list[Finding] = field(default_factory=list)
    reopened: list[Finding] = field(default_factory=list)
    lapsed: list[Finding] = field(default_factory=list)
    refreshed: list[Finding] = field(default_factory=list)
