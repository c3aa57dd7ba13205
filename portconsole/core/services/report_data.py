"""The figures of a point-in-time report or an evidence pack, as one JSON-ready document.

Everything here reads the records (store, findings, approvals, audit chain) and computes;
nothing is written. The renderers (report_render.py) only lay these figures out, so every
format of one export shows the same numbers.

Definitions (also printed in every pack, under "definitions"):

- **Detected**: the finding's first `detected` timeline step (the scan that first raised it).
- **Time to detect (TTD)** of a port finding: detected minus the finish of the newest earlier
  scan that covered the same host:port/proto (host in that scan's coverage and up, port and
  protocol in its port list) — for a newly opened port, the last scan that did not see it
  open. It bounds how long the condition could have existed before a scan saw it. No earlier
  covering scan in the retained history: unknown (not counted). For `approval_expired` it is
  detected minus the approval's review-by date; for `monitoring_gap`, detected minus the
  gap's start. Host-level findings (unknown_host, host_gone): not applicable.
- **Time to respond (TTR)**: the first `decided` step (approved, flagged or risk accepted)
  minus detected. Findings with no decision by the period's end are not in the statistics.
- **SLA breach**: no response within `report.sla_hours[severity]` of detection, where a
  response is a decision or the condition being gone (a later scan verified it remediated),
  whichever came first; a finding with neither by the period's end breaches once its
  deadline has passed by then.
- **Median** is the middle value (mean of the two middle values for an even count); **p90** is
  the nearest-rank 90th percentile (the value at rank ceil(0.9 n) of the sorted values).
- Figures are as of the period's end: timeline steps after it are left out, so a pack for a
  closed period gives the same figures whenever it is generated (until retention prunes its
  history). Only the generation block and the audit chain's verification (which checks the
  chain as it is at generation time) differ.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from portconsole import __version__
from portconsole.core.adapters.approvals import ApprovalRegistry
from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.journal import AuditLog
from portconsole.core.adapters.store import Store
from portconsole.core.domain.approval import Approval, is_insecure
from portconsole.core.domain.changes import ChangeEvent
from portconsole.core.domain.finding import Finding, TimelineEntry
from portconsole.core.identity import Actor
from portconsole.core.services.schedule import Gap
from portconsole.core.settings import Settings
from portconsole.core.timeutil import iso, parse_iso

DOCUMENT_FORMAT = 1
SEVERITIES = ("critical", "high", "medium", "low")
# An approval whose review falls within this long after the period's end is listed as due.
DUE_SOON = timedelta(days=30)
# Audit events this long before the period are read too: a gap is audited when it is found,
# which may be well after it started.
GAP_LOOKBACK = timedelta(days=92)
_TICK = timedelta(microseconds=1)
# Widening searches for the newest covering scan before a finding: most are minutes back,
# so the first window reads one or two monthly segments.
_COVER_WINDOWS = (timedelta(days=2), timedelta(days=40), timedelta(days=400), timedelta(days=40000))
_PORT_OPEN_KINDS = frozenset({"unapproved_port", "insecure_service", "service_changed"})
_HOST_KINDS = frozenset({"unknown_host", "host_gone"})

Progress = Callable[[str, float], None]

DEFINITIONS: dict[str, str] = {
    "detected": "The finding's first 'detected' timeline step: when a scan first raised it.",
    "time_to_detect": (
        "Port findings: detected minus the finish of the newest earlier scan that covered the "
        "same host:port/proto (host up, port and protocol in its port list): for a newly "
        "opened port, the last scan that did not see it open. approval_expired: detected minus "
        "the review-by date. monitoring_gap: detected minus the gap's start. Host-level "
        "findings: not applicable. No earlier covering scan in the retained history: unknown, "
        "not counted."
    ),
    "time_to_respond": (
        "The first 'decided' step (approved, flagged, risk accepted) minus detected. Findings "
        "without a decision by the period's end are not counted."
    ),
    "sla_breach": (
        "No response within report.sla_hours for the severity, counted from detection; a "
        "response is a decision or a later scan verifying the condition gone, whichever came "
        "first. Without either by the period's end, a finding breaches once its deadline has "
        "passed by then."
    ),
    "median": "The middle value; the mean of the two middle values for an even count.",
    "p90": "Nearest-rank 90th percentile: the value at rank ceil(0.9 n) of the sorted values.",
    "as_of": (
        "Figures are as of the period's end: steps after it are left out, so regenerating a "
        "pack for a closed period gives the same figures."
    ),
    "gap": (
        "A stretch in which a target group was not monitored as scheduled: a scan late beyond "
        "interval + jitter + grace, a failed or cancelled run, or a partial run."
    ),
    "due": f"An approval whose review-by date falls within {DUE_SOON.days} days after the period's end.",
    "overdue": "An approval in force at the period's end whose review-by date has passed.",
}

NOT_VULNERABILITY_SCANNING = (
    "Port monitoring does NOT replace vulnerability scanning. PCI DSS 11.3 requires internal "
    "and external vulnerability scans (external ones by an Approved Scanning Vendor); "
    "PortConsole finds which ports and services are exposed, not whether they are vulnerable, "
    "and this pack is not evidence for requirement 11.3."
)


@dataclass(slots=True)
class ReportSources:
    """Everything a report reads, and who is generating it."""

    store: Store
    findings: FindingBook
    approvals: ApprovalRegistry
    audit: AuditLog
    settings: Settings
    actor: Actor
    generated_at: datetime
    extra_gaps: list[Gap] = field(default_factory=list)


# --------------------------------------------------------------------------- small helpers


def utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime | None) -> str | None:
    return iso(moment) if moment is not None else None


def _seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 6)


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def p90(values: Sequence[float]) -> float | None:
    """Nearest-rank 90th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[math.ceil(0.9 * len(ordered)) - 1])


