"""The command palette (ctrl+p): jump to a host, scan, pause or resume, export, review or
revoke an approval, reopen a finding, switch theme."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Matcher, Provider
from textual.content import Content
from textual.screen import ModalScreen

from portconsole.tui.safe import clean

if TYPE_CHECKING:
    from portconsole.tui.app import PortConsoleApp


@dataclass(frozen=True, slots=True)
class PaletteCommand:
    name: str
    run: Callable[[], object]
    help: str
    discover: bool = True


def highlight(matcher: Matcher, text: str) -> Content:
    """Like `Matcher.highlight`, but never parses `text` as markup (host names are untrusted)."""
    content = Content(text)
    _score, offsets = matcher.fuzzy_search.match(matcher.query, text)
    for offset in offsets:
        if not text[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content


def open_review(app: PortConsoleApp) -> None:
    """The review dialog, the approval's id typed (any approval in force, due or not)."""
    from portconsole.tui.screens.approval_forms import ReviewForm

    open_dialog(app, ReviewForm)


def open_dialog(app: PortConsoleApp, dialog: Callable[[], ModalScreen[str | None]]) -> None:
    """A decision dialog whose summary, once written, is shown as any decision's."""

    def written(message: str | None) -> None:
        if message:
            app.decision_written(message)

    app.push_screen(dialog(), written)


def console_commands(app: PortConsoleApp) -> list[PaletteCommand]:
    commands: list[PaletteCommand] = []
    writable = not app.monitor.readonly
    if writable:
        commands.append(
            PaletteCommand(
                "Scan now: every group",
                partial(app.start_scan, None),
                "Run one scan cycle of all groups",
            )
        )
        for group in sorted(app.monitor.settings.groups):
            commands.append(
                PaletteCommand(
                    f"Scan now: group {clean(group, 40)}",
                    partial(app.start_scan, group),
                    "Run one scan cycle of this group",
                )
            )
        paused = bool(app.snapshot and app.snapshot.overview.paused)
        commands.append(
            PaletteCommand("Resume monitoring", app.action_resume, "Scheduled scans run again")
            if paused
            else PaletteCommand(
                "Pause monitoring",
                app.action_pause,
                "Stop scheduled scans (recorded in the audit log)",
            )
        )
        commands.append(
            PaletteCommand("Export a report…", app.action_export, "Write an HTML/JSON/CSV report")
        )
        commands.append(
            PaletteCommand(
                "Review an approval…",
                partial(open_review, app),
                "Keep, change or retire an approval, with a note (PCI DSS 1.2.7)",
            )
        )
        from portconsole.tui.screens.undo_forms import ReopenForm, RevokeForm

        commands.append(
            PaletteCommand(
                "Revoke an approval…",
                partial(open_dialog, app, RevokeForm),
                "A mistaken approval: retired, and its port is a finding again",
            )
        )
        commands.append(
            PaletteCommand(
                "Reopen a finding…",
                partial(open_dialog, app, ReopenForm),
                "A flagged or closed finding becomes new again, with a reason",
            )
        )
    for mode, label in (
        ("overview", "Hosts overview"),
        ("triage", "Triage queue"),
        ("history", "History"),
        ("audit", "Audit log"),
    ):
        commands.append(PaletteCommand(f"Go to: {label}", partial(app.action_go, mode), ""))
    for name in app.theme_catalog.names():
        commands.append(
            PaletteCommand(
                f"Switch theme: {name}", partial(app.switch_theme, name), "Remembered for next time"
            )
        )
    if app.snapshot is not None:
        for host in app.snapshot.hosts:
            name = f" ({clean(host.name, 30)})" if host.name else ""
            commands.append(
                PaletteCommand(
                    f"Jump to host {clean(host.address, 45)}{name}",
                    partial(app.open_host, host.address),
                    f"{host.open_ports} open, {host.unapproved} unapproved",
                    discover=False,
                )
            )
    return commands


class ConsoleCommands(Provider):
    """PortConsole's own commands, beside Textual's system commands."""

    @property
    def console(self) -> PortConsoleApp:
        return cast("PortConsoleApp", self.app)

    async def discover(self) -> Hits:
        for command in console_commands(self.console):
            if command.discover:
                yield DiscoveryHit(
                    Content(command.name), command.run, text=command.name, help=command.help
                )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in console_commands(self.console):
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(
                    score,
                    highlight(matcher, command.name),
                    command.run,
                    text=command.name,
                    help=command.help,
                )
