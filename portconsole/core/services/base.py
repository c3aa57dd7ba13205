"""What every service behind the facade shares: its collaborators, and how it audits.

The Monitor (the facade) is assembled from the services in this package; each is a class
of methods over these attributes, which the Monitor sets up once (monitor.py).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from portconsole.core.adapters.approvals import ApprovalRegistry
from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.journal import AuditEntry, AuditEvent, AuditLog
from portconsole.core.adapters.leader import LeaderElection
from portconsole.core.adapters.notify import DeliveryWorker, Notifier
from portconsole.core.adapters.scanning import ScannerLike
from portconsole.core.adapters.store import Store
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.targets import (
    Scope,
)
from portconsole.core.errors import PermissionRefused, UserError
from portconsole.core.identity import Actor
from portconsole.core.services.schedule import RunLocks, Scheduler
from portconsole.core.settings import Paths, Settings

log = logging.getLogger(__name__)


class ServiceBase:
    """The collaborators every service uses (set by the Monitor's constructor)."""

    settings: Settings
    paths: Paths
    origin: str
    readonly: bool
    actor: Actor
    scope: Scope
    store: Store
    audit: AuditLog
    approvals: ApprovalRegistry
    findings_book: FindingBook
    notifier: Notifier
    scheduler: Scheduler
    leader: LeaderElection
    # Why this process may not lead ("" if it may), and the event that stops it (see
    # Monitor.lead_refusal and Supervisor.step).
    follow_reason: str
    stopping: threading.Event | None
    _scanner: ScannerLike | None
    _scan_lock: RunLocks
    _delivery: DeliveryWorker | None
    # The clock every service reads (a seam: tests pass a fixed one).
    clock: Callable[[], datetime]

    @property
    def scanner(self) -> ScannerLike:
        # Imported on first use: reads and decisions need neither python-nmap nor nmap.
        if self._scanner is None:
            from portconsole.core.adapters.scanner import Scanner

            self._scanner = Scanner(self.settings.scan, self.scope)
        return self._scanner

    def _require_write(self, what: str) -> None:
        if self.readonly:
            raise PermissionRefused(f"read-only mode: cannot {what}; restart without --readonly")

    def _audit(
        self,
        action: str,
        *,
        outcome: str = "success",
        resource: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> AuditEvent:
        return self.audit.append_many(
            [self._entry(action, outcome=outcome, resource=resource, details=details, at=at)]
        )[0]

    def _entry(
        self,
        action: str,
        *,
        outcome: str = "success",
        resource: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> AuditEntry:
        # Dated by the service's clock, like the records the event is about.
        moment = at if at is not None else self.clock()
        return AuditEntry(action, self.actor, outcome, resource, details, moment)

    def _finding_entries(
        self, at: datetime, *groups: tuple[str, Iterable[Finding]]
    ) -> list[AuditEntry]:
        """One entry per finding of each (action, findings) group: `finding.raised`,
        `finding.reopened`, ... naming the finding, with its kind and severity."""
        return [
            self._entry(
                action,
                resource=finding_resource(finding),
                details={"kind": finding.kind, "severity": finding.severity},
                at=at,
            )
            for action, findings in groups
            for finding in findings
        ]

    def finding(self, finding_id: str) -> Finding:
        return self.findings_book.get(finding_id)

    def group_of(self) -> dict[str, list[str]]:
        """Address -> the target groups that name it (see Queries)."""
        raise NotImplementedError

    @property
    def paused(self) -> bool:
        """Whether scheduled monitoring is paused (see the Monitor)."""
        raise NotImplementedError


def finding_resource(finding: Finding) -> dict[str, Any]:
    return {
        "finding_id": finding.id,
        "host": finding.host,
        "port": finding.port,
        "proto": finding.proto,
    }


Method = TypeVar("Method", bound=Callable[..., Any])


def refusal_recorded(action: str) -> Callable[[Method], Method]:
    """A decision refused with a reason (bad input, policy, separation of duties) is an
    event too: the refused operation itself left nothing behind (its transaction rolled
    back), so the refusal is recorded on its own, with what was asked and why."""

    def wrap(method: Method) -> Method:
        @functools.wraps(method)
        def run(self: ServiceBase, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except UserError as error:
                if not self.readonly and not self.store.lock.in_transaction:
                    asked = {
                        k: v if isinstance(v, int | str) else str(v) for k, v in kwargs.items()
                    }
                    if args:
                        asked["id"] = str(args[0])
                    try:
                        self._audit(
                            f"{action}.refused",
                            outcome="failure",
                            details={"reason": str(error), "asked": asked},
                        )
                    except Exception:  # noqa: BLE001 - the refusal itself must reach the user
                        log.exception("could not record a refused %s", action)
                raise

        return run  # type: ignore[return-value]

    return wrap