def summarise(values: Sequence[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "median_seconds": median(values),
        "p90_seconds": p90(values),
        "max_seconds": max(values) if values else None,
    }


def severity_order(found: Iterable[str]) -> list[str]:
    extra = sorted({s for s in found if s not in SEVERITIES})
    return [*SEVERITIES, *extra]


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def figures_sha256(document: dict[str, Any]) -> str:
    """sha256 of the figures alone: the document without its generation block and the
    audit chain's verification (both describe the moment of generation, not the period)."""
    body = {k: v for k, v in document.items() if k not in ("generated", "audit_chain")}
    return hashlib.sha256(canonical(body)).hexdigest()


def _report(progress: Progress | None, stage: str, fraction: float) -> None:
    if progress is not None:
        progress(stage, fraction)


def _generated(sources: ReportSources) -> dict[str, Any]:
    return {
        "at": iso(sources.generated_at),
        "by": str(sources.actor),
        "actor": sources.actor.to_json(),
        "tool": f"portconsole {__version__}",
    }


def _audit_chain(audit: AuditLog) -> dict[str, Any]:
    result = audit.verify()
    head = result.head
    return {
        "ok": result.ok,
        "events": result.count,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "head": {"seq": head.seq, "hash": head.hash, "segment": head.segment} if head else None,
    }


# --------------------------------------------------------------------------- approvals


def approval_at(
    approvals: Iterable[Approval], host: str, port: int, proto: str, at: datetime
) -> Approval | None:
    """The approval in force for host:port/proto at `at` (as ApprovalRegistry.match)."""
    found = [a for a in approvals if a.key == (host, port, proto) and a.in_force(at)]
    return max(found, key=lambda a: (a.approved_at, a.id)) if found else None


def approval_status(approval: Approval | None, at: datetime) -> str:
    if approval is None:
        return "unapproved"
    return "expired" if approval.is_expired(at) else "approved"


# --------------------------------------------------------------------------- point in time


def build_point_in_time(
    sources: ReportSources,
    at: datetime,
    coverage_window: timedelta | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every host's exposure at `at`: open ports with approval status and the scan that saw
    each, hosts, and what no scan covered within the coverage window."""
    at = utc(at)
    _report(progress, "reading the state at the time", 0.1)
    state = sources.store.state_at(at, coverage_window=coverage_window)
    _report(progress, "matching approvals", 0.4)
    approvals = sources.approvals.all()
    in_force = [a for a in approvals if a.in_force(at)]
    scan_times: dict[str, str | None] = {}

    def scan_finished(scan_id: str) -> str | None:
        if scan_id not in scan_times:
            record = sources.store.scan(scan_id) if scan_id else None
            scan_times[scan_id] = record.get("finished_at") if record else None
        return scan_times[scan_id]

    hostnames = {h.address: h.hostname for h in state.hosts}
    ports: list[dict[str, Any]] = []
    open_keys: set[tuple[str, int, str]] = set()
    for item in state.open_ports:
        approval = approval_at(in_force, item.host, item.port, item.proto, at)
        status = approval_status(approval, at)
        open_keys.add((item.host, item.port, item.proto))
        ports.append(
            {
                "host": item.host,
                "hostname": hostnames.get(item.host, ""),
                "port": item.port,
                "proto": item.proto,
                "service": item.service,
                "product": item.product,
                "version": item.version,
                "extrainfo": item.extrainfo,
                "open_since": iso(item.first_seen),
                "last_seen": iso(item.last_seen),
                "seen_by_scan": item.last_seen_scan_id,
                "covered": item.covered,
                "approval": status,
                "approval_id": approval.id if approval else None,
                "owner": approval.owner if approval else None,
                "justification": approval.justification if approval else None,
                "ticket": approval.ticket if approval else None,
                "review_by": _iso(approval.review_by) if approval else None,
                "mitigation": approval.mitigation if approval else None,
                "insecure": is_insecure(item.service, sources.settings.approval.insecure_services),
            }
        )
    _report(progress, "hosts and coverage", 0.7)
    hosts = [
        {
            "address": h.address,
            "hostname": h.hostname,
            "status": h.status,
            "last_covered": _iso(h.last_covered),
            "last_covered_scan": h.last_covered_scan_id,
            "open_ports": sum(1 for p in ports if p["host"] == h.address),
        }
        for h in state.hosts
    ]
    uncovered = [
        {
            "host": u.host,
            "port": u.port,
            "proto": u.proto,
            "what": "host" if u.port is None else "open port",
            "last_covered": _iso(u.last_covered),
            "last_scan": u.last_scan_id,
            "last_scan_finished": scan_finished(u.last_scan_id) if u.last_scan_id else None,
        }
        for u in state.uncovered
    ]
    not_open = [
        {
            "approval_id": a.id,
            "host": a.host,
            "port": a.port,
            "proto": a.proto,
            "service": a.service,
            "owner": a.owner,
            "review_by": iso(a.review_by),
            "status": approval_status(a, at),
        }
        for a in sorted(in_force, key=lambda a: (a.host, a.proto, a.port, a.id))
        if a.key not in open_keys
    ]
    counts = {
        "hosts": len(hosts),
        "hosts_up": sum(1 for h in hosts if h["status"] == "up"),
        "open_ports": len(ports),
        "unapproved": sum(1 for p in ports if p["approval"] == "unapproved"),
        "expired": sum(1 for p in ports if p["approval"] == "expired"),
        "approved": sum(1 for p in ports if p["approval"] == "approved"),
        "uncovered": len(uncovered),
        "approvals_in_force": len(in_force),
        "approved_not_open": len(not_open),
    }
    _report(progress, "verifying the audit chain", 0.85)
    history_starts = state.history_starts
    document: dict[str, Any] = {
        "report": "point_in_time",
        "document_format": DOCUMENT_FORMAT,
        "title": f"Exposure at {iso(at)}",
        "generated": _generated(sources),
        "parameters": {
            "at": iso(at),
            "coverage_window_seconds": int(state.coverage_window.total_seconds()),
        },
        "counts": counts,
        "history_starts": _iso(history_starts),
        "history_complete": history_starts is not None and history_starts <= at,
        "ports": ports,
        "hosts": hosts,
        "uncovered": uncovered,
        "approved_not_open": not_open,
        "audit_chain": _audit_chain(sources.audit),
    }
    return document


# --------------------------------------------------------------------------- findings


def _steps_until(finding: Finding, end: datetime) -> list[TimelineEntry]:
    return [entry for entry in finding.timeline if entry.at <= end]


def _first_step(steps: Iterable[TimelineEntry], name: str) -> TimelineEntry | None:
    return next((entry for entry in steps if entry.step == name), None)


def status_from_steps(finding: Finding, steps: list[TimelineEntry]) -> str:
    """The finding's status after `steps` (its stored status when no step was cut off)."""
    if len(steps) == len(finding.timeline):
        return finding.status
    status = "new"
    before_resolved = "new"
    for entry in steps:
        if entry.step == "acknowledged":
            status = "acknowledged"
        elif entry.step == "decided":
            text = entry.text.lower()
            if text.startswith("approved"):
                status = "approved"
            elif text.startswith("flagged"):
                status = "flagged"
            elif text.startswith("risk accepted"):
                status = "risk_accepted"
        elif entry.step in ("remediated", "verified"):
            if status != "resolved":
                before_resolved = status
            status = "resolved"
        elif entry.step == "reopened":
            status = before_resolved if status == "resolved" else "new"
            if status not in ("new", "acknowledged", "flagged", "risk_accepted"):
                status = "new"
    return status


@dataclass(slots=True)
class _Detection:
    seconds: float | None
    basis: str
    baseline_scan: str | None = None
    baseline_finished: str | None = None


class _DetectionClock:
    """Time to detect per finding, reading scan coverage from the store (cached)."""

    def __init__(self, store: Store, end: datetime, gaps: Sequence[Gap] = ()) -> None:
        self.store = store
        self.end = end
        self.gaps = list(gaps)
        self._opened: dict[tuple[str, int, str], list[datetime]] | None = None
        self._finished: dict[str, str] | None = None

    def _finished_at(self, scan_id: str) -> datetime | None:
        # One pass over the scan records: Store.scan(id) searches months newest first,
        # which costs a segment parse per finding on a year of history.
        if self._finished is None:
            self._finished = {
                str(r["scan_id"]): str(r["finished_at"]) for r in self.store.scans(None, self.end)
            }
        text = self._finished.get(scan_id)
        return parse_iso(text) if text else None

    def _opened_times(self, host: str, port: int, proto: str) -> list[datetime]:
        if self._opened is None:
            index: dict[tuple[str, int, str], list[datetime]] = {}
            events: list[ChangeEvent] = self.store.events(None, self.end)
            for event in events:
                if event.kind == "port_opened" and event.port is not None and event.proto:
                    index.setdefault((event.host, event.port, event.proto), []).append(event.at)
            self._opened = index
        return self._opened.get((host, port, proto), [])

    def _baseline(self, host: str, port: int, proto: str, before: datetime) -> str | None:
        for window in _COVER_WINDOWS:
            found = self.store.covered(host, port, proto, before - _TICK, window)
            if found is not None:
                return found
        return None

    def measure(self, finding: Finding, detected: datetime) -> _Detection:
        kind = finding.kind
        if kind == "monitoring_gap":
            # A later gap of the same group refreshes the open finding and overwrites its
            # details, so the gap it was raised for is the newest one that began by then.
            raw = finding.details.get("start")
            try:
                start = parse_iso(str(raw)) if raw else None
            except ValueError:
                start = None
            if start is None or start > detected:
                earlier = [g.start for g in self.gaps if g.group == finding.host]
                start = max((s for s in earlier if s <= detected), default=None)
            if start is None:
                return _Detection(None, "unknown: the gap's start is not recorded")
            return _Detection(_seconds(detected - start), "detected minus the gap's start")
        if kind == "approval_expired":
            raw = finding.details.get("review_by")
            try:
                review = parse_iso(str(raw)) if raw else None
            except ValueError:
                review = None
            if review is None:
                return _Detection(None, "unknown: the review-by date is not recorded")
            return _Detection(_seconds(detected - review), "detected minus the review-by date")
        if kind in _HOST_KINDS or finding.port is None or not finding.proto:
            return _Detection(None, "not applicable (host-level finding)")
        scan_id = self._baseline(finding.host, finding.port, finding.proto, detected)
        if scan_id is None:
            return _Detection(None, "unknown: no earlier scan covered this port")
        finished = self._finished_at(scan_id)
        if finished is None:
            return _Detection(None, "unknown: the covering scan's record is gone")
        basis = "last covering scan before detection"
        if kind in _PORT_OPEN_KINDS:
            opened = [
                t
                for t in self._opened_times(finding.host, finding.port, finding.proto)
                if t <= detected
            ]
            if opened and opened[-1] > finished:
                basis = "last scan that did not see the port open"
            elif opened:
                basis = "port already open at the last covering scan (the condition began later)"
        return _Detection(_seconds(detected - finished), basis, scan_id, iso(finished))


def _sla_seconds(settings: Settings, severity: str) -> float | None:
    hours = settings.report.sla_hours.get(severity)  # type: ignore[call-overload]
    return float(hours) * 3600.0 if hours is not None else None


def _finding_row(
    finding: Finding,
    start: datetime,
    end: datetime,
    settings: Settings,
    clock: _DetectionClock,
) -> dict[str, Any] | None:
    steps = _steps_until(finding, end)
    detected_step = _first_step(steps, "detected")
    detected = detected_step.at if detected_step else finding.first_seen
    if detected > end:
        return None
    in_period = detected >= start
    carried = not in_period and status_from_steps(finding, _steps_until(finding, start)) not in (
        "resolved",
        "approved",
    )
    touched = any(start <= entry.at <= end for entry in steps)
    if not (in_period or carried or touched):
        return None
    decided = _first_step(steps, "decided")
    remediated = _first_step(steps, "remediated") or _first_step(steps, "verified")
    detection = clock.measure(finding, detected)
    respond = _seconds(decided.at - detected) if decided else None
    responded_at = min(
        (e.at for e in (decided, remediated) if e is not None),
        default=None,
    )
    sla = _sla_seconds(settings, finding.severity)
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
        "decided": _iso(decided.at) if decided else None,
        "decision": decided.text if decided else None,
        "decided_by": decided.actor if decided else None,
        "remediated": _iso(remediated.at) if remediated else None,
        "time_to_detect_seconds": detection.seconds,
        "time_to_detect_basis": detection.basis,
        "baseline_scan": detection.baseline_scan,
        "baseline_scan_finished": detection.baseline_finished,
        "time_to_respond_seconds": respond,
        "responded": _iso(responded_at),
        "sla_hours": sla / 3600.0 if sla is not None else None,
        "sla_breach": breach,
        "flap_count": finding.flap_count,
        "ticket": finding.ticket,
        "justification": finding.justification,
        "reason": finding.reason,
        "timeline": [entry.to_json() for entry in steps],
    }


def _metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
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


def _scan_row(record: dict[str, Any]) -> dict[str, Any]:
    started = parse_iso(str(record["started_at"]))
    finished = parse_iso(str(record["finished_at"]))
    return {
        "scan_id": record["scan_id"],
        "group": record.get("group", ""),
        "origin": record.get("origin", ""),
        "scan_type": record.get("scan_type", ""),
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_seconds": _seconds(finished - started),
        "outcome": record.get("outcome", ""),
        "hosts_planned": len(record.get("addresses") or []),
        "hosts_up": int(record.get("up") or 0),
        "hosts_down": len(record.get("down") or []),
        "changes": int(record.get("changes") or 0),
        "imported": bool(record.get("imported", False)),
        "error": record.get("error", ""),
    }


def _group_rows(
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
        longest_s = _seconds(longest) if longest is not None else None
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


# --------------------------------------------------------------------------- approvals


def _approval_row(approval: Approval, end: datetime, settings: Settings) -> dict[str, Any]:
    active_at_end = approval.in_force(end)
    if not active_at_end:
        review = "retired"
    elif approval.is_expired(end):
        review = "overdue"
    elif approval.review_by <= end + DUE_SOON:
        review = "due"
    else:
        review = "ok"
    insecure = is_insecure(approval.service, settings.approval.insecure_services)
    return {
        "id": approval.id,
        "host": approval.host,
        "port": approval.port,
        "proto": approval.proto,
        "service": approval.service,
        "product_pattern": approval.product_pattern,
        "justification": approval.justification,
        "owner": approval.owner,
        "requester": approval.requester,
        "approver": approval.approver,
        "ticket": approval.ticket,
        "approved_at": iso(approval.approved_at),
        "review_by": iso(approval.review_by),
        "in_force_at_end": active_at_end,
        "review": review,
        "insecure": insecure,
        "mitigation": approval.mitigation,
        "retired_at": _iso(approval.retired_at) if not active_at_end else None,
        "retire_reason": approval.retire_reason if not active_at_end else "",
        "source": approval.source,
    }


# --------------------------------------------------------------------------- compliance


def compliance_mapping(doc: dict[str, Any]) -> list[dict[str, str]]:
    """What the pack shows for each control, with this period's figures."""
    counts = doc["counts"]
    chain = doc["audit_chain"]
    verified = "verified intact" if chain["ok"] else f"FAILED verification ({chain['reason']})"
    breaches = counts["sla_breaches"]
    return [
        {
            "framework": "PCI DSS v4.0",
            "control": "1.2.5",
            "requirement": "All services, protocols and ports allowed are identified, approved "
            "and have a defined business need.",
            "shows": "The approvals register: each allowed host:port/proto with expected "
            "service, business justification, owner, requester, approver and ticket; every "
            "port found open without an approval, as a finding with its decision.",
            "figures": f"{counts['approvals']} approval records; "
            f"{counts['unapproved_port_findings']} unapproved-port findings in the period.",
        },
        {
            "framework": "PCI DSS v4.0",
            "control": "1.2.7",
            "requirement": "Configurations of network security controls are reviewed at least "
            "once every six months.",
            "shows": "Each approval's review-by date, and which were due or overdue at the "
            "period's end; expired approvals turn back into findings. It covers the observed "
            "exposure, not the firewall rule sets themselves, which need their own review.",
            "figures": f"{counts['approvals_overdue']} overdue, {counts['approvals_due']} due "
            f"within {DUE_SOON.days} days.",
        },
        {
            "framework": "PCI DSS v4.0",
            "control": "10.2",
            "requirement": "Audit logs are implemented to support the detection of "
            "anomalies and the forensic analysis of events (who, what, when, where, outcome).",
            "shows": "The hash-chained audit log of every scan, change, decision, notification "
            "and export with actor, time (UTC), outcome and affected host/port, and its "
            "verification result.",
            "figures": f"{counts['audit_events']} audit events in the period; chain {verified}.",
        },
        {
            "framework": "PCI DSS v4.0",
            "control": "10.7",
            "requirement": "Failures of critical security control systems are detected, "
            "reported and responded to promptly.",
            "shows": "Scan cadence with every scan's outcome, and monitoring gaps (late, "
            "failed or partial runs) recorded as findings with their response.",
            "figures": f"{counts['scans']} scans, {counts['scans_not_successful']} not "
            f"successful, {counts['gaps']} gaps.",
        },
        {
            "framework": "PCI DSS v4.0",
            "control": "11.5",
            "requirement": "Network intrusions and unexpected changes are detected and "
            "responded to.",
            "shows": "Unexpected listening ports and changed services detected by continuous "
            "scans, with time to detect and time to respond. Supporting evidence only: "
            "PortConsole is neither an intrusion-detection system nor file-integrity "
            "monitoring.",
            "figures": f"{counts['findings_detected']} findings detected in the period; "
            f"{breaches} SLA breaches.",
        },
        {
            "framework": "HIPAA Security Rule",
            "control": "164.308(a)(1)(ii)(D)",
            "requirement": "Information system activity review: regularly review records of "
            "information system activity.",
            "shows": "This pack is such a review record: findings with full timelines, who "
            "decided what and when, and response times against the SLA.",
            "figures": f"{counts['findings']} findings and {counts['timeline_steps']} timeline "
            "steps reviewed.",
        },
        {
            "framework": "HIPAA Security Rule",
            "control": "164.312(b)",
            "requirement": "Audit controls: mechanisms that record and examine activity in "
            "systems that contain or use ePHI.",
            "shows": "Scan records and the tamper-evident audit chain, with its verification.",
            "figures": f"{counts['scans']} scan records; audit chain {verified}.",
        },
        {
            "framework": "ISO/IEC 27001:2022",
            "control": "A.8.9",
            "requirement": "Configuration management: configurations are established, "
            "documented, monitored and reviewed.",
            "shows": "The approved exposure (approvals register) as the documented "
            "configuration, and detected deviations from it (findings).",
            "figures": f"{counts['approvals']} approvals; {counts['findings']} findings.",
        },
        {
            "framework": "ISO/IEC 27001:2022",
            "control": "A.8.16",
            "requirement": "Monitoring activities: networks and systems are monitored for "
            "anomalous behaviour and action is taken.",
            "shows": "Scan cadence and gaps (the monitoring ran), findings and their "
            "response (action was taken).",
            "figures": f"{counts['scans']} scans; {counts['gaps']} gaps; {breaches} SLA breaches.",
        },
        {
            "framework": "ISO/IEC 27001:2022",
            "control": "A.8.20",
            "requirement": "Networks security: networks and network devices are secured, "
            "managed and controlled.",
            "shows": "Which services each host exposes against what was approved, insecure "
            "services and their mitigations.",
            "figures": f"{counts['insecure_approvals']} approved insecure services.",
        },
        {
            "framework": "PCI DSS v4.0",
            "control": "11.3 (not covered)",
            "requirement": "Internal and external vulnerabilities are identified, prioritised "
            "and addressed (vulnerability scans).",
            "shows": NOT_VULNERABILITY_SCANNING,
            "figures": "Not applicable: use a vulnerability scanner (and an ASV externally).",
        },
    ]


# --------------------------------------------------------------------------- evidence pack


def build_evidence_pack(
    sources: ReportSources,
    start: datetime,
    end: datetime,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The evidence pack for [start, end]: cadence, findings, metrics, approvals, audit."""
    start, end = utc(start), utc(end)
    settings = sources.settings
    _report(progress, "reading scans", 0.05)
    scans = [_scan_row(r) for r in sources.store.scans(start, end)]
    _report(progress, "reading the audit chain", 0.2)
    audit_events = sources.audit.events(start - GAP_LOOKBACK, None)
    in_period = [e for e in audit_events if start <= e.at <= end]
    all_findings = sources.findings.all()
    recorded = collect_gaps(audit_events, all_findings, sources.extra_gaps)
    gaps = [g for g in recorded if g.start <= end and g.end >= start]
    gap_rows = [
        {
            **gap.to_json(),
            "duration_seconds": _seconds(gap.end - gap.start),
            "in_period_seconds": _seconds(min(gap.end, end) - max(gap.start, start)),
        }
        for gap in gaps
    ]
    _report(progress, "measuring findings", 0.35)
    clock = _DetectionClock(sources.store, end, recorded)
    rows: list[dict[str, Any]] = []
    total = max(len(all_findings), 1)
    for number, finding in enumerate(all_findings):
        row = _finding_row(finding, start, end, settings, clock)
        if row is not None:
            rows.append(row)
        if number % 50 == 0:
            _report(progress, "measuring findings", 0.35 + 0.35 * number / total)
    rows.sort(key=lambda r: (r["detected"], r["id"]))
    metrics = _metrics(rows)
    breaches = [
        {
            "id": r["id"],
            "severity": r["severity"],
            "kind": r["kind"],
            "host": r["host"],
            "port": r["port"],
            "proto": r["proto"],
            "detected": r["detected"],
            "responded": r["responded"],
            "sla_hours": r["sla_hours"],
            "response_seconds": (
                _seconds(parse_iso(r["responded"]) - parse_iso(r["detected"]))
                if r["responded"]
                else None
            ),
            "breach": r["sla_breach"],
        }
        for r in rows
        if r["sla_breach"]
    ]
    _report(progress, "approvals register", 0.75)
    register = [
        _approval_row(a, end, settings)
        for a in sources.approvals.all()
        if (a.created_at or a.approved_at) <= end
        and (a.active or a.retired_at is None or a.retired_at >= start)
    ]
    register.sort(key=lambda r: (r["host"], r["proto"], r["port"], r["id"]))
    _report(progress, "verifying the audit chain", 0.85)
    chain = _audit_chain(sources.audit)
    actions = Counter(e.action for e in in_period)
    counts = {
        "scans": len(scans),
        "scans_not_successful": sum(1 for s in scans if s["outcome"] != "success"),
        "gaps": len(gaps),
        "findings": len(rows),
        "findings_detected": sum(1 for r in rows if r["detected_in_period"]),
        "findings_carried_over": sum(1 for r in rows if r["carried_over"]),
        "unapproved_port_findings": sum(
            1 for r in rows if r["kind"] == "unapproved_port" and r["detected_in_period"]
        ),
        "timeline_steps": sum(len(r["timeline"]) for r in rows),
        "sla_breaches": len(breaches),
        "approvals": len(register),
        "approvals_overdue": sum(1 for r in register if r["review"] == "overdue"),
        "approvals_due": sum(1 for r in register if r["review"] == "due"),
        "insecure_approvals": sum(1 for r in register if r["insecure"] and r["in_force_at_end"]),
        "audit_events": len(in_period),
    }
    document: dict[str, Any] = {
        "report": "evidence_pack",
        "document_format": DOCUMENT_FORMAT,
        "title": f"Evidence pack {iso(start)} to {iso(end)}",
        "generated": _generated(sources),
        "parameters": {
            "from": iso(start),
            "to": iso(end),
            "sla_hours": {k: float(v) for k, v in sorted(settings.report.sla_hours.items())},
            "due_soon_days": DUE_SOON.days,
        },
        "counts": counts,
        "definitions": dict(DEFINITIONS),
        "cadence": {
            "scans": scans,
            "gaps": gap_rows,
            "groups": _group_rows(scans, gaps, settings, start, end),
        },
        "findings": rows,
        "metrics": {**metrics, "sla_breaches": breaches},
        "approvals": {
            "register": register,
            "overdue": [r["id"] for r in register if r["review"] == "overdue"],
            "due": [r["id"] for r in register if r["review"] == "due"],
            "insecure": [
                {
                    "id": r["id"],
                    "host": r["host"],
                    "port": r["port"],
                    "proto": r["proto"],
                    "service": r["service"],
                    "mitigation": r["mitigation"],
                    "in_force_at_end": r["in_force_at_end"],
                }
                for r in register
                if r["insecure"]
            ],
        },
        "audit": {
            "events_in_period": len(in_period),
            "by_action": dict(sorted(actions.items())),
        },
        "audit_chain": chain,
        "statement": NOT_VULNERABILITY_SCANNING,
    }
    document["compliance"] = compliance_mapping(document)
    return document
