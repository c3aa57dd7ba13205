"""Approvals with real four eyes, and their reviews (PCI DSS 1.2.5, 1.2.7).

A request is its own step, recorded under the requester's identity; the approval is recorded
under the approver's. Four eyes are met when the two recorded persons (Actor.person: the OS
user, or the sudo user behind root) differ. A name typed by the approver is kept, never
counted. With `[approval] separation_of_duties` on, an approval without four eyes is refused
and the refusal is in the journal. Each decision is one journal transaction with its events.

Revoking a mistaken approval retires it (`approval.revoked`, with the reason). When the port
is known open (the store's current state), the finding it approved is reopened at once
(`finding.reopened`); otherwise, or for an approval with no finding (a baseline rule), the
next scan that sees the port open raises it as unapproved.

An approval takes its finding's service. Approved before -sV has identified the port, that
service is the sweep's guess from nmap's port table: the approval records so
(`service_basis`, domain/approval.py) and adopts what the port's first -sV names
(services/fingerprint_after.py), rather than raising `service_changed` on the port just
approved.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from msgspec import Struct

from portconsole.core.adapters.approval_requests import is_request_id
from portconsole.core.domain.approval import (
    PENDING,
    PORT_TABLE,
    Approval,
    ApprovalRequest,
    four_eyes,
)
from portconsole.core.domain.finding import APPROVED, Finding, refusal
from portconsole.core.domain.model import FindingKind
from portconsole.core.errors import PermissionRefused, UserError
from portconsole.core.services.base import ServiceBase, finding_resource, refusal_recorded
from portconsole.core.timeutil import iso

# Free text beside the recorded identities ("on behalf of", a typed requester): bounded.
MAX_FREE_TEXT = 200


def review_datetime(day: date) -> datetime:
    """A review date (a day) as the moment it starts, UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _approval_resource(approval: Approval) -> dict[str, object]:
    return {
        "host": approval.host,
        "port": approval.port,
        "proto": approval.proto,
        "approval_id": approval.id,
    }


class Revocation(Struct, frozen=True):
    """A revoked approval, and the finding it approved when that is back in the queue."""

    approval: Approval
    finding: Finding | None


def _port_finding(finding: Finding, what: str) -> None:
    """Only an open finding about a port can be requested or approved."""
    if not finding.is_open:
        raise UserError(
            f"finding {finding.id} is {finding.status}: only open findings "
            f"(new, acknowledged, flagged) can be {what}"
        )
    if finding.port is None or finding.proto is None:
        raise UserError(
            f"finding {finding.id} ({finding.kind}) is not about a port: flag, note or close it"
        )
    refused = refusal(finding, "approve")
    if refused:
        raise UserError(refused)


