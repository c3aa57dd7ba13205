"""What an evidence pack says in words: its definitions, its statement, the control mapping.

An auditor reads these beside the figures: every pack prints the definitions it was computed
with, says plainly that port monitoring is not vulnerability scanning, and maps each control
(PCI DSS, HIPAA, ISO 27001) to what the pack shows, with this period's figures filled in.
Kept apart from the computing so a change of wording never touches a figure.
"""

from __future__ import annotations

from typing import Any

from portconsole.core.domain.report_figures import DUE_SOON
from portconsole.core.domain.report_layout import human_duration

PORT_KINDS = ("unapproved_port", "insecure_service", "service_changed", "approved_port_gone")
RESPONSE_STEPS = ("acknowledged", "decided", "remediated", "verified", "closed")

DEFINITIONS: dict[str, str] = {
    "detected": "The finding's first 'detected' timeline step: when a scan first raised it.",
    "port_findings": (
        f"Findings of the kinds {', '.join(PORT_KINDS)}. The headline time to detect and to "
        "respond count port findings detected in the period only; expired approvals and "
        "monitoring gaps are measured apart, per kind (metrics.by_kind)."
    ),
    "time_to_detect": (
        "Port findings: detected minus the finish of the newest earlier scan that covered the "
        "same host:port/proto (host up, port and protocol in its port list): for a newly "
        "opened port, the last scan that did not see it open. approval_expired: detected minus "
        "the review-by date. monitoring_gap: detected minus the gap's start. Host-level "
        "findings: not applicable. No earlier covering scan in the retained history: unknown, "
        "not counted."
    ),
    "time_to_respond": (
        "The first response minus detected. The response is the earliest timeline step among "
        f"{', '.join(RESPONSE_STEPS)} at or before the period's end: an acknowledgement "
        "counts as the first response. Findings without a response by then are not counted."
    ),
    "sla_breach": (
        "deadline = detected + report.sla_hours for the severity. 'Responded after the SLA' "
        "when the first response came after the deadline; 'no response by the period's end' "
        "when there was none and the deadline had passed by then. A finding whose deadline "
        "had not passed by the period's end never breaches."
    ),
    "median": "The middle value; the mean of the two middle values for an even count.",
    "p90": "Nearest-rank 90th percentile: the value at rank ceil(0.9 n) of the sorted values.",
    "as_of": (
        "Figures are as of the period's end: steps after it are left out, so regenerating a "
        "pack for a closed period gives the same figures."
    ),
    "gap": (
        "A stretch in which a target group was not monitored as scheduled: no successful scan "
        "within its coverage window, or a scan late beyond interval + jitter + grace, a "
        "failed or cancelled run, or a partial run as the scheduler recorded it."
    ),
    "coverage_window": (
        "Per group: interval + jitter + gap grace. A successful scan covers its group for one "
        "window; a group is covered for one window after it was configured (its first scan "
        "is due)."
    ),
    "continuity": (
        "Per group, from when it was configured (the first settings event that defines it; "
        "for journals older than group definitions, its first scan) to the period's end: "
        "every stretch covered or a gap, with start, end, cause, the monitoring-gap finding "
        "and the root cause given when it was closed. Imported and ad hoc scans count for a "
        "group when they covered all its addresses, ports and protocols; others are ad hoc."
    ),
    "history_starts": "The finish of the first scan on record (an imported backfill included).",
    "audit_events": (
        "Journal events in the period, except those written by making a report (the export "
        "and the anchor published after it), so an export never changes the figures."
    ),
    "figures_sha256": (
        "sha256 of the document's canonical JSON (sorted keys, compact, UTF-8) without the "
        "generation block, the audit chain's verification, figures_sha256 itself and the "
        "scope's generated_at, clock and generator: equal in every format."
    ),
    "due": f"An approval whose review-by date falls within {DUE_SOON.days} days after the period's end.",
    "overdue": "An approval in force at the period's end whose review-by date has passed.",
}

ARCHIVE_YEARS = 6


def journal_retention(scan_months: int) -> str:
    """How long the journal is kept, and how to keep it six years, in words."""
    return (
        "PortConsole never deletes the journal (journal/YYYY-MM.jsonl, one segment a month, "
        f"appended only): `prune` drops scan records after {scan_months} months and raw XML "
        "per [retention], never journal events. To keep it for six years (HIPAA "
        "164.316(b)(2)), copy each month's segment once the month has ended, with the anchors "
        "file and the month's evidence pack, to write-once (WORM) or off-site storage kept "
        f"{ARCHIVE_YEARS} years; `audit verify --anchor SEQ:HASH` or the pack's verify_pack.py "
        "checks a restored copy."
    )


