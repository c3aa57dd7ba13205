"""An evidence pack's figures checked against the journal's events (standard library).

Copied into every pack's `verify_pack.py` after domain/chain.py and domain/pack_figures.py
(whose names it uses: the import below is the only line left out of the copy). What each
figure should be comes from pack_figures; this module compares, one line per problem:
`figures.json findings[F-000003].responded 2026-…Z, events say 2026-…Z`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from portconsole.core.domain.pack_figures import (
    PORT_KINDS,
    approval_at,
    approval_figures,
    finding_figures,
    first_step,
    open_ports_at,
    parse_time,
    recorded_gaps,
    replay,
    report_own,
    seconds_between,
    severity_stats,
    steps_until,
)

_TOLERANCE = 1e-6


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return _iso(value)
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _equal(shown: Any, expected: Any) -> bool:
    if isinstance(expected, datetime):
        return parse_time(shown) == expected
    if isinstance(expected, bool) or isinstance(shown, bool):
        return shown is expected
    if isinstance(expected, int | float) and isinstance(shown, int | float):
        return abs(float(shown) - float(expected)) <= _TOLERANCE
    return bool(shown == expected)


class _Check:
    """The problems found so far, and the events read once."""

    def __init__(self, figures: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> None:
        self.figures = figures
        self.events = sorted(events, key=lambda e: int(e.get("seq", 0)))
        self.problems: list[str] = []
        parameters = figures.get("parameters") or {}
        start, end = parse_time(parameters.get("from")), parse_time(parameters.get("to"))
        if figures.get("report") == "point_in_time":  # the exposure at one time
            start = end = parse_time(parameters.get("at"))
        if start is None or end is None:
            self.problems.append("figures.json parameters: no period (from, to) to check")
            start = end = datetime.min.replace(tzinfo=UTC)
        self.start, self.end = start, end
        self.sla_hours = parameters.get("sla_hours") or {}
        self.due_soon = timedelta(days=float(parameters.get("due_soon_days", 30)))
        tables = replay(self.events)
        self.findings = {str(d.get("id")): d for d in (tables.get("findings") or {}).values()}
        self.approvals = {str(d.get("id")): d for d in (tables.get("approvals") or {}).values()}
        self.scan_ends = {
            str((e.get("resource") or {}).get("scan_id")): e
            for e in self.events
            if e.get("action") == "scan.end" and (e.get("resource") or {}).get("scan_id")
        }

    def differs(self, where: str, shown: Any, expected: Any, says: str = "events say") -> None:
        """One problem when the figure differs (`says`: where the expected value comes from)."""
        if not _equal(shown, expected):
            self.problems.append(f"figures.json {where} {_text(shown)}, {says} {_text(expected)}")

    def fields(self, where: str, row: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
        """Compare the row's keys that the expectation has (keys the row lacks are skipped)."""
        for key, value in expected.items():
            if not key.startswith("_") and key in row:
                self.differs(f"{where}.{key}", row[key], value)

    def missing(self, where: str, what: str) -> None:
        self.problems.append(f"figures.json {where}: {what}")

    def when(self, event: Mapping[str, Any]) -> datetime | None:
        return parse_time(event.get("at"))

    def in_period(self, moment: datetime | None) -> bool:
        return moment is not None and self.start <= moment <= self.end


def _check_findings(check: _Check) -> dict[str, dict[str, Any]]:
    rows = {str(r.get("id")): r for r in check.figures.get("findings") or []}
    expected: dict[str, dict[str, Any]] = {}
    for finding_id, doc in check.findings.items():
        figures = finding_figures(doc, check.start, check.end, check.sla_hours)
        if figures is not None:
            expected[finding_id] = figures
    for finding_id, row in rows.items():
        where = f"findings[{finding_id}]"
        if finding_id not in check.findings:
            check.missing(where, "no finding with this id in the events")
        elif finding_id not in expected:
            check.missing(where, "listed, but the events put this finding outside the period")
        else:
            check.fields(where, row, expected[finding_id])
            _check_detection(check, where, row, check.findings[finding_id], expected[finding_id])
    for finding_id in sorted(set(expected) - set(rows)):
        figures = expected[finding_id]
        check.missing(
            "findings",
            f"{finding_id} ({figures['kind']}, detected {_iso(figures['detected'])}) is "
            "missing: the events put it in the period",
        )
    return expected


