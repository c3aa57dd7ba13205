"""The audit log and the verification of its hash chain.

The whole journal is browsable: the newest page is read from the end of the journal, and
older pages are read (in a worker) as the cursor nears the last row loaded. `/` searches
every event, not only the pages loaded, in a worker that reads the journal newest first.
Enter opens an event whole (audit_event.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static
from textual.worker import get_current_worker

from portconsole.core.adapters.journal import AuditEvent
from portconsole.core.errors import UserError
from portconsole.core.identity import Actor
from portconsole.tui.safe import clean, exact_time, safe_text
from portconsole.tui.screens.audit_event import AuditEventScreen
from portconsole.tui.screens.base import ConsoleScreen
from portconsole.tui.widgets import KeyedTable

if TYPE_CHECKING:
    from portconsole.core.domain.chain import VerifyResult

# Events read per page; the next older page is read when the cursor is this close to the end.
PAGE_SIZE = 500
PAGE_AHEAD = 50
# A search shows at most this many matches (the newest); the status line says when it stopped.
MAX_MATCHES = 2000

AUDIT_COLUMNS = [
    ("seq", "Seq"),
    ("at", "When (UTC)"),
    ("actor", "Who"),
    ("action", "Action"),
    ("outcome", "Outcome"),
    ("resource", "On"),
]

Record = dict[str, Any]


@dataclass
class AuditLoaded(Message):
    """Events newer than those shown (or the newest page), and the chain's verification."""

    newer: list[Record]
    tip_seq: int
    verify: VerifyResult | None


@dataclass
class OlderLoaded(Message):
    before: int
    records: list[Record]


@dataclass
class SearchDone(Message):
    needle: str
    records: list[Record]
    searched: int
    complete: bool = True
    stopped_at: int | None = field(default=None)


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


# What a transaction's last event carries for the projections (whole findings, scan-history
# chunks): matching them would find every earlier note again in each later event.
NOT_SEARCHED = ("effects", "chunks")


def record_matches(record: Record, needle: str) -> bool:
    """Case-insensitive substring match over everything the event says (not its effects)."""
    said = {k: v for k, v in record.items() if k not in NOT_SEARCHED}
    return needle in json.dumps(said, default=str, ensure_ascii=False).lower()


