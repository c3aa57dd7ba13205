"""Approval dialogs: request (the first of the four eyes), approve (a pending request as
asked, or terms typed here), and review an approval (PCI DSS 1.2.7). Each names who you are
before you confirm and writes through the Monitor in a thread, as every decision dialog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, TypedDict, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Button, Static

from portconsole.core.domain.approval_terms import REVIEW_OUTCOMES
from portconsole.tui.safe import clean, short_time
from portconsole.tui.screens.forms import DecisionDialog, DialogBase, describe_finding, field_row

if TYPE_CHECKING:
    from portconsole.core.domain.approval import ApprovalRequest
    from portconsole.core.domain.finding import Finding


class ApprovalTerms(TypedDict):
    """The terms a request and an approval share (Monitor.request / Monitor.approve)."""

    justification: str
    owner: str
    ticket: str
    review_by: date | None
    mitigation: str


def approval_terms(terms: dict[str, object]) -> ApprovalTerms:
    """The form's terms as the keyword arguments of Monitor.request and Monitor.approve."""
    return {
        "justification": str(terms["justification"]),
        "owner": str(terms["owner"]),
        "ticket": str(terms["ticket"]),
        "review_by": cast("date | None", terms["review_by"]),
        "mitigation": str(terms["mitigation"]),
    }


class TermsForm(DecisionDialog):
    """The terms of an approval (justification, owner, ticket, review date, mitigation): the
    fields a request and an approval without one share."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding)
        self.insecure = False

    def other_label(self) -> str:
        return "On behalf of"

    def compose_fields(self) -> ComposeResult:
        monitor = self.console.monitor
        # Both are pure computations on settings: cheap enough for the event loop.
        self.insecure = monitor.is_insecure(self.finding.service)
        review_default = monitor.default_review_by()
        yield field_row("Justification*", "justification", placeholder="why this port is needed")
        yield field_row("Owner*", "owner", placeholder="team or person responsible")
        yield field_row(
            self.other_label(), "requester", placeholder="recorded as text, not as an identity"
        )
        yield field_row("Ticket", "ticket", placeholder="change ticket, optional")
        yield field_row("Review by", "review_by", review_default.isoformat(), "YYYY-MM-DD")
        if self.insecure:
            yield field_row(
                "Mitigation*",
                "mitigation",
                placeholder="insecure service: how the risk is contained",
            )

    def terms(self) -> dict[str, object] | None:
        """The typed terms, checked; None (with the problem shown) when one is missing."""
        justification = self.value("justification")
        owner = self.value("owner")
        mitigation = self.value("mitigation") if self.insecure else ""
        if not justification:
            self.show_error(
                "A justification is required: say why this port may stay open.", "justification"
            )
            return None
        if not owner:
            self.show_error("An owner is required: who answers for this port.", "owner")
            return None
        review_text = self.value("review_by")
        try:
            review_by = date.fromisoformat(review_text) if review_text else None
        except ValueError:
            self.show_error("Review by must be a date such as 2026-11-27.", "review_by")
            return None
        if review_by is not None and review_by <= self.console.now().date():
            self.show_error("Review by must be in the future.", "review_by")
            return None
        if self.insecure and not mitigation:
            self.show_error(
                f"{clean(self.finding.service, 30)} is insecure: describe the mitigation.",
                "mitigation",
            )
            return None
        return {
            "justification": justification,
            "owner": owner,
            "ticket": self.value("ticket"),
            "review_by": review_by,
            "mitigation": mitigation,
        }


class RequestForm(TermsForm):
    """Request approval of the finding's port: the first of the four eyes, under your name."""

    def heading(self) -> str:
        return "Request approval of this port (another person approves)"

    def confirm_label(self) -> str:
        return "Request"

    def hint(self) -> str:
        return "enter: request · tab: next field · esc: cancel"

    def prepare(self) -> Callable[[], str] | None:
        terms = self.terms()
        if terms is None:
            return None
        on_behalf_of = self.value("requester")
        monitor = self.console.monitor
        finding_id = self.finding.id

        def write() -> str:
            made = monitor.request(
                finding_id,
                **approval_terms(terms),
                on_behalf_of=on_behalf_of,
            )
            return f"Requested {made.id} for {made.finding_id}: another person approves it"

        return write


@dataclass
class RequestLoaded(Message):
    request: ApprovalRequest | None
    guessed: bool = False  # the finding's service is nmap's port-table guess (-sV pending)


