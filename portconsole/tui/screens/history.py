"""The fleet as it was at a moment, and the timeline of any host or port."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, Static

from portconsole.core.domain.model import port_key
from portconsole.core.errors import UserError
from portconsole.core.timeutil import parse_when
from portconsole.tui.safe import clean, exact_time, safe_text
from portconsole.tui.screens.base import ConsoleScreen, filtered
from portconsole.tui.screens.host import describe_state
from portconsole.tui.widgets import KeyedTable
from portconsole.tui.widgets.table_model import LazyRows, address_key

if TYPE_CHECKING:
    from portconsole.core.domain.state import ChangeEvent, PointInTime

# Fixed widths: a point in time of 10,000 hosts is 200,000 rows, never measured.
ASOF_COLUMNS = [
    ("host", "Host", 15),
    ("port", "Port", 9),
    ("service", "Service", 10),
    ("product", "Product/version", 40),
    ("scan", "Last scan", 20),
]

TIMELINE_COLUMNS = [
    ("at", "When (UTC)"),
    ("host", "Host"),
    ("port", "Port"),
    ("kind", "Change"),
    ("change", "Before → after"),
]


@dataclass
class StateLoaded(Message):
    state: PointInTime


@dataclass
class TimelineLoaded(Message):
    label: str
    events: list[ChangeEvent]


def _field(item: Any, name: str, default: Any = "") -> Any:
    """Point-in-time rows may be dataclasses or dicts; read either."""
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)


def asof_key(item: Any) -> str:
    return port_key(
        str(_field(item, "host")), int(_field(item, "port", 0)), str(_field(item, "proto", "tcp"))
    )


def _product(item: Any) -> str:
    return " ".join(p for p in (_field(item, "product"), _field(item, "version")) if p)


def _scan(item: Any) -> str:
    scan = str(_field(item, "last_seen_scan_id") or _field(item, "last_scan_id"))
    return scan + ("" if _field(item, "covered", True) else " ?")


def asof_cells(item: Any) -> tuple[Text, ...]:
    return (
        safe_text(str(_field(item, "host")), limit=45),
        Text(f"{_field(item, 'port', 0)}/{_field(item, 'proto', 'tcp')}"),
        safe_text(_field(item, "service") or "-", limit=20),
        safe_text(_product(item) or "-", limit=120),
        safe_text(_scan(item), limit=30),
    )


def asof_search_text(item: Any) -> str:
    """What the `/` filter looks in: the row's text, without building its cells."""
    return (
        f"{_field(item, 'host')} {_field(item, 'port', 0)}/{_field(item, 'proto', 'tcp')} "
        f"{_field(item, 'service') or '-'} {_product(item) or '-'} {_scan(item)}"
    )


# How each column sorts, from the port itself (no cell is built to sort 200,000 rows).
ASOF_SORT: dict[str, Callable[[Any], Any]] = {
    "host": lambda item: address_key(str(_field(item, "host"))),
    "port": lambda item: (int(_field(item, "port", 0)), str(_field(item, "proto", "tcp"))),
    "service": lambda item: str(_field(item, "service") or "-").lower(),
    "product": lambda item: _product(item).lower(),
    "scan": _scan,
}


