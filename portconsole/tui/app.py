"""The PortConsole operator console: a thin Textual shell over `Monitor`.

Every store read and every scan runs in a thread worker; results come back as typed
messages (messages.py). Two self-rescheduling polls keep it live: one re-reads the store
when `Monitor.data_version()` changes (a file stat every `[tui] refresh_seconds`, so another
console's scans and decisions appear within a few seconds), one asks to lead and runs the
scheduled scans that are due. Each poll schedules the next only after it has finished, so
a slow store never piles polls up.

Every snapshot, whoever wrote it, goes through an `AlertTracker` (alerts.py): new and
reopened findings raise a banner, a bell and a counter on every console, leading or not.
"""

from __future__ import annotations

import gc
import logging
import os
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
from textual.theme import Theme
from textual.widgets import Input

from portconsole.core.errors import UserError
from portconsole.core.services.supervisor import Supervisor
from portconsole.core.timeutil import utcnow
from portconsole.tui.alerts import AlertTracker, rings_bell
from portconsole.tui.commands import ConsoleCommands
from portconsole.tui.messages import (
    ActionDone,
    ActionFailed,
    FleetSnapshot,
    PollFinished,
    RefreshWanted,
    ScanFinished,
    ScanProgress,
    ScanStarted,
    ScheduleChecked,
    SnapshotLoaded,
)
from portconsole.tui.screens.audit import AuditScreen
from portconsole.tui.screens.base import ConsoleScreen
from portconsole.tui.screens.export import ExportForm
from portconsole.tui.screens.forms import ConfirmScreen
from portconsole.tui.screens.help import HelpScreen
from portconsole.tui.screens.history import HistoryScreen
from portconsole.tui.screens.host import HostScreen
from portconsole.tui.screens.overview import OverviewScreen
from portconsole.tui.screens.triage import TriageScreen
from portconsole.tui.themes import (
    ThemeCatalog,
    choose_theme,
    load_themes,
    load_ui_prefs,
    migrate_ui_prefs,
    prefs_dir,
    remember_theme,
)
from portconsole.tui.widgets import KeyedTable
from portconsole.tui.widgets.status import HeaderState, ScanState

if TYPE_CHECKING:
    from portconsole.core.monitor import CycleResult, Monitor

log = logging.getLogger(__name__)

# Even when nothing changes, re-read the header this often: leadership lives outside the
# store (the leader lock), so data_version() does not move when another console takes over.
FULL_RELOAD_SECONDS = 15.0
# How often the scheduler asks to lead and looks for due groups (a due scan starts within
# this; it is part of the time from a port opening to the alert).
SCHEDULE_TICK_SECONDS = 1.0


# The four views share one footer slot ("1234 Views"): 80 columns hold little else.
VIEWS = Binding.Group("Views", compact=True)


def summarise(label: str, result: CycleResult) -> str:
    scan = result.scan
    text = (
        f"Scan {label or 'all'} {scan.outcome}: {len(scan.hosts)} hosts, "
        f"{scan.open_port_count()} open ports, {len(result.changes)} changes"
    )
    if result.findings:
        text += f", {len(result.findings)} new findings"
    return text


