"""The fleet at a glance: every host, its open and unapproved ports, updated live."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult

from portconsole.tui.safe import safe_text, table_time
from portconsole.tui.screens.base import ConsoleScreen, filtered
from portconsole.tui.widgets import KeyedTable
from portconsole.tui.widgets.table_model import LazyRows, address_key

if TYPE_CHECKING:
    from portconsole.core.monitor import HostRow

UNAPPROVED_MARK = "!"

# Fixed widths: the table never measures its rows (10,000 hosts). Name/group flexes.
HOST_COLUMNS = [
    ("mark", " ", 1),
    ("address", "Address", 15),
    ("name", "Name/group", 40),
    ("open", "Open", 4),
    ("unapproved", "Unappr", 6),
    ("last_seen", "Last seen (UTC)", 15),
    ("status", "Status", 7),
]

# How each column sorts, from the host itself (no cell is built to sort 10,000 rows).
_NEVER = datetime.min.replace(tzinfo=UTC)
HOST_SORT: dict[str, Callable[[HostRow], Any]] = {
    "mark": lambda h: bool(h.unapproved),
    "address": lambda h: address_key(h.address),
    "name": lambda h: h.name.lower(),
    "open": lambda h: h.open_ports,
    "unapproved": lambda h: h.unapproved,
    "last_seen": lambda h: h.last_seen or _NEVER,
    "status": lambda h: h.status,
}


def host_search_text(host: HostRow) -> str:
    """What the `/` filter looks in: the row's text, without building its cells."""
    unapproved = str(host.unapproved) if host.unapproved else "-"
    return (
        f"{host.address} {host.name} {host.open_ports} {unapproved} "
        f"{table_time(host.last_seen)} {host.status}"
    )


class OverviewScreen(ConsoleScreen):
    TITLE_TEXT = "Overview"

    def __init__(self) -> None:
        super().__init__()
        # address -> (what the row was built from, its cells): unchanged hosts keep their
        # cells, and a changed host keeps the cells that did not change.
        self._row_cache: dict[str, tuple[tuple[object, ...], Sequence[Text]]] = {}

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(HOST_COLUMNS, id="hosts", pinned=2, flex="name")

    def host_rows(self) -> LazyRows[HostRow]:
        """Every host by address; a row's cells are built when the table draws it."""
        snapshot = self.console.snapshot
        hosts = snapshot.hosts_by_address if snapshot is not None else {}
        alert = self.console.alert_style()
        fresh_hosts = self.console.alerts.unseen_hosts()  # marked until their alert is seen
        cache = self._row_cache
        if len(cache) > 2 * len(hosts) + 100:
            cache.clear()  # hosts forgotten since: do not keep their rows forever

        def build(host: HostRow) -> Sequence[Text]:
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
                return cached[1]
            cells = host_cells(host, alert, host.address in fresh_hosts)
            if cached is not None:
                cells = reuse_unchanged(cached[1], cells)
            cache[host.address] = (source, cells)
            return cells

        return LazyRows(hosts, build, search=host_search_text, sort_values=HOST_SORT)

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

    def on_keyed_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        if event.key:
            self.console.open_host(event.key)


def host_cells(host: HostRow, alert: str, fresh: bool) -> tuple[Text, ...]:
    style = alert if host.unapproved else ""
    status_style = "bold" if host.status == "down" else ""
    return (
        Text(
            UNAPPROVED_MARK if host.unapproved else " ",
            style=f"{style} reverse" if fresh else style,
        ),
        safe_text(host.address, style, limit=45),
        safe_text(host.name, style, limit=120),
        Text(str(host.open_ports), style=style, justify="right"),
        Text(str(host.unapproved) if host.unapproved else "-", style=style, justify="right"),
        Text(table_time(host.last_seen), style=style),
        Text(host.status, style=status_style or style),
    )


def reuse_unchanged(old: Sequence[Text], new: tuple[Text, ...]) -> tuple[Text, ...]:
    """`new`, with each cell that reads and looks the same as before kept as it was."""
    return tuple(
        before
        if before.plain == after.plain
        and before.style == after.style
        and before.spans == after.spans
        else after
        for before, after in zip(old, new, strict=True)
    )