class HistoryScreen(ConsoleScreen):
    TITLE_TEXT = "History"

    BINDINGS = [
        Binding("a", "focus_asof", "As of…", id="history.asof"),
        Binding("escape", "back", "Back", show=False, id="history.back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.state: PointInTime | None = None
        # The as-of rows of `self.state`, by key, and the rows drawn so far.
        self._asof_for: PointInTime | None = None
        self._asof_sources: dict[str, Any] = {}
        self._asof_hosts = 0
        self._asof_built: dict[str, Sequence[Text]] = {}
        self.asked_at: datetime | None = None
        self.timeline_label = ""
        self.timeline: list[ChangeEvent] = []

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="asof-bar"):
            yield Label("As of (UTC) ", classes="field-label")
            yield Input(
                placeholder="now, 15:06, 1h ago, yesterday 14:00, 2026-11-20; enter",
                id="asof",
                compact=True,
            )
        yield Static(id="asof-summary", classes="title")
        yield KeyedTable(ASOF_COLUMNS, id="asof-ports", pinned=2, flex="product")
        yield Static(id="timeline-title", classes="title")
        yield KeyedTable(TIMELINE_COLUMNS, id="timeline", flex="change")

    def on_mount(self) -> None:
        # At once (not after a refresh): a view key sent right after must not meet the input.
        self.set_focus(self.query_one("#asof-ports", KeyedTable))

    def reload(self) -> None:
        self.load_state(self.asked_at)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="history-load",
        description="state at",
    )
    def load_state(self, at: datetime | None) -> None:
        try:
            state = self.console.monitor.state_at(at or self.console.now())
        except UserError as error:
            self.console.report_error(str(error))
            return
        self.post_message(StateLoaded(state))

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="timeline-load",
        description="timeline",
    )
    def load_timeline(self, host: str, port: int | None, proto: str | None) -> None:
        try:
            events = self.console.monitor.history(host, port, proto)
        except UserError as error:
            self.console.report_error(str(error))
            return
        label = clean(host, 45) if port is None else port_key(clean(host, 45), port, proto or "tcp")
        self.post_message(TimelineLoaded(label, events))

    def on_state_loaded(self, message: StateLoaded) -> None:
        self.state = message.state
        self.show_data()

    def on_timeline_loaded(self, message: TimelineLoaded) -> None:
        self.timeline_label = message.label
        self.timeline = message.events
        self.show_data()

    def asof_rows(self) -> LazyRows[Any]:
        """The open ports at that time by `host:port/proto`; a row is built when drawn
        (and kept while the same point in time is shown)."""
        state = self.state
        if state is not self._asof_for:
            self._asof_for = state
            items = state.open_ports if state is not None else []
            self._asof_sources = {asof_key(item): item for item in items}
            self._asof_hosts = len({str(_field(item, "host")) for item in items})
            self._asof_built = {}
        return LazyRows(
            self._asof_sources,
            asof_cells,
            search=asof_search_text,
            sort_values=ASOF_SORT,
            built=self._asof_built,
        )

    def timeline_rows(self) -> dict[str, Sequence[Text]]:
        rows: dict[str, Sequence[Text]] = {}
        for index, event in enumerate(sorted(self.timeline, key=lambda e: e.at, reverse=True)):
            where = f"{event.port}/{event.proto}" if event.port is not None else "host"
            rows[f"{index}"] = (
                Text(exact_time(event.at)),
                safe_text(event.host, limit=45),
                Text(where),
                safe_text(event.kind, limit=24),
                safe_text(
                    f"{describe_state(event.before)} → {describe_state(event.after)}", limit=200
                ),
            )
        return rows

    def show_data(self) -> None:
        summary = Text()
        if self.state is None:
            summary.append("loading…", style="italic")
        else:
            rows = self.asof_rows()
            summary.append(f"As of {exact_time(self.state.at)}: ", style="bold")
            summary.append(f"{len(rows)} open ports on {self._asof_hosts} hosts")
            uncovered = len(self.state.uncovered or [])
            if uncovered:
                summary.append(f" · ! {uncovered} not covered by a scan", style="bold")
        self.query_one("#asof-summary", Static).update(summary)
        self.query_one("#asof-ports", KeyedTable).sync(
            filtered(self.asof_rows(), self.filter_text),
            "Loading…"
            if self.state is None
            else self.empty_hint("No open ports at that time: a asks for another time."),
        )
        title = Text("Timeline", style="bold")
        if self.timeline_label:
            title.append(f" of {self.timeline_label} ({len(self.timeline)} events)")
        else:
            title.append(" (enter on a port above)")
        self.query_one("#timeline-title", Static).update(title)
        # Timeline rows are positional: rebuild them when the subject changes.
        self.query_one("#timeline", KeyedTable).sync(
            self.timeline_rows(),
            f"No changes recorded for {self.timeline_label}." if self.timeline_label else "",
        )

    def action_focus_asof(self) -> None:
        self.query_one("#asof", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "asof":
            super().on_input_submitted(event)
            return
        event.stop()
        text = event.value.strip()
        if not text or text.lower() == "now":
            self.asked_at = None
        else:
            try:
                self.asked_at = parse_when(text, self.console.now())
            except ValueError as error:
                # The message quotes what was typed: never read it as markup.
                self.app.notify(str(error), title="As of", severity="error", markup=False)
                return
        self.state = None
        self.show_data()
        self.load_state(self.asked_at)
        self.query_one("#asof-ports", KeyedTable).focus()

    def on_keyed_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        if event.table.id != "asof-ports" or not event.key:
            return
        host, _, rest = event.key.rpartition(":")
        port_text, _, proto = rest.partition("/")
        self.timeline = []
        self.query_one("#timeline", KeyedTable).sync({})
        self.load_timeline(host, int(port_text), proto)
