"""The console's scans: the scheduler tick that asks to lead and runs the scheduled scans
that are due (the daemon's rules, through `Supervisor`), manual scans and rescans in thread
workers, their progress in the header, and quitting, which stops them.

A mixin of PortConsoleApp (app.py), which sets up the state it uses.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from textual import work
from textual.screen import ModalScreen

from portconsole.core.errors import UserError
from portconsole.tui.messages import ScanFinished, ScanProgress, ScanStarted, ScheduleChecked
from portconsole.tui.screens.forms import ConfirmScreen
from portconsole.tui.widgets.status import ScanState

if TYPE_CHECKING:
    from textual.app import App

    from portconsole.core.monitor import CycleResult, Monitor
    from portconsole.core.services.supervisor import Supervisor

    _AppBase = App[None]
else:
    _AppBase = object

# The app's logger: the records read as before the split.
log = logging.getLogger("portconsole.tui.app")

# How often the scheduler asks to lead and looks for due groups (a due scan starts within
# this; it is part of the time from a port opening to the alert).
SCHEDULE_TICK_SECONDS = 1.0


def summarise(label: str, result: CycleResult) -> str:
    scan = result.scan
    text = (
        f"Scan {label or 'all'} {scan.outcome}: {len(scan.hosts)} hosts, "
        f"{scan.open_port_count()} open ports, {len(result.changes)} changes"
    )
    if result.findings:
        text += f", {len(result.findings)} new findings"
    return text


class ScanningMixin(_AppBase):
    """Scheduled and manual scans, and quitting (PortConsoleApp's)."""

    # Set by PortConsoleApp.__init__.
    monitor: Monitor
    supervisor: Supervisor
    cancel_event: threading.Event
    scan: ScanState | None
    leading: bool
    _schedule_error: str
    _scan_guard: threading.Lock
    _quit_asked: bool

    if TYPE_CHECKING:

        def request_refresh(self) -> None: ...

        def report_error(self, text: str) -> None: ...

        def _redraw_header(self) -> None: ...

    # ----- quitting --------------------------------------------------------------------
    def action_quit(self) -> None:  # type: ignore[override]
        # Stop scans first so no worker thread (or nmap) outlives the console.
        self.cancel_event.set()
        self.exit()

    def action_interrupt(self) -> None:
        """Ctrl-C: quit; a leading console asks first (a second Ctrl-C does not ask)."""
        # `leading` is only set once a scheduler step returns; during the first round the
        # lease is already held, so ask the lease too.
        leads = self.leading or self.monitor.leader.holds
        if not leads or self._quit_asked:
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

    def action_scan_now(self) -> None:
        self.start_scan(None)
