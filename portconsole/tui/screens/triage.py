"""The triage queue: open findings, worst and oldest first, and the decisions on them.

Decided findings (approved, resolved, risk accepted, closed with a cause) leave the queue;
`portconsole findings --all` lists them with their status.

Only the decisions a finding's state allows are offered (domain/finding.py `refusal`); the
key of one that is not says why in a notice, before any dialog. Space marks rows: acknowledge,
note and close then act on every marked row at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from portconsole.core.domain.finding import refusal
from portconsole.tui.alerts import new_mark
from portconsole.tui.safe import age, clean, safe_text, short_time
from portconsole.tui.screens.approval_forms import ApproveForm, RequestForm, ReviewForm
from portconsole.tui.screens.base import ConsoleScreen, filtered
from portconsole.tui.screens.forms import ConfirmDecision, TextDecision
from portconsole.tui.widgets import KeyedTable
from portconsole.tui.widgets.table_model import LazyRows, address_key

if TYPE_CHECKING:
    from portconsole.core.domain.finding import Finding

SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
# Short enough for 80 columns; the detail pane spells the severity out.
SEVERITY_LABEL = {"critical": "CRIT", "high": "high", "medium": "med", "low": "low"}

# Fixed widths: the table never measures its rows (100,000 findings). Host:port flexes.
FINDING_COLUMNS = [
    ("severity", "Sev", 6),
    ("age", "Age", 4),
    ("kind", "Kind", 15),
    ("target", "Host:port", 50),
    ("service", "Service", 10),
    ("status", "Status", 12),
]

DECISIONS = ("approve", "request", "review", "flag", "ack", "note", "close", "reopen", "rescan")
# Each decision's name in domain/finding.py (what its state must allow).
DECISION_OF = {
    "approve": "approve",
    "request": "approve",
    "flag": "flag",
    "ack": "acknowledge",
    "note": "note",
    "close": "close",
    "reopen": "reopen",
}
# Decisions taken on every marked row at once.
BULK = ("ack", "note", "close")


def finding_target(finding: Finding) -> str:
    if finding.port is None:
        return clean(finding.host, 45)
    return f"{clean(finding.host, 45)}:{finding.port}/{finding.proto}"


def reviewed_approval(finding: Finding) -> str:
    """The approval an approval_expired finding asks to review ("" for other findings)."""
    if finding.kind != "approval_expired":
        return ""
    return clean(finding.details.get("approval_id") or "", 20)


def severity_rank(cell: str) -> int:
    """How the Sev column sorts: worst first (cells read `!CRIT`, `!high`, ` med`...)."""
    label = cell.strip("! ")
    for severity, shown in SEVERITY_LABEL.items():
        if shown == label:
            return SEVERITY_ORDER[severity]
    return 9


def finding_search_text(finding: Finding) -> str:
    """What the `/` filter looks in: the row's text, without building its cells."""
    label = SEVERITY_LABEL.get(finding.severity, finding.severity[:4])
    return f"{label} {finding.kind} {finding_target(finding)} {finding.service} {finding.status}"


