"""The triage queue: open findings, worst and oldest first, and the decisions on them.

Decided findings (approved, resolved, risk accepted, closed with a cause) leave the queue;
`portconsole findings --all` lists them with their status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from portconsole.tui.safe import age, clean, safe_text, short_time
from portconsole.tui.screens.approval_forms import ApproveForm, RequestForm, ReviewForm
from portconsole.tui.screens.base import ConsoleScreen, filtered
from portconsole.tui.screens.forms import ConfirmDecision, TextDecision
from portconsole.tui.widgets import KeyedTable

if TYPE_CHECKING:
    from portconsole.core.domain.finding import Finding

SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
# Short enough for 80 columns; the detail pane spells the severity out.
SEVERITY_LABEL = {"critical": "CRIT", "high": "high", "medium": "med", "low": "low"}

FINDING_COLUMNS = [
    ("severity", "Sev"),
    ("age", "Age"),
    ("kind", "Kind"),
    ("target", "Host:port"),
    ("service", "Service"),
    ("status", "Status"),
]

DECISIONS = ("approve", "request", "review", "flag", "ack", "note", "close", "rescan")


def finding_target(finding: Finding) -> str:
    if finding.port is None:
        return clean(finding.host, 45)
    return f"{clean(finding.host, 45)}:{finding.port}/{finding.proto}"


def reviewed_approval(finding: Finding) -> str:
    """The approval an approval_expired finding asks to review ("" for other findings)."""
    if finding.kind != "approval_expired":
        return ""
    return clean(finding.details.get("approval_id") or "", 20)


def queue_order(findings: Sequence[Finding]) -> list[Finding]:
    """Worst severity first, then oldest first (the longest-waiting problem at the top)."""
    return sorted(findings, key=lambda f: (SEVERITY_ORDER.get(f.severity, 9), f.first_seen, f.id))


class TriageScreen(ConsoleScreen):
    TITLE_TEXT = "Triage"

    BINDINGS = [
        Binding("a", "approve", "Approve", id="triage.approve"),
        Binding("e", "request", "Request", id="triage.request"),
        Binding("v", "review", "Review", id="triage.review"),
        Binding("f", "flag", "Flag", id="triage.flag"),
        Binding("c", "ack", "Ack", id="triage.ack"),
        Binding("n", "note", "Note", id="triage.note"),
        Binding("x", "close", "Close", show=False, id="triage.close"),
        Binding("r", "rescan", "Rescan", id="triage.rescan"),
        Binding("o", "open_host", "Host", show=False, id="triage.host"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._availability: tuple[bool | None, ...] = ()

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(FINDING_COLUMNS, id="findings")
        yield Static(id="finding-detail")

    # ----- drawing ---------------------------------------------------------------------
    def finding_rows(self) -> dict[str, Sequence[Text]]:
        snapshot = self.console.snapshot
        if snapshot is None:
            return {}
        now = self.console.now()
        rows: dict[str, Sequence[Text]] = {}
        for finding in queue_order([f for f in snapshot.findings if f.is_open]):
            severe = finding.severity in ("critical", "high")
            style = self.console.alert_style() if severe else ""
            rows[finding.id] = (
                Text(
                    ("!" if severe else " ")
                    + SEVERITY_LABEL.get(finding.severity, finding.severity[:4]),
                    style=style,
                ),
                Text(age(finding.first_seen, now), justify="right"),
                safe_text(finding.kind, limit=24),
                safe_text(finding_target(finding), style, limit=50),
                safe_text(finding.service or "-", limit=20),
                Text(finding.status),
            )
        return rows

    def show_data(self) -> None:
        self.query_one("#findings", KeyedTable).sync(
            filtered(self.finding_rows(), self.filter_text)
        )
        self.show_detail()

    def show_detail(self) -> None:
        finding = self.selected()
        detail = Text()
        if finding is None:
            snapshot = self.console.snapshot
            detail.append(
                "No open findings." if snapshot is not None else "Loading…", style="italic"
            )
        else:
            detail.append(f"{finding.id} ", style="bold")
            detail.append(f"{clean(finding.kind, 30)} on {finding_target(finding)}")
            if finding.service:
                detail.append(f" ({clean(finding.service, 30)})")
            detail.append(f"\n{finding.severity} · {finding.status} · first seen ")
            detail.append(
                f"{short_time(finding.first_seen)} · last {short_time(finding.last_seen)}"
            )
            # The pane shows two lines of timeline: the two newest steps, newest last.
            for entry in finding.timeline[-2:]:
                detail.append(
                    f"\n{short_time(entry.at)} {clean(entry.step, 14)} {clean(entry.actor, 40)}"
                )
                if entry.text:
                    detail.append(f": {clean(entry.text, 80)}")
        self.query_one("#finding-detail", Static).update(detail)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()
        self.refresh_availability()

    def refresh_availability(self) -> None:
        """Refresh the footer only when what is possible changed: recomposing the footer
        on every cursor move costs tens of milliseconds per key."""
        states = tuple(self.check_action(action, ()) for action in DECISIONS)
        if states != self._availability:
            self._availability = states
            self.refresh_bindings()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_host()

    # ----- decisions -------------------------------------------------------------------
    def selected(self) -> Finding | None:
        snapshot = self.console.snapshot
        key = self.query_one("#findings", KeyedTable).selected_key
        if snapshot is None or key is None:
            return None
        return snapshot.finding(key)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in DECISIONS:
            return True
        if not self.is_mounted:
            return True
        finding = self.selected()
        if finding is None:
            return None
        if action in ("approve", "request") and finding.port is None:
            return None
        # A review answers an overdue one: offered on the finding it raised.
        if action == "review" and not reviewed_approval(finding):
            return False
        if action == "rescan" and finding.port is None and finding.kind == "monitoring_gap":
            return None
        return self.console.can_write()

    def action_approve(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.app.push_screen(ApproveForm(finding), self.after_decision)

    def action_request(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.app.push_screen(RequestForm(finding), self.after_decision)

    def action_review(self) -> None:
        finding = self.selected()
        approval_id = reviewed_approval(finding) if finding is not None else ""
        if finding is not None and approval_id:
            self.app.push_screen(ReviewForm(approval_id, finding), self.after_decision)

    def action_close(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.app.push_screen(TextDecision(finding, "close"), self.after_decision)

    def action_flag(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.app.push_screen(TextDecision(finding, "flag"), self.after_decision)

    def action_note(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.app.push_screen(TextDecision(finding, "note"), self.after_decision)

    def action_ack(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.app.push_screen(ConfirmDecision(finding, "ack"), self.after_decision)

    def action_rescan(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.console.start_rescan(finding.host)

    def action_open_host(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.console.open_host(finding.host)

    def after_decision(self, message: str | None) -> None:
        if message:
            self.console.decision_written(message)
