"""Export a report from the console (the same export as `portconsole report`). A file (or,
for csv, a folder) that exists already is overwritten only after a y/n."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from portconsole.core.errors import UserError
from portconsole.core.timeutil import parse_iso
from portconsole.tui.keys import FieldInput, forward_to_focus
from portconsole.tui.safe import clean
from portconsole.tui.screens.forms import ConfirmScreen, field_row, who_line

if TYPE_CHECKING:
    from portconsole.tui.app import PortConsoleApp

FORMATS = ("html", "json", "csv", "md")


log = logging.getLogger(__name__)


@dataclass
class ExportDone(Message):
    paths: list[Path]


@dataclass
class ExportRefused(Message):
    text: str


class ExportForm(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="export.cancel"),
        Binding("ctrl+s", "submit", "Export", id="export.submit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.busy = False

    @property
    def console(self) -> PortConsoleApp:
        return cast("PortConsoleApp", self.app)

    def compose(self) -> ComposeResult:
        default = self.default_for("html")
        self.default_path = str(default)
        with Vertical(id="dialog"):
            yield Static(Text("Export a report", style="bold"), classes="dialog-title")
            yield Static(who_line(self.console.monitor.actor), id="dialog-who")
            yield field_row("File*", "path", str(default))
            yield field_row("Format", "fmt", "html", "html, json, csv or md")
            yield field_row("As of", "at", "", "now, or 2026-05-27T12:00Z")
            yield Static(id="form-error")
            yield Static("enter: export · esc: cancel", classes="dialog-hint")

    def on_mount(self) -> None:
        # The file field takes the focus before any key reaches the dialog.
        self.set_focus(self.query_one("#path", FieldInput))

    def on_key(self, event: events.Key) -> None:
        forward_to_focus(self, event)

    def default_for(self, fmt: str) -> Path:
        stamp = self.console.now().strftime("%Y%m%d")
        suffix = {"html": ".html", "json": ".json", "md": ".md", "csv": ""}.get(fmt, "")
        return Path.cwd() / f"portconsole-report-{stamp}{suffix}"

    def value(self, field_id: str) -> str:
        return self.query_one(f"#{field_id}", Input).value.strip()

    def action_submit(self) -> None:
        if self.busy:
            return
        path_text = self.value("path")
        fmt = self.value("fmt").lower() or "html"
        at_text = self.value("at")
        error = self.query_one("#form-error", Static)
        if not path_text:
            error.update(Text("A file name is required.", style="bold"))
            return
        if fmt not in FORMATS:
            error.update(Text(f"Format must be one of {', '.join(FORMATS)}.", style="bold"))
            return
        if path_text == self.default_path:
            # The untouched default follows the format (a csv pack is a folder).
            path_text = str(self.default_for(fmt))
        try:
            # Blank or "now": the fleet as it is now (an export must name a time).
            at = parse_iso(at_text) if at_text and at_text.lower() != "now" else self.console.now()
        except ValueError as problem:
            error.update(Text(clean(problem, 200), style="bold"))
            return
        path = Path(path_text).expanduser()
        if path.exists():

            def answered(yes: bool | None) -> None:
                if yes:
                    self.start_export(path, fmt, at)
                else:
                    error.update(Text("Not overwritten: name another file.", style="bold"))
                    self.query_one("#path", Input).focus()

            self.app.push_screen(
                ConfirmScreen(
                    f"{clean(path, 120)} exists. Overwrite it?", self.console.monitor.actor
                ),
                answered,
            )
            return
        self.start_export(path, fmt, at)

    def start_export(self, path: Path, fmt: str, at: Any) -> None:
        self.busy = True
        self.query_one("#form-error", Static).update(Text("exporting…", style="italic"))
        self.run_export(path, fmt, at)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export", description="export")
    def run_export(self, path: Path, fmt: str, at: Any) -> None:
        export = getattr(self.console.monitor, "export_report", None)
        if export is None:
            self.post_message(ExportRefused("Reports are not available in this build."))
            return
        try:
            paths = export(path, at=at, fmt=fmt)
        except UserError as problem:
            self.post_message(ExportRefused(str(problem)))
            return
        except OSError as problem:
            self.post_message(ExportRefused(f"cannot write {path}: {problem.strerror}"))
            return
        except Exception as problem:  # noqa: BLE001 - a bug must not trap the operator
            log.exception("export failed")
            self.post_message(ExportRefused(f"export failed: {problem}"))
            return
        self.post_message(ExportDone(list(paths)))

    def on_export_done(self, message: ExportDone) -> None:
        names = ", ".join(str(p) for p in message.paths) or "nothing written"
        self.console.notify(f"Report written: {names}", title="Export", markup=False)
        self.dismiss(None)

    def on_export_refused(self, message: ExportRefused) -> None:
        self.busy = False
        self.query_one("#form-error", Static).update(Text(clean(message.text, 300), style="bold"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def action_cancel(self) -> None:
        if not self.busy:
            self.dismiss(None)