class ApprovalDecisions(ServiceBase):
    """Request, approve and review, for the Monitor (through Decisions)."""

    @refusal_recorded("approval.request")
    def request(
        self,
        finding_id: str,
        *,
        justification: str,
        owner: str,
        ticket: str = "",
        review_by: date | None = None,
        mitigation: str = "",
        on_behalf_of: str = "",
    ) -> ApprovalRequest:
        """Ask for a finding's port to be approved: the first of the four eyes."""
        self._require_write("request approvals")
        with self.store.lock.hold():
            finding = self.finding(finding_id)
            _port_finding(finding, "requested for approval")
            assert finding.port is not None and finding.proto is not None
            self.approvals.check_terms(finding.service, justification, owner, mitigation)
            now = self.clock()
            due = review_datetime(review_by) if review_by else None
            if due is not None:
                self.approvals.check_review_by(due, now, "request")
            made = self.approvals.requests.add(
                ApprovalRequest(
                    id="",
                    finding_id=finding.id,
                    host=finding.host,
                    port=finding.port,
                    proto=finding.proto,
                    service=finding.service,
                    justification=justification.strip(),
                    owner=owner.strip(),
                    ticket=ticket.strip(),
                    review_by=due,
                    mitigation=mitigation.strip(),
                    on_behalf_of=on_behalf_of.strip()[:MAX_FREE_TEXT],
                    requested_by=str(self.actor),
                    requester_person=self.actor.person,
                    requested_at=now,
                )
            )
            self.findings_book.note(
                finding.id,
                str(self.actor),
                f"approval requested ({made.id}): {made.justification}",
                now=now,
            )
            self._audit(
                "approval.requested",
                resource={**finding_resource(finding), "request_id": made.id},
                details={
                    "justification": made.justification,
                    "owner": made.owner,
                    "ticket": made.ticket,
                    "review_by": iso(due) if due else None,
                    "mitigation": made.mitigation,
                    "on_behalf_of": made.on_behalf_of,
                    "requested_by": made.requested_by,
                    "requester_person": made.requester_person,
                },
            )
        return made

    def requests_list(self, include_done: bool = False) -> list[ApprovalRequest]:
        book = self.approvals.requests
        return book.all() if include_done else book.pending()

    def pending_request(self, finding_id: str) -> ApprovalRequest | None:
        return self.approvals.requests.pending_for(finding_id)

    def service_is_guess(self, finding_id: str) -> bool:
        """Whether approving the finding now would approve nmap's port-table guess of its
        service (-sV has not named it yet; the approval adopts what it names)."""
        return _service_basis(self, self.finding(finding_id)) == PORT_TABLE

    @refusal_recorded("finding.approve")
    def approve(
        self,
        target_id: str,
        *,
        justification: str = "",
        owner: str = "",
        ticket: str = "",
        review_by: date | None = None,
        mitigation: str = "",
        requester: str | None = None,
    ) -> Finding:
        """Approve a finding's port (F-… or its request R-…): an approval record, finding closed.

        A finding with a pending request is approved on the request's terms; terms given here
        must then agree with it. Without a request the terms are given here, and
        `requester` is a name typed by the approver: recorded, never counted as four eyes.
        """
        self._require_write("approve findings")
        with self.store.lock.hold():
            if is_request_id(target_id):
                request: ApprovalRequest | None = self.approvals.requests.get(target_id)
                assert request is not None
                if request.status != PENDING:
                    raise UserError(
                        f"request {request.id} is already {request.status} ({request.approval_id})"
                    )
                finding = self.finding(request.finding_id)
            else:
                finding = self.finding(target_id)
                request = self.approvals.requests.pending_for(finding.id)
            _port_finding(finding, "approved")
            assert finding.port is not None and finding.proto is not None
            approver = self.actor.person
            typed = (requester or "").strip()[:MAX_FREE_TEXT]
            if request is not None:
                _same_terms(request, justification, owner, ticket, review_by, mitigation)
                if typed and typed != request.requester_person:
                    raise UserError(
                        f"{finding.id} was requested by {request.requester_person} ({request.id}): "
                        "the requester is recorded, do not name another"
                    )
                met, basis = four_eyes(request.requester_person, approver, request.id)
            else:
                met, basis = four_eyes("", approver, "")
                if typed:
                    basis += f"; {typed} was named by the approver (not counted)"
            if request is None and not (justification.strip() and owner.strip()):
                raise UserError(
                    f"approving {finding.id} needs a justification and an owner "
                    f"(or a request first: `portconsole request {finding.id} ...`)"
                )
            if self.settings.approval.separation_of_duties and not met:
                raise PermissionRefused(
                    f"separation of duties: {basis}. Another person records the request "
                    f"(`portconsole request {finding.id} --justification ... --owner ...`), "
                    "then you approve it (or set approval.separation_of_duties = false)"
                )
            now = self.clock()
            service_basis = _service_basis(self, finding)
            if request is not None:
                approval = self.approvals.add(
                    host=finding.host,
                    port=finding.port,
                    proto=finding.proto,
                    service=finding.service,
                    justification=request.justification,
                    owner=request.owner,
                    requester=request.requester_person,
                    approver=approver,
                    actor=str(self.actor),
                    ticket=request.ticket,
                    approved_at=now,
                    review_by=request.review_by,
                    mitigation=request.mitigation,
                    source=self.origin,
                    now=now,
                    request_id=request.id,
                    requested_by=request.requested_by,
                    requested_at=request.requested_at,
                    on_behalf_of=request.on_behalf_of,
                    four_eyes=met,
                    four_eyes_basis=basis,
                    service_basis=service_basis,
                )
                self.approvals.requests.mark_approved(request.id, approval.id, now)
            else:
                approval = self.approvals.add(
                    host=finding.host,
                    port=finding.port,
                    proto=finding.proto,
                    service=finding.service,
                    justification=justification,
                    owner=owner,
                    requester=typed,
                    approver=approver,
                    actor=str(self.actor),
                    ticket=ticket,
                    approved_at=now,
                    review_by=review_datetime(review_by) if review_by else None,
                    mitigation=mitigation,
                    source=self.origin,
                    now=now,
                    four_eyes=met,
                    four_eyes_basis=basis,
                    service_basis=service_basis,
                )
            for retired_id in approval.supersedes:
                self._audit(
                    "approval.retired",
                    resource={"approval_id": retired_id},
                    details={"superseded_by": approval.id},
                )
            self._audit(
                "approval.added",
                resource=_approval_resource(approval),
                details={
                    "justification": approval.justification,
                    "owner": approval.owner,
                    "ticket": approval.ticket,
                    "review_by": iso(approval.review_by),
                    "finding_id": finding.id,
                    "request_id": approval.request_id or None,
                    "requested_by": approval.requested_by or None,
                    "four_eyes": met,
                    "four_eyes_basis": basis,
                    "service": approval.service,
                    "service_basis": approval.service_basis or "stated",
                },
            )
            finding = self.findings_book.approve(
                finding.id,
                str(self.actor),
                approval.id,
                approval.justification,
                ticket=approval.ticket,
                now=now,
            )
            self._audit(
                "finding.approved",
                resource=finding_resource(finding),
                details={"approval_id": approval.id},
            )
        return finding

    @refusal_recorded("approval.revoke")
    def revoke(self, approval_id: str, *, reason: str) -> Revocation:
        """Revoke a mistaken approval (see the module docstring): a reason is required."""
        self._require_write("revoke approvals")
        if not reason.strip():
            raise UserError("a reason is required to revoke an approval: say what was wrong")
        with self.store.lock.hold():
            return _revoke(self, approval_id, reason)

    @refusal_recorded("approval.review")
    def review(
        self, approval_id: str, *, outcome: str, note: str, next_review: date | None = None
    ) -> Approval:
        """Record a review of an approval in force (PCI DSS 1.2.7).

        keep: still needed, next review by `next_review` (default: review_months from now).
        change: stays in force with a next review date, and the review records that a change
        was asked for (made as a new request). retire: the approval is retired. Findings that
        the overdue review raised (approval_expired) are resolved by it.
        """
        self._require_write("review approvals")
        with self.store.lock.hold():
            now = self.clock()
            reviewed = self.approvals.review(
                approval_id,
                reviewer=str(self.actor),
                reviewer_person=self.actor.person,
                outcome=outcome,
                note=note,
                next_review_by=review_datetime(next_review) if next_review else None,
                now=now,
            )
            done = reviewed.reviews[-1]
            self._audit(
                "approval.reviewed",
                resource=_approval_resource(reviewed),
                details={
                    "outcome": done.outcome,
                    "note": done.note,
                    "next_review_by": iso(done.next_review_by) if done.next_review_by else None,
                    "previous_review_by": iso(done.previous_review_by),
                },
            )
            if not reviewed.active:
                self._audit(
                    "approval.retired",
                    resource={"approval_id": reviewed.id},
                    details={"reason": reviewed.retire_reason},
                )
            text = f"approval {reviewed.id} reviewed ({done.outcome})" + (
                f", next review by {done.next_review_by.date().isoformat()}"
                if done.next_review_by
                else ", approval retired"
            )
            expired = self.findings_book.resolvable_on(
                FindingKind.APPROVAL_EXPIRED, reviewed.host, reviewed.port, reviewed.proto
            )
            for finding in expired:
                if finding.details.get("approval_id") == reviewed.id:
                    resolved = self.findings_book.resolve_by_decision(
                        finding.id, str(self.actor), text, now=now
                    )
                    self._audit(
                        "finding.resolved",
                        resource=finding_resource(resolved),
                        details={"kind": resolved.kind, "severity": resolved.severity},
                    )
        return reviewed


