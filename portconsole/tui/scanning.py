"""The console's scans: the scheduler tick that asks to lead and starts the scheduled scans
that are due (the daemon's rules, through `Supervisor`: groups in parallel, each in a thread
of its own), manual scans and rescans in thread workers (one at a time), the progress of the
latest running scan in the header, and quitting, which stops them all.

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
# How long quitting waits for the scheduled runs to stop (each stops within a 0.1 s poll).
QUIT_WAIT_SECONDS = 3.0


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
        self.supervisor.join(QUIT_WAIT_SECONDS)
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
                lambda group, cancel: self._run_cycle(group=group, quiet=True, cancel=cancel),
                self.cancel_event,
                wait=False,
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
        self,
        *,
        group: str | None = None,
        address: str | None = None,
        quiet: bool = False,
        cancel: threading.Event | None = None,
    ) -> None:
        """Blocking: one cycle with progress and a cancel (the quit's by default). Call from
        a thread. `quiet`: a scheduled run, which runs alongside other groups' and a manual
        scan (the monitor runs one cycle per group at a time); manual scans run one at a time."""
        label = address or group or "all"
        cancel = cancel or self.cancel_event
        guard = self._scan_guard if not quiet else None
        if guard is not None and not guard.acquire(blocking=False):
            self.report_error("A scan is already running: wait for it to finish.")
            return
        try:
            self.post_message(ScanStarted(label))

            def progress(report: object) -> None:
                self.post_message(ScanProgress(label, report))  # type: ignore[arg-type]

            try:
                if address is not None:
                    result = self.monitor.rescan_host(address, progress=progress, cancel=cancel)
                else:
                    result = self.monitor.run_cycle(group, progress=progress, cancel=cancel)
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
            if guard is not None:
                guard.release()

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

    # Scans running now, by label; the header shows the latest started (`self.scan`).
    _scans_running: dict[str, ScanState] | None = None

    def _running_scans(self) -> dict[str, ScanState]:
        if self._scans_running is None:
            self._scans_running = {}
        return self._scans_running

    def on_scan_started(self, message: ScanStarted) -> None:
        running = self._running_scans()
        running[message.label] = self.scan = ScanState(message.label)
        self._redraw_header()

    def on_scan_progress(self, message: ScanProgress) -> None:
        state = self._running_scans().setdefault(message.label, ScanState(message.label))
        state.progress = message.progress
        if self.scan is None:
            self.scan = state
        if self.scan is state and not isinstance(self.screen, ModalScreen):
            self._redraw_header()

    def on_scan_finished(self, message: ScanFinished) -> None:
        running = self._running_scans()
        running.pop(message.label, None)
        self.scan = next(reversed(running.values()), None)
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
