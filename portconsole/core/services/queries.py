"""What the console and the CLI show: hosts, ports, findings, history, the header."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from msgspec import Struct

from portconsole.core.adapters.dns import resolve_host_name
from portconsole.core.adapters.fingerprint_marks import FingerprintMarks
from portconsole.core.adapters.leader import LeaderInfo
from portconsole.core.domain.approval import approval_status
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.model import FindingKind
from portconsole.core.domain.state import ChangeEvent, PointInTime
from portconsole.core.domain.targets import expand_targets, ip_sort_key
from portconsole.core.errors import UserError
from portconsole.core.services.base import ServiceBase
from portconsole.core.timeutil import add_months


class Overview(Struct):
    """The header of the console: monitoring status and counts."""

    hosts: int
    open_ports: int
    unapproved: int
    open_findings: int | None  # None: not read yet (snapshot_hosts)
    leader: LeaderInfo | None
    is_leader: bool
    last_scan: dict[str, Any] | None
    next_scan: datetime | None
    next_group: str | None
    paused: bool
    follow_reason: str = ""  # why this process may not lead ("" if it may)
    sites_down: tuple[str, ...] = ()  # sites whose group's last run failed (services/sites.py)
    # Ports the background -sV of any process on the data dir is identifying (this one's
    # jobs and the others' marks: services/fingerprint_after.py).
    identifying: int = 0


class HostRow(Struct):
    """One row of the hosts table: a host with its open and unapproved port counts."""

    address: str
    name: str
    open_ports: int
    unapproved: int
    last_seen: datetime | None
    status: str


class PortRow(Struct):
    """One row of a host's port table: the port, its service, state and approval."""

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


# Address -> (port, proto) -> (last seen, last scan id) of its open ports.
Sightings = Mapping[str, Mapping[tuple[int, str], tuple[datetime, str]]]


def later_sighting(
    finding: Finding, seen: Sightings, up: Mapping[str, tuple[datetime | None, str]]
) -> tuple[datetime, str] | None:
    """When and by which scan an open finding's problem was last seen, if later than its
    record says (`seen`: the open ports' sightings; `up`: hosts up, with when and by which
    scan they were last seen): the book writes a finding only when it changes."""
    if not finding.is_open:
        return None
    sighting: tuple[datetime | None, str] | None
    if finding.port is not None and finding.proto is not None:
        sighting = seen.get(finding.host, {}).get((finding.port, finding.proto))
    elif finding.kind == FindingKind.UNKNOWN_HOST:
        sighting = up.get(finding.host)
    else:
        sighting = None
    if sighting is None or sighting[0] is None or sighting[0] <= finding.last_seen:
        return None
    return sighting[0], sighting[1]