NOT_VULNERABILITY_SCANNING = (
    "Port monitoring does NOT replace vulnerability scanning. PCI DSS 11.3 requires internal "
    "and external vulnerability scans (external ones by an Approved Scanning Vendor); "
    "PortConsole finds which ports and services are exposed, not whether they are vulnerable, "
    "and this pack is not evidence for requirement 11.3."
)


def compliance_mapping(doc: dict[str, Any]) -> list[dict[str, str]]:
    """What the pack shows for each control, with this period's figures."""
    counts = doc["counts"]
    chain = doc["audit_chain"]
    verified = "verified intact" if chain["ok"] else f"FAILED verification ({chain['reason']})"
    breaches = counts["sla_breaches"]
    scope = doc.get("scope") or {}
    history = scope.get("history_starts") or "(no scan on record)"
    retention_block = scope.get("retention") or {}
    scan_months = retention_block.get("scan_months", "?")
    retention = str(retention_block.get("journal", ""))
    median = doc["metrics"]["time_to_respond"]["all"]["median_seconds"]
    median_ttr = human_duration(median) if median is not None else "none"
    closed_gaps = sum(
        1
        for group in (doc.get("continuity") or {}).get("groups", [])
        for entry in group["entries"]
        if entry["kind"] == "gap" and entry["closed_cause"]
    )
    return [
        {
            "framework": "PCI DSS v4.0",
            "control": "1.2.5",
            "requirement": "All services, protocols and ports allowed are identified, approved "
            "and have a defined business need.",
            "shows": "The approvals register: each allowed host:port/proto with expected "
            "service, business justification, owner, ticket, the requester and the approver "
            "as recorded identities and whether they were two people (four eyes); every port "
            "found open without an approval, as a finding with its decision.",
            "figures": f"{counts['approvals']} approval records, "
            f"{counts.get('approvals_four_eyes', 0)} with four eyes; "
            f"{counts['unapproved_port_findings']} unapproved-port findings in the period.",
        },
        {
            "framework": "PCI DSS v4.0",
            "control": "1.2.7",
            "requirement": "Configurations of network security controls are reviewed at least "
            "once every six months.",
            "shows": "Every review recorded in the period (reviewer, time, outcome, next "
            "review date), each approval's last review and review-by date, and which were due "
            "or overdue; expired approvals turn back into findings. It covers the observed "
            "exposure, not the firewall rule sets themselves, which need their own review.",
            "figures": f"{counts.get('reviews', 0)} reviews recorded; "
            f"{counts.get('reviews_overdue', 0)} reviews missed in the period; "
            f"{counts['approvals_overdue']} overdue and {counts['approvals_due']} due within "
            f"{DUE_SOON.days} days at the end.",
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
            "control": "10.3",
            "requirement": "Audit logs are protected from destruction and unauthorized "
            "modifications.",
            "shows": "The journal is append-only and hash-chained (each event carries the hash "
            "of the one before); its head is published as anchors outside the data dir; the "
            "pack holds the journal segments of the period, SHA256SUMS (optionally signed) "
            "and verify_pack.py, which an assessor runs without PortConsole.",
            "figures": f"Audit chain {verified} at generation (the head is in the audit "
            "section and the pack's anchors).",
        },
        {
            "framework": "PCI DSS v4.0",
            "control": "10.5.1",
            "requirement": "Audit log history is retained for at least 12 months, with at "
            "least the most recent three months immediately available for analysis.",
            "shows": retention,
            "figures": f"History starts {history}; scan records kept {scan_months} months; "
            "journal events never deleted.",
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
            "framework": "PCI DSS v4.0",
            "control": "12.10",
            "requirement": "Suspected and confirmed security incidents are responded to "
            "immediately (incident response, including alerts from security monitoring).",
            "shows": "Each finding's timeline (detected, acknowledged, decided, remediated, "
            "closed) with who acted; time to respond per severity against the SLA; monitoring "
            "gaps closed with their root cause in the continuity ledger.",
            "figures": f"Median time to respond (port findings) {median_ttr}; {breaches} SLA "
            f"breaches; {closed_gaps} gaps closed with a root cause.",
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
            "framework": "HIPAA Security Rule",
            "control": "164.316(b)(2)",
            "requirement": "Documentation is retained for six years from its creation or when "
            "it was last in effect, available to those responsible, and reviewed.",
            "shows": retention,
            "figures": f"Journal kept since {history}; archive it for {ARCHIVE_YEARS} years "
            "as described.",
        },
        {
            "framework": "ISO/IEC 27001:2022",
            "control": "A.8.15",
            "requirement": "Logging: logs that record activities, exceptions, faults and other "
            "relevant events are produced, stored, protected and analysed.",
            "shows": "Every scan, change, finding, decision, settings change and export is a "
            "journal event with actor, time (UTC) and outcome, hash-chained and anchored; "
            "this pack analyses the period's events.",
            "figures": f"{counts['audit_events']} journal events in the period; chain {verified}.",
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
