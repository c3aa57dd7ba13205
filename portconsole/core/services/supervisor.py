"""One supervisor for the console and the daemon: leadership, due groups, gaps, anchors.

Both call `Supervisor.step` on their own clock (the daemon every second, the console from
a worker after each tick) and the rules live here. Due groups run in parallel, one thread
per running group (`GroupRuns`) and at most one run of a group at a time, so a slow group
(UDP, `-sV`) never holds another back past its interval; the nmap processes of all of them
together stay within the process's budget (adapters/nmap_budget.py). Each run is bounded by
its group's timeout (`Scheduler.cycle_timeout`): past it the run is cancelled and recorded
as a failed run of that group, a gap of that group only. A run the cycle left unmarked or
unfinished, or that raised, is settled here as failed.

The per-group runner is the `run_cycle(group, cancel)` callable the caller passes: it scans
the group (locally, or through a site) and marks the run on the scheduler; `cancel` is that
run's own event (set by the process's stop or by the run's timeout) and must be watched.
`step(..., wait=False)` starts the due runs and returns (the daemon and the console);
`wait=True` waits for them (tests, a one-shot caller). `run_loop` repeats `run_due` until
stopped, for a caller without a facade.

Leadership is a lease (adapters/leader.py): `step` renews it or takes it over, and asks
again before each run it starts, so a leader that was stopped past its lease steps down
before it scans. Gaps are raised by whoever notices them: a follower with the data dir's
settings records them too (a stopped leader cannot), and `find_gaps` hands each to one
process. The `stop` event given to `step` is the one that stops this process: a scheduled
run it cancels is handed over to the next leader, not recorded as a failed run; `join`
waits for the runs in flight (a caller quitting sets `stop`, then joins, then closes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from msgspec import Struct, field

from portconsole.core.errors import UserError

if TYPE_CHECKING:
    from portconsole.core.domain.finding import Finding
    from portconsole.core.services.schedule import Scheduler

# The per-group runner: scans `group`, watching its run's `cancel` (see the docstring).
RunCycle = Callable[[str, threading.Event], object]
# How often a waiting run looks at the process's stop and at its own deadline.
POLL_SECONDS = 0.1


class Supervised(Protocol):
    """What the supervisor needs of the facade (the Monitor), without importing it."""

    readonly: bool
    scheduler: Scheduler
    stopping: threading.Event | None

    @property
    def paused(self) -> bool: ...

    def try_lead(self) -> bool: ...

    def record_gaps(self) -> list[Finding]: ...

    def publish_anchor(self, *, force: bool = False, reason: str = "interval") -> Any: ...


log = logging.getLogger(__name__)


class StepResult(Struct):
    """What one supervisor step did."""

    leading: bool
    ran: list[str] = field(default_factory=list)
    gaps: list[Finding] = field(default_factory=list)
    anchor: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)


class RunCancel(threading.Event):
    """One run's cancel: set directly, by the process's `stop`, or at the run's deadline.

    Read by polling (`is_set`, or `wait`, which polls every POLL_SECONDS), as the scan
    code does; `timed_out` tells a timeout from a stop afterwards.
    """

    def __init__(self, stop: threading.Event, timeout: float | None = None) -> None:
        super().__init__()
        self._stop = stop
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout if timeout else None
        self.timed_out = False

    def is_set(self) -> bool:
        if super().is_set():
            return True
        if self._stop.is_set():
            self.set()
            return True
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.timed_out = True
            self.set()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = POLL_SECONDS if end is None else min(POLL_SECONDS, end - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True


class GroupRuns:
    """The runs in flight in this process: one thread per running group, at most one each."""

    def __init__(self) -> None:
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._notes: list[str] = []

    def running(self) -> list[str]:
        """Groups with a run in flight, by name."""
        with self._lock:
            return sorted(g for g, t in self._threads.items() if t.is_alive())

    def start(self, group: str, run: Callable[[], None]) -> bool:
        """Run `run()` in a thread of its own for `group`; False if `group` is running."""
        with self._lock:
            current = self._threads.get(group)
            if current is not None and current.is_alive():
                return False
            thread = threading.Thread(
                target=self._body, args=(group, run), name=f"group-{group}", daemon=True
            )
            self._threads[group] = thread
            thread.start()
            return True

    @staticmethod
    def _body(group: str, run: Callable[[], None]) -> None:
        try:
            run()
        except Exception:  # _run_one settles a failing cycle; this is a bug in settling it
            log.exception("run of group %s failed", group)

    def note(self, text: str) -> None:
        """Something a run wants the caller told at its next step (e.g. a timeout)."""
        with self._lock:
            self._notes.append(text)

    def take_notes(self) -> list[str]:
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def join(self, timeout: float | None = None) -> list[str]:
        """Wait for the runs in flight (at most `timeout` s); return the groups still running."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return self.running()


