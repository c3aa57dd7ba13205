"""The scan cycle: sweep, confirm, then ingest, detect, raise and notify; -sV after.

    targets -> sweep (nmap) -> confirm (re-probe) -> store.ingest -> detect -> findings
            -> outbox -> journal, then in the background: fingerprint (-sV where needed)
            -> its own ingest, detection and notification (services/fingerprint_after.py)

One cycle's ingest, detection, findings, outbox and events are one journal transaction,
and the fingerprint that follows it is another (its nmap starts as the ingest begins, so
the two overlap; it is recorded after). The cycle (and its group's scheduled run) is
finished when detection is done: a port that answers nothing to -sV delays neither.
Imports of reports made elsewhere go through the same path.

What a scan raises, and how it is judged (approvals in force, backfilled imports), is in
scan_findings.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from portconsole.core.adapters.dns import resolve_host_name
from portconsole.core.adapters.journal import AuditEntry
from portconsole.core.domain.changes import address_block
from portconsole.core.domain.detect import ObservedPort
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.model import Change, Progress, ScanResult
from portconsole.core.domain.schedule import Gap
from portconsole.core.domain.state import PortState
from portconsole.core.domain.targets import (
    PortSpec,
    Resolver,
    expand_targets,
    no_resolution,
    parse_ports,
)
from portconsole.core.errors import UserError
from portconsole.core.services.cycle_result import CycleResult
from portconsole.core.services.fingerprint_after import FingerprintAfter
from portconsole.core.services.probe import Probing
from portconsole.core.services.scan_findings import ScanFindings

ProgressFn = Callable[[Progress], None]
# Host-level changes of hosts holding no open port, audited as one summary entry per kind.
QUIET_KINDS = {"host_up": "hosts_up", "host_down": "hosts_down"}


class ScanCycle(ScanFindings, Probing, FingerprintAfter):
    """Scanning and ingesting, for the Monitor."""

    def resolve_targets(
        self,
        targets: list[str] | None,
        group: str | None,
        ports: str | None,
        resolve: Resolver = resolve_host_name,
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
            # An empty --ports is an error (parse_ports says so), never the defaults.
            spec = parse_ports(ports if ports is not None else default_ports)
            label = ""
        elif group:
            if group not in self.settings.groups:
                known = ", ".join(sorted(self.settings.groups)) or "none configured"
                raise UserError(f"no target group {group!r} (known: {known})")
            conf = self.settings.groups[group]
            texts = list(conf.targets)
            spec = parse_ports(ports if ports is not None else self.settings.group_ports(group))
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
                if ports is not None
                else ",".join(
                    str(parse_ports(self.settings.group_ports(g))) for g in self.settings.groups
                )
            )
            label = "all"
        addresses = expand_targets(texts, self.scope, resolve)
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
        with self._scan_lock(label):  # one run per group at a time; groups in parallel
            return self._cycle(texts, addresses, spec, udp, label, progress, cancel, fingerprint)

    def first_sweeps(
        self, group: str | None = None, targets: list[str] | None = None, ports: str | None = None
    ) -> list[list[str]]:
        """The nmap sweeps `run_cycle` with these arguments would start at once (the first
        `[scan] workers` of them), as the store and settings are now; `portconsole scan`
        keeps them so that its next such run starts them before it has loaded
        (cli_prelaunch). [] for targets named by host name (never resolved again here) and
        for a group scanned by a site."""
        from portconsole.core.adapters.scanner import Scanner

        scanner = self.scanner
        try:
            _texts, addresses, spec, udp, label = self.resolve_targets(
                targets, group, ports, resolve=no_resolution
            )
            conf = self.settings.groups.get(label)
            if not isinstance(scanner, Scanner) or (conf is not None and conf.site is not None):
                return []
            known = self._known_hosts(label, addresses)
            commands = scanner.sweep_commands(addresses, spec, udp=udp, known=known)
        except UserError:  # a target or nmap refused: the next run says why
            return []
        return commands[: self.settings.scan.workers]

    def _known_hosts(self, label: str, addresses: list[str]) -> set[str] | None:
        """Hosts known from history or the baseline, swept without ping discovery (-Pn); a
        group with discovery = "none" sweeps every address so (None)."""
        if self.settings.group_discovery(label) == "none":
            return None
        return {h.address for h in self.store.hosts(addresses)} | {
            a.host for a in self.approvals.all()
        }

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
        started = self.clock()
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
                known=self._known_hosts(label, addresses),
            )
        except UserError as error:
            self._audit(
                "scan.end", outcome="failure", details={"error": str(error), "group": label}
            )
            if label in self.settings.groups:
                self.scheduler.mark_finished(
                    label, self.clock(), "failed", len(addresses), 0, error=str(error)
                )
                self.record_gaps()
            raise
        state = {
            (p.host, p.port, p.proto): p
            for p in self.store.current_ports(hosts=[*addresses, *(h.address for h in scan.hosts)])
        }
        unconfirmed: list[str] = []
        wanted: dict[str, list[tuple[int, str]]] = {}
        if not cancel.is_set() and scan.outcome != "cancelled":
            if progress:
                progress(
                    Progress(len(scan.hosts), len(addresses), scan.open_port_count(), "confirm")
                )
            unconfirmed = self._confirm(scan, state, cancel)
            mode = fingerprint_mode or self.settings.scan.fingerprint
            wanted = self._fingerprint_plan(scan, state, mode, label)
        if progress:
            progress(Progress(len(scan.hosts), len(addresses), scan.open_port_count(), "ingest"))
        # -sV starts now, in the background, so its nmap runs while the sweep is ingested;
        # its result is recorded after this cycle's transaction (it waits for the group's
        # scan lock), and a failed ingest cancels it.
        job = None
        if wanted and not cancel.is_set() and scan.outcome != "cancelled":
            job = self.start_fingerprint(scan, wanted, label, cancel)
        try:
            changes, new_findings, gaps = self._ingest_and_detect(scan, label, len(addresses))
        except BaseException:
            if job is not None:
                job.cancel.set()
            raise
        status = self._approval_status(scan)
        if progress:
            progress(Progress(len(scan.hosts), len(addresses), scan.open_port_count(), "done"))
        return CycleResult(scan, changes, new_findings, status, unconfirmed, gaps, job)

    def _ingest_and_detect(
        self, scan: ScanResult, label: str, planned: int
    ) -> tuple[list[Change], list[Finding], list[Gap]]:
        """Ingest, detect and audit in one hold of the store lock.

        The audit events of a cycle are written together (one fsync per segment, not one
        per change): a scan that opens a hundred ports must not hold the lock for seconds.
        """
        with self.store.lock.hold():
            scanned = [*scan.addresses, *(h.address for h in scan.hosts)]  # their blocks only
            known_hosts = [h.address for h in self.store.hosts(scanned) if h.status == "up"]
            changes = self.store.ingest(scan)
            now = scan.finished_at
            gaps: list[Gap] = []
            if label in self.settings.groups:
                self._settle_run(scan, label, planned)
                gaps = self.scheduler.find_gaps(self.clock())
            source: dict[str, str] = {}
            if self.settings.sites:  # a site's scan names its site and worker
                from portconsole.core.services.sites import scan_source

                source = scan_source(self.scanner, scan.scan_id)
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
                        **source,
                    },
                    at=now,
                )
            ]
            # The scan's hosts' open ports after the ingest: detection judges them, and a
            # host holding none is quiet (its host_up/host_down is summarised, see below).
            current = self._open_after(scan)
            entries += self._change_entries(changes, scan, current)
            entries += self._gap_entries(gaps, now)
            alerts, finding_entries = self._detect(scan, known_hosts, gaps, current)
            self.audit.append_many(entries + finding_entries)
            # Queued in the same hold as the findings: a crash cannot leave a raised
            # finding that no one was told about (the next scan only refreshes it).
            self._enqueue(alerts, scan.scan_id, scan)
        return changes, alerts, gaps

    def _change_entries(
        self,
        changes: Iterable[Change],
        scan: ScanResult,
        current: list[PortState] | list[ObservedPort] | None = None,
    ) -> list[AuditEntry]:
        """One `change.KIND` entry per change, except that the hosts that came up or went
        down holding no open port (none seen by the scan, none in the state after it, no
        port change) are one `change.hosts_up` / `change.hosts_down` entry each, with a
        count per address block: a /16 of quiet hosts is two entries, not 65,534. Each
        host's own event stays in the scan history, whose bytes the transaction vouches
        for (`chunks`), so `history` and `state --at` answer for every host as before.
        """
        changes = list(changes)
        holding: set[str] = set()
        if any(c.kind in QUIET_KINDS for c in changes):
            holding.update(c.host for c in changes if c.port is not None)
            holding.update(h.address for h in scan.hosts if h.open_ports())
            holding.update(p.host for p in (self._open_after(scan) if current is None else current))
        quiet: dict[str, dict[str, int]] = {}
        entries = []
        for change in changes:
            if change.kind in QUIET_KINDS and change.host not in holding:
                blocks = quiet.setdefault(change.kind, {})
                block = address_block(change.host)
                blocks[block] = blocks.get(block, 0) + 1
                continue
            entries.append(
                self._entry(
                    f"change.{change.kind}",
                    resource={
                        "host": change.host,
                        "port": change.port,
                        "proto": change.proto,
                        "scan_id": scan.scan_id,
                    },
                    details={"before": change.before, "after": change.after},
                    at=scan.finished_at,
                )
            )
        for kind, blocks in quiet.items():
            entries.append(
                self._entry(
                    f"change.{QUIET_KINDS[kind]}",
                    resource={"scan_id": scan.scan_id, "hosts": sum(blocks.values())},
                    details={"open_ports": 0, "by_block": dict(sorted(blocks.items()))},
                    at=scan.finished_at,
                )
            )
        return entries

    def _settle_run(self, scan: ScanResult, label: str, planned: int) -> None:
        """Mark a group's run finished; one cancelled because this process is quitting
        (the supervisor's `stopping` event) is handed back to the next leader instead: due
        again at once, a gap only if that run starts late (Scheduler.hand_back)."""
        stopping = self.stopping
        if scan.outcome == "cancelled" and stopping is not None and stopping.is_set():
            self.scheduler.hand_back(label, scan.finished_at)
            return
        self.scheduler.mark_finished(
            label, scan.finished_at, scan.outcome, planned, len(scan.hosts), error=scan.error
        )

    def import_xml(self, path: Path) -> CycleResult:
        """Ingest an nmap XML report made elsewhere through the same path as a scan."""
        from portconsole.core.adapters.nmapxml import import_report

        self._require_write("import scans")
        # Bounded: regular files only (a FIFO or /dev/zero is refused), size-capped.
        scan = import_report(Path(path), self.scope)
        changes, alerts, gaps = self._ingest_and_detect(scan, scan.group, len(scan.addresses))
        status = self._approval_status(scan)
        return CycleResult(scan, changes, alerts, status, [], gaps)
