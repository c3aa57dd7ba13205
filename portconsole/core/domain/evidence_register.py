"""The approvals register of an evidence pack: its rows, its reviews and its section.

Who asked for each approval and who approved it (recorded identities, and when each was
recorded), whether four eyes were met and why, its review state at the period's end and its
last review; the reviews done in the period and the review dates that passed in it without a
review (PCI DSS 1.2.5, 1.2.7).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from portconsole.core.domain.approval import Approval, is_insecure
from portconsole.core.domain.report_figures import DUE_SOON, iso_or_none
from portconsole.core.domain.report_layout import Prose, Section, Table, port_text, yes_no
from portconsole.core.settings import Settings
from portconsole.core.timeutil import iso


def approved_by(approval: Approval) -> str:
    """Who approved it: the recorded identity, or the name a baseline file gives (which
    the tool did not record and says so)."""
    if approval.source.startswith("baseline:"):
        return f"{approval.approver} (named in the baseline file)"
    return approval.created_by or approval.approver


def approval_row(approval: Approval, end: datetime, settings: Settings) -> dict[str, Any]:
    active_at_end = approval.in_force(end)
    review_by = approval.review_by_at(end)
    if not active_at_end:
        review = "retired"
    elif approval.is_expired(end):
        review = "overdue"
    elif review_by <= end + DUE_SOON:
        review = "due"
    else:
        review = "ok"
    last = approval.last_review(end)
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
        "review_by": iso(review_by),
        "requested_by": approval.requested_by or None,
        "requested_at": iso_or_none(approval.requested_at),
        "approved_by": approved_by(approval),
        "recorded_at": iso(approval.created_at or approval.approved_at),
        "four_eyes": approval.four_eyes,
        "four_eyes_basis": approval.four_eyes_basis_text(),
        "last_review": last.summary() if last else None,
        "in_force_at_end": active_at_end,
        "review": review,
        "insecure": insecure,
        "mitigation": approval.mitigation,
        "retired_at": iso_or_none(approval.retired_at) if not active_at_end else None,
        "retire_reason": approval.retire_reason if not active_at_end else "",
        "source": approval.source,
    }


def missed_review_dates(approval: Approval) -> list[datetime]:
    """Every review date of `approval` that passed before a review was recorded (the last
    one, if it is still unanswered, is included however far in the future it lies)."""
    due = approval.reviews[0].previous_review_by if approval.reviews else approval.review_by
    missed: list[datetime] = []
    for review in approval.reviews:
        if review.at > due:
            missed.append(due)
        if review.next_review_by is None:
            return missed  # the review retired it: nothing more was due
        due = review.next_review_by
    missed.append(due)
    return missed


def review_rows(
    approvals: Iterable[Approval], start: datetime, end: datetime
) -> tuple[list[dict[str, Any]], list[str]]:
    """The reviews done in [start, end], oldest first, and the ids of approvals a review
    date of which passed inside the period, while in force, without a review by then (an
    approval recorded with its date already past counts from when it was recorded)."""
    done: list[dict[str, Any]] = []
    overdue: list[str] = []
    for approval in approvals:
        for review in approval.reviews:
            if start <= review.at <= end:
                done.append({"approval_id": approval.id, **review.summary()})
        # Recorded with its review date already past (a backdated baseline), it became
        # overdue when it was recorded.
        recorded = approval.created_at or approval.approved_at
        moments = [max(due, recorded) for due in missed_review_dates(approval)]
        if any(start <= at <= end and approval.in_force(at) for at in moments):
            overdue.append(approval.id)
    done.sort(key=lambda r: (r["at"], r["approval_id"]))
    return done, sorted(overdue)


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
            "Requested by",
            "Requested at",
            "Approver",
            "Approved by",
            "Recorded at",
            "Four eyes",
            "Ticket",
            "Approved at",
            "Review by",
            "Review",
            "Last review",
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
                a["requested_by"] or "",
                a["requested_at"] or "",
                a["approver"],
                a["approved_by"],
                a["recorded_at"],
                f"{yes_no(a['four_eyes'])}: {a['four_eyes_basis']}",
                a["ticket"],
                a["approved_at"],
                a["review_by"],
                a["review"],
                _review_text(a["last_review"]),
                yes_no(a["insecure"]),
                a["mitigation"],
                a["retired_at"],
            ],
            attention,
        )
    approvals.tables.append(register)
    reviews = Table(
        "approval_reviews",
        "Reviews done in the period",
        ["Approval", "Reviewer", "At", "Outcome", "Note", "Next review by"],
        empty="No approval was reviewed in the period.",
    )
    for item in doc["approvals"].get("reviews", []):
        reviews.add(
            [
                item["approval_id"],
                item["reviewer"],
                item["at"],
                item["outcome"],
                item["note"],
                item["next_review_by"] or "",
            ],
            "CHANGE ASKED FOR" if item["outcome"] == "change" else "",
        )
    approvals.tables.append(reviews)
    missed = doc["approvals"].get("reviews_overdue", [])
    if missed:
        approvals.paragraphs.append(
            Prose(
                f"{len(missed)} approval(s) passed a review date in the period without a "
                f"review: {', '.join(missed)}."
            )
        )
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


def _review_text(last: dict[str, Any] | None) -> str:
    if not last:
        return "never"
    return f"{last['at']} {last['outcome']} by {last['reviewer']}"
