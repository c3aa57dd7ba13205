"""Undo dialogs, opened from the command palette with the id typed: revoke a mistaken
approval (the finding it approved is back in the queue when its port is known open), and
reopen a flagged or closed finding (closed ones are not in the queue to press `u` on)."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult

from portconsole.tui.safe import clean
from portconsole.tui.screens.forms import DialogBase, field_row


class RevokeForm(DialogBase):
    """Revoke an approval: its id and the reason (both required)."""

    def __init__(self, approval_id: str = "") -> None:
        super().__init__()
        self.approval_id = approval_id

    def heading(self) -> str:
        return "Revoke an approval (it was a mistake)"

    def subject(self) -> Text:
        return Text(
            "The approval is retired; its port is a finding again (at once when it is known "
            "open, else at the next scan that sees it)."
        )

    def confirm_label(self) -> str:
        return "Revoke"

    def compose_fields(self) -> ComposeResult:
        yield field_row("Approval*", "approval", self.approval_id, "A-000001")
        yield field_row("Reason*", "reason", placeholder="what was wrong with it")

    def prepare(self) -> Callable[[], str] | None:
        approval_id = self.value("approval")
        if not approval_id:
            self.show_error("Name the approval to revoke (A-000001).", "approval")
            return None
        reason = self.value("reason")
        if not reason:
            self.show_error("A reason is required: say what was wrong.", "reason")
            return None
        monitor = self.console.monitor

        def write() -> str:
            done = monitor.revoke(approval_id, reason=reason)
            where = f"{clean(done.approval.host, 45)}:{done.approval.port}/{done.approval.proto}"
            after = (
                f"{done.finding.id} is back in the queue"
                if done.finding is not None
                else "the next scan that sees the port open raises it"
            )
            return f"Revoked {done.approval.id} ({where}): {after}"

        return write


class ReopenForm(DialogBase):
    """Reopen a flagged or closed finding by its id, with a reason."""

    def heading(self) -> str:
        return "Reopen a finding (new again)"

    def subject(self) -> Text:
        return Text("A flagged or closed finding: `portconsole findings --all` lists them.")

    def confirm_label(self) -> str:
        return "Reopen"

    def compose_fields(self) -> ComposeResult:
        yield field_row("Finding*", "finding", placeholder="F-000001")
        yield field_row("Reason*", "reason", placeholder="why it needs attention again")

    def prepare(self) -> Callable[[], str] | None:
        finding_id = self.value("finding")
        if not finding_id:
            self.show_error("Name the finding to reopen (F-000001).", "finding")
            return None
        reason = self.value("reason")
        if not reason:
            self.show_error("A reason is required: say why it needs attention again.", "reason")
            return None
        monitor = self.console.monitor

        def write() -> str:
            done = monitor.reopen(finding_id, reason=reason)
            return f"Reopened {done.id}: new again"

        return write
