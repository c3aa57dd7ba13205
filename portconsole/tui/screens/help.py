"""`?`: every key that works here, read from the live bindings (so remapped keys show)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

INTRO = (
    "PortConsole watches the ports your hosts expose and keeps the evidence. "
    "Rows marked ! have unapproved ports. Every decision is recorded under your name."
)


def bindings_table(screen: Screen[object]) -> Table:
    """The keys in two columns of (key, action) pairs, so a screen's keys fit 80x24."""
    rows: list[tuple[Text, Text]] = []
    seen: set[str] = set()
    for _key, active in sorted(
        screen.active_bindings.items(), key=lambda kv: kv[1].binding.description
    ):
        binding = active.binding
        # Our bindings all carry an id; Textual's own (copy, focus...) are noise here.
        if not binding.description or binding.system or not binding.id:
            continue
        if binding.id.startswith("table.") and binding.id != "table.open":
            continue
        label = screen.app.get_key_display(binding)
        signature = f"{label}|{binding.description}"
        if signature in seen:
            continue
        seen.add(signature)
        state = "" if active.enabled else " (not available here)"
        rows.append((Text(label), Text(binding.description + state)))
    rows.append((Text("ctrl+p"), Text("Command palette")))
    rows.append((Text("j / k"), Text("Down / up (arrows too)")))
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    for _ in range(2):
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("action", ratio=1)
    half = (len(rows) + 1) // 2
    for left, right in zip(rows[:half], [*rows[half:], (Text(""), Text(""))], strict=False):
        table.add_row(*left, *right)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "close", "Close", id="help.close"),
    ]

    def __init__(self, under: Screen[object]) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(Text("Keys", style="bold"), classes="dialog-title")
            yield Static(Text(INTRO))
            yield Static(bindings_table(self.under))

    def action_close(self) -> None:
        self.dismiss(None)
