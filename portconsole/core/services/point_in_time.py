"""The point-in-time report: every host's exposure at one moment, from the records.

Open ports with their approval status at that time and the scan that last saw each, the
hosts, what no scan covered within the coverage window (not scanned is not closed), and the
approvals in force whose port was not open. The state comes from the store's replay as of
that moment; approvals are judged as they stood then, by the rule detection judged each scan
by (Approval.in_force: recorded at or before the time, not retired by then). Each port row
carries the pack's population row (domain/population.py): the approval's recording, the
finding that covered the port then, and whether its evidence was backfilled.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from portconsole.core.domain.approval import approval_status, approvals_in_force, is_insecure
from portconsole.core.domain.population import population_at
from portconsole.core.domain.report_figures import iso_or_none, utc
from portconsole.core.domain.settings_history import settings_records
from portconsole.core.services.population import PopulationReader
from portconsole.core.services.report_scope import (
    build_scope,
    definitions_at,
    gap_grace,
    host_windows,
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


def build_point_in_time(
    sources: ReportSources,
    at: datetime,
    coverage_window: timedelta | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The point-in-time report at `at`: scope and parameters first, then the exposure.

    Without a `coverage_window`, each host is judged by its group's window (a weekly group
    is not "uncovered" a day after its scan), hosts in no group by the default. History
    starts at the first scan on record, not the first of its month.
    """
    at = utc(at)
    events = sources.audit.events()
    scope = build_scope(sources, events, at=at)
    records = settings_records(events)
    if coverage_window is None:
        sources.coverage_windows = host_windows(sources, records, at)
    starts = scope["history_starts"]
    exposure = _exposure_at(sources, at, coverage_window, progress, starts)
    document = {"scope": scope, **exposure}
    if coverage_window is None:
        definitions, _ = definitions_at(records, sources, at)
        grace = gap_grace(records, sources, at)
        document["parameters"]["group_coverage_window_seconds"] = {
            name: window_of(d, grace).total_seconds() for name, d in sorted(definitions.items())
        }
    return document


def _exposure_at(
    sources: ReportSources,
    at: datetime,
    coverage_window: timedelta | None,
    progress: Progress | None,
    history_starts: str | None,
) -> dict[str, Any]:
    """Every host's exposure at `at`: open ports with approval status and the scan that saw
    each, hosts, and what no scan covered within the coverage window. `history_starts` is
    the first scan on record (ISO), or None."""
    report_progress(progress, "reading the state at the time", 0.1)
    state = sources.store.state_at(
        at, coverage_window=coverage_window, host_windows=sources.coverage_windows
    )
    report_progress(progress, "matching approvals", 0.4)
    reader = PopulationReader(sources, at)
    by_key = approvals_in_force(reader.approvals, at)
    in_force = [a for a in reader.approvals if a.in_force(at)]
    population = population_at(
        state.open_ports, reader.approvals, reader.findings, reader.backfilled, at
    )["ports"]
    scan_times: dict[str, str | None] = {}

    def scan_finished(scan_id: str) -> str | None:
        if scan_id not in scan_times:
            record = sources.store.scan(scan_id) if scan_id else None
            scan_times[scan_id] = record.get("finished_at") if record else None
        return scan_times[scan_id]

    hostnames = {h.address: h.hostname for h in state.hosts}
    ports: list[dict[str, Any]] = []
    open_keys: set[tuple[str, int, str]] = set()
    for item, row in zip(state.open_ports, population, strict=True):
        approval = by_key.get((item.host, item.port, item.proto))
        status = row["approval"]
        open_keys.add((item.host, item.port, item.proto))
        ports.append(
            {
                **row,
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
                "review_by": iso_or_none(approval.review_by) if approval else None,
                "mitigation": approval.mitigation if approval else None,
                "insecure": is_insecure(item.service, sources.settings.approval.insecure_services),
            }
        )
    backfilled = sum(1 for p in ports if p["backfilled"])
    report_progress(progress, "hosts and coverage", 0.7)
    hosts = [
        {
            "address": h.address,
            "hostname": h.hostname,
            "status": h.status,
            "last_covered": iso_or_none(h.last_covered),
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
            "last_covered": iso_or_none(u.last_covered),
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
        "backfilled": backfilled,
        "uncovered": len(uncovered),
        "approvals_in_force": len(in_force),
        "approved_not_open": len(not_open),
    }
    report_progress(progress, "verifying the audit chain", 0.85)
    document: dict[str, Any] = {
        "report": "point_in_time",
        "document_format": DOCUMENT_FORMAT,
        "title": f"Exposure at {iso(at)}",
        "generated": generated(sources),
        "parameters": {
            "at": iso(at),
            "coverage_window_seconds": int(state.coverage_window.total_seconds()),
        },
        "counts": counts,
        "history_starts": history_starts,
        "history_complete": history_starts is not None and parse_iso(history_starts) <= at,
        "ports": ports,
        "hosts": hosts,
        "uncovered": uncovered,
        "approved_not_open": not_open,
        "audit_chain": audit_chain(sources.audit),
    }
    return document
