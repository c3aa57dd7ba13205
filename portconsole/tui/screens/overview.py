"""The fleet at a glance: every host, its open and unapproved ports, updated live."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable

from portconsole.tui.safe import safe_text, table_time
from portconsole.tui.screens.base import ConsoleScreen, filtered
from portconsole.tui.widgets import KeyedTable

UNAPPROVED_MARK = "!"

HOST_COLUMNS = [
    ("mark", " "),
    ("address", "Address"),
    ("name", "Name/group"),
    ("open", "Open"),
    ("unapproved", "Unappr"),
    ("last_seen", "Last seen (UTC)"),
    ("status", "Status"),
]


class OverviewScreen(ConsoleScreen):
    TITLE_TEXT = "Overview"

    def __init__(self) -> None:
        super().__init__()
        # address -> (what the row was built from, its cells): unchanged hosts keep their
        # cell tuples, so a refresh of 1,000 hosts rebuilds only the few that changed.
        self._row_cache: dict[str, tuple[tuple[object, ...], Sequence[Text]]] = {}

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(HOST_COLUMNS, id="hosts", pinned=2, flex="name")

    def host_rows(self) -> dict[str, Sequence[Text]]:
        snapshot = self.console.snapshot
        if snapshot is None:
            return {}
        alert = self.console.alert_style()
        fresh_hosts = self.console.alerts.unseen_hosts()  # marked until their alert is seen
        rows: dict[str, Sequence[Text]] = {}
        cache = self._row_cache
        fresh: dict[str, tuple[tuple[object, ...], Sequence[Text]]] = {}
        for host in snapshot.hosts:
            source = (
                host.name,
                host.open_ports,
                host.unapproved,
                host.last_seen,
                host.status,
                alert,
                host.address in fresh_hosts,
            )
            cached = cache.get(host.address)
            if cached is not None and cached[0] == source:
                rows[host.address] = cached[1]
                fresh[host.address] = cached
                continue
            style = alert if host.unapproved else ""
            status_style = "bold" if host.status == "down" else ""
            rows[host.address] = (
                Text(
                    UNAPPROVED_MARK if host.unapproved else " ",
                    style=f"{style} reverse" if host.address in fresh_hosts else style,
                ),
                safe_text(host.address, style, limit=45),
                safe_text(host.name, style, limit=120),
                Text(str(host.open_ports), style=style, justify="right"),
                Text(
                    str(host.unapproved) if host.unapproved else "-", style=style, justify="right"
                ),
                Text(table_time(host.last_seen), style=style),
                Text(host.status, style=status_style or style),
            )
            fresh[host.address] = (source, rows[host.address])
        self._row_cache = fresh
        return rows

    def show_data(self) -> None:
        if self.console.snapshot is None:
            empty = "Loading…"
        else:
            empty = self.empty_hint(
                "No hosts yet: s scans now; the targets are the [groups] in the config "
                "(portconsole paths shows where it is)."
            )
        self.query_one("#hosts", KeyedTable).sync(
            filtered(self.host_rows(), self.filter_text), empty
        )

    def action_open_host(self) -> None:
        key = self.query_one("#hosts", KeyedTable).selected_key
        if key:
            self.console.open_host(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.console.open_host(event.row_key.value)
