"""A screen that shows one record whole (a finding, an audit event): scrollable, and `y`
copies it as plain text, the way it reads on screen, to paste into a ticket.

Toasts and two-line panes cut a record at 80x24; this is where it is read in full. The text
is built by the subclass from untrusted values with `clean`, so what is shown and what is
copied carries no markup and no control characters.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from portconsole.tui.safe import clean
from portconsole.tui.screens.base import ConsoleScreen

# Beyond this many lines the screen shows the head and says how much more `y` copies:
# a migration event's effects can be whole tables, and a Static of them would stall.
SHOWN_LINES = 3000


class DocumentScreen(ConsoleScreen):
    """Subclasses set `what` (named in the copy toast) and implement `document()`."""

    BINDINGS = [
        Binding("y", "copy", "Copy as text", id="document.copy"),
        Binding("j", "scroll_down", "Down", show=False, id="document.down"),
        Binding("k", "scroll_up", "Up", show=False, id="document.up"),
        Binding("escape", "back", "Back", id="document.back"),
    ]

    what = "record"

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="document-scroll"):
            yield Static(Text("loading…", style="italic"), id="document-text")

    def on_mount(self) -> None:
        self.focus_main()

    def focus_main(self) -> None:
        self.query_one("#document-scroll", VerticalScroll).focus()

    def document(self) -> Text | None:
        """The whole record as styled text, or None while it is not (yet) there."""
        raise NotImplementedError

    def missing_text(self) -> str:
        return "loading…"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start_filter":
            return False  # one record: nothing to filter (hidden)
        if action == "copy":
            return self.document() is not None
        return True

    def show_data(self) -> None:
        body = self.query_one("#document-text", Static)
        text = self.document()
        if text is None:
            body.update(Text(self.missing_text(), style="italic"))
            return
        lines = text.split("\n", allow_blank=True)
        if len(lines) > SHOWN_LINES:
            text = Text("\n").join(lines[:SHOWN_LINES])
            text.append(
                f"\n… {len(lines) - SHOWN_LINES} more lines: y copies them all", style="italic"
            )
        body.update(text)

    def action_scroll_down(self) -> None:
        self.query_one("#document-scroll", VerticalScroll).scroll_down(animate=False)

    def action_scroll_up(self) -> None:
        self.query_one("#document-scroll", VerticalScroll).scroll_up(animate=False)

    def action_copy(self) -> None:
        text = self.document()
        if text is None:
            return
        plain = text.plain
        self.app.copy_to_clipboard(plain)
        self.app.notify(
            f"Copied {clean(self.what, 60)} ({plain.count(chr(10)) + 1} lines) to the clipboard",
            title="Copied",
            markup=False,
        )
