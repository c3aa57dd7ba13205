"""The console's store reads: coalesced snapshot reads in a thread worker, and the poll
that re-reads the store when `Monitor.data_version()` moves (or every FULL_RELOAD_SECONDS).

Each snapshot, whoever wrote it, goes through the app's `AlertTracker` (alerts.py): new and
reopened findings raise a banner, a bell and a counter. A mixin of PortConsoleApp (app.py),
which sets up the state it uses.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from textual import work

from portconsole.core.errors import UserError
from portconsole.core.release import release
from portconsole.tui.alerts import AlertTracker, rings_bell
from portconsole.tui.messages import FleetSnapshot, PollFinished, RefreshWanted, SnapshotLoaded
from portconsole.tui.screens.base import ConsoleScreen

if TYPE_CHECKING:
    from textual.app import App

    from portconsole.core.monitor import Monitor
    from portconsole.tui.widgets.status import ScanState

    _AppBase = App[None]
else:
    _AppBase = object

# The app's logger: the records read as before the split.
log = logging.getLogger("portconsole.tui.app")

# Even when nothing changes, re-read the header this often: leadership lives outside the
# store (the leader lock), so data_version() does not move when another console takes over.
FULL_RELOAD_SECONDS = 15.0
# How often what `read_without_gc` froze is handed back to the garbage collector.
RECLAIM_SECONDS = 600.0
# How often a reader waiting for the UI thread to take its snapshot looks at the quit, and
# how long it waits at most (an app that stopped taking messages never holds it forever).
POLL_SECONDS = 0.1
TAKE_TIMEOUT_SECONDS = 30.0


def read_without_gc(read: Callable[[int], FleetSnapshot], request: int) -> FleetSnapshot:
    """`read(request)` with the cyclic garbage collector off, then its objects frozen.

    A read of 10,000 hosts and 100,000 findings allocates millions of objects; collections
    during the read walked them while holding the GIL and stalled the UI thread 100-160 ms
    each (bench/tui.py). A read makes no reference cycles (measured: a collection after
    one finds 0 unreachable objects), so the snapshot is frozen out of the collector's
    reach (`gc.freeze`); reference counting still frees it when the next one replaces it.
    Cyclic garbage other threads made meanwhile is frozen too, until `reclaim_frozen`."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return read(request)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def release_snapshot(snapshot: FleetSnapshot) -> None:
    """Free a replaced snapshot a slice at a time (called in a thread).

    Dropped at once on the UI thread, a snapshot of 100,000 findings (each shown with its
    latest sighting: copies, new in every read while scans land) was freed in one step
    that held the GIL for 50-150 ms. Its own containers are emptied here in slices; the
    indexes a table may still show are only let go (whoever holds them keeps them)."""
    findings, hosts = snapshot.findings, snapshot.hosts
    snapshot.findings, snapshot.hosts = [], []
    snapshot.findings_by_id, snapshot.hosts_by_address, snapshot.open_episodes = {}, {}, {}
    snapshot.seen = {}
    release(findings, hosts)


