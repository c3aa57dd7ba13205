"""One host: its ports with approval state, and its change history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from portconsole.core.domain.model import port_key
from portconsole.core.errors import UserError
from portconsole.core.timeutil import iso
from portconsole.tui.safe import clean, exact_time, safe_text, short_time, table_time
from portconsole.tui.screens.base import ConsoleScreen, filtered
from portconsole.tui.widgets import KeyedTable

if TYPE_CHECKING:
    from portconsole.core.domain.state import ChangeEvent
    from portconsole.core.monitor import PortRow

PORT_COLUMNS = [
    ("mark", " "),
    ("port", "Port"),
    ("service", "Service"),
    ("product", "Product/version"),
    ("state", "State"),
    ("approval", "Approval"),
    ("justification", "Justification / owner"),
    ("first_seen", "First seen"),
    ("last_seen", "Last seen"),
]

HISTORY_COLUMNS = [
    ("at", "When (UTC)"),
    ("kind", "Change"),
    ("port", "Port"),
    ("change", "Before → after"),
]


def describe_state(state: dict[str, Any] | None) -> str:
    """A change's before/after side in a few words (service product version, or status)."""
    if not state:
        return "-"
    if "status" in state and len(state) <= 2:
        return clean(state.get("status"), 20)
    parts = [state.get("service"), state.get("product"), state.get("version")]
    text = " ".join(clean(p, 40) for p in parts if p)
    return text or clean(state.get("state", "open"), 20)


def history_rows(
    events: Sequence[ChangeEvent], port_filter: str | None = None
) -> dict[str, Sequence[Text]]:
    """Newest first; keys are stable across refreshes (time, kind, port and scan)."""
    rows: dict[str, Sequence[Text]] = {}
    for event in sorted(events, key=lambda e: e.at, reverse=True):
        where = f"{event.port}/{event.proto}" if event.port is not None else "host"
        if port_filter and where != port_filter:
            continue
        key = f"{iso(event.at)}|{event.kind}|{where}|{event.scan_id}"
        while key in rows:
            key += "+"
        rows[key] = (
            Text(exact_time(event.at)),
            safe_text(event.kind, limit=30),
            Text(where),
            safe_text(f"{describe_state(event.before)} → {describe_state(event.after)}", limit=200),
        )
    return rows


@dataclass
class HostLoaded(Message):
    address: str
    ports: list[PortRow]
    events: list[ChangeEvent]


class HostScreen(ConsoleScreen):
    """Pushed over the overview or the triage queue; `esc` returns."""

    TITLE_TEXT = "Host"

    BINDINGS = [
        Binding("r", "rescan", "Rescan host", id="host.rescan"),
        Binding("escape", "back", "Back", id="host.back"),
    ]

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address
        self.ports: list[PortRow] = []
        self.events: list[ChangeEvent] = []
        self.port_filter: str | None = None
        self.loaded = False

    def compose_body(self) -> ComposeResult:
        yield Static(id="host-title", classes="title")
        yield KeyedTable(PORT_COLUMNS, id="ports", pinned=2, flex="justification")
        yield Static(id="history-title", classes="title")
        yield KeyedTable(HISTORY_COLUMNS, id="history", flex="change")

    def reload(self) -> None:
        self.load_host()

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="host-load", description="read host"
    )
    def load_host(self) -> None:
        monitor = self.console.monitor
        try:
            ports = monitor.host_ports(self.address)
            events = monitor.history(self.address)
        except UserError as error:
            self.console.report_error(str(error))
            return
        self.post_message(HostLoaded(self.address, ports, events))

    def on_host_loaded(self, message: HostLoaded) -> None:
        self.ports = message.ports
        self.events = message.events
        self.loaded = True
        self.show_data()

    def port_rows(self) -> dict[str, Sequence[Text]]:
        alert = self.console.alert_style()
        rows: dict[str, Sequence[Text]] = {}
        for port in self.ports:
            flagged = port.approval != "approved"
            style = alert if flagged else ""
            who = " — ".join(
                p for p in (clean(port.justification, 200), clean(port.owner, 60)) if p
            )
            product = " ".join(p for p in (port.product, port.version) if p)
            rows[port_key(port.host, port.port, port.proto)] = (
                Text("!" if flagged else " ", style=style),
                Text(f"{port.port}/{port.proto}", style=style),
                safe_text(port.service or "-", style, limit=24),
                safe_text(product or "-", style, limit=40),
                safe_text(port.state, style, limit=12),
                Text(port.approval, style=style),
                safe_text(who or "-", style, limit=300),
                Text(table_time(port.first_seen), style=style),
                Text(table_time(port.last_seen), style=style),
            )
        return rows

    def show_data(self) -> None:
        snapshot = self.console.snapshot
        row = None
        if snapshot is not None:
            row = snapshot.hosts_by_address.get(self.address)
        title = Text()
        title.append(clean(self.address, 45), style="bold")
        if row is not None:
            if row.name:
                title.append(f" · {clean(row.name, 30)}")
            title.append(f" · {row.status} · {row.open_ports} open · ")
            title.append(f"{row.unapproved} unapproved", style="bold" if row.unapproved else "")
            title.append(f" · last seen {short_time(row.last_seen)}")
        elif not self.loaded:
            title.append(" · loading…")
        self.query_one("#host-title", Static).update(title)
        self.query_one("#ports", KeyedTable).sync(
            filtered(self.port_rows(), self.filter_text),
            self.empty_hint("No open ports seen on this host: r rescans it now.")
            if self.loaded
            else "Loading…",
        )
        label = Text("History", style="bold")
        label.append(
            f" of {self.port_filter} (enter on another port to switch)"
            if self.port_filter
            else " (enter on a port for its timeline)"
        )
        self.query_one("#history-title", Static).update(label)
        self.query_one("#history", KeyedTable).sync(
            history_rows(self.events, self.port_filter),
            "No changes recorded yet: they appear after the next scans." if self.loaded else "",
        )

    def on_keyed_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        if event.table.id != "ports" or not event.key:
            return
        chosen = event.key.rsplit(":", 1)[-1]
        self.port_filter = None if self.port_filter == chosen else chosen
        self.show_data()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "rescan":
            return self.console.can_write()
        return True

    def action_rescan(self) -> None:
        self.console.start_rescan(self.address)