class ApproveForm(TermsForm):
    """Approve the finding's port. A pending request is approved as it was asked (its terms
    are shown, not typed again); without one the terms are typed here, and the approval has
    no four eyes (refused while separation of duties is on)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding)
        self.looking = True
        self.pending: ApprovalRequest | None = None

    def heading(self) -> str:
        return "Approve this port"

    def confirm_label(self) -> str:
        return "Approve"

    def other_label(self) -> str:
        return "Requested by"

    def compose_fields(self) -> ComposeResult:
        yield Static(Text("Looking for a request…", style="italic"), id="request-info")
        yield from super().compose_fields()

    def hint(self) -> str:
        return "enter: approve · tab: next field · esc: cancel"

    def on_mount(self) -> None:
        self.load_request()

    @work(thread=True, exit_on_error=False, group="decision", description="find a request")
    def load_request(self) -> None:
        monitor = self.console.monitor
        self.post_message(
            RequestLoaded(
                monitor.pending_request(self.finding.id),
                monitor.service_is_guess(self.finding.id),
            )
        )

    def on_request_loaded(self, message: RequestLoaded) -> None:
        self.looking = False
        self.pending = message.request
        info = self.query_one("#request-info", Static)
        request = message.request
        guess = Text()
        if message.guessed:
            guess.append(
                f"\n{clean(self.finding.service, 30) or 'The service'} is a guess from the port "
                "number; the approval takes what -sV names.",
                style="italic",
            )
        if request is None:
            text = Text("No request recorded: ")
            if self.console.monitor.settings.approval.separation_of_duties:
                text.append(
                    "separation of duties needs one by another person first (e on the finding).",
                    style="bold",
                )
            else:
                text.append("this approval will not count as four eyes.")
            info.update(text + guess)
            return
        text = Text()
        text.append(f"{request.id} ", style="bold")
        text.append(f"by {clean(request.requested_by, 60)} at {short_time(request.requested_at)}")
        text.append(f"\nWhy: {clean(request.justification, 120)}")
        text.append(f"\nOwner: {clean(request.owner, 40)}")
        if request.ticket:
            text.append(f" · ticket {clean(request.ticket, 30)}")
        if request.review_by:
            text.append(f" · review by {request.review_by.date().isoformat()}")
        if request.mitigation:
            text.append(f"\nMitigation: {clean(request.mitigation, 100)}")
        if request.on_behalf_of:
            text.append(f"\nOn behalf of: {clean(request.on_behalf_of, 60)}")
        info.update(text + guess)
        for row in self.query(".field"):
            row.display = False
        self.query_one("#confirm", Button).focus()

    def prepare(self) -> Callable[[], str] | None:
        if self.looking:
            self.show_error("Still looking for a request: try again in a moment.")
            return None
        monitor = self.console.monitor
        request = self.pending
        if request is not None:
            request_id = request.id

            def approve_request() -> str:
                done = monitor.approve(request_id)
                return f"Approved {done.id} ({clean(done.host, 45)}:{done.port}/{done.proto})"

            return approve_request
        terms = self.terms()
        if terms is None:
            return None
        requester = self.value("requester")
        finding_id = self.finding.id

        def write() -> str:
            done = monitor.approve(
                finding_id,
                **approval_terms(terms),
                requester=requester or None,
            )
            return f"Approved {done.id} ({clean(done.host, 45)}:{done.port}/{done.proto})"

        return write


class ReviewForm(DialogBase):
    """Review an approval (PCI DSS 1.2.7): keep, change (stays in force, a change is asked
    for) or retire, with a note and the next review date. Opened on an approval_expired
    finding (its approval) or from the command palette (the id typed)."""

    def __init__(self, approval_id: str = "", finding: Finding | None = None) -> None:
        super().__init__()
        self.approval_id = approval_id
        self.finding = finding

    def subject(self) -> Text:
        if self.finding is not None:
            text = describe_finding(self.finding)
            text.append(f"\napproval {clean(self.approval_id, 20)}", style="bold")
            return text
        return Text("Which approval: type its id (see `portconsole approvals`).")

    def heading(self) -> str:
        return "Review an approval"

    def confirm_label(self) -> str:
        return "Record review"

    def hint(self) -> str:
        return (
            "keep: still needed · change: stays, change asked for · retire: no longer needed"
            " · enter: record · esc: cancel"
        )

    def compose_fields(self) -> ComposeResult:
        if not self.approval_id:
            yield field_row("Approval*", "approval", placeholder="A-000001")
        yield field_row("Outcome*", "outcome", placeholder="keep, change or retire")
        yield field_row("Note*", "note", placeholder="what was checked and concluded")
        default = self.console.monitor.default_review_by().isoformat()
        yield field_row("Next review", "next_review", default, "YYYY-MM-DD (not for retire)")

    def prepare(self) -> Callable[[], str] | None:
        approval_id = self.approval_id or self.value("approval")
        if not approval_id:
            self.show_error("Name the approval to review (A-000001).", "approval")
            return None
        outcome = self.value("outcome").lower()
        if outcome not in REVIEW_OUTCOMES:
            self.show_error("The outcome is keep, change or retire.", "outcome")
            return None
        note = self.value("note")
        if not note:
            self.show_error("A note is required: what was checked and concluded.", "note")
            return None
        next_text = self.value("next_review")
        next_review: date | None = None
        if outcome != "retire" and next_text:
            try:
                next_review = date.fromisoformat(next_text)
            except ValueError:
                self.show_error("Next review must be a date such as 2026-11-27.", "next_review")
                return None
        monitor = self.console.monitor

        def write() -> str:
            done = monitor.review(approval_id, outcome=outcome, note=note, next_review=next_review)
            return f"Reviewed {done.id}: {outcome}"

        return write