class StoreReadsMixin(_AppBase):
    """Reading the store and watching it for changes (PortConsoleApp's)."""

    # Set by PortConsoleApp.__init__.
    monitor: Monitor
    cancel_event: threading.Event
    refresh_seconds: float
    snapshot: FleetSnapshot | None
    generation: int
    scan: ScanState | None
    alerts: AlertTracker
    bell_threshold: str
    _requested: int
    _applied: int
    _dirty: bool
    _reading: bool
    _read_lock: threading.Lock
    _seen_version: str
    _last_load: float
    _last_reclaim: float
    _last_episodes: dict[str, int] | None
    _taken: threading.Condition
    _handled: int
    _releasing: int

    if TYPE_CHECKING:

        def report_error(self, text: str) -> None: ...

        def _redraw_current(self) -> None: ...

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

    def read_hosts(self, request: int) -> FleetSnapshot:
        """Blocking: the header and hosts without the findings (a partial snapshot)."""
        version = self.monitor.data_version()
        overview, hosts = self.monitor.snapshot_hosts()
        return FleetSnapshot(version, overview, hosts, [], request, partial=True)

    def read_snapshot(self, request: int) -> FleetSnapshot:
        """Blocking: call from a thread."""
        monitor = self.monitor
        version = monitor.data_version()
        overview, hosts, findings, seen = monitor.snapshot()
        snapshot = FleetSnapshot(version, overview, hosts, findings, request, seen)
        # Which open findings are new or reopened since the previous read, found here
        # rather than on the UI thread (reads run one at a time, and each is applied).
        snapshot.diff_episodes(self._last_episodes)
        self._last_episodes = snapshot.open_episodes
        return snapshot

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
                if request == 1:
                    # The console's first read shows its hosts before the findings are read
                    # (at 10,000 hosts and 100,000 findings: ~1 s sooner).
                    self.post_message(SnapshotLoaded(read_without_gc(self.read_hosts, request)))
                self.post_message(SnapshotLoaded(read_without_gc(self.read_snapshot, request)))
                self.wait_until_taken(request)
            except UserError as error:
                self.report_error(str(error))
            except Exception as error:  # noqa: BLE001 - a bug must not stop future refreshes
                log.exception("store read failed")
                self.report_error(f"internal error while reading the store: {error}")

    def wait_until_taken(self, request: int) -> None:
        """Blocking (the reader's thread): until the UI thread has taken full snapshot
        `request` and freed the snapshot it replaced. So at most two snapshots exist while
        the next is read (the one shown and the new one): a reader asked again while it
        read went on at once and could hold three or four (~330 MB each at 10,000 hosts
        and 100,000 findings)."""
        deadline = time.monotonic() + TAKE_TIMEOUT_SECONDS
        with self._taken:
            while (self._handled < request or self._releasing > 0) and not (
                self.cancel_event.is_set() or time.monotonic() > deadline
            ):
                self._taken.wait(POLL_SECONDS)

    def _mark_taken(self, request: int) -> None:
        with self._taken:
            self._handled = max(self._handled, request)
            self._taken.notify_all()

    def on_snapshot_loaded(self, message: SnapshotLoaded) -> None:
        snapshot = message.snapshot
        try:
            self._apply_snapshot(snapshot)
        finally:
            if not snapshot.partial:
                self._mark_taken(snapshot.request)

    def _apply_snapshot(self, snapshot: FleetSnapshot) -> None:
        if snapshot.request < self._applied:
            return  # an older read finished after a newer one
        replaced = self.snapshot
        was_paused = replaced.overview.paused if replaced else None
        self._applied = snapshot.request
        self._seen_version = snapshot.version
        self._last_load = time.monotonic()
        self.snapshot = snapshot
        self.generation += 1
        raised = (
            []
            if snapshot.partial  # no findings read yet: nothing to alert on, nor to forget
            else self.alerts.observe_episodes(
                snapshot.findings_by_id,
                snapshot.open_episodes,
                changed=snapshot.changed_episodes,
                base=snapshot.episodes_base,
            )
        )
        if raised and rings_bell(raised, self.bell_threshold):
            self.bell()
        if snapshot.overview.paused != was_paused:
            # Pause/Resume swap in the footer; recomposing it on every snapshot is costly.
            self.refresh_bindings()
        self._redraw_current()
        if replaced is not None:
            # After the redraw: the tables on screen hold the new snapshot's rows now.
            with self._taken:
                self._releasing += 1
            self.release_replaced(replaced)

    @work(thread=True, exit_on_error=False, group="release", description="free a snapshot")
    def release_replaced(self, snapshot: FleetSnapshot) -> None:
        try:
            release_snapshot(snapshot)
        finally:
            with self._taken:
                self._releasing -= 1
                self._taken.notify_all()

    @work(thread=True, exit_on_error=False, group="poll", description="watch the store")
    def poll_data_version(self) -> None:
        error = ""
        try:
            version = self.monitor.data_version()
            stale = time.monotonic() - self._last_load > FULL_RELOAD_SECONDS
            # While this console scans, the cycle's end triggers the read: reading the
            # half-ingested store meanwhile would only compete with it for the GIL. While
            # a read runs, the next poll after it lands compares with what it read (a
            # second read asked for now, before the first landed, read the same again).
            if (version != self._seen_version or stale) and self.scan is None and not self._reading:
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
        now = time.monotonic()
        if now - self._last_reclaim > RECLAIM_SECONDS and not self._reading:
            # What froze with the snapshots becomes collectable again: one full collection
            # (a pause of up to a few hundred ms at 100,000 findings) every few minutes.
            self._last_reclaim = now
            gc.unfreeze()
        if message.error:
            self.notify(message.error, title="Store", severity="error", markup=False)
        if not self.cancel_event.is_set():
            self.set_timer(self.refresh_seconds, self.poll_data_version)

    def action_reload(self) -> None:
        self.request_refresh()
        if isinstance(self.screen, ConsoleScreen):
            self.screen.reload()
