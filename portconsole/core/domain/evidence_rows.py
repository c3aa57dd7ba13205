"""The rows of an evidence pack, computed from records already read: findings, scans, approvals.

Pure: the pack's builder (services/evidence_pack.py) reads the store, the audit chain and the
registers, and these functions turn what it read into rows and metrics. Time to detect needs
the scan history, so it comes in through `measure` (the builder's detection clock).

- **Time to respond (TTR)**: the first `decided` step (approved, flagged or risk accepted)
  minus detected. Findings with no decision by the period's end are not in the statistics.
- **SLA breach**: no response within `report.sla_hours[severity]` of detection, where a
  response is a decision or the condition being gone (a later scan verified it remediated),
  whichever came first; a finding with neither by the period's end breaches once its
  deadline has passed by then.
- Figures are as of the period's end: timeline steps after it are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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


@dataclass(slots=True)
class Detection:
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
    respond = seconds(decided.at - detected) if decided else None
    responded_at = min(
        (e.at for e in (decided, remediated) if e is not None),
        default=None,
    )
    sla = sla_seconds(settings, finding.severity)
    breach = ""
    if sla is not None:
        deadline = detected + timedelta(seconds=sla)
        if responded_at is not None and responded_at > deadline:
            breach = "responded after the SLA"
        elif responded_at is None and end > deadline:
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
        "sla_hours": sla / 3600.0 if sla is not None else None,
        "sla_breach": breach,
        "flap_count": finding.flap_count,
        "ticket": finding.ticket,
        "justification": finding.justification,
        "reason": finding.reason,
        "timeline": [entry.to_json() for entry in steps],
    }


def response_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counted = [r for r in rows if r["detected_in_period"]]
    order = severity_order(r["severity"] for r in counted)

    def table(key: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for severity in order:
            values = [r[key] for r in counted if r["severity"] == severity and r[key] is not None]
            out[severity] = summarise(values)
        out["all"] = summarise([r[key] for r in counted if r[key] is not None])
        return out

    pending = [r["id"] for r in counted if r["decided"] is None]
    return {
        "findings_counted": len(counted),
        "time_to_detect": table("time_to_detect_seconds"),
        "time_to_respond": table("time_to_respond_seconds"),
        "undecided_at_end": pending,
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
) -> list[dict[str, Any]]:
    names = sorted({s["group"] for s in scans} | set(settings.groups) | {g.group for g in gaps})
    rows = []
    for name in names:
        mine = [s for s in scans if s["group"] == name]
        ok = [parse_iso(s["finished_at"]) for s in mine if s["outcome"] == "success"]
        marks = [start, *sorted(ok), end]
        longest = max((b - a for a, b in zip(marks, marks[1:], strict=False)), default=None)
        conf = settings.groups.get(name)
        allowed = conf.interval + conf.jitter + settings.daemon.gap_grace_seconds if conf else None
        longest_s = seconds(longest) if longest is not None else None
        rows.append(
            {
                "group": name,
                "scans": len(mine),
                "successful": len(ok),
                "not_successful": len(mine) - len(ok),
                "gaps": sum(1 for g in gaps if g.group == name),
                "interval_seconds": conf.interval if conf else None,
                "allowed_seconds": allowed,
                "longest_without_success_seconds": longest_s,
                "exceeded": bool(
                    allowed is not None and longest_s is not None and longest_s > allowed
                ),
            }
        )
    return rows