def _service_basis(self: ApprovalDecisions, finding: Finding) -> str:
    """PORT_TABLE when the finding's port is open in the store and -sV has not identified it
    yet (its service is the sweep's port-table guess), else "" (stated)."""
    guessed = any(
        (p.port, p.proto) == (finding.port, finding.proto) and p.fingerprinted_at is None
        for p in self.store.current_ports(finding.host)
    )
    return PORT_TABLE if guessed else ""


def _revoke(self: ApprovalDecisions, approval_id: str, reason: str) -> Revocation:
    """The revocation's writes, inside the caller's transaction."""
    now = self.clock()
    revoked = self.approvals.retire(approval_id, str(self.actor), f"revoked: {reason}", now=now)
    self._audit(
        "approval.revoked",
        resource=_approval_resource(revoked),
        details={"reason": reason.strip()},
    )
    known_open = any(
        p.port == revoked.port and p.proto == revoked.proto
        for p in self.store.current_ports(revoked.host)
    )
    approved = self.findings_book.approved_under(revoked.id)
    if not known_open or not approved:
        return Revocation(revoked, None)
    finding = self.findings_book.reopen(
        approved[-1].id,
        str(self.actor),
        f"approval {revoked.id} revoked: {reason.strip()}",
        now=now,
        revoked=True,
    )
    self._audit(
        "finding.reopened",
        resource=finding_resource(finding),
        details={
            "kind": finding.kind,
            "severity": finding.severity,
            "from": APPROVED,
            "reason": reason.strip(),
            "approval_id": revoked.id,
        },
    )
    return Revocation(revoked, finding)


def _same_terms(
    request: ApprovalRequest,
    justification: str,
    owner: str,
    ticket: str,
    review_by: date | None,
    mitigation: str,
) -> None:
    """Terms given beside a pending request must be the request's: an approver approves what
    was asked, and asks for a new request to approve something else."""
    asked = {
        "justification": (justification, request.justification),
        "owner": (owner, request.owner),
        "ticket": (ticket, request.ticket),
        "mitigation": (mitigation, request.mitigation),
        "review date": (
            review_by.isoformat() if review_by else "",
            request.review_by.date().isoformat() if request.review_by else "",
        ),
    }
    for name, (given, recorded) in asked.items():
        if given.strip() and given.strip() != recorded:
            raise UserError(
                f"{request.finding_id} has a pending request {request.id} whose {name} is "
                f"{recorded or '(none)'!r}: approve it as requested, or record a new request"
            )