def _check_detection(
    check: _Check,
    where: str,
    row: Mapping[str, Any],
    doc: Mapping[str, Any],
    figures: Mapping[str, Any],
) -> None:
    """Time to detect traces to events: the baseline scan, the gap's start, the review date."""
    shown = row.get("time_to_detect_seconds")
    detected = figures["detected"]
    if shown is None:
        return
    if row.get("baseline_scan"):
        event = check.scan_ends.get(str(row["baseline_scan"]))
        finished = check.when(event) if event else None
        if finished is None:
            check.missing(f"{where}.baseline_scan", f"{row['baseline_scan']} has no scan.end event")
            return
        check.differs(
            f"{where}.baseline_scan_finished", row.get("baseline_scan_finished"), finished
        )
        if finished >= detected:
            check.missing(f"{where}.baseline_scan", "finished after the finding was detected")
        check.differs(f"{where}.time_to_detect_seconds", shown, seconds_between(detected, finished))
    elif doc.get("kind") == "approval_expired":
        review = parse_time((doc.get("details") or {}).get("review_by"))
        if review is not None:
            check.differs(
                f"{where}.time_to_detect_seconds", shown, seconds_between(detected, review)
            )
    elif doc.get("kind") != "monitoring_gap":
        check.missing(f"{where}.time_to_detect_seconds", "no baseline scan to measure it from")


def _check_scans(check: _Check) -> list[Mapping[str, Any]]:
    rows = list((check.figures.get("cadence") or {}).get("scans") or [])
    for row in rows:
        where = f"cadence.scans[{row.get('scan_id')}]"
        event = check.scan_ends.get(str(row.get("scan_id")))
        if event is None:
            check.missing(where, "no scan.end event records this scan")
            continue
        details = event.get("details") or {}
        expected = {
            "finished_at": check.when(event),
            "outcome": details.get("outcome"),
            "group": details.get("group", ""),
            "imported": bool(details.get("imported", False)),
        }
        check.fields(where, row, expected)
    listed = {str(r.get("scan_id")) for r in rows}
    for scan_id, event in check.scan_ends.items():
        if check.in_period(check.when(event)) and scan_id not in listed:
            check.missing("cadence.scans", f"{scan_id} (finished {event.get('at')}) is missing")
    return rows


def _check_approvals(check: _Check) -> list[Mapping[str, Any]]:
    section = check.figures.get("approvals") or {}
    rows = list(section.get("register") or [])
    for row in rows:
        where = f"approvals.register[{row.get('id')}]"
        doc = check.approvals.get(str(row.get("id")))
        if doc is None:
            check.missing(where, "no approval with this id in the events")
            continue
        check.fields(where, row, approval_figures(doc, check.end, check.due_soon))
    listed = {str(r.get("id")) for r in rows}
    for approval_id, doc in sorted(check.approvals.items()):
        recorded = parse_time(doc.get("created_at") or doc.get("approved_at"))
        retired = parse_time(doc.get("retired_at"))
        if (
            recorded is not None
            and recorded <= check.end
            and (doc.get("status") == "active" or retired is None or retired >= check.start)
            and approval_id not in listed
        ):
            check.missing("approvals.register", f"{approval_id} is missing: in force in the period")
    if "reviews" in section:
        expected = sorted(
            (
                {"approval_id": approval_id, **{k: r.get(k) for k in _REVIEW_KEYS}}
                for approval_id, doc in check.approvals.items()
                for r in doc.get("reviews") or []
                if check.in_period(parse_time(r.get("at")))
            ),
            key=lambda r: (str(r["at"]), r["approval_id"]),
        )
        shown = [{k: r.get(k) for k in ("approval_id", *_REVIEW_KEYS)} for r in section["reviews"]]
        if shown != expected:
            check.differs("approvals.reviews", shown, expected)
    return rows


_REVIEW_KEYS = ("at", "reviewer", "outcome", "note", "next_review_by")


def _check_gaps(check: _Check) -> list[Mapping[str, Any]]:
    rows = list((check.figures.get("cadence") or {}).get("gaps") or [])
    gaps = recorded_gaps(check.events, check.findings.values())
    for row in rows:
        where = f"cadence.gaps[{row.get('id')}]"
        gap = gaps.get(str(row.get("id")))
        if gap is None:
            check.missing(where, "no monitoring.gap event or monitoring_gap finding records it")
            continue
        expected = {k: gap.get(k) for k in ("group", "start", "end", "reason")}
        expected["ongoing"] = bool(gap.get("ongoing"))
        expected["duration_seconds"] = seconds_between(gap["end"], gap["start"])
        check.fields(where, row, expected)
    listed = {str(r.get("id")) for r in rows}
    for gap_id, gap in sorted(gaps.items()):
        if gap["start"] <= check.end and gap["end"] >= check.start and gap_id not in listed:
            check.missing("cadence.gaps", f"{gap_id} ({gap.get('group')}) is missing")
    return rows