class Queries(ServiceBase):
    """Read-only questions, for the Monitor."""

    if TYPE_CHECKING:
        # FingerprintAfter's (the Monitor's)
        def fingerprints_pending(self) -> int: ...

        @property
        def _fingerprint_marks(self) -> FingerprintMarks: ...

    def data_version(self) -> str:
        """A cheap token that moves whenever what the console shows may have: the store, or
        a mark of a background -sV (another process's started or ended)."""
        return f"{self.store.data_version()}/{self._fingerprint_marks.version()}"

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
        return self._host_rows(self.store.open_port_sightings())

    def _host_rows(self, per_host: Sightings) -> list[HostRow]:
        """The hosts table from `per_host` (address -> its open ports' sightings)."""
        now = self.clock()
        names = self.group_of()
        approvals = self.approvals.index()  # one index for the whole snapshot
        # A host no approval names has every open port unapproved: nothing to look up.
        approved_hosts = {approval.host for approval in approvals}
        rows: list[HostRow] = []
        known = {h.address: h for h in self.store.hosts()}
        for address in sorted(set(known) | set(per_host), key=ip_sort_key):
            ports = per_host.get(address, {})
            if address in approved_hosts:
                unapproved = sum(
                    1
                    for port, proto in ports
                    if approvals.status(address, port, proto, now) != "approved"
                )
            else:
                unapproved = len(ports)
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
        return self.port_rows([address]).get(address, [])

    def port_rows(self, addresses: Iterable[str] | None = None) -> dict[str, list[PortRow]]:
        """Address -> its open ports with their approval status, for every host or the
        `addresses` given: one approval index and one read of the state for all of them."""
        now = self.clock()
        approvals = self.approvals.index()
        per_host: dict[str, list[PortRow]] = {}
        ports = (
            self.store.current_ports()
            if addresses is None
            else self.store.current_ports(hosts=list(addresses))
        )
        for port in ports:
            address = port.host
            approval = approvals.in_force(address, port.port, port.proto, now)
            per_host.setdefault(address, []).append(
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
        for rows in per_host.values():
            rows.sort(key=lambda r: (r.proto, r.port))
        return per_host

    def history(
        self, host: str, port: int | None = None, proto: str | None = None
    ) -> list[ChangeEvent]:
        return self.store.history(host, port, proto)

    def state_at(self, at: datetime, host: str | None = None) -> PointInTime:
        return self.store.state_at(at, host)

    def findings(self, include_closed: bool = False) -> list[Finding]:
        """Findings of the caller's own (copies: it may change them), latest sightings shown."""
        book = self.findings_book
        return self._last_sightings(book.all() if include_closed else book.open())

    def finding_as_seen(self, finding_id: str) -> Finding:
        """One finding as `findings()` shows it (with its latest sighting)."""
        return self._last_sightings([self.finding(finding_id)])[0]

    def _last_sightings(
        self, findings: list[Finding], seen: Sightings | None = None
    ) -> list[Finding]:
        """Findings with `last_seen`/`last_scan_id` of the latest scan that saw them.

        The book writes a finding only when it changes (a cycle that sees an open port
        again writes nothing), so its stored sighting is the last change; the scan state
        knows when the port was last seen open, or the unknown host last seen up. Shown
        values are the later of the two, as before: nothing is written here, and the
        findings given are not changed (they may be the book's shared ones): a finding
        seen later is answered as a copy (`Finding.sighted`). `seen`: the open ports'
        sightings already read (`open_port_sightings`), if the caller has them.
        """
        hosts = sorted({f.host for f in findings if f.is_open})
        if not hosts:
            return findings
        if seen is None:
            seen = self.store.open_port_sightings(hosts)
        up = {
            h.address: (h.last_seen, h.last_scan_id)
            for h in self.store.hosts(hosts)
            if h.status == "up"
        }
        shown: list[Finding] = []
        for finding in findings:
            sighting = later_sighting(finding, seen, up)
            shown.append(finding if sighting is None else finding.sighted(*sighting))
        return shown

    def snapshot(self) -> tuple[Overview, list[HostRow], list[Finding], Sightings]:
        """The overview, host rows, open findings and open ports' sightings from one read
        of each table.

        A console refreshes all of them together; reading them separately parsed the hot
        file twice as often, and every parse holds the GIL the UI thread needs. The
        findings are the book's shared objects, as last written (never changed here): when
        one was last seen is `later_sighting` of it, asked when shown. Copies of 100,000
        findings seen since (`_last_sightings`), made on every read while scans land, were
        the churn that fragmented a console's memory.
        """
        seen = self.store.open_port_sightings()
        rows = self._host_rows(seen)
        findings = self.findings_book.shared_open()
        return self._overview(rows, findings), rows, findings, seen

    def snapshot_hosts(self) -> tuple[Overview, list[HostRow]]:
        """The overview and host rows without reading the findings: a console's first frame
        (the findings of a big store take as long again to read). `open_findings` is None."""
        rows = self._host_rows(self.store.open_port_sightings())
        return self._overview(rows, None), rows

    def overview(self) -> Overview:
        return self._overview(self.host_rows(), self.findings_book.shared_open())

    def _overview(self, rows: list[HostRow], open_findings: list[Finding] | None) -> Overview:
        next_due = self.scheduler.next_due()
        leader = self.leader.current()
        return Overview(
            hosts=len(rows),
            open_ports=sum(r.open_ports for r in rows),
            unapproved=sum(r.unapproved for r in rows),
            open_findings=None if open_findings is None else len(open_findings),
            leader=leader,
            is_leader=self.leader.is_leader,
            last_scan=self.store.last_scan(),
            next_scan=next_due[1] if next_due else None,
            next_group=next_due[0] if next_due else None,
            paused=self.paused,
            follow_reason=self.follow_reason,
            sites_down=self._sites_down(),
            identifying=self.fingerprints_pending(),
        )

    def _sites_down(self) -> tuple[str, ...]:
        if not any(conf.site for conf in self.settings.groups.values()):
            return ()  # no site: nothing of Celery's is imported
        from portconsole.core.services.sites import sites_down

        return sites_down(self)

    def is_insecure(self, service: str) -> bool:
        name = (service or "").lower()
        return any(
            name == s or name.startswith(s + "-") for s in self.settings.approval.insecure_services
        )

    def default_review_by(self) -> date:
        return add_months(self.clock(), self.settings.approval.review_months).date()
