"""The sections of an evidence pack: cadence, findings, response metrics, approvals, controls.

Laid out from the document services/evidence_pack.py builds, in the order an auditor reads
it; the table model and the shared sections are report_layout.py.
"""

from __future__ import annotations

from typing import Any

from portconsole.core.domain.evidence_register import approvals_section
from portconsole.core.domain.population_sections import population_sections
from portconsole.core.domain.report_figures import severity_order
from portconsole.core.domain.report_layout import (
    Cell,
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


def _stats_table(name: str, title: str, figures: dict[str, Any]) -> Table:
    table = Table(name, title, ["Severity", "Count", "Median", "p90", "Max"])
    order = [s for s in severity_order(figures) if s in figures and s != "all"] + ["all"]
    for severity in order:
        f = figures[severity]
        table.add(
            [
                severity,
                f["count"],
                Duration(f["median_seconds"]),
                Duration(f["p90_seconds"]),
                Duration(f["max_seconds"]),
            ]
        )
    return table


def continuity_section(doc: dict[str, Any]) -> Section:
    """Per group, every stretch covered or a gap, from when the group was configured."""
    ledger = doc["continuity"]
    section = Section("continuity", "Continuity")
    section.paragraphs.append(
        Prose(
            f"{ledger['gaps']} gaps in the period, {human_duration(ledger['gap_seconds'])} in "
            "all. Each group is followed from when it was configured: a successful scan covers "
            "its group for one window (interval + jitter + grace); any other time is a gap, "
            "with its cause, the finding raised for it and the root cause it was closed with."
        )
    )
    groups = Table(
        "continuity_groups",
        "Per target group",
        ["Group", "Configured", "Basis", "From", "To", "Window", "Covered", "Gaps", "Gap time"],
    )
    entries = Table(
        "continuity",
        "Coverage ledger",
        ["Group", "Kind", "Start", "End", "Duration", "Scans", "Cause", "Finding", "Closed cause"],
        empty="No group was configured in the period.",
    )
    for g in ledger["groups"]:
        groups.add(
            [
                g["group"],
                g["configured_at"],
                Prose(g["configured_basis"]),
                g["from"],
                g["to"],
                Duration(g["window_seconds"]),
                Duration(g["covered_seconds"]),
                g["gaps"],
                Duration(g["gap_seconds"]),
            ],
            "GAPS" if g["gaps"] else "",
        )
        if g["from"] is None:
            entries.add(
                [g["group"], "not configured", None, None, None, None,
                 Prose("the group was not configured in the period"), None, None]
            )  # fmt: skip
        for e in g["entries"]:
            entries.add(
                [
                    g["group"],
                    e["kind"],
                    e["start"],
                    e["end"],
                    Duration(e["seconds"]),
                    e.get("scans"),
                    Prose(e["cause"]),
                    e["finding_id"],
                    e["closed_cause"],
                ],
                "GAP" if e["kind"] == "gap" else "",
            )
    section.tables.append(groups)
    section.tables.append(entries)
    if ledger["ad_hoc_scans"]:
        section.paragraphs.append(
            Prose(
                "Scans attached to no group (they did not cover all of any group's addresses, "
                f"ports and protocols): {', '.join(ledger['ad_hoc_scans'])}."
            )
        )
    return section


def evidence_pack_sections(doc: dict[str, Any]) -> list[Section]:
    """Every section of the pack, the audit chain and definitions included."""
    cadence = doc["cadence"]
    sections: list[Section] = [scope_section(doc), continuity_section(doc)]

    scans = Section("cadence", "Scan cadence")
    scans.paragraphs.append(
        Prose(
            "Every scan that finished in the period, with start, end and outcome, and every "
            "recorded monitoring gap (late, failed or partial runs), in time order. Rows that "
            "need attention are marked."
        )
    )
    groups = Table(
        "groups",
        "Per target group",
        [
            "Group",
            "Scans",
            "Successful",
            "Not successful",
            "Gaps",
            "Interval",
            "Allowed",
            "Longest without a successful scan",
        ],
    )
    for g in cadence["groups"]:
        groups.add(
            [
                g["group"] or "(ad hoc)",
                g["scans"],
                g["successful"],
                g["not_successful"],
                g["gaps"],
                Duration(g["interval_seconds"]),
                Duration(g["allowed_seconds"]),
                Duration(g["longest_without_success_seconds"]),
            ],
            "LONGER THAN ALLOWED" if g["exceeded"] else "",
        )
    scans.tables.append(groups)
    timeline = Table(
        "scans",
        "Scans and gaps",
        [
            "Kind",
            "Id",
            "Group",
            "Origin",
            "Start",
            "End",
            "Duration",
            "Outcome",
            "Hosts planned",
            "Hosts up",
            "Changes",
            "Error",
        ],
        empty="No scan finished in the period.",
    )
    entries: list[tuple[str, int, list[Cell], str]] = []
    for s in cadence["scans"]:
        attention = "" if s["outcome"] == "success" else s["outcome"].upper()
        entries.append(
            (
                s["started_at"],
                1,
                [
                    "scan",
                    s["scan_id"],
                    s["group"],
                    s["origin"],
                    s["started_at"],
                    s["finished_at"],
                    Duration(s["duration_seconds"]),
                    s["outcome"],
                    s["hosts_planned"],
                    s["hosts_up"],
                    s["changes"],
                    s["error"],
                ],
                attention,
            )
        )
    for gap in cadence["gaps"]:
        entries.append(
            (
                gap["start"],
                0,
                [
                    "GAP",
                    gap["id"],
                    gap["group"],
                    "",
                    gap["start"],
                    gap["end"],
                    Duration(gap["duration_seconds"]),
                    gap["reason"] + (" (ongoing)" if gap["ongoing"] else ""),
                    None,
                    None,
                    None,
                    str(gap["details"].get("error", "")),
                ],
                "GAP",
            )
        )
    for _, _, row, attention in sorted(entries, key=lambda e: (e[0], e[1], str(e[2][1]))):
        timeline.add(row, attention)
    scans.tables.append(timeline)
    sections.append(scans)
    sections += population_sections(doc)

    findings = Section("findings", "Findings")
    findings.paragraphs.append(
        Prose(
            "Every finding detected in the period, carried over open from before it, or with "
            "a step in it, with its timeline up to the period's end. Time to detect and time "
            "to respond follow the definitions at the end of this report."
        )
    )
    table = Table(
        "findings",
        "Findings",
        [
            "Id",
            "Kind",
            "Severity",
            "Host",
            "Port",
            "Service",
            "Status at end",
            "Detected",
            "Time to detect",
            "TTD basis",
            "Decided",
            "Decision",
            "Responded",
            "Time to respond",
            "Remediated",
            "SLA (h)",
            "SLA breach",
            "Carried over",
        ],
        empty="No finding in the period.",
    )
    steps = Table(
        "timeline",
        "Finding timelines",
        ["Finding", "Step", "At", "Actor", "Text"],
        empty="No timeline step in the period.",
    )
    for f in doc["findings"]:
        attention = "SLA BREACH" if f["sla_breach"] else ""
        table.add(
            [
                f["id"],
                f["kind"],
                f["severity"],
                f["host"],
                port_text(f),
                f["service"],
                f["status_at_end"],
                f["detected"],
                Duration(f["time_to_detect_seconds"]),
                f["time_to_detect_basis"],
                f["decided"],
                f["decision"],
                f["responded"],
                Duration(f["time_to_respond_seconds"]),
                f["remediated"],
                f["sla_hours"],
                f["sla_breach"],
                yes_no(f["carried_over"]),
            ],
            attention,
        )
        for entry in f["timeline"]:
            steps.add([f["id"], entry["step"], entry["at"], entry["actor"], entry["text"]])
    findings.tables.append(table)
    findings.tables.append(steps)
    sections.append(findings)

    metrics = doc["metrics"]
    response = Section("metrics", "Response metrics")
    response.paragraphs.append(
        Prose(
            f"Over the {metrics['findings_counted']} port findings "
            f"({', '.join(metrics['port_kinds'])}) detected in the period; expired approvals "
            "and monitoring gaps are measured apart, per kind, below. "
            f"{len(metrics['no_response_at_end'])} of all findings detected in the period had "
            "no response (an acknowledgement counts) by the period's end."
        )
    )
    response.tables.append(
        _stats_table("time_to_detect", "Time to detect (port findings)", metrics["time_to_detect"])
    )
    response.tables.append(
        _stats_table(
            "time_to_respond", "Time to respond (port findings)", metrics["time_to_respond"]
        )
    )
    kinds = Table(
        "metrics_by_kind",
        "By finding kind (all severities)",
        ["Kind", "Measure", "Count", "Median", "p90", "Max"],
        empty="No finding detected in the period.",
    )
    for kind, figures in metrics["by_kind"].items():
        for label, key in (
            ("time to detect", "time_to_detect"),
            ("time to respond", "time_to_respond"),
        ):
            f = figures[key]["all"]
            kinds.add(
                [
                    kind,
                    Prose(label),
                    f["count"],
                    Duration(f["median_seconds"]),
                    Duration(f["p90_seconds"]),
                    Duration(f["max_seconds"]),
                ]
            )
    response.tables.append(kinds)
    sla = Table(
        "sla_breaches",
        "SLA breaches",
        [
            "Finding",
            "Severity",
            "Kind",
            "Host",
            "Port",
            "Detected",
            "Responded",
            "SLA (h)",
            "Response time",
            "Breach",
        ],
        empty="No SLA breach.",
    )
    for b in metrics["sla_breaches"]:
        sla.add(
            [
                b["id"],
                b["severity"],
                b["kind"],
                b["host"],
                port_text(b),
                b["detected"],
                b["responded"],
                b["sla_hours"],
                Duration(b["response_seconds"]),
                b["breach"],
            ],
            "SLA BREACH",
        )
    response.tables.append(sla)
    sections.append(response)

    sections.append(approvals_section(doc))

    sections.append(chain_section(doc))

    compliance = Section("compliance", "Compliance mapping")
    compliance.paragraphs.append(Prose(doc["statement"]))
    mapping = Table(
        "compliance",
        "What this pack shows",
        ["Framework", "Control", "Requirement", "What the pack shows", "This period"],
    )
    for item in doc["compliance"]:
        mapping.add(
            [
                Prose(item["framework"]),
                Prose(item["control"]),
                Prose(item["requirement"]),
                Prose(item["shows"]),
                Prose(item["figures"]),
            ]
        )
    compliance.tables.append(mapping)
    sections.append(compliance)

    definitions = Section("definitions", "Definitions")
    terms = Table("definitions", "Definitions", ["Term", "Definition"])
    for term, text in doc["definitions"].items():
        terms.add([Prose(term.replace("_", " ")), Prose(text)])
    definitions.tables.append(terms)
    sections.append(definitions)
    return sections
