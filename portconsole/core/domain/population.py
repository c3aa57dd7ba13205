"""Open-port populations: every port open at a moment, with its approval and its finding.

An assessor samples a date and asks for every open port then and whether each was approved.
One row per port open at T (the store's point-in-time state), with:

- the approval in force at T (domain/approval.py approval_in_force: recorded at or before T,
  not retired by then; an approval recorded later never counts, whatever date it names);
- the finding that covered the port at T (`covering_finding`): one of the port's findings
  open then by its timeline (the newest detected), else the newest one approved by then;
- `backfilled`: the scan that last saw the port by T was an import older than the history
  it joined (adapters/store.py), recorded after the fact.

The series counts open ports by approval status over a period, one point per day (or per
scan when there were fewer scans than days), at most SERIES_LIMIT points. Pure: records in,
rows out; services/population.py reads the records.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from portconsole.core.domain.approval import (
    APPROVED,
    EXPIRED,
    UNAPPROVED,
    Approval,
    approval_status,
    approvals_in_force,
)
from portconsole.core.domain.evidence_register import approved_by
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.report_figures import status_from_steps, steps_until
from portconsole.core.timeutil import iso

# The findings that speak for one open port (host:port/proto): not it being gone.
COVERING_KINDS = frozenset(
    {"unapproved_port", "insecure_service", "service_changed", "approval_expired"}
)
# A finding in one of these states at T is dealing with the port then.
OPEN_AT = frozenset({"new", "acknowledged", "flagged", "risk_accepted"})
SERIES_LIMIT = 400

PortKey = tuple[str, int, str]


class OpenPort(Protocol):
    """A port open at a time, as the store's point-in-time state gives it (state.PortAt)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def proto(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def first_seen(self) -> datetime: ...
    @property
    def last_seen_scan_id(self) -> str: ...


def findings_by_port(findings: Iterable[Finding]) -> dict[PortKey, list[Finding]]:
    """The findings that can cover an open port, per host:port/proto."""
    index: dict[PortKey, list[Finding]] = {}
    for finding in findings:
        if finding.kind in COVERING_KINDS and finding.port is not None and finding.proto:
            index.setdefault((finding.host, finding.port, finding.proto), []).append(finding)
    return index


def covering_finding(findings: Sequence[Finding], at: datetime) -> tuple[Finding, str] | None:
    """The finding that covered a port at `at`, with its status then: one open then by its
    timeline (the newest detected), else the newest approved by then; None when neither."""
    open_then: list[tuple[datetime, str, Finding, str]] = []
    approved_then: list[tuple[datetime, str, Finding, str]] = []
    for finding in findings:
        steps = steps_until(finding, at)
        if not steps:
            continue  # detected after `at`
        status = status_from_steps(finding, steps)
        item = (steps[0].at, finding.id, finding, status)
        if status in OPEN_AT:
            open_then.append(item)
        elif status == "approved":
            approved_then.append(item)
    chosen = max(open_then or approved_then, default=None, key=lambda i: (i[0], i[1]))
    return (chosen[2], chosen[3]) if chosen else None


def population_row(
    item: OpenPort,
    approval: Approval | None,
    covering: tuple[Finding, str] | None,
    backfilled_scans: Collection[str],
    at: datetime,
) -> dict[str, Any]:
    """One open port at `at` (the contract's ROW, plus `approval`: approved, expired or
    unapproved, as the point-in-time report says it)."""
    finding, finding_status = covering if covering else (None, None)
    return {
        "host": item.host,
        "port": item.port,
        "proto": item.proto,
        "service": item.service,
        "open_since": iso(item.first_seen),
        "approval": approval_status(approval, at),
        "approval_id": approval.id if approval else None,
        "approval_recorded_at": iso(approval.recorded_at) if approval else None,
        "approved_by": approved_by(approval) if approval else None,
        "finding_id": finding.id if finding else None,
        "finding_status": finding_status,
        "backfilled": item.last_seen_scan_id in backfilled_scans,
        "scan_id": item.last_seen_scan_id,
    }


def population_at(
    open_ports: Iterable[OpenPort],
    approvals: Iterable[Approval],
    findings: Mapping[PortKey, Sequence[Finding]],
    backfilled_scans: Collection[str],
    at: datetime,
) -> dict[str, Any]:
    """{"at", "ports": [ROW]}: every port open at `at`, in the order given (the store's)."""
    in_force = approvals_in_force(approvals, at)
    rows = []
    for item in open_ports:
        key = (item.host, item.port, item.proto)
        covering = covering_finding(findings.get(key, ()), at)
        rows.append(population_row(item, in_force.get(key), covering, backfilled_scans, at))
    return {"at": iso(at), "ports": rows}


def series_point(
    open_ports: Iterable[OpenPort], approvals: Iterable[Approval], at: datetime
) -> dict[str, Any]:
    """The counts of the ports open at `at`: `approved` (an approval in force, not past its
    review), `unapproved` (none in force), `expired` (in force, past its review date), `open`
    (all), by the rule the population rows follow (without building the rows)."""
    in_force = approvals_in_force(approvals, at)
    statuses = [approval_status(in_force.get((p.host, p.port, p.proto)), at) for p in open_ports]
    return {
        "at": iso(at),
        "approved": statuses.count(APPROVED),
        "unapproved": statuses.count(UNAPPROVED),
        "expired": statuses.count(EXPIRED),
        "open": len(statuses),
    }


def series_times(
    start: datetime, end: datetime, scan_times: Iterable[datetime], limit: int = SERIES_LIMIT
) -> list[datetime]:
    """The moments a series is counted at: the period's start, then each day's end (UTC
    midnight) or, when fewer scans finished in the period than it has days, each scan's
    finish, then the period's end. Thinned evenly to at most `limit` (start and end kept)."""
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    days = []
    while midnight < end:
        days.append(midnight)
        midnight += timedelta(days=1)
    scans = sorted({t for t in scan_times if start < t < end})
    inner = scans if len(scans) < len(days) else days
    moments = [start, *inner, end]
    if len(moments) > limit:
        step = math.ceil((len(moments) - 2) / (limit - 2))
        moments = [start, *inner[step - 1 :: step], end]
    return list(dict.fromkeys(moments))
