"""What every main screen shares: the status header, a `/` filter, `esc` to back out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input

from portconsole.tui.keys import FieldInput
from portconsole.tui.widgets import KeyedTable, StatusHeader
from portconsole.tui.widgets.footer import FittingFooter
from portconsole.tui.widgets.table_model import BIG_TABLE, Filtered, LazyRows

if TYPE_CHECKING:
    from portconsole.tui.app import PortConsoleApp


def matches(filter_text: str, cells: Sequence[Text]) -> bool:
    """Case-insensitive substring match over a row's visible text."""
    if not filter_text:
        return True
    needle = filter_text.lower()
    return any(needle in cell.plain.lower() for cell in cells)


def filtered(rows: Mapping[str, Sequence[Text]], filter_text: str) -> Mapping[str, Sequence[Text]]:
    """The rows the `/` filter keeps (lazy rows are searched without building their cells)."""
    if not filter_text:
        return rows
    if isinstance(rows, LazyRows):
        if len(rows) > BIG_TABLE:
            return Filtered(rows, filter_text.lower())  # searched in the table's thread
        return rows.matching(filter_text.lower())
    return {key: cells for key, cells in rows.items() if matches(filter_text, cells)}


class ConsoleScreen(Screen[None]):
    """A main screen. Subclasses compose their body and draw from `self.console`'s data."""

    TITLE_TEXT = "PortConsole"

    BINDINGS = [
        Binding("slash", "start_filter", "Filter", id="screen.filter"),
        Binding("escape", "back", "Back", show=False, id="screen.back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.generation_shown = -1
        self.filter_text = ""

    @property
    def console(self) -> PortConsoleApp:
        return cast("PortConsoleApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusHeader()
        yield from self.compose_body()
        # Keys typed into it and the enter that ends them run in order (tui/keys.py).
        yield FieldInput(placeholder="filter rows (esc clears)", id="filter", compact=True)
        # Compact, and what does not fit (ctrl+p too) is under `?`.
        yield FittingFooter(compact=True, show_command_palette=False)

    def compose_body(self) -> ComposeResult:
        yield from ()

    # ----- data ----------------------------------------------------------------------
    def on_screen_resume(self) -> None:
        self.refresh_view()

    def refresh_view(self, force: bool = False) -> None:
        """Redraw from the app's newest snapshot if it is newer than what is shown."""
        if not self.is_mounted:
            # Still composing (a view key was just pressed when a store read landed): its
            # tables do not exist yet, and it draws itself when it opens (on_screen_resume).
            return
        self.update_header()
        if force or self.generation_shown != self.console.generation:
            self.generation_shown = self.console.generation
            self.show_data()
            self.reload()

    def empty_hint(self, what_next: str) -> str:
        """What an empty table says: the filter's doing, or `what_next` (how to fill it)."""
        if self.filter_text:
            return f"No rows match {self.filter_text!r}: esc clears the filter."
        return what_next

    def update_header(self) -> None:
        for header in self.query(StatusHeader):
            header.show(self.console.header_state(self.TITLE_TEXT))

    def show_data(self) -> None:
        """Draw from `self.console.snapshot` (runs on the event loop: must be quick)."""

    def reload(self) -> None:
        """Start this screen's own thread reads (host ports, history, audit) if it has any."""

    def restyle(self) -> None:
        """The theme changed: redraw every cell with the new colours."""
        for table in self.query(KeyedTable):
            table.invalidate()
        self.show_data()

    # ----- filter and back -----------------------------------------------------------
    def action_start_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-active")
        self.set_focus(box)  # at once: the keys typed right after `/` are the filter's

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value.strip()
            self.show_data()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.stop()
            if not event.value.strip():
                event.input.remove_class("-active")
            self.focus_main()

    def focus_main(self) -> None:
        tables = self.query(KeyedTable)
        if tables:
            self.set_focus(tables.first())

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_class("-active") or self.filter_text:
            box.value = ""
            self.filter_text = ""
            box.remove_class("-active")
            self.show_data()
            self.focus_main()
            return
        self.console.back_out()
