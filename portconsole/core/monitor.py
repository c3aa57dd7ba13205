"""The service facade: the TUI and the CLI are two faces of this one object.

Neither shell talks to nmap, TinyDB or apprise directly. One scan cycle is:

    targets -> sweep (nmap) -> confirm (re-probe) -> fingerprint (-sV where needed)
            -> store.ingest -> detect -> findings -> outbox -> audit

Every write holds the store's DataLock; every decision is an audit event.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portconsole.core.adapters.approvals import ApprovalRegistry
from portconsole.core.adapters.dns import resolve_host_name
from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.journal import AuditEntry, AuditEvent, AuditLog, VerifyResult
from portconsole.core.adapters.leader import LeaderElection, LeaderInfo
from portconsole.core.adapters.notify import DeliveryResult, DeliveryWorker, Notifier, OutboxMessage
from portconsole.core.adapters.storage import ensure_private_dir
from portconsole.core.adapters.store import ChangeEvent, PointInTime, PortState, Store
from portconsole.core.domain.approval import Approval
from portconsole.core.domain.detect import classify_port, detect, scan_coverage
from portconsole.core.domain.finding import Finding, FindingCandidate
from portconsole.core.domain.model import (
    OPEN,
    Change,
    PortObservation,
    Progress,
    ScanResult,
)
from portconsole.core.domain.targets import PortSpec, expand_targets, ip_sort_key, parse_ports
from portconsole.core.errors import NotFoundError, PermissionRefused, StoreError, UserError
from portconsole.core.identity import Actor
from portconsole.core.services.schedule import Gap, Scheduler
from portconsole.core.settings import Paths, Settings, load_settings, warn_if_world_readable
from portconsole.core.timeutil import add_months, iso, parse_iso, utcnow

if TYPE_CHECKING:
    from portconsole.core.adapters.scanning import ScannerLike

# Ports whose fingerprint is older than this are fingerprinted again, so a product swapped
# behind an unchanged port is still noticed ("changed" mode cannot see it from a sweep).
REFINGERPRINT_AFTER = timedelta(hours=24)

ProgressFn = Callable[[Progress], None]

# The hot file's table for console-wide monitoring state (paused). The store owns the
# `hosts`, `ports` and `meta` tables.
MONITORING_TABLE = "monitoring"
SETTINGS_TABLE = "settings_fingerprint"
ANCHOR_TABLE = "anchors"


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


@dataclass(slots=True)
class CycleResult:
    """What one scan cycle did: the scan, what changed, what it raised."""

    scan: ScanResult
    changes: list[Change]
    findings: list[Finding]
    approval_status: dict[str, str] = field(default_factory=dict)  # "host:port/proto" -> status
    unconfirmed: list[str] = field(default_factory=list)  # keys a re-probe did not confirm
    gaps: list[Gap] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        meta = self.scan.metadata_json()
        hosts = []
        for host in self.scan.hosts:
            ports = []
            for port in host.ports:
                item = {
                    "port": port.port,
                    "proto": port.proto,
                    "state": port.state,
                    "service": port.service,
                    "product": port.product,
                    "version": port.version,
                }
                key = f"{host.address}:{port.port}/{port.proto}"
                item["approval"] = self.approval_status.get(key, "unapproved")
                ports.append(item)
            hosts.append({"address": host.address, "status": host.status, "ports": ports})
        return {
            "scan_id": meta["scan_id"],
            "started_at": meta["started_at"],
            "finished_at": meta["finished_at"],
            "scan_type": meta["scan_type"],
            "privileged": meta["privileged"],
            "outcome": meta["outcome"],
            "error": meta["error"],
            "targets": meta["targets"],
            "ports": meta["ports"],
            "nmap_version": meta["nmap_version"],
            "raw_xml_sha256": meta["raw_xml_sha256"],
            "hosts": hosts,
            "changes": [c.to_json() for c in self.changes],
            "findings": [
                {
                    "id": f.id,
                    "kind": f.kind,
                    "severity": f.severity,
                    "host": f.host,
                    "port": f.port,
                    "proto": f.proto,
                }
                for f in self.findings
            ],
            "unconfirmed": list(self.unconfirmed),
        }


class Monitor:
    """One service object over the store, scanner, detection, audit and notifications."""

    def __init__(
        self,
        settings: Settings,
        paths: Paths,
        *,
        origin: str = "cli",
        readonly: bool = False,
        scanner: ScannerLike | None = None,
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.origin = origin
        self.readonly = readonly
        self.actor = Actor.current(origin)
        self.scope = settings.scope_obj()
        self.store = Store(
            paths.data_dir,
            settings.retention,
            readonly=readonly,
            future_skew=timedelta(seconds=settings.store.future_skew),
        )
        self.audit: AuditLog = self.store.journal
        self.approvals = ApprovalRegistry(self.store.hot, self.store.lock, settings)
        self.findings_book = FindingBook(self.store.hot, self.store.lock)
        self.notifier = Notifier(
            settings.notify,
            self.store.hot,
            self.store.lock,
            on_result=self._on_delivery,
            anchor_urls=settings.audit.anchor_urls,
        )
        self.scheduler = Scheduler(
            settings.groups,
            paths.data_dir / "schedule.json",
            grace=settings.daemon.gap_grace_seconds,
            lock=self.store.lock,
        )
        self.leader = LeaderElection(
            paths.data_dir, self.actor, stale_after=settings.daemon.leader_stale_seconds
        )
        # Tests and replays pass their own scanner; by default the real nmap is used.
        self._scanner: ScannerLike | None = scanner
        self._scan_lock = threading.Lock()
        self.warnings: list[str] = []
        self._delivery: DeliveryWorker | None = None
        self._delivery_stop = threading.Event()
        if settings.notify.urls and paths.config_exists:
            warning = warn_if_world_readable(paths.config_file)
            if warning:
                self.warnings.append(warning)
        if not readonly:
            self._audit_settings_change()

    def _audit_settings_change(self) -> None:
        """Record a settings change (the config file is edited outside the product).

        The fingerprint covers the effective settings with notification secrets masked, so
        the audit chain shows that and when the configuration changed, never a token.
        """
        from portconsole.core.secrets import mask_url

        data = self.settings.model_dump(mode="json")
        data["notify"]["urls"] = [
            {**t.model_dump(mode="json"), "url": mask_url(t.url)}
            for t in self.settings.notify.targets()
        ]
        data.pop("data_dir", None)
        fingerprint = hashlib.sha256(
            json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        with self.store.lock.hold():
            table = self.store.hot.table(SETTINGS_TABLE)
            known = table.all()
            previous = known[0].get("sha256") if known else None
            if previous == fingerprint:
                return
            record = {
                "sha256": fingerprint,
                "at": iso(utcnow()),
                "config": str(self.paths.config_file),
            }
            if known:
                table.update(record)
            else:
                table.insert(record)
            self._audit(
                "settings.changed" if previous else "settings.recorded",
                details={
                    "config": str(self.paths.config_file),
                    "sha256": fingerprint,
                    "previous": previous,
                },
            )

    # ----- construction -------------------------------------------------------------
    @classmethod
    def open(
        cls,
        config: Path | None = None,
        data_dir: Path | None = None,
        *,
        origin: str = "cli",
        readonly: bool = False,
    ) -> Monitor:
        settings, paths = load_settings(config, data_dir)
        return cls(settings, paths, origin=origin, readonly=readonly)

    def close(self) -> None:
        self.stop_delivery()
        self.leader.release()

    def start_delivery(self, interval: float = 5.0) -> None:
        """Deliver the outbox in a background thread until `close()` (not in read-only mode).

        Any number of processes may deliver: messages are claimed under the store lock,
        so none is sent twice, and a target that is down only delays its own messages.
        """
        wanted = self.settings.notify.urls or self.settings.audit.anchor_urls
        if self.readonly or self._delivery is not None or not wanted:
            return
        self._delivery_stop.clear()
        self._delivery = DeliveryWorker(self.notifier, self._delivery_stop, interval)
        self._delivery.start()

    def stop_delivery(self, timeout: float = 2.0) -> None:
        if self._delivery is None:
            return
        self._delivery_stop.set()
        self._delivery.join(timeout=timeout)
        self._delivery = None

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

    # ----- reads --------------------------------------------------------------------
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
        now = utcnow()
        names = self.group_of()
        active = self.approvals.active()
        per_host: dict[str, list[PortState]] = {}
        for port in self.store.current_ports():
            per_host.setdefault(port.host, []).append(port)
        rows: list[HostRow] = []
        known = {h.address: h for h in self.store.hosts()}
        for address in sorted(set(known) | set(per_host), key=ip_sort_key):
            ports = per_host.get(address, [])
            unapproved = sum(
                1
                for p in ports
                if classify_port(address, p.port, p.proto, p.service, active, now) != "approved"
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
        now = utcnow()
        active = self.approvals.active()
        rows = []
        for port in self.store.current_ports(address):
            approval = self.approvals.match(address, port.port, port.proto, now)
            rows.append(
                PortRow(
                    host=address,
                    port=port.port,
                    proto=port.proto,
                    service=port.service,
                    product=port.product,
                    version=port.version,
                    state=port.state,
                    approval=classify_port(
                        address, port.port, port.proto, port.service, active, now
                    ),
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

    def finding(self, finding_id: str) -> Finding:
        return self.findings_book.get(finding_id)

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
        )

    def is_insecure(self, service: str) -> bool:
        name = (service or "").lower()
        return any(
            name == s or name.startswith(s + "-") for s in self.settings.approval.insecure_services
        )

    def default_review_by(self) -> date:
        return add_months(utcnow(), self.settings.approval.review_months).date()

    def audit_events(self, since: datetime | None = None) -> list[AuditEvent]:
        return self.audit.events(since=since)

    def audit_verify(self, anchors: Iterable[tuple[int, str]] = ()) -> VerifyResult:
        """The journal's chain, head and anchors, then the projections against a replay."""
        result = self.audit.verify(anchors)
        problems = list(result.problems)
        if self.store.damage:
            problems.append(self.store.damage)
        elif result.ok or result.count:
            try:
                problems += self.store.check()
            except StoreError as error:
                problems.append(str(error))
        if not problems:
            return result
        return VerifyResult(
            False,
            result.count,
            result.first_bad_seq,
            problems[0],
            result.head,
            tuple(problems),
        )

    def store_check(self) -> list[str]:
        if self.store.damage:
            return [self.store.damage]
        return self.store.check()

    def store_rebuild(self) -> None:
        self._require_write("rebuild the projections")
        self.store.rebuild()

    def audit_tip(self) -> str:
        """A cheap token that changes whenever an event is appended (the chain's head)."""
        head = self.audit.head()
        return f"{head.seq}:{head.hash}" if head else ""

    # ----- monitoring state ------------------------------------------------------------
    @property
    def paused(self) -> bool:
        with self.store.lock.hold():
            docs = self.store.hot.table(MONITORING_TABLE).all()
        return bool(docs and docs[0].get("paused"))

    def _set_paused(self, paused: bool) -> None:
        self._require_write("pause or resume monitoring")
        with self.store.lock.hold():
            table = self.store.hot.table(MONITORING_TABLE)
            if table.all():
                table.update({"paused": paused, "changed_at": iso(utcnow())})
            else:
                table.insert({"paused": paused, "changed_at": iso(utcnow())})
            self._audit("monitoring.paused" if paused else "monitoring.resumed")

    def pause(self) -> None:
        self._set_paused(True)

    def resume(self) -> None:
        self._set_paused(False)

    def try_lead(self) -> bool:
        if self.readonly:
            return False
        if self.leader.is_leader:
            return True
        if not self.leader.try_acquire():
            return False
        # Beat in the background: a long scan must not make the leader look dead.
        self.leader.start_heartbeat(self.settings.daemon.leader_stale_seconds / 3)
        return True

    def due_groups(self) -> list[str]:
        if self.paused:
            return []
        return self.scheduler.due(utcnow())

    # ----- decisions -------------------------------------------------------------------
    def ack(self, finding_id: str) -> Finding:
        self._require_write("acknowledge findings")
        with self.store.lock.hold():
            finding = self.findings_book.ack(self.finding(finding_id).id, str(self.actor))
            self._audit("finding.ack", resource=_finding_resource(finding))
        return finding

    def note(self, finding_id: str, text: str) -> Finding:
        self._require_write("add notes")
        with self.store.lock.hold():
            finding = self.findings_book.note(self.finding(finding_id).id, str(self.actor), text)
            self._audit("finding.note", resource=_finding_resource(finding), details={"text": text})
        return finding

    def risk_accept(self, finding_id: str, *, until: date, reason: str) -> Finding:
        self._require_write("accept risks")
        with self.store.lock.hold():
            finding = self.findings_book.risk_accept(
                self.finding(finding_id).id, str(self.actor), _review_datetime(until), reason
            )
            self._audit(
                "finding.risk_accepted",
                resource=_finding_resource(finding),
                details={"until": until.isoformat(), "reason": reason},
            )
        return finding

    def flag(self, finding_id: str, *, reason: str) -> Finding:
        self._require_write("flag findings")
        with self.store.lock.hold():
            finding = self.findings_book.flag(self.finding(finding_id).id, str(self.actor), reason)
            self._audit(
                "finding.flagged", resource=_finding_resource(finding), details={"reason": reason}
            )
        return finding

    def approve(
        self,
        finding_id: str,
        *,
        justification: str,
        owner: str,
        ticket: str = "",
        review_by: date | None = None,
        mitigation: str = "",
        requester: str | None = None,
    ) -> Finding:
        """Approve a finding's port: create an approval record and close the finding."""
        self._require_write("approve findings")
        if not justification.strip():
            raise UserError("a justification is required to approve a port")
        if not owner.strip():
            raise UserError("an owner is required to approve a port")
        with self.store.lock.hold():
            finding = self.finding(finding_id)
            if not finding.is_open:
                raise UserError(
                    f"finding {finding.id} is {finding.status}: only open findings "
                    "(new, acknowledged, flagged) can be approved"
                )
            if finding.port is None or finding.proto is None:
                raise UserError(
                    f"finding {finding.id} ({finding.kind}) is not about a port: flag or note it instead"
                )
            now = utcnow()
            approval = self.approvals.add(
                host=finding.host,
                port=finding.port,
                proto=finding.proto,
                service=finding.service,
                justification=justification,
                owner=owner,
                requester=(requester or "").strip(),
                approver=self.actor.person,
                actor=str(self.actor),
                ticket=ticket,
                approved_at=now,
                review_by=_review_datetime(review_by) if review_by else None,
                mitigation=mitigation,
                source=self.origin,
                now=now,
            )
            for retired_id in approval.supersedes:
                self._audit(
                    "approval.retired",
                    resource={"approval_id": retired_id},
                    details={"superseded_by": approval.id},
                )
            self._audit(
                "approval.added",
                resource={
                    "host": approval.host,
                    "port": approval.port,
                    "proto": approval.proto,
                    "approval_id": approval.id,
                },
                details={
                    "justification": justification,
                    "owner": owner,
                    "ticket": ticket,
                    "review_by": iso(approval.review_by),
                    "finding_id": finding.id,
                },
            )
            finding = self.findings_book.approve(
                finding.id, str(self.actor), approval.id, justification, ticket=ticket
            )
            self._audit(
                "finding.approved",
                resource=_finding_resource(finding),
                details={"approval_id": approval.id},
            )
            # Other open findings on the same port (e.g. insecure service) follow the decision.
        return finding

    def approvals_list(self, include_retired: bool = False) -> list[Approval]:
        return self.approvals.all() if include_retired else self.approvals.active()

    # ----- scanning --------------------------------------------------------------------
    def resolve_targets(
        self, targets: list[str] | None, group: str | None, ports: str | None
    ) -> tuple[list[str], list[str], PortSpec, bool, str]:
        """Targets, addresses, ports, udp and group label for one cycle."""
        udp = self.settings.scan.udp
        if targets:
            # Named targets are an ad-hoc scan: never recorded as a group's scheduled run
            # (that would hide the group's other hosts going unscanned); a group given
            # with them only lends its ports.
            texts = list(targets)
            if group is not None and group not in self.settings.groups:
                known = ", ".join(sorted(self.settings.groups)) or "none configured"
                raise UserError(f"no target group {group!r} (known: {known})")
            default_ports = self.settings.group_ports(group) if group else self.settings.scan.ports
            spec = parse_ports(ports or default_ports)
            label = ""
        elif group:
            if group not in self.settings.groups:
                known = ", ".join(sorted(self.settings.groups)) or "none configured"
                raise UserError(f"no target group {group!r} (known: {known})")
            conf = self.settings.groups[group]
            texts = list(conf.targets)
            spec = parse_ports(ports or self.settings.group_ports(group))
            udp = conf.udp if conf.udp is not None else udp
            label = group
        else:
            if not self.settings.groups:
                raise UserError(
                    "no targets given and no target groups configured: name targets, "
                    "e.g. 'portconsole scan 127.0.0.2', or add [groups.NAME] to the config"
                )
            texts = [t for conf in self.settings.groups.values() for t in conf.targets]
            spec = parse_ports(
                ports
                or ",".join(
                    str(parse_ports(self.settings.group_ports(g))) for g in self.settings.groups
                )
            )
            label = "all"
        addresses = expand_targets(texts, self.scope, resolve_host_name)
        return texts, addresses, spec, udp, label

    def run_cycle(
        self,
        group: str | None = None,
        targets: list[str] | None = None,
        *,
        ports: str | None = None,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        fingerprint: str | None = None,
    ) -> CycleResult:
        """One scan cycle, blocking. Call from a worker thread in the TUI."""
        self._require_write("run scans")
        texts, addresses, spec, udp, label = self.resolve_targets(targets, group, ports)
        cancel = cancel or threading.Event()
        with self._scan_lock:
            return self._cycle(texts, addresses, spec, udp, label, progress, cancel, fingerprint)

    def rescan_host(
        self,
        address: str,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> CycleResult:
        groups = self.group_of().get(address, [])
        ports = (
            ",".join(str(parse_ports(self.settings.group_ports(g))) for g in groups)
            if groups
            else None
        )
        return self.run_cycle(targets=[address], ports=ports, progress=progress, cancel=cancel)

    def _cycle(
        self,
        texts: list[str],
        addresses: list[str],
        spec: PortSpec,
        udp: bool,
        label: str,
        progress: ProgressFn | None,
        cancel: threading.Event,
        fingerprint_mode: str | None,
    ) -> CycleResult:
        scanner = self.scanner
        started = utcnow()
        if label and label in self.settings.groups:
            self.scheduler.mark_started(label, started)
        self._audit(
            "scan.start",
            details={
                "targets": texts,
                "hosts": len(addresses),
                "ports": str(spec),
                "group": label,
                "scan_type": scanner.scan_type,
            },
        )
        try:
            scan = scanner.scan(
                addresses,
                spec,
                udp=udp,
                fingerprint="none",
                progress=progress,
                cancel=cancel,
                targets=texts,
                origin=self.origin,
                group=label,
            )
        except UserError as error:
            self._audit(
                "scan.end", outcome="failure", details={"error": str(error), "group": label}
            )
            if label in self.settings.groups:
                self.scheduler.mark_finished(
                    label, utcnow(), "failed", len(addresses), 0, error=str(error)
                )
                self.record_gaps()
            raise
        state = {(p.host, p.port, p.proto): p for p in self.store.current_ports()}
        unconfirmed: list[str] = []
        if not cancel.is_set() and scan.outcome != "cancelled":
            if progress:
                progress(
                    Progress(len(scan.hosts), len(addresses), scan.open_port_count(), "confirm")
                )
            unconfirmed = self._confirm(scan, state, cancel)
            if progress:
                progress(
                    Progress(len(scan.hosts), len(addresses), scan.open_port_count(), "fingerprint")
                )
            self._fingerprint(
                scan, state, cancel, fingerprint_mode or self.settings.scan.fingerprint
            )
        if progress:
            progress(Progress(len(scan.hosts), len(addresses), scan.open_port_count(), "ingest"))
        changes, new_findings, gaps = self._ingest_and_detect(scan, label, len(addresses))
        now = utcnow()
        active = self.approvals.active()
        status = {
            f"{h.address}:{p.port}/{p.proto}": classify_port(
                h.address, p.port, p.proto, p.service, active, now
            )
            for h in scan.hosts
            for p in h.ports
        }
        if progress:
            progress(Progress(len(scan.hosts), len(addresses), scan.open_port_count(), "done"))
        return CycleResult(scan, changes, new_findings, status, unconfirmed, gaps)

    def _confirm(
        self,
        scan: ScanResult,
        state: dict[tuple[str, int, str], PortState],
        cancel: threading.Event,
    ) -> list[str]:
        """Re-probe new and vanished ports; drop what a re-probe does not confirm.

        Scanners miss ports under load and ports flap: a new open port must still be open,
        and a vanished port must still be closed, at every re-probe before either counts.
        """
        probes = self.settings.scan.confirm_probes
        if probes <= 0:
            return []
        covered = set(scan.protocols)
        spec = parse_ports(scan.ports)
        known_by_host: dict[str, set[tuple[int, str]]] = {}
        for address, port, proto in state:
            known_by_host.setdefault(address, set()).add((port, proto))
        suspects: dict[str, set[tuple[int, str]]] = {}
        for host in scan.hosts:
            seen = {p.key for p in host.open_ports()}
            known_keys = known_by_host.get(host.address, set())
            new = seen - known_keys
            # Vanished: known open, covered by this scan (port and protocol), not seen now.
            gone = (
                {k for k in known_keys - seen if k[1] in covered and k[0] in spec}
                if host.status == "up"
                else set()
            )
            if new or gone:
                suspects[host.address] = new | gone
        if not suspects:
            return []
        unconfirmed: list[str] = []

        def reprobe(address: str) -> tuple[str, list[set[tuple[int, str]]]]:
            # A probe that fails or is cancelled confirms nothing either way: the sweep's
            # answer stands (better a finding to dismiss than a port never reported).
            results = []
            for _ in range(probes):
                if cancel.is_set():
                    return address, []
                try:
                    results.append(
                        self.scanner.probe(address, sorted(suspects[address]), cancel=cancel)
                    )
                except UserError:
                    return address, []
            return address, results

        with ThreadPoolExecutor(max_workers=max(1, self.settings.scan.workers)) as pool:
            outcomes = list(pool.map(reprobe, suspects))
        for address, results in outcomes:
            if not results:
                continue
            target = scan.host(address)
            if target is None:
                continue
            by_key = {p.key: p for p in target.ports}
            for key in suspects[address]:
                was_seen = key in by_key and by_key[key].state == OPEN
                agree = all((key in r) == was_seen for r in results)
                if agree:
                    continue
                unconfirmed.append(f"{address}:{key[0]}/{key[1]}")
                if was_seen:
                    # Opened for one probe and gone at the re-probe: not a new port yet.
                    target.ports = [p for p in target.ports if p.key != key]
                else:
                    # Missed by the sweep but open at the re-probe: the port is still there.
                    known = state[(address, *key)]
                    target.ports.append(
                        PortObservation(
                            key[0],
                            key[1],
                            OPEN,
                            known.service,
                            known.product,
                            known.version,
                            known.extrainfo,
                        )
                    )
            target.ports.sort(key=lambda p: (p.proto, p.port))
        return unconfirmed

    def _fingerprint(
        self,
        scan: ScanResult,
        state: dict[tuple[str, int, str], PortState],
        cancel: threading.Event,
        mode: str,
    ) -> None:
        """Run -sV only where it is needed; carry stored fingerprints elsewhere."""
        now = utcnow()
        wanted: dict[str, list[tuple[int, str]]] = {}
        for host in scan.hosts:
            for index, port in enumerate(host.ports):
                if port.state != OPEN:
                    continue
                known = state.get((host.address, port.port, port.proto))
                stale = (
                    known is None
                    or known.fingerprinted_at is None
                    or now - known.fingerprinted_at > REFINGERPRINT_AFTER
                )
                if mode == "all" or (mode == "changed" and stale):
                    wanted.setdefault(host.address, []).append(port.key)
                elif known is not None and (known.product or known.version):
                    # Shown as known, but not a fresh fingerprint: the store keeps the
                    # fingerprint's time, so the re-fingerprint rule still fires.
                    host.ports[index] = replace(
                        port,
                        service=known.service or port.service,
                        product=known.product,
                        version=known.version,
                        extrainfo=known.extrainfo,
                        fingerprinted=False,
                    )
        if not wanted or cancel.is_set():
            return

        errors: list[str] = []

        def run(address: str) -> tuple[str, dict[tuple[int, str], PortObservation]]:
            # A failed -sV keeps the sweep's answer; it is noted, never fatal to the cycle.
            try:
                return address, self.scanner.fingerprint(address, wanted[address], cancel=cancel)
            except UserError as error:
                errors.append(str(error))
                return address, {}

        with ThreadPoolExecutor(max_workers=max(1, self.settings.scan.workers)) as pool:
            results = list(pool.map(run, wanted))
        count = 0
        for address, found in results:
            target = scan.host(address)
            if target is None:
                continue
            for index, port in enumerate(target.ports):
                if port.key in found and found[port.key].state == OPEN:
                    target.ports[index] = found[port.key]
                    count += 1
        scan.fingerprinted = count
        if errors:
            scan.error = "; ".join(filter(None, [scan.error, *errors]))

    def _entry(
        self,
        action: str,
        *,
        outcome: str = "success",
        resource: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> AuditEntry:
        return AuditEntry(action, self.actor, outcome, resource, details, at)

    def _ingest_and_detect(
        self, scan: ScanResult, label: str, planned: int
    ) -> tuple[list[Change], list[Finding], list[Gap]]:
        """Ingest, detect and audit in one hold of the store lock.

        The audit events of a cycle are written together (one fsync per segment, not one
        per change): a scan that opens a hundred ports must not hold the lock for seconds.
        """
        with self.store.lock.hold():
            known_hosts = [h.address for h in self.store.hosts() if h.status == "up"]
            changes = self.store.ingest(scan)
            now = scan.finished_at
            gaps: list[Gap] = []
            if label in self.settings.groups:
                self.scheduler.mark_finished(
                    label, now, scan.outcome, planned, len(scan.hosts), error=scan.error
                )
                gaps = self.scheduler.find_gaps(utcnow())
            entries = [
                self._entry(
                    "scan.end",
                    outcome="success" if scan.outcome == "success" else "failure",
                    resource={"scan_id": scan.scan_id},
                    details={
                        "outcome": scan.outcome,
                        "error": scan.error,
                        "hosts": len(scan.hosts),
                        "open_ports": scan.open_port_count(),
                        "changes": len(changes),
                        "scan_type": scan.scan_type,
                        "raw_xml_sha256": scan.raw_xml_sha256,
                        "group": label,
                        "imported": scan.imported,
                        "backfill": scan.backfill,
                    },
                    at=now,
                )
            ]
            entries += [
                self._entry(
                    f"change.{change.kind}",
                    resource={
                        "host": change.host,
                        "port": change.port,
                        "proto": change.proto,
                        "scan_id": scan.scan_id,
                    },
                    details={"before": change.before, "after": change.after},
                    at=now,
                )
                for change in changes
            ]
            entries += self._gap_entries(gaps, now)
            alerts, finding_entries = self._detect(scan, known_hosts, gaps)
            self.audit.append_many(entries + finding_entries)
            # Queued in the same hold as the findings: a crash cannot leave a raised
            # finding that no one was told about (the next scan only refreshes it).
            self._enqueue(alerts, scan.scan_id)
        return changes, alerts, gaps

    def _enqueue(self, alerts: list[Finding], scan_id: str) -> None:
        if not alerts:
            return
        self.notifier.enqueue(alerts, scan_id)
        if self._delivery is not None:
            self._delivery.wake()

    def _gap_entries(self, gaps: Iterable[Gap], at: datetime) -> list[AuditEntry]:
        return [
            self._entry(
                "monitoring.gap",
                outcome="failure",
                resource={"group": gap.group},
                details=gap.to_json(),
                at=at,
            )
            for gap in gaps
        ]

    def record_gaps(self) -> list[Finding]:
        """Raise the monitoring gaps found outside a completed cycle (a run that failed,
        a scheduled run that is late) as findings, audited and notified. Returns them."""
        if self.readonly:
            return []
        with self.store.lock.hold():
            now = utcnow()
            gaps = self.scheduler.find_gaps(now)
            if not gaps:
                return []
            outcome = self.findings_book.ingest_candidates(
                [self._gap_candidate(gap, "") for gap in gaps], now, self.settings.scan.flap_window
            )
            alerts = outcome.new + outcome.lapsed
            entries = self._gap_entries(gaps, now) + [
                self._entry(
                    "finding.raised",
                    resource=_finding_resource(finding),
                    details={"kind": finding.kind, "severity": finding.severity},
                    at=now,
                )
                for finding in outcome.new
            ]
            self.audit.append_many(entries)
            self._enqueue(alerts, "")
        return alerts

    def _detect(
        self, scan: ScanResult, known_hosts: list[str], gaps: Iterable[Gap]
    ) -> tuple[list[Finding], list[AuditEntry]]:
        """Raise findings for one ingested scan: those worth a notification, and audit entries."""
        now = scan.finished_at
        candidates = detect(
            scan,
            self.store.current_ports(),
            known_hosts,
            self.approvals.active(),
            self.settings,
            now,
            self._baseline_hosts(),
        )
        candidates += [self._gap_candidate(gap, scan.scan_id) for gap in gaps]
        outcome = self.findings_book.ingest_candidates(
            candidates, now, self.settings.scan.flap_window
        )
        coverage = scan_coverage(scan)
        up_hosts = {h.address for h in scan.hosts if h.status == "up"}

        def verified_gone(host: str, port: int | None, proto: str | None) -> bool:
            # A host that answered nothing (powered off, filtered) proves no port closed.
            return coverage.covers(host, port, proto) and (port is None or host in up_hosts)

        resolved = self.findings_book.resolve_missing(
            {c.key for c in candidates}, verified_gone, now, scan.scan_id
        )
        entries = [
            self._entry(
                action,
                resource=_finding_resource(finding),
                details={"kind": finding.kind, "severity": finding.severity},
                at=now,
            )
            for action, findings in (
                ("finding.raised", outcome.new),
                ("finding.reopened", outcome.reopened),
                ("finding.risk_lapsed", outcome.lapsed),
                ("finding.resolved", resolved),
            )
            for finding in findings
        ]
        return outcome.new + outcome.lapsed, entries

    def _baseline_hosts(self) -> set[str]:
        hosts = {a.host for a in self.approvals.all()}
        hosts.update(self.group_of())
        return hosts

    def _gap_candidate(self, gap: Gap, scan_id: str) -> FindingCandidate:
        return FindingCandidate(
            kind="monitoring_gap",
            host=gap.group,
            port=None,
            proto=None,
            service="",
            severity=self.settings.severity.by_kind.get("monitoring_gap", "high"),
            scan_id=scan_id,
            details={
                "group": gap.group,
                "start": iso(gap.start),
                "end": iso(gap.end),
                "reason": gap.reason,
            },
        )

    # ----- baselines, imports, retention ------------------------------------------------
    def baseline_lint(self, path: Path) -> list[Any]:
        from portconsole.core.adapters.baseline import lint_baseline

        return lint_baseline(path, self.settings)

    def baseline_import(self, path: Path) -> tuple[int, int]:
        """Turn a baseline file's rules into approval records; every change is audited."""
        from portconsole.core.adapters.baseline import load_baseline

        self._require_write("import baselines")
        specs = load_baseline(path, self.settings)
        with self.store.lock.hold():
            result = self.approvals.import_specs(specs, str(self.actor))
            for approval in result.added:
                self._audit(
                    "approval.added",
                    resource={
                        "host": approval.host,
                        "port": approval.port,
                        "proto": approval.proto,
                        "approval_id": approval.id,
                    },
                    details={"source": approval.source, "justification": approval.justification},
                )
            for approval in result.retired:
                self._audit("approval.retired", resource={"approval_id": approval.id})
            self._audit(
                "baseline.import",
                details={
                    "file": str(path),
                    "added": len(result.added),
                    "unchanged": len(result.unchanged),
                    "retired": len(result.retired),
                },
            )
        return len(result.added), len(result.unchanged)

    def baseline_export(self) -> str:
        from portconsole.core.adapters.baseline import export_baseline

        self._require_write("export baselines")
        return export_baseline(self.approvals.active())

    def baseline_exported(self, destination: str, approvals: int) -> None:
        """Audit an export once its file is written (a failed write is not an export)."""
        self._audit("baseline.export", details={"file": destination, "approvals": approvals})

    def import_xml(self, path: Path) -> CycleResult:
        """Ingest an nmap XML report made elsewhere through the same path as a scan."""
        from portconsole.core.adapters.nmapxml import import_report

        self._require_write("import scans")
        # Bounded: regular files only (a FIFO or /dev/zero is refused), size-capped.
        scan = import_report(Path(path), self.scope)
        changes, alerts, gaps = self._ingest_and_detect(scan, scan.group, len(scan.addresses))
        now = utcnow()
        active = self.approvals.active()
        status = {
            f"{h.address}:{p.port}/{p.proto}": classify_port(
                h.address, p.port, p.proto, p.service, active, now
            )
            for h in scan.hosts
            for p in h.ports
        }
        return CycleResult(scan, changes, alerts, status, [], gaps)

    def prune(self) -> dict[str, int]:
        self._require_write("prune")
        counts = self.store.prune()
        self._audit("retention.prune", details=counts)
        return counts

    # ----- evidence ---------------------------------------------------------------------
    def export_report(
        self,
        path: Path,
        *,
        at: datetime | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        fmt: str = "html",
        progress: Callable[[str, float], None] | None = None,
    ) -> list[Path]:
        """A point-in-time report (`at`) or an evidence pack (`start`..`end`); audited."""
        from portconsole.core.services.report import export_report

        # An export is an audit event, and read-only means no writes at all.
        self._require_write("export reports")
        written = export_report(
            store=self.store,
            findings=self.findings_book,
            approvals=self.approvals,
            audit=self.audit,
            settings=self.settings,
            actor=self.actor,
            out=Path(path),
            fmt=fmt,
            at=at,
            start=start,
            end=end,
            progress=progress,
            gaps=self.scheduler.recent_gaps(),
        )
        self.publish_anchor(force=True, reason="export")
        return written

    # ----- anchors ---------------------------------------------------------------------
    def publish_anchor(
        self, *, force: bool = False, reason: str = "interval"
    ) -> dict[str, Any] | None:
        """Publish the journal's head outside the data dir when one is due (or `force`).

        Due: `[audit] anchor_interval` after the last anchor, with events since. The head goes
        to `[audit] anchor_file` (appended, fsynced) and through the outbox to every
        `[audit] anchor_urls` target; the anchor is itself an `audit.anchor` event. With
        neither configured there is nowhere to publish, and nothing is done.
        """
        conf = self.settings.audit
        if self.readonly or (not conf.anchor_urls and conf.anchor_file is None):
            return None
        anchor_file = conf.anchor_file.expanduser().resolve() if conf.anchor_file else None
        if anchor_file is not None and anchor_file.is_relative_to(self.paths.data_dir.resolve()):
            raise UserError(
                f"[audit] anchor_file {anchor_file} is inside the data dir: an anchor must live "
                "elsewhere (another disk or host) to catch a rewrite of the data dir"
            )
        with self.store.lock.hold():
            table = self.store.hot.table(ANCHOR_TABLE)
            last = table.get(doc_id=1)
            now = utcnow()
            tip = self.audit.tip()
            if not force and last is not None:
                fresh = now - parse_iso(str(last["at"])) < timedelta(seconds=conf.anchor_interval)
                if fresh or int(last["seq"]) >= tip.seq:
                    return None
            anchor = {"seq": tip.seq, "hash": tip.hash, "recorded_at": iso(now)}
            if anchor_file is not None:
                line = f"{tip.seq}:{tip.hash} {iso(now)} {self.actor.host} {self.paths.data_dir}\n"
                try:
                    ensure_private_dir(anchor_file.parent)
                    with anchor_file.open("a", encoding="utf-8") as handle:
                        handle.write(line)
                        handle.flush()
                        os.fsync(handle.fileno())
                except OSError as error:
                    raise UserError(
                        f"cannot append the anchor to {anchor_file}: {error.strerror}"
                    ) from None
            queued = self.notifier.enqueue_anchor(anchor)
            if last is None:
                table.insert({"seq": tip.seq, "hash": tip.hash, "at": iso(now)})
            else:
                table.update({"seq": tip.seq, "hash": tip.hash, "at": iso(now)}, doc_ids=[1])
            self._audit(
                "audit.anchor",
                details={
                    **anchor,
                    "reason": reason,
                    "file": str(anchor_file) if anchor_file else None,
                    "targets": sorted({m.target for m in queued}),
                },
            )
        if queued and self._delivery is not None:
            self._delivery.wake()
        return anchor

    # ----- notifications ---------------------------------------------------------------
    def _on_delivery(self, message: OutboxMessage, result: DeliveryResult) -> None:
        """Record each delivery attempt on its findings and in the audit chain."""
        with self.store.lock.hold():
            for finding_id in message.finding_ids:
                try:
                    self.findings_book.record_notification(finding_id, result.to_json())
                except NotFoundError:
                    continue  # a test message, or a finding archived since
            self.audit.append(
                "notify.attempt",
                actor=self.actor,
                outcome="success" if result.ok else "failure",
                resource={"finding_id": ",".join(message.finding_ids), "target": result.target},
                details={
                    "attempts": result.attempts,
                    "status": result.status,
                    "error": result.error,
                },
            )

    def deliver(self, seconds: float) -> list[DeliveryResult]:
        """Deliver what is due, for at most about `seconds` (each target's own timeout)."""
        self._require_write("deliver notifications")
        return self.notifier.deliver_due(deadline=time.monotonic() + seconds)

    def flush_outbox(self, seconds: float) -> list[DeliveryResult]:
        """Make every pending message due now, retry dead ones once, deliver (bounded)."""
        self._require_write("flush the outbox")
        return self.notifier.flush(deadline=time.monotonic() + seconds)

    def notify_test(self, tag: str | None = None) -> list[tuple[str, bool, str | None]]:
        self._require_write("send test notifications")
        results = self.notifier.test(tag)
        for target, ok, error in results:
            self._audit(
                "notify.test",
                outcome="success" if ok else "failure",
                resource={"target": target},
                details={"error": error},
            )
        return results


def _finding_resource(finding: Finding) -> dict[str, Any]:
    return {
        "finding_id": finding.id,
        "host": finding.host,
        "port": finding.port,
        "proto": finding.proto,
    }


def _review_datetime(day: date) -> datetime:
    from datetime import UTC

    return datetime(day.year, day.month, day.day, tzinfo=UTC)


__all__ = [
    "CycleResult",
    "HostRow",
    "Monitor",
    "Overview",
    "PortRow",
]