# How each column sorts, from the finding itself (no cell is built to sort 100,000 rows).
FINDING_SORT: dict[str, Callable[[Finding], Any]] = {
    "severity": lambda f: SEVERITY_ORDER.get(f.severity, 9),
    "age": lambda f: -f.first_seen.timestamp(),  # youngest first, as `40s` < `5h`
    "kind": lambda f: f.kind,
    "target": lambda f: (address_key(f.host), f.port or 0, f.proto or ""),
    "service": lambda f: (f.service or "-").lower(),
    "status": lambda f: f.status,
}


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
        Binding("u", "reopen", "Reopen", show=False, id="triage.reopen"),
        Binding("space", "mark", "Mark row", show=False, id="triage.mark"),
        Binding("r", "rescan", "Rescan", id="triage.rescan"),
        Binding("h", "open_host", "Host", show=False, id="triage.host"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._availability: tuple[bool | None, ...] = ()
        self.marked: set[str] = set()

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(
            FINDING_COLUMNS, id="findings", flex="target", sort_keys={"severity": severity_rank}
        )
        yield Static(id="finding-detail")

    # ----- drawing ---------------------------------------------------------------------
    def finding_rows(self) -> LazyRows[Finding]:
        """The open findings by id, in queue order; a row is built when it is drawn."""
        snapshot = self.console.snapshot
        queue = snapshot.findings_by_id if snapshot is not None else {}
        now = self.console.now()
        alert = self.console.alert_style()
        # A decided finding is no longer marked.
        self.marked = {key for key in self.marked if key in queue}
        marked = self.marked
        is_unseen = self.console.is_unseen

        def build(finding: Finding) -> Sequence[Text]:
            severe = finding.severity in ("critical", "high")
            style = alert if severe else ""
            severity = Text(
                ("!" if severe else " ")
                + SEVERITY_LABEL.get(finding.severity, finding.severity[:4]),
                style=style,
            )
            if finding.id in marked:
                severity = Text("+", style="bold reverse") + severity
            return (
                severity,
                Text(age(finding.first_seen, now), justify="right"),
                safe_text(finding.kind, limit=24),
                safe_text(finding_target(finding), style, limit=50),
                safe_text(finding.service or "-", limit=20),
                new_mark(finding.status) if is_unseen(finding.id) else Text(finding.status),
            )

        return LazyRows(queue, build, search=finding_search_text, sort_values=FINDING_SORT)

    def show_data(self) -> None:
        snapshot = self.console.snapshot
        self.query_one("#findings", KeyedTable).sync(
            filtered(self.finding_rows(), self.filter_text),
            "Reading the findings…"
            if snapshot is None or snapshot.partial
            else self.empty_hint(
                "No open findings: new ones appear here after each scan (s scans now)."
            ),
        )
        self.show_detail()

    def show_detail(self) -> None:
        finding = self.selected()
        detail = Text()
        snapshot = self.console.snapshot
        if finding is None:
            detail.append(
                "No open findings."
                if snapshot is not None and not snapshot.partial
                else "Loading…",
                style="italic",
            )
        else:
            if self.marked:
                detail.append(
                    f"{len(self.marked)} marked (space): c, n and x act on all of them\n",
                    style="bold",
                )
            detail.append(f"{finding.id} ", style="bold")
            detail.append(f"{clean(finding.kind, 30)} on {finding_target(finding)}")
            if finding.service:
                detail.append(f" ({clean(finding.service, 30)})")
            detail.append(f"\n{finding.severity} · {finding.status} · first seen ")
            detail.append(
                f"{short_time(finding.first_seen)} · "
                f"last {short_time(snapshot.last_seen(finding) if snapshot else finding.last_seen)}"
            )
            # The pane shows two lines of timeline: the two newest steps, newest last.
            for entry in finding.timeline[-2:]:
                detail.append(
                    f"\n{short_time(entry.at)} {clean(entry.step, 14)} {clean(entry.actor, 40)}"
                )
                if entry.text:
                    detail.append(f": {clean(entry.text, 80)}")
        self.query_one("#finding-detail", Static).update(detail)

    def on_keyed_table_row_highlighted(self, event: KeyedTable.RowHighlighted) -> None:
        self.show_detail()
        self.refresh_availability()

    def refresh_availability(self) -> None:
        """Refresh the footer only when what is possible changed: recomposing the footer
        on every cursor move costs tens of milliseconds per key."""
        states = tuple(self.check_action(action, ()) for action in DECISIONS)
        if states != self._availability:
            self._availability = states
            self.refresh_bindings()

    def on_keyed_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        # Enter opens the whole finding; `h` opens its host.
        from portconsole.tui.screens.finding import FindingScreen

        if event.key:
            self.app.push_screen(FindingScreen(event.key))

    # ----- decisions -------------------------------------------------------------------
    def selected(self) -> Finding | None:
        snapshot = self.console.snapshot
        key = self.query_one("#findings", KeyedTable).selected_key
        if snapshot is None or key is None:
            return None
        return snapshot.finding(key)

    def targets(self, action: str) -> list[Finding]:
        """What `action` acts on: the marked rows (for a bulk decision), else the cursor's."""
        snapshot = self.console.snapshot
        if action in BULK and self.marked and snapshot is not None:
            marked = [snapshot.finding(i) for i in self.marked]
            return queue_order([f for f in marked if f is not None])
        finding = self.selected()
        return [finding] if finding is not None else []

    def refused(self, action: str) -> str:
        """Why `action` cannot be taken on its findings now ("" if it can)."""
        targets = self.targets(action)
        if not targets:
            return "No finding is selected."
        finding = targets[0]
        if action in ("approve", "request") and finding.port is None:
            return f"{finding.id} is not about a port: note, flag or close it."
        # A review answers an overdue one: offered on the finding it raised.
        if action == "review" and not reviewed_approval(finding):
            return f"{finding.id} is not an overdue review (the command palette reviews any)."
        if action == "rescan" and finding.port is None and finding.kind == "monitoring_gap":
            return "A monitoring gap is not about one host: s scans every group."
        decision = DECISION_OF.get(action)
        if decision is None:
            return ""
        return "; ".join(r for r in (refusal(f, decision) for f in targets) if r)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in DECISIONS and action != "mark":
            return True
        if not self.is_mounted:
            return True
        if self.selected() is None:
            return None
        if action == "mark":
            return True
        if self.refused(action):
            return False  # not offered: the key says why (on_key)
        return self.console.can_write()

    def on_key(self, event: events.Key) -> None:
        """A decision key the finding's state does not allow explains itself."""
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            action = binding.action
            if action in DECISIONS and self.is_mounted and self.selected() is not None:
                why = self.refused(action)
                if why:
                    event.stop()
                    self.notify(why, title="Not available", severity="warning", markup=False)
                    return

    def action_mark(self) -> None:
        finding = self.selected()
        if finding is None:
            return
        self.marked ^= {finding.id}
        self.show_data()
        self.refresh_availability()

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
        self.decide_many("close")

    def action_flag(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.app.push_screen(TextDecision(finding, "flag"), self.after_decision)

    def action_note(self) -> None:
        self.decide_many("note")

    def action_ack(self) -> None:
        self.decide_many("ack")

    def decide_many(self, action: str) -> None:
        """Acknowledge, note or close the marked rows (or the cursor's row)."""
        targets = self.targets(action)
        if not targets:
            return
        first, more = targets[0], targets[1:]
        if action == "ack":
            self.app.push_screen(ConfirmDecision(first, "ack", more), self.after_decision)
        else:
            self.app.push_screen(TextDecision(first, action, more), self.after_decision)

    def action_reopen(self) -> None:
        finding = self.selected()
        if finding is not None:
            self.app.push_screen(TextDecision(finding, "reopen"), self.after_decision)

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
            self.marked.clear()
            self.console.decision_written(message)
