"""What the console and the CLI show: hosts, ports, findings, history, the header."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from portconsole.core.adapters.dns import resolve_host_name
from portconsole.core.adapters.leader import LeaderInfo
from portconsole.core.domain.approval import approval_status
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.state import ChangeEvent, PointInTime, PortState
from portconsole.core.domain.targets import expand_targets, ip_sort_key
from portconsole.core.errors import UserError
from portconsole.core.services.base import ServiceBase
from portconsole.core.timeutil import add_months


@dataclass(slots=True)
class Overview:
    """The header of the console: monitoring status and counts."""

    hosts: int
    open_ports: int
    unapproved: int
    open_findings: int
    leader: LeaderInfo | None
    is_leader: bool
    last_scan: dict[str, Any] | None
    next_scan: datetime | None
    next_group: str | None
    paused: bool
    follow_reason: str = ""  # why this process may not lead ("" if it may)


@dataclass(slots=True)
class HostRow:
    address: str
    name: str
    open_ports: int
    unapproved: int
    last_seen: datetime | None
    status: str


@dataclass(slots=True)
class PortRow:
    host: str
    port: int
    proto: str
    service: str
    product: str
    version: str
    state: str
    approval: str  # approved | unapproved | expired
    justification: str
    owner: str
    first_seen: datetime | None
    last_seen: datetime | None


class Queries(ServiceBase):
    """Read-only questions, for the Monitor."""

    def data_version(self) -> str:
        return self.store.data_version()

    @functools.cached_property
    def _groups_by_address(self) -> dict[str, list[str]]:
        # Settings do not change while a monitor lives; expanding targets (and resolving
        # host names) once keeps every console refresh free of DNS lookups.
        names: dict[str, list[str]] = {}
        for group, conf in self.settings.groups.items():
            try:
                addresses = expand_targets(conf.targets, self.scope, resolve_host_name)
            except UserError:
                continue
            for address in addresses:
                names.setdefault(address, []).append(group)
        return names

    def group_of(self) -> dict[str, list[str]]:
        """Address -> the target groups that name it (for display)."""
        return self._groups_by_address

    def host_rows(self) -> list[HostRow]:
        now = self.clock()
        names = self.group_of()
        approvals = self.approvals.index()  # one index for the whole snapshot
        per_host: dict[str, list[PortState]] = {}
        for port in self.store.current_ports():
            per_host.setdefault(port.host, []).append(port)
        rows: list[HostRow] = []
        known = {h.address: h for h in self.store.hosts()}
        for address in sorted(set(known) | set(per_host), key=ip_sort_key):
            ports = per_host.get(address, [])
            unapproved = sum(
                1 for p in ports if approvals.status(address, p.port, p.proto, now) != "approved"
            )
            host = known.get(address)
            rows.append(
                HostRow(
                    address=address,
                    name=", ".join(names.get(address, [])) or (host.hostname if host else ""),
                    open_ports=len(ports),
                    unapproved=unapproved,
                    last_seen=host.last_seen if host else None,
                    status=host.status if host else "unknown",
                )
            )
        return rows

    def host_ports(self, address: str) -> list[PortRow]:
        now = self.clock()
        approvals = self.approvals.index()
        rows = []
        for port in self.store.current_ports(address):
            approval = approvals.in_force(address, port.port, port.proto, now)
            rows.append(
                PortRow(
                    host=address,
                    port=port.port,
                    proto=port.proto,
                    service=port.service,
                    product=port.product,
                    version=port.version,
                    state=port.state,
                    approval=approval_status(approval, now),
                    justification=approval.justification if approval else "",
                    owner=approval.owner if approval else "",
                    first_seen=port.first_seen,
                    last_seen=port.last_seen,
                )
            )
        return sorted(rows, key=lambda r: (r.proto, r.port))

    def history(
        self, host: str, port: int | None = None, proto: str | None = None
    ) -> list[ChangeEvent]:
        return self.store.history(host, port, proto)

    def state_at(self, at: datetime, host: str | None = None) -> PointInTime:
        return self.store.state_at(at, host)

    def findings(self, include_closed: bool = False) -> list[Finding]:
        return self.findings_book.all() if include_closed else self.findings_book.open()

    def snapshot(self) -> tuple[Overview, list[HostRow], list[Finding]]:
        """The overview, host rows and open findings from one read of each table.

        A console refreshes all three together; reading them separately parsed the hot
        file twice as often, and every parse holds the GIL the UI thread needs.
        """
        rows = self.host_rows()
        findings = self.findings_book.open()
        return self._overview(rows, findings), rows, findings

    def overview(self) -> Overview:
        return self._overview(self.host_rows(), self.findings_book.open())

    def _overview(self, rows: list[HostRow], open_findings: list[Finding]) -> Overview:
        next_due = self.scheduler.next_due()
        leader = self.leader.current()
        return Overview(
            hosts=len(rows),
            open_ports=sum(r.open_ports for r in rows),
            unapproved=sum(r.unapproved for r in rows),
            open_findings=len(open_findings),
            leader=leader,
            is_leader=self.leader.is_leader,
            last_scan=self.store.last_scan(),
            next_scan=next_due[1] if next_due else None,
            next_group=next_due[0] if next_due else None,
            paused=self.paused,
            follow_reason=self.follow_reason,
        )

    def is_insecure(self, service: str) -> bool:
        name = (service or "").lower()
        return any(
            name == s or name.startswith(s + "-") for s in self.settings.approval.insecure_services
        )

    def default_review_by(self) -> date:
        return add_months(self.clock(), self.settings.approval.review_months).date()