class Supervisor:
    """Runs what is due for one monitor, leading or following."""

    def __init__(self, monitor: Supervised) -> None:
        self.monitor = monitor
        self.runs = GroupRuns()

    def is_leader(self) -> bool:
        """Leading and not paused: asked before every run (a follower takes over here)."""
        return self.monitor.try_lead() and not self.monitor.paused

    def running(self) -> list[str]:
        """Groups whose scheduled run is in flight in this process."""
        return self.runs.running()

    def join(self, timeout: float | None = None) -> list[str]:
        """Wait for the runs in flight; the groups still running after `timeout`."""
        return self.runs.join(timeout)

    def step(self, run_cycle: RunCycle, stop: threading.Event, *, wait: bool = True) -> StepResult:
        """Take or keep leadership, start due groups, raise gaps, publish a due anchor.

        `wait`: return once the runs started have ended; otherwise they go on in their
        threads and the next steps start other groups as they fall due.
        """
        monitor = self.monitor
        result = StepResult(leading=False)
        if monitor.readonly:
            return result
        monitor.stopping = stop
        try:
            result.leading = monitor.try_lead()
        except UserError as error:
            result.errors.append(str(error))
            return result
        if result.leading and not monitor.paused:
            result.ran = run_due(monitor.scheduler, run_cycle, stop, self.is_leader, self.runs)
            if wait:
                self.runs.join()
        result.errors += self.runs.take_notes()
        actions = (self._gaps, self._anchor) if result.leading else (self._gaps,)
        for action in actions:
            try:
                action(result)
            except UserError as error:
                result.errors.append(str(error))
            except Exception as error:  # noqa: BLE001 - supervision must go on; log the bug
                log.exception("supervisor step failed")
                result.errors.append(f"internal error: {error}")
        return result

    def _gaps(self, result: StepResult) -> None:
        # Late or failed runs outside a completed cycle become monitoring-gap findings.
        result.gaps = self.monitor.record_gaps()

    def _anchor(self, result: StepResult) -> None:
        result.anchor = self.monitor.publish_anchor()


def run_loop(
    scheduler: Scheduler,
    run_cycle: RunCycle,
    stop: threading.Event,
    is_leader: Callable[[], bool],
    tick: float = 1.0,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """Start due groups, in parallel, until `stop` is set; then wait for the runs in flight.

    `is_leader` is asked before each run (e.g. `election.try_acquire`, which also takes over
    from a dead leader). `run_cycle(group, cancel)` scans the group and marks the run on
    the scheduler itself (`mark_started` before scanning, `mark_finished` with the outcome
    and coverage); it must watch `cancel` (set by `stop` or the run's timeout). If it
    raises, or returns without marking, the run is recorded as failed, so a broken group
    is rescheduled (and on record as a gap) instead of being retried in a tight loop.
    `on_tick` runs once per tick (heartbeat, find_gaps, ...); its errors are logged.
    """
    runs = GroupRuns()
    while not stop.is_set():
        if on_tick is not None:
            try:
                on_tick()
            except Exception:
                log.exception("scheduler tick hook failed")
        run_due(scheduler, run_cycle, stop, is_leader, runs)
        stop.wait(tick)
    runs.join()


def run_due(
    scheduler: Scheduler,
    run_cycle: RunCycle,
    stop: threading.Event,
    is_leader: Callable[[], bool],
    runs: GroupRuns | None = None,
) -> list[str]:
    """Start the groups due now that are not running, while leading; return those started.

    Each runs in a thread of `runs` (bounded by its group's timeout); without `runs`, a
    one-off set whose runs are waited for. The one place a scheduled run's failure is
    handled (see `run_loop`): the console and the daemon both go through here.
    """
    own = runs is None
    group_runs = runs if runs is not None else GroupRuns()
    started: list[str] = []
    while not stop.is_set():
        group: str | None = None
        try:
            if is_leader():
                busy = set(group_runs.running()) | set(started)
                group = next((g for g in scheduler.due(scheduler.now()) if g not in busy), None)
        except Exception:
            log.exception("could not read the schedule")
        if group is None or stop.is_set():
            break

        def run(chosen: str = group) -> None:
            _run_one(scheduler, chosen, run_cycle, stop, group_runs.note)

        if not group_runs.start(group, run):
            break  # already running: the `busy` check raced with its start
        started.append(group)
    if own:
        group_runs.join()
    return started


def _run_one(
    scheduler: Scheduler,
    group: str,
    run_cycle: RunCycle,
    stop: threading.Event,
    note: Callable[[str], None],
) -> None:
    cancel = RunCancel(stop, scheduler.cycle_timeout(group))
    before = scheduler.group_status(group).last_started
    error = ""
    try:
        run_cycle(group, cancel)
    except Exception as failure:
        log.exception("scan cycle for group %s failed", group)
        error = f"{failure.__class__.__name__}: {failure}"
    except BaseException:
        _settle(scheduler, group, before, "cancelled", "interrupted")
        raise
    if stop.is_set():
        # Stopped because this process quits: the run goes to the next leader, whole
        # (the cycle may have handed it back already; one it never started is still due).
        if scheduler.group_status(group).running_since is not None:
            scheduler.hand_back(group)
        return
    if cancel.timed_out:
        error = error or f"the scan cycle timed out after {cancel.timeout:g} s"
        note(f"scan {group}: cancelled, it ran past its timeout of {cancel.timeout:g} s")
    _settle(scheduler, group, before, "failed", error)


def _settle(
    scheduler: Scheduler, group: str, before: datetime | None, outcome: str, error: str
) -> None:
    """Close a run that `run_cycle` left unmarked or unfinished."""
    status = scheduler.group_status(group)
    moment = scheduler.now()
    if status.last_started == before:
        scheduler.mark_started(group, moment)
        scheduler.mark_finished(
            group, moment, outcome, 0, 0, error=error or "the scan cycle did not start"
        )
    elif status.running_since is not None:
        scheduler.mark_finished(
            group, moment, outcome, 0, 0, error=error or "the scan cycle did not finish"
        )
