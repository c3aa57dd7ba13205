"""Decision dialogs. Each one names who you are before you confirm, because every decision
is recorded under that identity in the audit chain; each writes through Monitor in a thread
and shows a refusal inline (the form keeps what was typed).

Typed text is never a hotkey: the first field has the focus before the dialog takes a key
(on mount, not after a refresh), keys that arrive together keep their order (tui/keys.py),
the acknowledge dialog answers only to enter and esc, and a y/n question ignores keys typed
before it was on screen. Note, close and acknowledge take several findings (rows marked in
triage): one transaction, one event per finding."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import _time, events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from portconsole.core.errors import UserError
from portconsole.tui.keys import FieldInput, forward_to_focus
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

    def on_mount(self) -> None:
        # The first field takes the focus now, before any key reaches the dialog.
        fields = [f for f in self.query(FieldInput) if f.display]
        if fields:
            self.set_focus(fields[0])
        else:
            self.set_focus(self.query_one("#confirm", Button))

    def on_key(self, event: events.Key) -> None:
        forward_to_focus(self, event)

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
    """A decision on one finding, or on several (`more`: the other rows marked)."""

    def __init__(self, finding: Finding, more: Sequence[Finding] = ()) -> None:
        super().__init__()
        self.finding = finding
        self.findings = [finding, *(f for f in more if f.id != finding.id)]

    @property
    def ids(self) -> list[str]:
        return [f.id for f in self.findings]

    def subject(self) -> Text:
        if len(self.findings) == 1:
            return describe_finding(self.finding)
        shown = ", ".join(self.ids[:6]) + (" …" if len(self.ids) > 6 else "")
        text = Text(f"{len(self.findings)} marked findings: ", style="bold")
        text.append(shown)
        return text


def field_row(label: str, field_id: str, value: str = "", placeholder: str = "") -> Horizontal:
    return Horizontal(
        Label(label, classes="field-label"),
        FieldInput(value=value, placeholder=placeholder, id=field_id, compact=True),
        classes="field",
        id=f"row-{field_id}",
    )


class TextDecision(DecisionDialog):
    """Flag or reopen (reason required), note (text required), close (cause required)."""

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
        "reopen": (
            "Reopen this finding (new again)",
            "Reopen",
            "Reason*",
            "why it needs attention again",
            "A reason",
        ),
    }
    MANY = {"note": "Add a note to each", "close": "Close each with the same root cause (final)"}

    def __init__(self, finding: Finding, kind: str, more: Sequence[Finding] = ()) -> None:
        if kind not in self.KINDS or (more and kind not in self.MANY):
            raise ValueError(kind)
        super().__init__(finding, more)
        self.kind = kind

    def heading(self) -> str:
        if len(self.findings) > 1:
            return self.MANY[self.kind]
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
        ids = self.ids
        if self.kind == "close":

            def close() -> str:
                done = monitor.close_many(ids, cause=text)
                return f"Closed {', '.join(f.id for f in done)}"

            return close
        if self.kind == "reopen":

            def reopen() -> str:
                done = monitor.reopen(finding_id, reason=text)
                return f"Reopened {done.id}: new again"

            return reopen
        if self.kind == "flag":

            def flag() -> str:
                done = monitor.flag(finding_id, reason=text)
                return f"Flagged {done.id}"

            return flag

        def note() -> str:
            done = monitor.note_many(ids, text)
            return f"Noted on {', '.join(f.id for f in done)}"

        return note


class ConfirmDecision(DecisionDialog):
    """A decision with no fields: acknowledge. Enter confirms, esc cancels: no letter
    answers it, so text typed into it (meant for a field) cannot."""

    def __init__(self, finding: Finding, kind: str = "ack", more: Sequence[Finding] = ()) -> None:
        super().__init__(finding, more)
        self.kind = kind

    def heading(self) -> str:
        if len(self.findings) > 1:
            return f"Acknowledge these {len(self.findings)} findings? (you are looking into them)"
        return "Acknowledge this finding? (you are looking into it)"

    def hint(self) -> str:
        return "enter: acknowledge · esc: cancel"

    def confirm_label(self) -> str:
        return "Acknowledge"

    def prepare(self) -> Callable[[], str] | None:
        monitor = self.console.monitor
        ids = self.ids

        def ack() -> str:
            done = monitor.ack_many(ids)
            return f"Acknowledged {', '.join(f.id for f in done)}"

        return ack


class ConfirmScreen(ModalScreen[bool]):
    """A plain y/n question (pause monitoring, quit, overwrite a file), naming who is asking.

    y and n answer it only when typed after the question was on screen: keys that arrived
    with the one that asked it (a paste, a burst over SSH) are not answers."""

    BINDINGS = [
        Binding("escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, actor: object) -> None:
        super().__init__()
        self.question = question
        self.actor = actor
        self.shown_at = float("inf")

    def on_mount(self) -> None:
        self.shown_at = _time.get_time()

    def on_key(self, event: events.Key) -> None:
        if event.key not in ("y", "n"):
            return
        event.stop()
        event.prevent_default()
        if event.time >= self.shown_at:
            self.action_answer(event.key == "y")

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.question, style="bold"), classes="dialog-title")
            yield Static(who_line(self.actor), id="dialog-who")
            yield Static("y: yes · n or esc: no", classes="dialog-hint")

    def action_answer(self, yes: bool) -> None:
        if self.is_current:  # one answer: a second key finds the question gone
            self.dismiss(yes)
