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

import functools
import sys
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import msgspec
from msgspec import Struct, field

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
    "escalated",  # severity raised by a later detection (a fingerprint showed it worse)
    "closed",  # closed by a person with a root cause (text = the cause)
)

# Kinds raised by detection from scans; only these are auto-resolved by a later scan.
SCAN_KINDS = frozenset(FindingKind) - {FindingKind.MONITORING_GAP}


def finding_key(kind: str, host: str, port: int | None, proto: str | None) -> str:
    """The identity of a problem: the same key raised twice is the same finding."""
    if port is None:
        return f"{kind}|{host}"
    return f"{kind}|{port_key(host, port, proto or '')}"


class FindingCandidate(Struct, frozen=True):
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


class TimelineEntry(Struct, frozen=True):
    """One step of a finding's response timeline: what happened, when, and who did it."""

    step: str  # one of STEPS
    at: datetime
    actor: str
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "at": iso(self.at), "actor": self.actor, "text": self.text}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TimelineEntry:
        return cls(
            _shared(str(data["step"])),
            stored_time(str(data["at"])),
            _shared(str(data.get("actor", ""))),
            _shared(str(data.get("text", ""))),
        )


_intern = sys.intern


def _shared(value: Any) -> Any:
    """One copy of a repeated text (a kind, a host, a scan id, a timeline step) for every
    finding that holds it: 100,000 findings parsed from JSON held ~10 copies each of text
    most of them share (`sys.intern`: a text no finding holds any more is freed)."""
    return sys.intern(value) if type(value) is str else value


_TIME_FIELDS = ("first_seen", "last_seen", "risk_until", "resolved_at")
# Stored times parsed lately: 100,000 findings share a few hundred distinct moments (a
# cycle stamps every finding it raises with its own), and a datetime is immutable.
_PARSED: dict[str, datetime] = {}
_PARSED_MAX = 8192


def stored_time(text: str) -> datetime:
    """A time as `iso` writes it (`2026-05-27T00:00:00.123456Z`), parsed: fast for that
    form (remembered, `datetime.fromisoformat`), parse_iso for anything else."""
    moment = _PARSED.get(text)
    if moment is not None:
        return moment
    moment = None
    if text[-1:] == "Z":
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is not UTC:
        moment = parse_iso(text)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[text] = moment
    return moment


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain_copy(value: Any) -> Any:
    """A copy of JSON-shaped data (dicts and lists copied, all the way down)."""
    if isinstance(value, dict):
        if all(type(v) in _SCALARS for v in value.values()):
            return dict(value)  # the common case: a flat dict (a finding's details)
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_copy(v) for v in value]
    return value


