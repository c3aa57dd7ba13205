"""One finding, whole: its fields, the decisions on it, every timeline step, every
notification sent, and the journal events about it; scrollable, `y` copies it as text,
`h` opens its host.

The triage pane shows two lines of a finding; this is where an operator reads all of it
(and copies it into a ticket). The finding is read again from the store whenever the data
changes, so a decision taken in another console shows up here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.message import Message

from portconsole.core.adapters.journal import AuditEvent
from portconsole.core.errors import UserError
from portconsole.core.identity import Actor
from portconsole.tui.safe import age, clean, exact_time
from portconsole.tui.screens.document import DocumentScreen
from portconsole.tui.screens.triage import finding_target

if TYPE_CHECKING:
    from portconsole.core.domain.finding import Finding

# Long enough for any note or justification; one line each, control characters replaced.
WHOLE = 4000


@dataclass
class FindingLoaded(Message):
    finding: Finding | None
    events: list[AuditEvent]
    error: str = ""


def event_concerns(record: dict[str, Any], finding_id: str) -> bool:
    """Whether a journal record is about the finding (a delivery names several, comma-joined)."""
    resource = record.get("resource") or {}
    named = str(resource.get("finding_id") or "") if isinstance(resource, dict) else ""
    return finding_id in named.split(",")


def _field(text: Text, name: str, value: object) -> None:
    if value in (None, "", [], {}):
        return
    text.append(f"{name:<15}", style="bold")
    text.append(clean(value, WHOLE) + "\n")


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    return f"{exact_time(moment)} ({age(moment, now)} ago)"


def finding_text(finding: Finding, events: Iterable[AuditEvent], now: datetime) -> Text:
    """The whole finding as styled text; its `.plain` is what `y` copies."""
    text = Text()
    text.append(f"Finding {clean(finding.id, 40)}", style="bold")
    text.append(f" · {clean(finding.kind, 40)} on {finding_target(finding)}\n\n")
    _field(text, "Severity", finding.severity)
    _field(text, "Status", finding.status)
    _field(text, "Service", finding.service)
    _field(text, "First seen", _when(finding.first_seen, now))
    _field(text, "Last seen", _when(finding.last_seen, now))
    _field(text, "Raised by scan", finding.scan_id)
    _field(text, "Last scan", finding.last_scan_id)
    _field(text, "Reappeared", f"{finding.flap_count} times" if finding.flap_count else "")
    text.append("\nDecision\n", style="bold underline")
    before = len(text)
    _field(text, "Justification", finding.justification)
    _field(text, "Reason", finding.reason)
    _field(text, "Approval", finding.approval_id)
    _field(text, "Ticket", finding.ticket)
    _field(text, "Risk until", exact_time(finding.risk_until) if finding.risk_until else "")
    _field(text, "Resolved at", exact_time(finding.resolved_at) if finding.resolved_at else "")
    _field(text, "Resolved from", finding.resolved_from)
    if len(text) == before:
        text.append("none yet\n", style="italic")
    if finding.details:
        text.append("\nDetails\n", style="bold underline")
        for key in sorted(finding.details):
            value = finding.details[key]
            shown = value if isinstance(value, str) else json.dumps(value, default=str)
            _field(text, clean(key, 14), shown)
    text.append(
        f"\nTimeline ({len(finding.timeline)} steps, oldest first)\n", style="bold underline"
    )
    for entry in finding.timeline:
        text.append(f"{exact_time(entry.at)} ")
        text.append(f"{clean(entry.step, 14):<12}", style="bold")
        text.append(f" {clean(entry.actor, 80)}")
        if entry.text:
            text.append(f": {clean(entry.text, WHOLE)}")
        text.append("\n")
    sent = finding.notifications
    text.append(f"\nNotifications ({len(sent)} delivery attempts)\n", style="bold underline")
    if not sent:
        text.append("none sent\n", style="italic")
    for attempt in sent:
        outcome = "delivered" if attempt.get("ok") else clean(attempt.get("status") or "failed")
        text.append(f"{exact_time(str(attempt.get('at') or ''))} {outcome:<9} ")
        text.append(f"to {clean(attempt.get('target') or '?', 120)}")
        text.append(f" (attempt {clean(attempt.get('attempts') or 1, 6)})")
        if attempt.get("error"):
            text.append(f": {clean(attempt.get('error'), WHOLE)}")
        text.append("\n")
    shown_events = list(events)
    text.append(f"\nJournal ({len(shown_events)} events about it)\n", style="bold underline")
    for event in shown_events:
        text.append(f"#{event.seq} {exact_time(event.at)} ")
        text.append(clean(event.action, 40), style="bold")
        text.append(f" {clean(event.outcome, 12)} by ")
        text.append(clean(Actor.from_json(event.actor, origin=event.origin), 120))
        if event.details:
            details = json.dumps(event.details, sort_keys=True, default=str, ensure_ascii=False)
            text.append(f"\n    {clean(details, WHOLE)}")
        text.append("\n")
    return text


class FindingScreen(DocumentScreen):
    """Pushed over the triage queue (enter on a finding); `esc` returns."""

    TITLE_TEXT = "Finding"

    BINDINGS = [
        Binding("h", "open_host", "Host", id="finding.host"),
    ]

    def __init__(self, finding_id: str) -> None:
        super().__init__()
        self.finding_id = finding_id
        self.what = f"finding {clean(finding_id, 40)}"
        self.finding: Finding | None = None
        self.events: list[AuditEvent] = []
        self.loaded = False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open_host":
            return self.finding is not None
        return super().check_action(action, parameters)

    def reload(self) -> None:
        self.load_finding()

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="finding-load",
        description="read finding",
    )
    def load_finding(self) -> None:
        monitor = self.console.monitor
        try:
            finding = monitor.finding_as_seen(self.finding_id)
            events = [
                AuditEvent.from_json(record)
                for record in monitor.audit.records_backwards()
                if event_concerns(record, self.finding_id)
            ]
        except UserError as error:
            self.post_message(FindingLoaded(None, [], str(error)))
            return
        events.reverse()  # oldest first, as the timeline
        self.post_message(FindingLoaded(finding, events))

    def on_finding_loaded(self, message: FindingLoaded) -> None:
        self.loaded = True
        self.finding = message.finding
        self.events = message.events
        if message.error:
            self.console.report_error(message.error)
        self.show_data()
        self.refresh_bindings()

    def missing_text(self) -> str:
        if not self.loaded:
            return "loading…"
        return f"Finding {clean(self.finding_id, 40)} not found (esc goes back)."

    def document(self) -> Text | None:
        if self.finding is None:
            return None
        return finding_text(self.finding, self.events, self.console.now())

    def action_open_host(self) -> None:
        if self.finding is not None:
            self.console.open_host(self.finding.host)
