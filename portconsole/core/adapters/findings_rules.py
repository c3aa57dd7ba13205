"""How a scan's candidates and a delivery change findings: the rules FindingBook applies
in its transactions, apart from where the documents live (findings.py, findings_docs.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from msgspec.structs import replace

from portconsole.core.domain.approval import is_placeholder
from portconsole.core.domain.finding import (
    APPROVED,
    CLOSED,
    NEW,
    OPEN_STATUSES,
    RESOLVED,
    RISK_ACCEPTED,
    SCAN_KINDS,
    SYSTEM_ACTOR,
    Finding,
    FindingCandidate,
    RaiseOutcome,
    TimelineEntry,
)
from portconsole.core.errors import UserError
from portconsole.core.timeutil import iso

# What a refresh moves on every sighting; a change to these alone is not written.
REFRESH_FIELDS = ("last_seen", "last_scan_id")


def written_form(finding: Finding) -> bytes:
    """A finding without the fields a mere refresh moves (see REFRESH_FIELDS), encoded: two
    are equal when their documents would be. For comparing only (msgspec: ~20x to_json)."""
    try:
        return _ENCODER.encode(replace(finding, **_REFRESH_BLANK))
    except TypeError:  # a detail msgspec cannot encode: the document form tells
        data = finding.to_json()
        for name in REFRESH_FIELDS:
            data.pop(name, None)
        return json.dumps(data, sort_keys=True, default=str).encode()


_ENCODER = msgspec.json.Encoder(order="sorted")
_REFRESH_BLANK: dict[str, Any] = {"last_seen": datetime.min.replace(tzinfo=UTC), "last_scan_id": ""}


def notification_change(result: dict[str, Any], moment: datetime) -> Callable[[Finding], None]:
    """Append a delivery attempt to a finding; a success adds a `notified` step (see
    FindingBook.record_notification)."""
    entry = dict(result)
    entry.setdefault("at", iso(moment))
    delivered = bool(entry.get("ok")) or str(
        entry.get("outcome") or entry.get("status") or ""
    ).lower() in ("success", "delivered", "sent")
    target = str(entry.get("target") or "")

    def change(f: Finding) -> None:
        f.notifications.append(dict(entry))
        if delivered:
            f.timeline.append(
                TimelineEntry("notified", moment, SYSTEM_ACTOR, f"to {target}" if target else "")
            )

    return change


def decision_time(finding: Finding) -> datetime | None:
    """When a person last decided or closed `finding` (None if nobody has)."""
    for entry in reversed(finding.timeline):
        if entry.step in ("decided", "closed"):
            return entry.at
    return None


def new_finding(
    candidate: FindingCandidate, finding_id: str, moment: datetime, actor: str
) -> Finding:
    """A candidate no finding absorbed, as a new finding."""
    return Finding(
        id=finding_id,
        kind=candidate.kind,
        severity=candidate.severity,
        host=candidate.host,
        port=candidate.port,
        proto=candidate.proto,
        service=candidate.service,
        status=NEW,
        first_seen=moment,
        last_seen=moment,
        scan_id=candidate.scan_id,
        last_scan_id=candidate.scan_id,
        details=dict(candidate.details),
        timeline=[TimelineEntry("detected", moment, actor, f"scan {candidate.scan_id}")],
    )


def absorb(
    finding: Finding,
    candidate: FindingCandidate,
    moment: datetime,
    window: timedelta,
    actor: str,
    outcome: RaiseOutcome,
) -> bool:
    """Fold a candidate into an existing finding if it is the same episode; True if so.

    An approved or closed finding is decided: a candidate is a new episode, unless the scan
    finished (`moment`) before the decision. Such a scan ingested after it (a cycle in flight
    while the operator approved) saw the problem the decision answered, and is left at that.
    """
    if finding.status in (APPROVED, CLOSED):
        decided = decision_time(finding)
        return candidate.kind in SCAN_KINDS and decided is not None and moment < decided
    if finding.status == RESOLVED:
        resolved_at = finding.resolved_at or finding.last_seen
        if moment - resolved_at > window:
            return False
        restored = finding.resolved_from if finding.resolved_from in OPEN_STATUSES else NEW
        if (
            finding.resolved_from == RISK_ACCEPTED
            and finding.risk_until
            and finding.risk_until > moment
        ):
            restored = RISK_ACCEPTED
        finding.status = restored
        finding.flap_count += 1
        finding.resolved_at = None
        finding.resolved_from = ""
        finding.timeline.append(
            TimelineEntry(
                "reopened",
                moment,
                actor,
                f"seen again by scan {candidate.scan_id} within the flap window "
                f"(flap {finding.flap_count})",
            )
        )
        outcome.reopened.append(finding)
    elif finding.status == RISK_ACCEPTED and (
        finding.risk_until is None or finding.risk_until <= moment
    ):
        finding.status = NEW
        finding.timeline.append(
            TimelineEntry(
                "reopened",
                moment,
                actor,
                "risk acceptance lapsed"
                + (f" on {iso(finding.risk_until)}" if finding.risk_until else ""),
            )
        )
        outcome.lapsed.append(finding)
    else:
        outcome.refreshed.append(finding)
        if candidate.details.get("backfilled"):
            # An older report (a backfill, see ScanCycle._backfilled) seeing an open
            # problem again tells nothing newer than the book: the finding stays as it is.
            return True
    finding.last_seen = moment
    finding.last_scan_id = candidate.scan_id
    finding.service = candidate.service or finding.service
    finding.details = {**finding.details, **candidate.details}
    return True


def resolve_by_scan(finding: Finding, moment: datetime, actor: str, scan_id: str) -> None:
    """Resolve a finding whose condition a scan no longer saw where it looked."""
    where = f"scan {scan_id}" if scan_id else "a later scan"
    finding.resolved_from = finding.status
    finding.status = RESOLVED
    finding.resolved_at = moment
    finding.timeline.append(
        TimelineEntry("remediated", moment, actor, f"no longer seen by {where}")
    )
    finding.timeline.append(
        TimelineEntry("verified", moment, actor, f"condition confirmed gone by {where}")
    )


def required_text(text: str, what: str, example: str) -> str:
    """A reason, cause or note a decision needs: stripped, refused when empty or a
    placeholder ("n/a", "tbd"), with an example of what to write."""
    cleaned = text.strip()
    if not cleaned or is_placeholder(cleaned):
        raise UserError(f"a {what} is required: {example}")
    return cleaned
