"""What an evidence pack says in words: its definitions, its statement, the control mapping.

An auditor reads these beside the figures: every pack prints the definitions it was computed
with, says plainly that port monitoring is not vulnerability scanning, and maps each control
(PCI DSS, HIPAA, ISO 27001) to what the pack shows, with this period's figures filled in.
Kept apart from the computing so a change of wording never touches a figure.
"""

from __future__ import annotations

from typing import Any

from portconsole.core.domain.report_figures import DUE_SOON

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
