"""The sections of a point-in-time report: open ports, hosts, and what no scan covered.

Laid out from the document services/point_in_time.py builds; the table model and the shared
sections are report_layout.py.
"""

from __future__ import annotations

from typing import Any

from portconsole.core.domain.report_layout import (
    Duration,
    Prose,
    Section,
    Table,
    chain_section,
    human_duration,
    port_text,
    yes_no,
)
from portconsole.core.domain.scope_sections import scope_section


def point_in_time_sections(doc: dict[str, Any]) -> list[Section]:
    """Open ports, hosts, what was not covered, and the audit chain."""
    at = doc["parameters"]["at"]
    window = Duration(doc["parameters"]["coverage_window_seconds"])
    intro = Section("exposure", "Open ports")
    intro.paragraphs.append(
        Prose(
            f"Every port open at {at} on every known host, with its approval status at that "
            "time and the scan that last saw it. A port counts as covered when a scan saw it "
            f"within {human_duration(window.seconds)} before that time; not scanned is not "
            "closed, so what no scan covered is listed separately."
        )
    )
    intro.paragraphs.append(
        Prose(
            "An approval counts at that time when it was recorded at or before it and not yet "
            "retired (one recorded later does not count, whatever date it names); detection "
            "judged each scan by the same rule. The finding is the one open for the port then, "
            "or else the one that approved it."
        )
    )
    backfilled = sum(1 for p in doc["ports"] if p.get("backfilled"))
    if backfilled:
        intro.paragraphs.append(
            Prose(
                f"{backfilled} of these ports were last seen by a backfilled scan: an nmap "
                "report imported after newer history, evidence recorded after the fact "
                "(marked BACKFILLED)."
            )
        )
    if not doc["history_complete"]:
        intro.paragraphs.append(
            Prose(
                "The retained history starts at "
                f"{doc['history_starts'] or '(no history)'}: the state before then is unknown."
            )
        )
    ports = Table(
        "ports",
        "Open ports",
        [
            "Host",
            "Hostname",
            "Port",
            "Service",
            "Product",
            "Version",
            "Open since",
            "Last seen",
            "Seen by scan",
            "Covered",
            "Approval",
            "Approval id",
            "Approval recorded",
            "Approved by",
            "Owner",
            "Justification",
            "Review by",
            "Ticket",
            "Mitigation",
            "Finding",
            "Finding status",
            "Backfilled",
        ],
        empty="No port was open.",
    )
    for p in doc["ports"]:
        attention = ""
        if p["approval"] != "approved":
            attention = p["approval"].upper()
        if not p["covered"]:
            attention = (attention + " NOT COVERED").strip()
        if p.get("backfilled"):
            attention = (attention + " BACKFILLED").strip()
        ports.add(
            [
                p["host"],
                p["hostname"],
                port_text(p),
                p["service"],
                p["product"],
                p["version"],
                p["open_since"],
                p["last_seen"],
                p["seen_by_scan"],
                yes_no(p["covered"]),
                p["approval"],
                p["approval_id"],
                p.get("approval_recorded_at"),
                p.get("approved_by"),
                p["owner"],
                p["justification"],
                p["review_by"],
                p["ticket"],
                p["mitigation"],
                p.get("finding_id"),
                p.get("finding_status"),
                yes_no(p.get("backfilled")),
            ],
            attention,
        )
    intro.tables.append(ports)
    hosts = Section("hosts", "Hosts")
    host_table = Table(
        "hosts",
        "Hosts",
        ["Host", "Hostname", "Status", "Open ports", "Last covered", "By scan"],
        empty="No host known at that time.",
    )
    for h in doc["hosts"]:
        host_table.add(
            [
                h["address"],
                h["hostname"],
                h["status"],
                h["open_ports"],
                h["last_covered"],
                h["last_covered_scan"],
            ]
        )
    hosts.tables.append(host_table)
    uncovered = Section("uncovered", "Not covered")
    uncovered.paragraphs.append(
        Prose(
            "Hosts and open ports no scan covered in the coverage window before the time "
            "asked: their state at that time is their last known state, not an observation."
        )
    )
    gaps = Table(
        "uncovered",
        "Not covered",
        ["Host", "Port", "What", "Last covered", "Last scan"],
        empty="Everything was covered." if doc["history_complete"] else "No scan yet by then.",
    )
    for u in doc["uncovered"]:
        gaps.add(
            [u["host"], port_text(u), u["what"], u["last_covered"], u["last_scan"]], "NOT COVERED"
        )
    uncovered.tables.append(gaps)
    approved = Table(
        "approved_not_open",
        "Approved ports not open at that time",
        ["Approval", "Host", "Port", "Service", "Owner", "Review by", "Status"],
    )
    for a in doc["approved_not_open"]:
        approved.add(
            [
                a["approval_id"],
                a["host"],
                port_text(a),
                a["service"],
                a["owner"],
                a["review_by"],
                a["status"],
            ]
        )
    uncovered.tables.append(approved)
    return [scope_section(doc), intro, hosts, uncovered, chain_section(doc)]
