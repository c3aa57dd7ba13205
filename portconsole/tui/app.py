"""The PortConsole operator console: a thin Textual shell over `Monitor`.

Every store read and every scan runs in a thread worker; results come back as typed
messages (messages.py). Two self-rescheduling polls keep it live: one re-reads the store
when `Monitor.data_version()` changes (a file stat every `[tui] refresh_seconds`, so another
console's scans and decisions appear within a few seconds), one asks to lead and runs the
scheduled scans that are due. Each poll schedules the next only after it has finished, so
a slow store never piles polls up.

Every snapshot, whoever wrote it, goes through an `AlertTracker` (alerts.py): new and
reopened findings raise a banner, a bell and a counter on every console, leading or not.

The app is split by concern into mixins: store reads and the data-version poll
(store_reads.py), scheduled and manual scans and quitting (scanning.py), themes and
preferences (preferences.py). This module holds the state, the bindings, the helpers the
screens call and the actions.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.style import Style
from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.color import Color, ColorParseError
from textual.screen import ModalScreen
from textual.widgets import Input

from portconsole.core.errors import UserError
from portconsole.core.services.supervisor import Supervisor
from portconsole.core.timeutil import utcnow
from portconsole.tui.alerts import AlertTracker
from portconsole.tui.commands import ConsoleCommands
from portconsole.tui.messages import ActionDone, ActionFailed, FleetSnapshot
from portconsole.tui.preferences import PreferencesMixin
from portconsole.tui.scanning import SCHEDULE_TICK_SECONDS, ScanningMixin, summarise
from portconsole.tui.screens.audit import AuditScreen
from portconsole.tui.screens.base import ConsoleScreen
from portconsole.tui.screens.export import ExportForm
from portconsole.tui.screens.forms import ConfirmScreen
from portconsole.tui.screens.help import HelpScreen
from portconsole.tui.screens.history import HistoryScreen
from portconsole.tui.screens.host import HostScreen
from portconsole.tui.screens.overview import OverviewScreen
from portconsole.tui.screens.triage import TriageScreen
from portconsole.tui.store_reads import FULL_RELOAD_SECONDS, StoreReadsMixin
from portconsole.tui.widgets import KeyedTable
from portconsole.tui.widgets.status import HeaderState, ScanState

if TYPE_CHECKING:
    from portconsole.core.monitor import Monitor


# The four views share one footer slot ("1234 Views"): 80 columns hold little else.
VIEWS = Binding.Group("Views", compact=True)


class PortConsoleApp(StoreReadsMixin, ScanningMixin, PreferencesMixin, App[None]):
    """The console. `monitor` is owned by the caller (it closes it)."""

    TITLE = "PortConsole"
    CSS_PATH = "portconsole.tcss"
    MODES: ClassVar[dict[str, str | Callable[[], object]]] = {  # type: ignore[assignment]
        "overview": OverviewScreen,
        "triage": TriageScreen,
        "history": HistoryScreen,
        "audit": AuditScreen,
    }
    DEFAULT_MODE = "overview"
    COMMANDS = App.COMMANDS | {ConsoleCommands}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="app.quit"),
        # Ctrl-C quits, as in any terminal program (Textual's default only shows a hint).
        Binding("ctrl+c", "interrupt", "Quit", show=False, priority=True, id="app.interrupt"),
        Binding("exclamation_mark", "alerts", "Alerts", show=False, id="app.alerts"),
        Binding("question_mark", "help", "Help", id="app.help"),
        # Not priority keys: a digit sent with `/` or `a` is text for the field that opens
        # (a priority key jumps the queue); tables run keys in order (tui/keys.py), and
        # action_view completes the switch before the next key is read.
        Binding("1", "view('overview')", "Hosts", id="app.overview", group=VIEWS),
        Binding("2,t", "view('triage')", "Triage", id="app.triage", group=VIEWS),
        Binding("3", "view('history')", "History", id="app.history", group=VIEWS),
        Binding("4", "view('audit')", "Audit", id="app.audit", group=VIEWS),
        Binding("s", "scan_now", "Scan", id="app.scan"),
        Binding("p", "pause", "Pause", id="app.pause"),
        Binding("p", "resume", "Resume", id="app.resume"),
        Binding("ctrl+r", "reload", "Reload", show=False, id="app.reload"),
    ]

    def __init__(
        self,
        monitor: Monitor,
        *,
        theme: str | None = None,
        schedule: bool = True,
        clock: Callable[[], datetime] | None = None,
        environ: Mapping[str, str] | None = None,
        preferences: Path | None = None,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.supervisor = Supervisor(monitor)
        self.schedule_enabled = schedule and not monitor.readonly
        self._clock = clock or utcnow
        self.refresh_seconds = float(monitor.settings.tui.refresh_seconds)
        # Data shown by every screen; `generation` moves each time a new snapshot lands.
        self.snapshot: FleetSnapshot | None = None
        self.generation = 0
        self.scan: ScanState | None = None
        self.leading = False
        self._requested = 0
        self._applied = -1
        self._dirty = False
        self._reading = False
        self._read_lock = threading.Lock()
        # The last full snapshot the UI thread has taken, and how many replaced ones are
        # still being freed: the reader waits for both (store_reads.wait_until_taken).
        self._taken = threading.Condition()
        self._handled = 0
        self._releasing = 0
        self._seen_version = ""
        self._last_load = 0.0
        self._last_reclaim = time.monotonic()
        self._last_episodes: dict[str, int] | None = None  # the last read's (store_reads.py)
        self._schedule_error = ""
        # New and reopened findings this operator has not seen yet (every console).
        self.alerts = AlertTracker()
        self.bell_threshold = monitor.settings.tui.bell
        self._quit_asked = False
        # Set on quit: running scans stop (nmap killed) instead of finishing.
        self.cancel_event = threading.Event()
        self._scan_guard = threading.Lock()
        # Themes and the operator's preferences (preferences.py).
        self._load_preferences(theme, environ, preferences)

    # ----- lifecycle -------------------------------------------------------------------
    def on_mount(self) -> None:
        # Notifications raised by this console's scans (or left in the outbox by others)
        # are delivered in the background; the monitor stops it on close.
        self.monitor.start_delivery()
        problems = self.theme_problems()
        if problems:
            # One toast for every broken file: reported once, at start.
            self.notify(
                "\n".join(problems), title="Themes", severity="warning", timeout=10, markup=False
            )
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        self.request_refresh()
        self.set_timer(self.refresh_seconds, self.poll_data_version)
        if self.schedule_enabled:
            self.scheduler_tick()

    # ----- shared helpers for screens --------------------------------------------------
    def now(self) -> datetime:
        return self._clock()

    def can_write(self) -> bool | None:
        """True when writes are allowed; None (shown, greyed out) in read-only mode."""
        return None if self.monitor.readonly else True

    def alert_style(self) -> str:
        """The theme's colour for unapproved and severe items, as a Rich style string."""
        value = self.theme_variables.get("error") or self.current_theme.error or "red"
        try:
            colour = Color.parse(value).rich_color.name
        except ColorParseError:
            colour = "red"
        return f"bold {colour}"

    def alert_rich_style(self) -> Style:
        return Style.parse(self.alert_style())

    def header_state(self, title: str) -> HeaderState:
        overview = self.snapshot.overview if self.snapshot else None
        return HeaderState(
            title, overview, self.scan, self.monitor.readonly, self.alerts.unseen(), self.now()
        )

    def is_unseen(self, finding_id: str) -> bool:
        """True while the finding's alert is unseen: its row is marked new."""
        return self.alerts.is_unseen(finding_id)

    def report_error(self, text: str) -> None:
        """Thread-safe: show a one-line error."""
        self.post_message(ActionFailed(text))

    def open_host(self, address: str) -> None:
        self.push_screen(HostScreen(address))

    def back_out(self) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()
        elif self.current_mode != "overview":
            self.switch_mode("overview")

    def decision_written(self, text: str) -> None:
        self.notify(text, title="Recorded", markup=False)
        self.request_refresh()

    def _redraw_current(self) -> None:
        # dolphie's rule: never redraw under an open dialog; the screen catches up on resume.
        if isinstance(self.screen, ModalScreen):
            return
        if isinstance(self.screen, ConsoleScreen):
            self.screen.refresh_view()

    def _redraw_header(self) -> None:
        if isinstance(self.screen, ConsoleScreen):
            self.screen.update_header()

    # ----- actions ---------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        paused = bool(self.snapshot and self.snapshot.overview.paused)
        if action == "pause":
            return False if paused else self.can_write()
        if action == "resume":
            return self.can_write() if paused else False
        if action in ("scan_now", "export"):
            return self.can_write()
        if action == "view" and (
            isinstance(self.screen, ModalScreen) or isinstance(self.focused, Input)
        ):
            return False  # typed into a dialog or the filter: text, not a view switch
        return True

    def action_go(self, mode: str) -> None:
        if self.current_mode == mode:
            while len(self.screen_stack) > 1:
                self.pop_screen()
        else:
            self.switch_mode(mode)

    async def action_view(self, mode: str) -> None:
        """A view key: the switch is complete before the next key is read."""
        if self.current_mode == mode:
            self.action_go(mode)
        else:
            await self.switch_mode(mode)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.screen))

    def action_alerts(self) -> None:
        """`!`: open triage on the most severe unseen finding and mark every alert seen."""
        if isinstance(self.screen, ModalScreen):
            return  # a dialog is open: answer it first
        unseen = self.alerts.unseen()
        self.alerts.mark_seen()
        self.generation += 1  # the rows lose their "new" mark
        self.action_go("triage")

        def select() -> None:
            screen = self.screen
            if isinstance(screen, TriageScreen) and screen.is_mounted:
                screen.refresh_view()
                if unseen:
                    screen.query_one("#findings", KeyedTable).select_key(unseen[0].finding_id)

        self.call_after_refresh(select)

    def action_pause(self) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.set_paused(True)

        self.push_screen(
            ConfirmScreen(
                "Pause monitoring? Scheduled scans stop until someone resumes.", self.monitor.actor
            ),
            answered,
        )

    def action_resume(self) -> None:
        self.set_paused(False)

    @work(thread=True, exit_on_error=False, group="decision", description="pause/resume")
    def set_paused(self, paused: bool) -> None:
        try:
            if paused:
                self.monitor.pause()
            else:
                self.monitor.resume()
        except UserError as error:
            self.report_error(str(error))
            return
        self.post_message(ActionDone("Monitoring paused" if paused else "Monitoring resumed"))

    def action_export(self) -> None:
        if self.monitor.readonly:
            self.notify("Read-only mode: exports are disabled.", severity="warning")
            return
        self.push_screen(ExportForm())

    def on_action_done(self, message: ActionDone) -> None:
        self.decision_written(message.text)

    def on_action_failed(self, message: ActionFailed) -> None:
        self.notify(message.text, title="Refused", severity="error", markup=False)


def tune_gc() -> None:
    """Make garbage-collector pauses short enough for a live console.

    Reading a large store allocates hundreds of thousands of short-lived objects; with the
    default thresholds the collector then walks the whole heap while holding the GIL, and
    the UI thread stalls for 100-300 ms (bench/tui.py). Freezing what exists at start
    (imports, widgets) and collecting the young generation less often keeps the stalls
    under the 100 ms budget; memory is still reclaimed by reference counting.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_console(monitor: Monitor, *, theme: str | None = None) -> int:
    """Run the console until the operator quits; the caller closes `monitor`. Returns the
    exit status: 0, or 1 when the console stopped on an error (Textual printed it)."""
    tune_gc()
    app = PortConsoleApp(monitor, theme=theme)
    try:
        app.run()
    finally:
        app.cancel_event.set()
    return app.return_code or 0


__all__ = [
    "FULL_RELOAD_SECONDS",
    "SCHEDULE_TICK_SECONDS",
    "PortConsoleApp",
    "run_console",
    "summarise",
    "tune_gc",
]
