"""`?`: every key that works here, read from the live bindings (so remapped keys show)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from portconsole.core.timeutil import TIME_FORMS_HELP

INTRO = (
    "PortConsole watches the ports your hosts expose and keeps the evidence. "
    "Rows marked ! have unapproved ports. Every decision is recorded under your name. "
    f"Times you type: {TIME_FORMS_HELP}."
)


def bindings_table(screen: Screen[object]) -> Table:
    """The keys in two columns of (key, action) pairs, so a screen's keys fit 80x24."""
    sections: dict[str, list[tuple[Text, Text]]] = {name: [] for name in SECTIONS}
    seen: set[str] = set()
    for _key, active in sorted(
        screen.active_bindings.items(), key=lambda kv: kv[1].binding.description
    ):
        binding = active.binding
        # Our bindings all carry an id; Textual's own (copy, focus...) are noise here.
        if not binding.description or binding.system or not binding.id:
            continue
        if binding.id in ("table.down", "table.up"):
            continue
        label = screen.app.get_key_display(binding)
        signature = f"{label}|{binding.description}"
        if signature in seen:
            continue
        seen.add(signature)
        state = "" if active.enabled else " (not available here)"
        sections[section_of(binding.id)].append((Text(label), Text(binding.description + state)))
    sections["Tables"].append((Text("j / k"), Text("Down / up (arrows too)")))
    sections["Everywhere"].append((Text("ctrl+p"), Text("Command palette")))
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    for _ in range(2):
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("action", ratio=1)
    for name, rows in sections.items():
        if not rows:
            continue
        table.add_row(Text(name, style="bold underline"), Text(""), Text(""), Text(""))
        half = (len(rows) + 1) // 2
        for left, right in zip(rows[:half], [*rows[half:], (Text(""), Text(""))], strict=False):
            table.add_row(*left, *right)
    return table


# The keys of the view first, then what every table does, then what works everywhere.
SECTIONS = ("This view", "Tables", "Everywhere")


def section_of(binding_id: str) -> str:
    if binding_id.startswith("app."):
        return "Everywhere"
    if binding_id.startswith(("table.", "sort.", "screen.")):
        return "Tables"
    return "This view"


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
