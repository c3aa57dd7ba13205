"""Decision dialogs. Each one names who you are before you confirm, because every decision
is recorded under that identity in the audit chain; each writes through Monitor in a thread
and shows a refusal inline (the form keeps what was typed)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from portconsole.core.errors import UserError
from portconsole.tui.safe import clean

if TYPE_CHECKING:
    from portconsole.core.domain.finding import Finding
    from portconsole.tui.app import PortConsoleApp


log = logging.getLogger(__name__)


def describe_finding(finding: Finding) -> Text:
    where = clean(finding.host, 45)
    if finding.port is not None:
        where += f":{finding.port}/{finding.proto}"
    text = Text()
    text.append(f"{finding.id} ", style="bold")
    text.append(f"{clean(finding.kind, 30)} on {where}")
    if finding.service:
        text.append(f" ({clean(finding.service, 30)})")
    text.append(f" · {finding.severity}")
    return text


def who_line(actor: object) -> Text:
    text = Text("You are ")
    text.append(clean(actor, 120), style="bold")
    text.append(": recorded in the audit log.")
    return text


@dataclass
class WriteDone(Message):
    text: str


@dataclass
class WriteRefused(Message):
    text: str


class DialogBase(ModalScreen[str | None]):
    """Base for the dialogs: returns a one-line summary when written, None when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
        Binding("ctrl+s", "submit", "Confirm", id="dialog.submit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.busy = False

    def subject(self) -> Text:
        """What the decision is about (a finding, an approval)."""
        raise NotImplementedError

    @property
    def console(self) -> PortConsoleApp:
        return cast("PortConsoleApp", self.app)

    def heading(self) -> str:
        return "Decision"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.heading(), style="bold"), classes="dialog-title")
            yield Static(self.subject(), classes="dialog-finding")
            yield Static(who_line(self.console.monitor.actor), id="dialog-who")
            yield from self.compose_fields()
            yield Static(id="form-error")
            yield Static(self.hint(), classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.confirm_label(), id="confirm", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def compose_fields(self) -> ComposeResult:
        yield from ()

    def hint(self) -> str:
        return "enter: confirm · tab: next field · esc: cancel"

    def confirm_label(self) -> str:
        return "Confirm"

    def show_error(self, text: str, focus: str | None = None) -> None:
        self.query_one("#form-error", Static).update(Text(clean(text, 300), style="bold"))
        self.query_one("#form-error", Static).add_class("-shown")
        if focus:
            self.query_one(f"#{focus}", Input).focus()

    def value(self, field_id: str) -> str:
        return self.query_one(f"#{field_id}", Input).value.strip()

    def prepare(self) -> Callable[[], str] | None:
        """Validate; return the write to run in a thread (it returns the summary)."""
        raise NotImplementedError

    def action_submit(self) -> None:
        if self.busy:
            return
        write = self.prepare()
        if write is None:
            return
        self.busy = True
        self.query_one("#form-error", Static).update(Text("writing…", style="italic"))
        self.run_write(write)

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="decision", description="decision"
    )
    def run_write(self, write: Callable[[], str]) -> None:
        try:
            summary = write()
        except UserError as error:
            self.post_message(WriteRefused(str(error)))
            return
        except Exception as error:  # noqa: BLE001 - a failed write must not trap the dialog
            log.exception("decision failed")
            self.post_message(WriteRefused(f"could not record the decision: {error}"))
            return
        self.post_message(WriteDone(summary))

    def on_write_done(self, message: WriteDone) -> None:
        self.dismiss(message.text)

    def on_write_refused(self, message: WriteRefused) -> None:
        self.busy = False
        self.show_error(message.text)

    def action_cancel(self) -> None:
        if not self.busy:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm":
            self.action_submit()
        else:
            self.action_cancel()


class DecisionDialog(DialogBase):
    """A decision on one finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__()
        self.finding = finding

    def subject(self) -> Text:
        return describe_finding(self.finding)


def field_row(label: str, field_id: str, value: str = "", placeholder: str = "") -> Horizontal:
    return Horizontal(
        Label(label, classes="field-label"),
        Input(value=value, placeholder=placeholder, id=field_id, compact=True),
        classes="field",
        id=f"row-{field_id}",
    )


class TextDecision(DecisionDialog):
    """Flag (reason required) or note (text required)."""

    # kind: (heading, confirm label, field label, placeholder, what is missing)
    KINDS = {
        "flag": ("Flag this finding", "Flag", "Reason*", "why this needs attention", "A reason"),
        "note": ("Add a note", "Add note", "Note*", "what you found or did", "The note"),
        "close": (
            "Close this finding with its root cause (final)",
            "Close",
            "Cause*",
            "what caused it, e.g. scanner VM rebooted",
            "The cause",
        ),
    }

    def __init__(self, finding: Finding, kind: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(kind)
        super().__init__(finding)
        self.kind = kind

    def heading(self) -> str:
        return self.KINDS[self.kind][0]

    def confirm_label(self) -> str:
        return self.KINDS[self.kind][1]

    def compose_fields(self) -> ComposeResult:
        _heading, _label, field, placeholder, _missing = self.KINDS[self.kind]
        yield field_row(field, "text", placeholder=placeholder)

    def prepare(self) -> Callable[[], str] | None:
        text = self.value("text")
        if not text:
            self.show_error(f"{self.KINDS[self.kind][4]} is required.", "text")
            return None
        monitor = self.console.monitor
        finding_id = self.finding.id
        if self.kind == "close":

            def close() -> str:
                done = monitor.close_finding(finding_id, cause=text)
                return f"Closed {done.id}"

            return close
        if self.kind == "flag":

            def flag() -> str:
                done = monitor.flag(finding_id, reason=text)
                return f"Flagged {done.id}"

            return flag

        def note() -> str:
            done = monitor.note(finding_id, text)
            return f"Noted on {done.id}"

        return note


class ConfirmDecision(DecisionDialog):
    """A y/n decision with no fields: acknowledge."""

    BINDINGS = [
        Binding("y", "submit", "Yes", id="dialog.yes"),
        Binding("n,escape", "cancel", "No", id="dialog.no"),
    ]

    def __init__(self, finding: Finding, kind: str = "ack") -> None:
        super().__init__(finding)
        self.kind = kind

    def heading(self) -> str:
        return "Acknowledge this finding? (you are looking into it)"

    def hint(self) -> str:
        return "y: yes · n or esc: no"

    def confirm_label(self) -> str:
        return "Yes, acknowledge"

    def prepare(self) -> Callable[[], str] | None:
        monitor = self.console.monitor
        finding_id = self.finding.id

        def ack() -> str:
            done = monitor.ack(finding_id)
            return f"Acknowledged {done.id}"

        return ack

    def on_mount(self) -> None:
        self.query_one("#confirm", Button).focus()


class ConfirmScreen(ModalScreen[bool]):
    """A plain y/n question (pause monitoring...), naming who is asking."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, actor: object) -> None:
        super().__init__()
        self.question = question
        self.actor = actor

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.question, style="bold"), classes="dialog-title")
            yield Static(who_line(self.actor), id="dialog-who")
            yield Static("y: yes · n or esc: no", classes="dialog-hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