def _checkseverity_stats(
    check: _Check, where: str, shown: Any, expected: Mapping[str, Any]
) -> None:
    shown = shown if isinstance(shown, Mapping) else {}
    for severity, stats in expected.items():
        if severity not in shown:
            if stats["count"]:
                check.missing(where, f"{severity} is missing ({stats['count']} findings)")
            continue
        for name, value in stats.items():
            check.differs(
                f"{where}.{severity}.{name}", shown[severity].get(name), value, "its rows give"
            )
    for severity in sorted(set(shown) - set(expected)):
        check.missing(f"{where}.{severity}", "no finding of this severity in the rows")


def _check_metrics(check: _Check, rows: Sequence[Mapping[str, Any]]) -> None:
    metrics = check.figures.get("metrics") or {}
    counted = [r for r in rows if r.get("detected_in_period")]
    ports = [r for r in counted if r.get("kind") in PORT_KINDS]
    if "port_kinds" in metrics:
        check.differs("metrics.port_kinds", metrics["port_kinds"], list(PORT_KINDS))
    for key in ("time_to_detect", "time_to_respond"):
        _checkseverity_stats(
            check, f"metrics.{key}", metrics.get(key), severity_stats(ports, f"{key}_seconds")
        )
    if "by_kind" in metrics:
        kinds = sorted({str(r.get("kind")) for r in counted})
        check.differs("metrics.by_kind kinds", sorted(metrics["by_kind"]), kinds)
        for kind in kinds:
            mine = [r for r in counted if r.get("kind") == kind]
            for key in ("time_to_detect", "time_to_respond"):
                shown = (metrics["by_kind"].get(kind) or {}).get(key)
                _checkseverity_stats(
                    check,
                    f"metrics.by_kind.{kind}.{key}",
                    shown,
                    severity_stats(mine, f"{key}_seconds"),
                )
    breaches = {str(r.get("id")): r.get("sla_breach") for r in rows if r.get("sla_breach")}
    if "sla_breaches" in metrics:
        shown = {str(b.get("id")): b.get("breach") for b in metrics["sla_breaches"]}
        check.differs("metrics.sla_breaches", shown, breaches)


def _check_counts(
    check: _Check,
    findings: Sequence[Mapping[str, Any]],
    scans: Sequence[Mapping[str, Any]],
    register: Sequence[Mapping[str, Any]],
    gaps: Sequence[Mapping[str, Any]],
) -> None:
    counts = check.figures.get("counts") or {}
    own = [e for e in check.events if check.in_period(check.when(e)) and not report_own(e)]
    expected: dict[str, Any] = {
        "scans": len(scans),
        "scans_not_successful": sum(1 for s in scans if s.get("outcome") != "success"),
        "findings": len(findings),
        "findings_detected": sum(1 for r in findings if r.get("detected_in_period")),
        "findings_carried_over": sum(1 for r in findings if r.get("carried_over")),
        "unapproved_port_findings": sum(
            1
            for r in findings
            if r.get("kind") == "unapproved_port" and r.get("detected_in_period")
        ),
        "timeline_steps": sum(len(r.get("timeline") or []) for r in findings),
        "sla_breaches": sum(1 for r in findings if r.get("sla_breach")),
        "approvals": len(register),
        "approvals_overdue": sum(1 for r in register if r.get("review") == "overdue"),
        "approvals_due": sum(1 for r in register if r.get("review") == "due"),
        "approvals_four_eyes": sum(1 for r in register if r.get("four_eyes")),
        "recorded_gaps": len(gaps),
        "audit_events": len(own),
    }
    approvals = check.figures.get("approvals") or {}
    if "reviews" in approvals:
        expected["reviews"] = len(approvals["reviews"])
    continuity = check.figures.get("continuity")
    if isinstance(continuity, Mapping):
        expected["gaps"] = sum(
            1
            for g in continuity.get("groups") or []
            for e in g.get("entries") or []
            if e.get("kind") == "gap"
        )
    for key, value in expected.items():
        if key in counts:
            source = "events say" if key == "audit_events" else "its rows give"
            check.differs(f"counts.{key}", counts[key], value, source)
    audit = check.figures.get("audit") or {}
    if "events_in_period" in audit:
        check.differs("audit.events_in_period", audit["events_in_period"], len(own))
    if "by_action" in audit:
        by_action = dict(sorted(Counter(str(e.get("action")) for e in own).items()))
        check.differs("audit.by_action", audit["by_action"], by_action)


# --------------------------------------------------------------------------- added keys


