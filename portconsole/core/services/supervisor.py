"""One supervisor for the console and the daemon: leadership, due groups, gaps, anchors.

Both used to carry their own scheduling loop, and the console's lacked the daemon's failure
handling (a cycle that crashed or never started was not recorded, so no gap appeared). Now
each calls `Supervisor.step` on its own clock (the daemon every second in a thread of its
own, the console from a worker after each tick) and the rules live here: `run_due` runs
what is due one group at a time and settles a run the cycle left unmarked or unfinished.
`run_loop` repeats `run_due` until stopped, for a caller without a facade.

Leadership is a lease (adapters/leader.py): `step` renews it or takes it over, and asks
again before each run, so a leader that was stopped past its lease steps down before it
scans. Gaps are raised by whoever notices them: a follower with the data dir's settings
records them too (a stopped leader cannot), and `find_gaps` hands each to one process.
The `stop` event given to `step` is the one that stops this process: a scheduled run it
cancels is handed over to the next leader, not recorded as a failed run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from portconsole.core.errors import UserError

if TYPE_CHECKING:
    from portconsole.core.domain.finding import Finding
    from portconsole.core.services.schedule import Scheduler


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


@dataclass(slots=True)
class StepResult:
    """What one supervisor step did."""

    leading: bool
    ran: list[str] = field(default_factory=list)
    gaps: list[Finding] = field(default_factory=list)
    anchor: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)


class Supervisor:
    """Runs what is due for one monitor, leading or following."""

    def __init__(self, monitor: Supervised) -> None:
        self.monitor = monitor

    def is_leader(self) -> bool:
        """Leading and not paused: asked before every run (a follower takes over here)."""
        return self.monitor.try_lead() and not self.monitor.paused

    def step(self, run_cycle: Callable[[str], object], stop: threading.Event) -> StepResult:
        """Take or keep leadership, run due groups, raise gaps, publish a due anchor."""
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
            result.ran = run_due(monitor.scheduler, run_cycle, stop, self.is_leader)
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
    run_cycle: Callable[[str], object],
    stop: threading.Event,
    is_leader: Callable[[], bool],
    tick: float = 1.0,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """Run due groups one at a time until `stop` is set (returns within `tick` of it).

    `is_leader` is asked before each run (e.g. `election.try_acquire`, which also takes over
    from a dead leader). `run_cycle(group)` scans the group and marks the run on the
    scheduler itself (`mark_started` before scanning, `mark_finished` with the outcome and
    coverage); it should watch `stop` so that a stop cancels the scan. If it raises, or
    returns without marking, the loop records a failed run, so a broken group is
    rescheduled (and on record as a gap) instead of being retried in a tight loop.
    `on_tick` runs once per tick (heartbeat, find_gaps, ...); its errors are logged.
    """
    while not stop.is_set():
        if on_tick is not None:
            try:
                on_tick()
            except Exception:
                log.exception("scheduler tick hook failed")
        if not run_due(scheduler, run_cycle, stop, is_leader, limit=1):
            stop.wait(tick)


def run_due(
    scheduler: Scheduler,
    run_cycle: Callable[[str], object],
    stop: threading.Event,
    is_leader: Callable[[], bool],
    limit: int | None = None,
) -> list[str]:
    """Run the groups due now, one at a time, while leading; return those that ran.

    The one place a scheduled run's failure is handled (see `run_loop`): the console and
    the daemon both go through here.
    """
    ran: list[str] = []
    while not stop.is_set() and (limit is None or len(ran) < limit):
        group: str | None = None
        try:
            if is_leader():
                due = [g for g in scheduler.due(scheduler.now()) if g not in ran]
                group = due[0] if due else None
        except Exception:
            log.exception("could not read the schedule")
        if group is None or stop.is_set():
            break
        _run_one(scheduler, group, run_cycle, stop)
        ran.append(group)
    return ran


def _run_one(
    scheduler: Scheduler, group: str, run_cycle: Callable[[str], object], stop: threading.Event
) -> None:
    before = scheduler.group_status(group).last_started
    error = ""
    try:
        run_cycle(group)
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
