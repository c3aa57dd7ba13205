"""The evidence pack for a period: cadence, findings with response times, approvals, audit.

The builder reads the records (scans, the audit chain, findings, approvals) and turns them
into rows (domain/evidence_rows.py), metrics and the control mapping (domain/compliance.py).
Time to detect needs the scan history, so the detection clock that reads it lives here.

- **Detected**: the finding's first `detected` timeline step (the scan that first raised it).
- **Time to detect (TTD)** of a port finding: detected minus the finish of the newest earlier
  scan that covered the same host:port/proto (host in that scan's coverage and up, port and
  protocol in its port list) — for a newly opened port, the last scan that did not see it
  open. It bounds how long the condition could have existed before a scan saw it. No earlier
  covering scan in the retained history: unknown (not counted). For `approval_expired` it is
  detected minus the approval's review-by date; for `monitoring_gap`, detected minus the
  gap's start. Host-level findings (unknown_host, host_gone): not applicable.
- Figures are as of the period's end: timeline steps after it are left out, so a pack for a
  closed period gives the same figures whenever it is generated (until retention prunes its
  history). Only the generation block and the audit chain's verification (which checks the
  chain as it is at generation time) differ.

- **Continuity**: per group, from when it was configured, every stretch covered or a gap
  with its cause and closing root cause (`continuity`, laid out by domain/ledger.py); the
  headline `counts.gaps` counts those gap rows. The pack opens with its scope and
  parameters (`scope`, services/report_scope.py).
- The period's journal events leave out those a report's own making wrote (the export and
  the anchor after it), so an export never changes the figures.

Every definition is also printed in every pack, under "definitions" (domain/compliance.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from portconsole.core.adapters.store import Store
from portconsole.core.domain.compliance import (
    DEFINITIONS,
    NOT_VULNERABILITY_SCANNING,
    compliance_mapping,
)
from portconsole.core.domain.evidence_register import approval_row, review_rows
from portconsole.core.domain.evidence_rows import (
    Detection,
    collect_gaps,
    finding_row,
    group_rows,
    response_metrics,
    scan_row,
)
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.ledger import (
    ScanMark,
    attach_scans,
    configured,
    group_ledger,
    recorded_gaps,
)
from portconsole.core.domain.report_figures import DUE_SOON, report_own_event, seconds, utc
from portconsole.core.domain.schedule import Gap
from portconsole.core.domain.settings_history import settings_records
from portconsole.core.domain.state import ChangeEvent
from portconsole.core.services.population import build_population
from portconsole.core.services.report_scope import (
    build_scope,
    definitions_at,
    gap_grace,
    window_of,
)
from portconsole.core.services.report_sources import (
    DOCUMENT_FORMAT,
    Progress,
    ReportSources,
    audit_chain,
    generated,
    report_progress,
)
from portconsole.core.timeutil import iso, parse_iso

# A group whose definition is not known at all (scanned under a name no settings event or
# file defines) is held to a day.
DEFAULT_WINDOW_SECONDS = 86400
_TICK = timedelta(microseconds=1)
# Widening searches for the newest covering scan before a finding: most are minutes back,
# so the first window reads one or two monthly segments.
_COVER_WINDOWS = (timedelta(days=2), timedelta(days=40), timedelta(days=400), timedelta(days=40000))
_PORT_OPEN_KINDS = frozenset({"unapproved_port", "insecure_service", "service_changed"})
_HOST_KINDS = frozenset({"unknown_host", "host_gone"})


class _DetectionClock:
    """Time to detect per finding, reading scan coverage from the store (cached)."""

    def __init__(
        self,
        store: Store,
        end: datetime,
        gaps: Sequence[Gap] = (),
        records: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.end = end
        self.gaps = list(gaps)
        self._opened: dict[tuple[str, int, str], list[datetime]] | None = None
        # The scan records up to `end`, when the caller has read them already.
        self._finished: dict[str, str] | None = (
            {str(r["scan_id"]): str(r["finished_at"]) for r in records}
            if records is not None
            else None
        )

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

    def measure(self, finding: Finding, detected: datetime) -> Detection:
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
                return Detection(None, "unknown: the gap's start is not recorded")
            return Detection(seconds(detected - start), "detected minus the gap's start")
        if kind == "approval_expired":
            raw = finding.details.get("review_by")
            try:
                review = parse_iso(str(raw)) if raw else None
            except ValueError:
                review = None
            if review is None:
                return Detection(None, "unknown: the review-by date is not recorded")
            return Detection(seconds(detected - review), "detected minus the review-by date")
        if kind in _HOST_KINDS or finding.port is None or not finding.proto:
            return Detection(None, "not applicable (host-level finding)")
        scan_id = self._baseline(finding.host, finding.port, finding.proto, detected)
        if scan_id is None:
            return Detection(None, "unknown: no earlier scan covered this port")
        finished = self._finished_at(scan_id)
        if finished is None:
            return Detection(None, "unknown: the covering scan's record is gone")
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
        return Detection(seconds(detected - finished), basis, scan_id, iso(finished))


def continuity(
    sources: ReportSources,
    events: Sequence[Any],
    records: Sequence[dict[str, Any]],
    recorded: Sequence[Gap],
    findings: Sequence[Finding],
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    """The continuity ledger of every group over [start, end] (domain/ledger.py)."""
    settings_events = settings_records(events)
    definitions, _ = definitions_at(settings_events, sources, end)
    grace = gap_grace(settings_events, sources, end)
    marks = [ScanMark.of_record(r) for r in records]
    per_group, ad_hoc = attach_scans(marks, definitions)
    known = {d for r in settings_events if r.groups for d in r.groups}
    names = sorted(set(definitions) | known | {m.group for m in marks if m.group})
    causes = recorded_gaps(recorded, findings, end)
    groups = []
    for name in names:
        mine = per_group.get(name, [])
        first = min((m.finished for m in mine), default=None)
        configured_at, removed_at, basis = configured(name, settings_events, first)
        definition = definitions.get(name) or next(
            (r.groups[name] for r in reversed(settings_events) if r.groups and name in r.groups),
            None,
        )
        window = (
            window_of(definition, grace)
            if definition is not None
            else timedelta(seconds=DEFAULT_WINDOW_SECONDS)
        )
        groups.append(
            group_ledger(
                name,
                configured_at=configured_at,
                removed_at=removed_at,
                basis=basis
                + ("" if definition is not None else "; no definition known: a 24 h window"),
                interval=definition.interval if definition is not None else None,
                window=window,
                successes=sorted(m.finished for m in mine if m.success),
                gaps=[c for c in causes if c.gap.group == name],
                start=start,
                end=end,
            )
        )
    in_period = {m.scan_id for m in marks if start <= m.finished <= end}
    return {
        "groups": groups,
        "ad_hoc_scans": [s for s in ad_hoc if s in in_period],
        "gaps": sum(g["gaps"] for g in groups),
        "gap_seconds": seconds(timedelta(seconds=sum(g["gap_seconds"] for g in groups))),
    }


def build_evidence_pack(
    sources: ReportSources,
    start: datetime,
    end: datetime,
    progress: Progress | None = None,
    samples: Sequence[datetime] = (),
) -> dict[str, Any]:
    """The evidence pack for [start, end]: scope, continuity, cadence, findings, metrics,
    approvals, the open-port population (at the end and at each of `samples`), audit."""
    start, end = utc(start), utc(end)
    settings = sources.settings
    report_progress(progress, "reading scans", 0.05)
    # Sweeps only: a fingerprint record (-sV after a cycle) is no run of a group.
    records = [r for r in sources.store.scans(None, end) if r.get("scan_type") != "fingerprint"]
    scans = [scan_row(r) for r in records if start <= parse_iso(str(r["finished_at"])) <= end]
    report_progress(progress, "reading the audit chain", 0.2)
    audit_events = sources.audit.events()
    # A report's own events (its export, the anchor after it) are never a figure.
    in_period = [
        e
        for e in audit_events
        if start <= e.at <= end and not report_own_event(e.action, e.details)
    ]
    all_findings = sources.findings.all()
    recorded = collect_gaps(audit_events, all_findings, sources.extra_gaps)
    gaps = [g for g in recorded if g.start <= end and g.end >= start]
    gap_rows = [
        {
            **gap.to_json(),
            "duration_seconds": seconds(gap.end - gap.start),
            "in_period_seconds": seconds(min(gap.end, end) - max(gap.start, start)),
        }
        for gap in gaps
    ]
    report_progress(progress, "continuity ledger", 0.3)
    ledger = continuity(sources, audit_events, records, recorded, all_findings, start, end)
    report_progress(progress, "measuring findings", 0.35)
    clock = _DetectionClock(sources.store, end, recorded, records)
    rows: list[dict[str, Any]] = []
    total = max(len(all_findings), 1)
    for number, finding in enumerate(all_findings):
        row = finding_row(finding, start, end, settings, clock.measure)
        if row is not None:
            rows.append(row)
        if number % 50 == 0:
            report_progress(progress, "measuring findings", 0.35 + 0.35 * number / total)
    rows.sort(key=lambda r: (r["detected"], r["id"]))
    metrics = response_metrics(rows)
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
                seconds(parse_iso(r["responded"]) - parse_iso(r["detected"]))
                if r["responded"]
                else None
            ),
            "breach": r["sla_breach"],
        }
        for r in rows
        if r["sla_breach"]
    ]
    report_progress(progress, "approvals register", 0.75)
    register = [
        approval_row(a, end, settings)
        for a in sources.approvals.all()
        if (a.created_at or a.approved_at) <= end
        and (a.active or a.retired_at is None or a.retired_at >= start)
    ]
    register.sort(key=lambda r: (r["host"], r["proto"], r["port"], r["id"]))
    reviews_done, reviews_overdue = review_rows(sources.approvals.all(), start, end)
    report_progress(progress, "verifying the audit chain", 0.85)
    chain = audit_chain(sources.audit)
    actions = Counter(e.action for e in in_period)
    counts = {
        "scans": len(scans),
        "scans_not_successful": sum(1 for s in scans if s["outcome"] != "success"),
        "gaps": ledger["gaps"],
        "gap_seconds": ledger["gap_seconds"],
        "recorded_gaps": len(gaps),
        "ad_hoc_scans": len(ledger["ad_hoc_scans"]),
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
        "approvals_four_eyes": sum(1 for r in register if r["four_eyes"]),
        "reviews": len(reviews_done),
        "reviews_overdue": len(reviews_overdue),
        "insecure_approvals": sum(1 for r in register if r["insecure"] and r["in_force_at_end"]),
        "audit_events": len(in_period),
    }
    document: dict[str, Any] = {
        "scope": build_scope(sources, audit_events, start=start, end=end),
        "report": "evidence_pack",
        "document_format": DOCUMENT_FORMAT,
        "title": f"Evidence pack {iso(start)} to {iso(end)}",
        "generated": generated(sources),
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
            "groups": group_rows(
                scans, gaps, settings, start, end, {g["group"]: g for g in ledger["groups"]}
            ),
        },
        "continuity": ledger,
        "findings": rows,
        "metrics": {**metrics, "sla_breaches": breaches},
        "approvals": {
            "register": register,
            "overdue": [r["id"] for r in register if r["review"] == "overdue"],
            "due": [r["id"] for r in register if r["review"] == "due"],
            "reviews": reviews_done,
            "reviews_overdue": reviews_overdue,
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
    document["population"] = build_population(sources, start, end, samples, progress)
    document["compliance"] = compliance_mapping(document)
    return document
