"""The rows of an evidence pack, computed from records already read: findings, scans, approvals.

Pure: the pack's builder (services/evidence_pack.py) reads the store, the audit chain and the
registers, and these functions turn what it read into rows and metrics. Time to detect needs
the scan history, so it comes in through `measure` (the builder's detection clock).

- **Responded**: the earliest step among acknowledged, decided, remediated, verified and
  closed at or before the period's end (an acknowledgement is the first response).
  **Time to respond (TTR)** = responded - detected; no response: not in the statistics.
- **SLA breach**: deadline = detected + `report.sla_hours[severity]`; "responded after the
  SLA" if responded > deadline, "no response by the period's end" if none and the deadline
  passed by then; a finding whose deadline had not passed by the period's end never breaches.
- **Headline metrics** count port findings (compliance.PORT_KINDS) detected in the period;
  `by_kind` gives the same statistics for every kind, expired approvals and gaps included.
- Figures are as of the period's end: timeline steps after it are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from msgspec import Struct

from portconsole.core.domain.compliance import PORT_KINDS, RESPONSE_STEPS
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.report_figures import (
    first_step,
    iso_or_none,
    seconds,
    severity_order,
    status_from_steps,
    steps_until,
    summarise,
)
from portconsole.core.domain.schedule import Gap
from portconsole.core.settings import Settings
from portconsole.core.timeutil import iso, parse_iso


class Detection(Struct):
    """A finding's time to detect, and what it was measured from."""

    seconds: float | None
    basis: str
    baseline_scan: str | None = None
    baseline_finished: str | None = None


# Measures a finding's time to detect, given when it was detected.
Measure = Callable[[Finding, datetime], Detection]


def sla_seconds(settings: Settings, severity: str) -> float | None:
    hours = settings.report.sla_hours.get(severity)  # type: ignore[call-overload]
    return float(hours) * 3600.0 if hours is not None else None


def finding_row(
    finding: Finding,
    start: datetime,
    end: datetime,
    settings: Settings,
    measure: Measure,
) -> dict[str, Any] | None:
    steps = steps_until(finding, end)
    detected_step = first_step(steps, "detected")
    detected = detected_step.at if detected_step else finding.first_seen
    if detected > end:
        return None
    in_period = detected >= start
    carried = not in_period and status_from_steps(finding, steps_until(finding, start)) not in (
        "resolved",
        "approved",
    )
    touched = any(start <= entry.at <= end for entry in steps)
    if not (in_period or carried or touched):
        return None
    decided = first_step(steps, "decided")
    remediated = first_step(steps, "remediated") or first_step(steps, "verified")
    detection = measure(finding, detected)
    response = min((e for e in steps if e.step in RESPONSE_STEPS), key=lambda e: e.at, default=None)
    responded_at = response.at if response is not None else None
    respond = seconds(responded_at - detected) if responded_at is not None else None
    sla = sla_seconds(settings, finding.severity)
    breach = ""
    if sla is not None:
        deadline = detected + timedelta(seconds=sla)
        if responded_at is not None and responded_at > deadline:
            breach = "responded after the SLA"
        elif responded_at is None and deadline < end:
            breach = "no response by the period's end"
    return {
        "id": finding.id,
        "kind": finding.kind,
        "severity": finding.severity,
        "host": finding.host,
        "port": finding.port,
        "proto": finding.proto,
        "service": finding.service,
        "status_at_end": status_from_steps(finding, steps),
        "detected": iso(detected),
        "detected_in_period": in_period,
        "carried_over": carried,
        "scan_id": finding.scan_id,
        "decided": iso_or_none(decided.at) if decided else None,
        "decision": decided.text if decided else None,
        "decided_by": decided.actor if decided else None,
        "remediated": iso_or_none(remediated.at) if remediated else None,
        "time_to_detect_seconds": detection.seconds,
        "time_to_detect_basis": detection.basis,
        "baseline_scan": detection.baseline_scan,
        "baseline_scan_finished": detection.baseline_finished,
        "time_to_respond_seconds": respond,
        "responded": iso_or_none(responded_at),
        "response_step": response.step if response is not None else None,
        "port_finding": finding.kind in PORT_KINDS,
        "sla_hours": sla / 3600.0 if sla is not None else None,
        "sla_breach": breach,
        "flap_count": finding.flap_count,
        "ticket": finding.ticket,
        "justification": finding.justification,
        "reason": finding.reason,
        "timeline": [entry.to_json() for entry in steps],
    }


