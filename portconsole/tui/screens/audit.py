"""The audit log and the verification of its hash chain."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Static

from portconsole.core.errors import UserError
from portconsole.core.identity import Actor
from portconsole.tui.safe import clean, safe_text, short_time
from portconsole.tui.screens.base import ConsoleScreen, filtered
from portconsole.tui.widgets import KeyedTable

if TYPE_CHECKING:
    from portconsole.core.adapters.journal import AuditEvent
    from portconsole.core.domain.chain import VerifyResult

# The newest events are what an operator looks at here; the CLI exports the whole chain.
SHOWN_EVENTS = 1000

AUDIT_COLUMNS = [
    ("seq", "Seq"),
    ("at", "When (UTC)"),
    ("actor", "Who"),
    ("action", "Action"),
    ("outcome", "Outcome"),
    ("resource", "On"),
]


@dataclass
class AuditLoaded(Message):
    events: list[AuditEvent]
    verify: VerifyResult


def who(event: AuditEvent) -> str:
    actor = event.actor
    return f"{actor.get('user') or '?'}@{actor.get('host') or '?'}"


def describe_resource(resource: dict[str, Any]) -> str:
    if not resource:
        return "-"
    host = resource.get("host")
    if host and resource.get("port") is not None:
        text = f"{host}:{resource.get('port')}/{resource.get('proto') or 'tcp'}"
    elif host:
        text = str(host)
    else:
        text = ""
    extra = resource.get("finding_id") or resource.get("scan_id") or resource.get("approval_id")
    if extra:
        text = f"{text} {extra}".strip()
    return text or json.dumps(resource, sort_keys=True, default=str)


class AuditScreen(ConsoleScreen):
    TITLE_TEXT = "Audit log"

    BINDINGS = [
        Binding("v", "verify", "Verify chain", id="audit.verify"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.events: list[AuditEvent] = []
        self.verify: VerifyResult | None = None
        self.loaded_tip: str | None = None

    def compose_body(self) -> ComposeResult:
        yield Static(id="verify-status", classes="title")
        yield KeyedTable(AUDIT_COLUMNS, id="audit")
        yield Static(id="audit-detail")

    def reload(self) -> None:
        self.load_audit()

    @work(thread=True, exclusive=True, exit_on_error=False, group="audit-load", description="audit")
    def load_audit(self, force: bool = False) -> None:
        monitor = self.console.monitor
        try:
            # Reading and verifying the whole chain grows with it: on refreshes, only when
            # an event was appended since; `v` always verifies again.
            tip = monitor.audit_tip()
            if not force and tip == self.loaded_tip:
                return
            events = monitor.audit_events()
            verify = monitor.audit_verify()
        except UserError as error:
            self.console.report_error(str(error))
            return
        self.loaded_tip = tip
        self.post_message(AuditLoaded(events[-SHOWN_EVENTS:], verify))

    def on_audit_loaded(self, message: AuditLoaded) -> None:
        self.events = message.events
        self.verify = message.verify
        self.show_data()

    def action_verify(self) -> None:
        self.verify = None
        self.show_data()
        self.load_audit(force=True)

    def audit_rows(self) -> dict[str, Sequence[Text]]:
        rows: dict[str, Sequence[Text]] = {}
        alert = self.console.alert_style()
        for event in reversed(self.events):
            failed = event.outcome not in ("success", "ok")
            rows[str(event.seq)] = (
                Text(str(event.seq), justify="right"),
                Text(short_time(event.at)),
                safe_text(who(event), limit=40),
                safe_text(event.action, limit=30),
                Text(event.outcome, style=alert if failed else ""),
                safe_text(describe_resource(event.resource), limit=60),
            )
        return rows

    def show_data(self) -> None:
        status = Text()
        if self.verify is None:
            status.append("verifying the audit chain…", style="italic")
        elif self.verify.ok:
            status.append("✓ chain verified", style="bold")
            status.append(f": {self.verify.count} events, no edits detected")
        else:
            status.append("✗ CHAIN BROKEN", style=f"bold reverse {self.console.alert_style()}")
            status.append(
                f" at event {self.verify.first_bad_seq}: {clean(self.verify.reason, 100)}"
            )
        self.query_one("#verify-status", Static).update(status)
        self.query_one("#audit", KeyedTable).sync(filtered(self.audit_rows(), self.filter_text))
        self.show_detail()

    def show_detail(self) -> None:
        key = self.query_one("#audit", KeyedTable).selected_key
        event = next((e for e in self.events if str(e.seq) == key), None)
        detail = Text()
        if event is not None:
            detail.append(f"#{event.seq} {clean(event.action, 40)} by ")
            detail.append(clean(Actor.from_json(event.actor, origin=event.origin), 100))
            detail.append(f" ({clean(event.origin, 10)})\n")
            details = (
                json.dumps(event.details, sort_keys=True, default=str)
                if event.details
                else "no details"
            )
            detail.append(clean(details, 400))
        self.query_one("#audit-detail", Static).update(detail)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        # The pane below shows two lines; enter shows the whole event.
        key = event.row_key.value
        found = next((e for e in self.events if str(e.seq) == key), None)
        if found is not None:
            # json.dumps escapes every control character: network text stays inert.
            text = json.dumps(found.to_json(), indent=1, sort_keys=True, default=str)
            self.app.notify(
                text,
                title=f"Audit event #{found.seq}",
                markup=False,
                timeout=20,
            )