class AuditScreen(ConsoleScreen):
    TITLE_TEXT = "Audit log"

    BINDINGS = [
        Binding("v", "verify", "Verify chain", id="audit.verify"),
    ]

    def __init__(self) -> None:
        super().__init__()
        # Loaded records, newest first (seqs descending, contiguous from the head).
        self.records: list[Record] = []
        self.events: dict[int, AuditEvent] = {}
        self._cells: dict[int, Sequence[Text]] = {}
        self.verify: VerifyResult | None = None
        self.loaded_tip: str | None = None
        self.tip_seq = 0
        self.loading_older = False
        # The search shown: what was looked for and what matched.
        self.searched_for = ""
        self.search_results: list[Record] | None = None
        self.search_status = ""

    def compose_body(self) -> ComposeResult:
        yield Static(id="verify-status", classes="title")
        yield KeyedTable(AUDIT_COLUMNS, id="audit", flex="resource")
        yield Static(id="audit-detail")

    def reload(self) -> None:
        self.load_audit()

    # ----- reading ---------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="audit-load", description="audit")
    def load_audit(self, force: bool = False) -> None:
        monitor = self.console.monitor
        try:
            # Verifying the whole chain grows with it: on refreshes, only when an event was
            # appended since; `v` always verifies again.
            tip = monitor.audit_tip()
            if not force and tip == self.loaded_tip:
                return
            newest = int(self.records[0]["seq"]) if self.records else None
            if newest is None:
                newer = self._take(monitor.audit.records_backwards(), PAGE_SIZE)
            else:
                newer = list(reversed(monitor.audit.records_after(newest)))
            verify = monitor.audit_verify()
        except UserError as error:
            self.console.report_error(str(error))
            return
        self.loaded_tip = tip
        tip_seq = int(tip.partition(":")[0] or 0) if tip else 0
        self.post_message(AuditLoaded(newer, tip_seq, verify))

    @staticmethod
    def _take(records: Any, count: int) -> list[Record]:
        taken: list[Record] = []
        for record in records:
            taken.append(record)
            if len(taken) >= count:
                break
        return taken

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="audit-older",
        description="older audit events",
    )
    def load_older(self, before: int) -> None:
        try:
            records = self._take(self.console.monitor.audit.records_backwards(before), PAGE_SIZE)
        except UserError as error:
            self.console.report_error(str(error))
            return
        self.post_message(OlderLoaded(before, records))

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="audit-search",
        description="search the journal",
    )
    def search(self, needle: str) -> None:
        worker = get_current_worker()
        found: list[Record] = []
        searched = 0
        for record in self.console.monitor.audit.records_backwards():
            if worker.is_cancelled:
                return  # a newer search replaced this one
            searched += 1
            if record_matches(record, needle):
                found.append(record)
                if len(found) >= MAX_MATCHES:
                    self.post_message(
                        SearchDone(needle, found, searched, False, int(record["seq"]))
                    )
                    return
        self.post_message(SearchDone(needle, found, searched))

    def on_audit_loaded(self, message: AuditLoaded) -> None:
        known = int(self.records[0]["seq"]) if self.records else 0
        fresh = [r for r in message.newer if int(r["seq"]) > known]
        self.records = fresh + self.records
        self.tip_seq = max(message.tip_seq, self.tip_seq)
        self.verify = message.verify
        if self.filter_text and fresh:
            self.searched_for = ""  # search again: new events may match
        self.show_data()

    def on_older_loaded(self, message: OlderLoaded) -> None:
        self.loading_older = False
        if self.records and int(self.records[-1]["seq"]) == message.before:
            self.records.extend(message.records)
        self.show_data()

    def on_search_done(self, message: SearchDone) -> None:
        if message.needle != self.filter_text.lower():
            return
        self.search_results = message.records
        if message.complete:
            self.search_status = f"{len(message.records)} of {message.searched} match"
        else:
            self.search_status = (
                f"newest {len(message.records)} matches (back to #{message.stopped_at})"
            )
        self.show_data()

    def action_verify(self) -> None:
        self.verify = None
        self.show_data()
        self.load_audit(force=True)

    # ----- drawing ---------------------------------------------------------------------
    def event_of(self, record: Record) -> AuditEvent:
        seq = int(record["seq"])
        event = self.events.get(seq)
        if event is None:
            event = self.events[seq] = AuditEvent.from_json(record)
        return event

    def cells_of(self, record: Record) -> Sequence[Text]:
        seq = int(record["seq"])
        cells = self._cells.get(seq)
        if cells is None:
            event = self.event_of(record)
            failed = event.outcome not in ("success", "ok")
            cells = self._cells[seq] = (
                Text(str(event.seq), justify="right"),
                Text(exact_time(event.at)),
                safe_text(who(event), limit=40),
                safe_text(event.action, limit=30),
                Text(event.outcome, style=self.console.alert_style() if failed else ""),
                safe_text(describe_resource(event.resource), limit=200),
            )
        return cells

    def audit_rows(self) -> dict[str, Sequence[Text]]:
        shown = self.search_results if self.filter_text else self.records
        return {str(record["seq"]): self.cells_of(record) for record in shown or []}

    def restyle(self) -> None:
        self._cells = {}
        super().restyle()

    def status_line(self) -> Text:
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
        if self.filter_text:
            status.append(" · ")
            status.append(self.search_status or "searching every event…", style="italic")
        elif self.records:
            oldest = int(self.records[-1]["seq"])
            status.append(f" · #{self.records[0]['seq']}–#{oldest} loaded")
            if oldest > 1:
                status.append(", older as you scroll", style="italic")
        return status

    def show_data(self) -> None:
        needle = self.filter_text.lower()
        if needle and needle != self.searched_for:
            self.searched_for = needle
            self.search_results = None
            self.search_status = ""
            self.search(needle)
        elif not needle:
            self.searched_for = ""
            self.search_results = None
        self.query_one("#verify-status", Static).update(self.status_line())
        if self.filter_text and self.search_results is None:
            empty = "Searching every event…"
        elif self.filter_text:
            empty = f"No event matches {self.filter_text!r}: esc clears the search."
        else:
            empty = "Loading…" if self.loaded_tip is None else "The journal is empty."
        self.query_one("#audit", KeyedTable).sync(self.audit_rows(), empty)
        self.show_detail()

    def selected_record(self) -> Record | None:
        key = self.query_one("#audit", KeyedTable).selected_key
        if key is None:
            return None
        shown = self.search_results if self.filter_text else self.records
        return next((r for r in shown or [] if str(r["seq"]) == key), None)

    def show_detail(self) -> None:
        record = self.selected_record()
        detail = Text()
        if record is not None:
            event = self.event_of(record)
            detail.append(f"#{event.seq} {clean(event.action, 40)} by ")
            detail.append(clean(Actor.from_json(event.actor, origin=event.origin), 100))
            detail.append(f" ({clean(event.origin, 10)}) · enter shows it whole\n")
            details = (
                json.dumps(event.details, sort_keys=True, default=str)
                if event.details
                else "no details"
            )
            detail.append(clean(details, 400))
        self.query_one("#audit-detail", Static).update(detail)

    def maybe_load_older(self) -> None:
        """Page in older events when the cursor nears the last one loaded."""
        if self.filter_text or self.loading_older or not self.records:
            return
        oldest = int(self.records[-1]["seq"])
        table = self.query_one("#audit", KeyedTable)
        if oldest > 1 and table.cursor_row >= table.row_count - PAGE_AHEAD:
            self.loading_older = True
            self.load_older(oldest)

    def on_keyed_table_row_highlighted(self, event: KeyedTable.RowHighlighted) -> None:
        self.show_detail()
        self.maybe_load_older()

    def on_keyed_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        record = self.selected_record()
        if record is not None:
            self.app.push_screen(AuditEventScreen(record))