class Finding(Struct):
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
        """The stored document: every field, times as `iso`, nothing shared with self."""
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "host": self.host,
            "port": self.port,
            "proto": self.proto,
            "service": self.service,
            "status": self.status,
            "first_seen": iso(self.first_seen) if self.first_seen is not None else None,
            "last_seen": iso(self.last_seen) if self.last_seen is not None else None,
            "scan_id": self.scan_id,
            "last_scan_id": self.last_scan_id,
            "details": _plain_copy(self.details),
            "flap_count": self.flap_count,
            "timeline": [entry.to_json() for entry in self.timeline],
            "justification": self.justification,
            "reason": self.reason,
            "risk_until": iso(self.risk_until) if self.risk_until is not None else None,
            "approval_id": self.approval_id,
            "ticket": self.ticket,
            "notifications": _plain_copy(self.notifications),
            "resolved_at": iso(self.resolved_at) if self.resolved_at is not None else None,
            "resolved_from": self.resolved_from,
        }

    def copy(self) -> Finding:
        """An independent copy (its details, timeline and notifications lists its own)."""
        twin = Finding(*_ALL_FIELDS(self))
        twin.details = _plain_copy(self.details)
        twin.timeline = list(self.timeline)  # entries are frozen
        twin.notifications = _plain_copy(self.notifications)
        return twin

    def sighted(self, last_seen: datetime, last_scan_id: str) -> Finding:
        """A copy seen later (a read's view: the lists shared, never to be changed)."""
        twin = Finding(*_ALL_FIELDS(self))
        twin.last_seen, twin.last_scan_id = last_seen, last_scan_id
        return twin

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        """A finding from its stored document (unknown keys ignored, missing ones at their
        defaults). Shares nothing with `data`: the finding may be changed freely. One call
        of the constructor with every field (a console parses 100,000 of these)."""
        get = data.get
        try:
            # Text fields a finding always has are interned as they are (a document with
            # another type there is refused with a TypeError, as a missing key is).
            required = (
                data["id"],
                _intern(data["kind"]),
                _intern(data["severity"]),
                _intern(data["host"]),
                data["port"],
                _shared(data["proto"]),
                _intern(data["service"]),
                _intern(data["status"]),
            )
            scan_id = _intern(data["scan_id"])
        except KeyError as missing:
            raise TypeError(f"a finding document lacks {missing}") from None
        details = get("details")
        timeline = get("timeline")
        notifications = get("notifications")
        last_scan_id = get("last_scan_id")
        flap_count = get("flap_count")
        justification = get("justification")
        reason = get("reason")
        risk_until = get("risk_until")
        approval_id = get("approval_id")
        ticket = get("ticket")
        resolved_at = get("resolved_at")
        resolved_from = get("resolved_from")
        return cls(
            *required,
            _time_or_none(get("first_seen")),  # type: ignore[arg-type]
            _time_or_none(get("last_seen")),  # type: ignore[arg-type]
            scan_id,
            "" if last_scan_id is None else _intern(last_scan_id),
            _plain_copy(details) if details else {},
            0 if flap_count is None else flap_count,
            [TimelineEntry.from_json(e) for e in timeline] if timeline else [],
            "" if justification is None else justification,
            "" if reason is None else reason,
            stored_time(risk_until) if risk_until else None,
            "" if approval_id is None else _shared(approval_id),
            "" if ticket is None else ticket,
            _plain_copy(notifications) if notifications else [],
            stored_time(resolved_at) if resolved_at else None,
            "" if resolved_from is None else _shared(resolved_from),
        )


def _time_or_none(raw: Any) -> datetime | None:
    return stored_time(raw) if raw else None


_ALL_FIELDS = attrgetter(*Finding.__struct_fields__)


@functools.cache
def _stored_decoder() -> msgspec.json.Decoder[dict[str, Finding]]:
    """Built on first use, not at import: every command imports this module."""
    return msgspec.json.Decoder(dict[str, Finding])


def findings_from_stored(raw: bytes) -> dict[str, Finding] | None:
    """The findings of a stored JSON object of documents (id -> `to_json`'s document),
    decoded in one pass (a console reads 100,000): a shard of 2,048 took 18 ms, against
    30 ms for `json.loads` and `from_json` of each, and holds the GIL 6 ms at a time rather
    than `json.loads`'s 18. None if a document is not in the form `to_json` writes (a
    required field missing, a null where it writes a value, a time not in UTC): the caller
    reads those with `from_json`, which takes them. Shares text and times as `from_json`
    does, and a timeline step the findings hold alike is one object (entries are frozen)."""
    try:
        found = _stored_decoder().decode(raw)
    except msgspec.MsgspecError:
        return None
    moments: dict[datetime, datetime] = {}
    entries: dict[TimelineEntry, TimelineEntry] = {}
    moment = moments.setdefault
    for finding in found.values():
        for name in _TIME_FIELDS:
            value = getattr(finding, name)
            if value is not None:
                if value.tzinfo is not UTC:
                    return None
                setattr(finding, name, moment(value, value))
        finding.kind = _intern(finding.kind)
        finding.severity = _intern(finding.severity)
        finding.host = _intern(finding.host)
        finding.service = _intern(finding.service)
        finding.status = _intern(finding.status)
        finding.scan_id = _intern(finding.scan_id)
        finding.last_scan_id = _intern(finding.last_scan_id)
        finding.proto = _shared(finding.proto)
        finding.approval_id = _shared(finding.approval_id)
        finding.resolved_from = _shared(finding.resolved_from)
        if finding.timeline:
            timeline = []
            for entry in finding.timeline:
                kept = entries.get(entry)
                if kept is None:
                    if entry.at.tzinfo is not UTC:
                        return None
                    kept = entries[entry] = TimelineEntry(
                        _intern(entry.step), moment(entry.at, entry.at), _intern(entry.actor),
                        _intern(entry.text),
                    )  # fmt: skip
                timeline.append(kept)
            finding.timeline = timeline
    return found


class RaiseOutcome(Struct):
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
