"""The approvals register of an evidence pack: its rows and its section.

Who asked for each approval, who approved it, whether four eyes were met, and its review
state at the period's end (PCI DSS 1.2.5, 1.2.7).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from portconsole.core.domain.approval import Approval, is_insecure
from portconsole.core.domain.report_figures import DUE_SOON, iso_or_none
from portconsole.core.domain.report_layout import Prose, Section, Table, port_text, yes_no
from portconsole.core.settings import Settings
from portconsole.core.timeutil import iso


def approval_row(approval: Approval, end: datetime, settings: Settings) -> dict[str, Any]:
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
        "retired_at": iso_or_none(approval.retired_at) if not active_at_end else None,
        "retire_reason": approval.retire_reason if not active_at_end else "",
        "source": approval.source,
    }


def approvals_section(doc: dict[str, Any]) -> Section:
    """The register and the insecure services with their mitigations."""
    approvals = Section("approvals", "Approvals register")
    approvals.paragraphs.append(
        Prose(
            "Every approval in force at some time in the period, with its review state at the "
            "period's end. Insecure services need a mitigation."
        )
    )
    register = Table(
        "approvals",
        "Approvals",
        [
            "Id",
            "Host",
            "Port",
            "Service",
            "Justification",
            "Owner",
            "Requester",
            "Approver",
            "Ticket",
            "Approved at",
            "Review by",
            "Review",
            "Insecure",
            "Mitigation",
            "Retired at",
        ],
        empty="No approval record.",
    )
    for a in doc["approvals"]["register"]:
        attention = a["review"].upper() if a["review"] in ("overdue", "due") else ""
        if a["insecure"] and not a["mitigation"]:
            attention = (attention + " INSECURE, NO MITIGATION").strip()
        register.add(
            [
                a["id"],
                a["host"],
                port_text(a),
                a["service"],
                a["justification"],
                a["owner"],
                a["requester"],
                a["approver"],
                a["ticket"],
                a["approved_at"],
                a["review_by"],
                a["review"],
                yes_no(a["insecure"]),
                a["mitigation"],
                a["retired_at"],
            ],
            attention,
        )
    approvals.tables.append(register)
    insecure = Table(
        "insecure_services",
        "Insecure services and their mitigations",
        ["Approval", "Host", "Port", "Service", "Mitigation", "In force at end"],
        empty="No insecure service was approved.",
    )
    for item in doc["approvals"]["insecure"]:
        insecure.add(
            [
                item["id"],
                item["host"],
                port_text(item),
                item["service"],
                item["mitigation"],
                yes_no(item["in_force_at_end"]),
            ],
            "" if item["mitigation"] else "NO MITIGATION",
        )
    approvals.tables.append(insecure)
    return approvals