def _check_population(check: _Check) -> None:
    population = check.figures.get("population")
    if not isinstance(population, Mapping):
        return
    snapshots = [("population.at_end", population.get("at_end") or {})]
    snapshots += [
        (f"population.samples[{s.get('at')}]", s) for s in population.get("samples") or []
    ]
    for where, snapshot in snapshots:
        _check_snapshot(check, where, snapshot)


def _check_snapshot(check: _Check, where: str, snapshot: Mapping[str, Any]) -> None:
    """The open ports listed at one time against the change events, each with the approval
    in force then."""
    at = parse_time(snapshot.get("at"))
    if at is None:
        check.missing(where, "no time")
        return
    open_ports = open_ports_at(check.events, at)
    rows = {(r.get("host"), r.get("port"), r.get("proto")): r for r in snapshot.get("ports") or []}
    for key in sorted(set(open_ports) - set(rows), key=str):
        check.missing(where, f"{key[0]}:{key[1]}/{key[2]} was open then and is missing")
    for key in sorted(set(rows) - set(open_ports), key=str):
        check.missing(where, f"{key[0]}:{key[1]}/{key[2]} is listed, but was not open then")
    for key in sorted(set(rows) & set(open_ports), key=str):
        approval = approval_at(check.approvals.values(), key, at)
        check.differs(
            f"{where}[{key[0]}:{key[1]}/{key[2]}].approval_id",
            rows[key].get("approval_id"),
            approval.get("id") if approval else None,
        )
        if approval is not None and "approval_recorded_at" in rows[key]:
            recorded = parse_time(approval.get("created_at") or approval.get("approved_at"))
            check.differs(
                f"{where}[{key[0]}:{key[1]}/{key[2]}].approval_recorded_at",
                rows[key]["approval_recorded_at"],
                recorded,
            )


def _check_continuity(check: _Check) -> None:
    continuity = check.figures.get("continuity")
    if not isinstance(continuity, Mapping):
        return
    for group in continuity.get("groups") or []:
        name = group.get("group")
        where = f"continuity.groups[{name}]"
        entries = group.get("entries") or []
        totals = {"covered": 0.0, "gap": 0.0}
        previous = None
        successes = [
            check.when(e)
            for e in check.scan_ends.values()
            if (e.get("details") or {}).get("group") == name
            and (e.get("details") or {}).get("outcome") == "success"
        ]
        for entry in entries:
            start, end = parse_time(entry.get("start")), parse_time(entry.get("end"))
            label = f"{where}.entries[{entry.get('start')}]"
            if start is None or end is None or end < start:
                check.missing(label, "no valid start and end")
                continue
            if previous is not None and start != previous:
                check.missing(
                    label, f"does not start where the entry before ends ({_iso(previous)})"
                )
            previous = end
            kind = str(entry.get("kind"))
            totals[kind] = totals.get(kind, 0.0) + seconds_between(end, start)
            if kind != "gap":
                continue
            inside = [t for t in successes if t is not None and start < t < end]
            if inside:
                check.missing(
                    label, f"a gap, but the group's scan finished with success at {_iso(inside[0])}"
                )
            finding_id = entry.get("finding_id")
            if finding_id:
                _check_gap_finding(check, label, str(finding_id), entry)
        for kind, key in (("covered", "covered_seconds"), ("gap", "gap_seconds")):
            if key in group:
                check.differs(f"{where}.{key}", group[key], totals.get(kind, 0.0))


def _check_gap_finding(
    check: _Check, label: str, finding_id: str, entry: Mapping[str, Any]
) -> None:
    doc = check.findings.get(finding_id)
    if doc is None or doc.get("kind") != "monitoring_gap":
        check.missing(
            f"{label}.finding_id", f"{finding_id} is no monitoring_gap finding in the events"
        )
        return
    closed = first_step(steps_until(doc, check.end), "closed")
    if "closed_cause" in entry:
        check.differs(
            f"{label}.closed_cause", entry["closed_cause"], closed.get("text", "") if closed else ""
        )


def check_figures(figures: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every figure of an evidence pack document that the events do not give, one line each."""
    report = figures.get("report")
    if report not in ("evidence_pack", "point_in_time"):
        return [f"figures.json: a {report!r} document, which this checker does not know"]
    check = _Check(figures, events)
    if report == "point_in_time":
        at = (figures.get("parameters") or {}).get("at")
        _check_snapshot(check, "ports", {"at": at, "ports": figures.get("ports") or []})
        return check.problems
    _check_findings(check)
    findings = list(figures.get("findings") or [])
    scans = _check_scans(check)
    register = _check_approvals(check)
    gaps = _check_gaps(check)
    _check_metrics(check, findings)
    _check_counts(check, findings, scans, register, gaps)
    _check_population(check)
    _check_continuity(check)
    return check.problems
