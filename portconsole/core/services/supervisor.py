"""One supervisor for the console and the daemon: leadership, due groups, gaps, anchors.

Both used to carry their own scheduling loop, and the console's lacked the daemon's failure
handling (a cycle that crashed or never started was not recorded, so no gap appeared). Now
each calls `Supervisor.step` on its own clock (the daemon every second in a thread of its
own, the console from a worker after each tick) and the rules live here and in
`schedule.run_due`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from portconsole.core.errors import UserError
from portconsole.core.services.schedule import run_due

if TYPE_CHECKING:
    from portconsole.core.domain.finding import Finding
    from portconsole.core.services.schedule import Scheduler


class Supervised(Protocol):
    """What the supervisor needs of the facade (the Monitor), without importing it."""

    readonly: bool
    scheduler: Scheduler

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
        try:
            result.leading = monitor.try_lead()
        except UserError as error:
            result.errors.append(str(error))
            return result
        if not result.leading:
            return result
        if not monitor.paused:
            result.ran = run_due(monitor.scheduler, run_cycle, stop, self.is_leader)
        for action in (self._gaps, self._anchor):
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