def _stats(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Per-severity statistics of `key` (seconds) over `rows`, plus "all"."""
    out: dict[str, Any] = {}
    for severity in severity_order(r["severity"] for r in rows):
        values = [r[key] for r in rows if r["severity"] == severity and r[key] is not None]
        out[severity] = summarise(values)
    out["all"] = summarise([r[key] for r in rows if r[key] is not None])
    return out


def response_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline TTD/TTR over port findings detected in the period; every kind apart."""
    counted = [r for r in rows if r["detected_in_period"]]
    ports = [r for r in counted if r["kind"] in PORT_KINDS]
    by_kind = {
        kind: {
            "time_to_detect": _stats(mine, "time_to_detect_seconds"),
            "time_to_respond": _stats(mine, "time_to_respond_seconds"),
        }
        for kind in sorted({r["kind"] for r in counted})
        for mine in [[r for r in counted if r["kind"] == kind]]
    }
    return {
        "findings_counted": len(ports),
        "findings_detected": len(counted),
        "port_kinds": list(PORT_KINDS),
        "time_to_detect": _stats(ports, "time_to_detect_seconds"),
        "time_to_respond": _stats(ports, "time_to_respond_seconds"),
        "by_kind": by_kind,
        "undecided_at_end": [r["id"] for r in counted if r["decided"] is None],
        "no_response_at_end": [r["id"] for r in counted if r["responded"] is None],
    }


# --------------------------------------------------------------------------- cadence


def _gap_from(data: dict[str, Any]) -> Gap | None:
    try:
        return Gap.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def collect_gaps(
    audit_events: Iterable[Any], findings: Iterable[Finding], extra: Iterable[Gap]
) -> list[Gap]:
    """Every recorded gap once (upserted by id: the closed report wins over the ongoing)."""
    found: dict[str, Gap] = {}

    def keep(gap: Gap | None) -> None:
        if gap is None:
            return
        current = found.get(gap.id)
        if current is None or (current.ongoing, -current.end.timestamp()) > (
            gap.ongoing,
            -gap.end.timestamp(),
        ):
            found[gap.id] = gap

    for event in audit_events:
        if event.action == "monitoring.gap":
            keep(_gap_from(dict(event.details)))
    for finding in findings:
        if finding.kind == "monitoring_gap":
            details = dict(finding.details)
            details.setdefault("group", finding.host)
            keep(_gap_from(details))
    for gap in extra:
        keep(gap)
    return sorted(found.values(), key=lambda g: (g.start, g.group, g.reason))


def scan_row(record: dict[str, Any]) -> dict[str, Any]:
    started = parse_iso(str(record["started_at"]))
    finished = parse_iso(str(record["finished_at"]))
    return {
        "scan_id": record["scan_id"],
        "group": record.get("group", ""),
        "origin": record.get("origin", ""),
        "scan_type": record.get("scan_type", ""),
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_seconds": seconds(finished - started),
        "outcome": record.get("outcome", ""),
        "hosts_planned": len(record.get("addresses") or []),
        "hosts_up": int(record.get("up") or 0),
        "hosts_down": len(record.get("down") or []),
        "changes": int(record.get("changes") or 0),
        "imported": bool(record.get("imported", False)),
        "error": record.get("error", ""),
    }


def group_rows(
    scans: list[dict[str, Any]],
    gaps: list[Gap],
    settings: Settings,
    start: datetime,
    end: datetime,
    ledger: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per group: scans, outcomes and the longest stretch without a successful scan, counted
    from when the group was configured (its continuity ledger's start), never before."""
    ledger = ledger or {}
    names = sorted(
        {s["group"] for s in scans} | set(settings.groups) | {g.group for g in gaps} | set(ledger)
    )
    rows = []
    for name in names:
        mine = [s for s in scans if s["group"] == name]
        ok = [parse_iso(s["finished_at"]) for s in mine if s["outcome"] == "success"]
        own = ledger.get(name)
        if own is not None:
            lo = parse_iso(own["from"]) if own["from"] else None
            hi = parse_iso(own["to"]) if own["to"] else end
            allowed: float | None = own["window_seconds"]
            interval = own["interval_seconds"]
            gap_count = own["gaps"]
        else:
            conf = settings.groups.get(name)
            lo, hi = start, end
            allowed = (
                conf.interval + conf.jitter + settings.daemon.gap_grace_seconds if conf else None
            )
            interval = conf.interval if conf else None
            gap_count = sum(1 for g in gaps if g.group == name)
        longest_s = None
        if lo is not None and name:
            marks = [lo, *sorted(t for t in ok if lo <= t <= hi), hi]
            longest = max((b - a for a, b in zip(marks, marks[1:], strict=False)), default=None)
            longest_s = seconds(longest) if longest is not None else None
        rows.append(
            {
                "group": name,
                "scans": len(mine),
                "successful": len(ok),
                "not_successful": len(mine) - len(ok),
                "gaps": gap_count,
                "interval_seconds": interval,
                "allowed_seconds": allowed,
                "longest_without_success_seconds": longest_s,
                "exceeded": bool(
                    allowed is not None and longest_s is not None and longest_s > allowed
                ),
            }
        )
    return rows