class PortConsoleApp(App[None]):
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
        self._seen_version = ""
        self._last_load = 0.0
        self._schedule_error = ""
        # New and reopened findings this operator has not seen yet (every console).
        self.alerts = AlertTracker()
        self.bell_threshold = monitor.settings.tui.bell
        self._quit_asked = False
        # Set on quit: running scans stop (nmap killed) instead of finishing.
        self.cancel_event = threading.Event()
        self._scan_guard = threading.Lock()
        self.theme_catalog: ThemeCatalog = load_themes(monitor.paths.themes_dirs)
        for loaded in self.theme_catalog.themes.values():
            self.register_theme(loaded)
        # Preferences are the operator's: in their config dir, not the shared data dir.
        self.preferences = prefs_dir() if preferences is None else preferences
        if not monitor.readonly:
            try:
                migrate_ui_prefs(self.preferences, monitor.paths.data_dir)
            except OSError as error:
                log.warning("could not move ui.json to %s: %s", self.preferences, error)
        prefs = load_ui_prefs(self.preferences)
        if not prefs:
            prefs = load_ui_prefs(monitor.paths.data_dir)  # read-only: read where it was
        chosen, self._theme_warning = choose_theme(
            self.theme_catalog,
            requested=theme,
            remembered=prefs.get("theme") if isinstance(prefs.get("theme"), str) else None,
            configured=monitor.settings.tui.theme,
            environ=os.environ if environ is None else environ,
        )
        self.theme = chosen
        self._remembered_theme = chosen

    # ----- lifecycle -------------------------------------------------------------------
    def on_mount(self) -> None:
        # Notifications raised by this console's scans (or left in the outbox by others)
        # are delivered in the background; the monitor stops it on close.
        self.monitor.start_delivery()
        problems = [p for p in (self.theme_catalog.error_summary(), self._theme_warning) if p]
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

    def action_quit(self) -> None:  # type: ignore[override]
        # Stop scans first so no worker thread (or nmap) outlives the console.
        self.cancel_event.set()
        self.exit()

    def action_interrupt(self) -> None:
        """Ctrl-C: quit; a leading console asks first (a second Ctrl-C does not ask)."""
        if not self.leading or self._quit_asked:
            self.action_quit()
            return
        self._quit_asked = True

        def answered(yes: bool | None) -> None:
            self._quit_asked = False
            if yes:
                self.action_quit()

        self.push_screen(
            ConfirmScreen(
                "This console leads the scheduled scans. Quit? (Ctrl-C again quits.)",
                self.monitor.actor,
            ),
            answered,
        )

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

    # ----- store reads -----------------------------------------------------------------
    def request_refresh(self) -> None:
        """Re-read the store soon (after a write, or on ctrl+r).

        Reads are coalesced: while one is running, further requests only mark the data
        dirty and the running reader goes round once more. Two big reads in parallel
        would double the GIL pressure on the UI thread for no newer answer.
        """
        with self._read_lock:
            self._dirty = True
            if self._reading:
                return
            self._reading = True
        self.load_snapshot()

    def read_snapshot(self, request: int) -> FleetSnapshot:
        """Blocking: call from a thread."""
        monitor = self.monitor
        version = monitor.data_version()
        overview, hosts, findings = monitor.snapshot()
        return FleetSnapshot(version, overview, hosts, findings, request)

    @work(thread=True, exit_on_error=False, group="refresh", description="read the store")
    def load_snapshot(self) -> None:
        while True:
            with self._read_lock:
                if not self._dirty or self.cancel_event.is_set():
                    self._reading = False
                    return
                self._dirty = False
                self._requested += 1
                request = self._requested
            try:
                self.post_message(SnapshotLoaded(self.read_snapshot(request)))
            except UserError as error:
                self.report_error(str(error))
            except Exception as error:  # noqa: BLE001 - a bug must not stop future refreshes
                log.exception("store read failed")
                self.report_error(f"internal error while reading the store: {error}")

    def on_snapshot_loaded(self, message: SnapshotLoaded) -> None:
        snapshot = message.snapshot
        if snapshot.request < self._applied:
            return  # an older read finished after a newer one
        was_paused = self.snapshot.overview.paused if self.snapshot else None
        self._applied = snapshot.request
        self._seen_version = snapshot.version
        self._last_load = time.monotonic()
        self.snapshot = snapshot
        self.generation += 1
        raised = self.alerts.observe(snapshot.findings)
        if raised and rings_bell(raised, self.bell_threshold):
            self.bell()
        if snapshot.overview.paused != was_paused:
            # Pause/Resume swap in the footer; recomposing it on every snapshot is costly.
            self.refresh_bindings()
        self._redraw_current()

    @work(thread=True, exit_on_error=False, group="poll", description="watch the store")
    def poll_data_version(self) -> None:
        error = ""
        try:
            version = self.monitor.data_version()
            stale = time.monotonic() - self._last_load > FULL_RELOAD_SECONDS
            # While this console scans, the cycle's end triggers the read: reading the
            # half-ingested store meanwhile would only compete with it for the GIL.
            if (version != self._seen_version or stale) and self.scan is None:
                self.post_message(RefreshWanted())
        except UserError as caught:
            error = str(caught)
        except Exception as caught:  # noqa: BLE001 - the poll must survive a bug to keep the UI live
            log.exception("store poll failed")
            error = f"internal error while reading the store: {caught}"
        finally:
            self.post_message(PollFinished(error))

    def on_refresh_wanted(self, message: RefreshWanted) -> None:
        self.request_refresh()

    def on_poll_finished(self, message: PollFinished) -> None:
        if message.error:
            self.notify(message.error, title="Store", severity="error", markup=False)
        if not self.cancel_event.is_set():
            self.set_timer(self.refresh_seconds, self.poll_data_version)

    def action_reload(self) -> None:
        self.request_refresh()
        if isinstance(self.screen, ConsoleScreen):
            self.screen.reload()

    # ----- scheduled scans -------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="scheduler", description="scheduled scans")
    def scheduler_tick(self) -> None:
        leading = False
        error = ""
        try:
            # The daemon's rules: failed or unstarted runs are gaps, anchors when due.
            result = self.supervisor.step(
                lambda group: self._run_cycle(group=group, quiet=True), self.cancel_event
            )
            leading = result.leading
            error = "; ".join(result.errors)
            if result.gaps:
                self.call_from_thread(self.request_refresh)
        except UserError as caught:
            error = str(caught)
        except Exception as caught:  # noqa: BLE001 - keep scheduling; report the bug once
            log.exception("scheduler tick failed")
            error = f"internal error in the scheduler: {caught}"
        finally:
            self.post_message(ScheduleChecked(leading, error))

    def on_schedule_checked(self, message: ScheduleChecked) -> None:
        changed = message.leading != self.leading
        self.leading = message.leading
        if message.error and message.error != self._schedule_error:
            self.notify(message.error, title="Scheduler", severity="error", markup=False)
        self._schedule_error = message.error
        if changed:
            self.request_refresh()
        if not self.cancel_event.is_set():
            self.set_timer(SCHEDULE_TICK_SECONDS, self.scheduler_tick)

    # ----- scans -----------------------------------------------------------------------
    def _run_cycle(
        self, *, group: str | None = None, address: str | None = None, quiet: bool = False
    ) -> None:
        """Blocking: one cycle with progress and the quit cancel. Call from a thread."""
        label = address or group or "all"
        # A scheduled run waits for a manual scan to end (skipping it would be a gap).
        if not self._scan_guard.acquire(blocking=quiet):
            if not quiet:
                self.report_error("A scan is already running: wait for it to finish.")
            return
        try:
            self.post_message(ScanStarted(label))

            def progress(report: object) -> None:
                self.post_message(ScanProgress(label, report))  # type: ignore[arg-type]

            try:
                if address is not None:
                    result = self.monitor.rescan_host(
                        address, progress=progress, cancel=self.cancel_event
                    )
                else:
                    result = self.monitor.run_cycle(
                        group, progress=progress, cancel=self.cancel_event
                    )
            except UserError as error:
                self.post_message(ScanFinished(label, error=str(error)))
                return
            # Scheduled cycles that changed nothing stay quiet: at 80x24 a toast per
            # group per minute would hide the table an operator is watching.
            eventful = bool(result.changes or result.findings or result.scan.error)
            self.post_message(
                ScanFinished(
                    label,
                    summary=summarise(label, result) if eventful or not quiet else "",
                    cancelled=result.scan.outcome == "cancelled",
                )
            )
        finally:
            self._scan_guard.release()

    @work(thread=True, exit_on_error=False, group="scan", description="scan now")
    def scan_worker(self, group: str | None, address: str | None) -> None:
        try:
            self._run_cycle(group=group, address=address)
        except Exception as caught:  # noqa: BLE001 - show the bug, keep the console up
            log.exception("scan failed")
            self.post_message(
                ScanFinished(address or group or "all", error=f"internal error: {caught}")
            )

    def start_scan(self, group: str | None = None) -> None:
        if self.monitor.readonly:
            self.notify("Read-only mode: scans are disabled.", severity="warning")
            return
        self.scan_worker(group, None)

    def start_rescan(self, address: str) -> None:
        if self.monitor.readonly:
            self.notify("Read-only mode: scans are disabled.", severity="warning")
            return
        self.scan_worker(None, address)

    def on_scan_started(self, message: ScanStarted) -> None:
        self.scan = ScanState(message.label)
        self._redraw_header()

    def on_scan_progress(self, message: ScanProgress) -> None:
        if self.scan is None:
            self.scan = ScanState(message.label)
        self.scan.progress = message.progress
        if not isinstance(self.screen, ModalScreen):
            self._redraw_header()

    def on_scan_finished(self, message: ScanFinished) -> None:
        self.scan = None
        if message.error:
            self.notify(message.error, title="Scan failed", severity="error", markup=False)
        elif message.cancelled:
            self.notify(f"Scan {message.label} cancelled", title="Scan", markup=False)
        elif message.summary:
            self.notify(message.summary, title="Scan finished", markup=False)
        self._redraw_header()
        self.request_refresh()

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

    def action_scan_now(self) -> None:
        self.start_scan(None)

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

    # ----- themes ----------------------------------------------------------------------
    def switch_theme(self, name: str) -> None:
        if name not in self.available_themes:
            self.notify(f"No theme {name!r}.", severity="error", markup=False)
            return
        self.theme = name

    def _on_theme_changed(self, theme: Theme) -> None:
        # Cell colours come from the theme: other screens redraw when they are next shown.
        self.generation += 1
        if not isinstance(self.screen, ModalScreen) and isinstance(self.screen, ConsoleScreen):
            self.screen.refresh_view()
        if theme.name != self._remembered_theme and not self.monitor.readonly:
            self._remembered_theme = theme.name
            self.save_theme(theme.name)

    @work(thread=True, exit_on_error=False, group="prefs", description="remember theme")
    def save_theme(self, name: str) -> None:
        try:
            remember_theme(self.preferences, name)
        except OSError as error:
            self.report_error(f"could not remember the theme: {error.strerror}")


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
    """Run the console until the operator quits; the caller closes `monitor`. Returns 0."""
    tune_gc()
    app = PortConsoleApp(monitor, theme=theme)
    try:
        app.run()
    finally:
        app.cancel_event.set()
    return 0


__all__ = ["PortConsoleApp", "run_console"]
