"""The scan cycle: sweep, confirm, then ingest, detect, raise and notify; -sV after.

    targets -> sweep (nmap) -> confirm (re-probe) -> store.ingest -> detect -> findings
            -> outbox -> journal, then in the background: fingerprint (-sV where needed)
            -> its own ingest, detection and notification (services/fingerprint_after.py)

One cycle's ingest, detection, findings, outbox and events are one journal transaction,
and the fingerprint that follows it is another (its nmap starts as the ingest begins, so
the two overlap; it is recorded after). The cycle (and its group's scheduled run) is
finished when detection is done: a port that answers nothing to -sV delays neither.
Imports of reports made elsewhere go through the same path.

A scan is judged against the approvals in force when it finished (Approval.in_force: recorded
by then, not retired by then), live or imported. A backfilled import (older than what is
known, see adapters/store.py) is history: detection judges what that scan saw, its findings
say `backfilled`, it never resolves a finding, and it leaves alone any problem the book has
already seen at a later time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from portconsole.core.adapters.dns import resolve_host_name
from portconsole.core.adapters.journal import AuditEntry
from portconsole.core.domain.changes import address_block
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.detect import ObservedPort, classify_port, detect, scan_open_ports
from portconsole.core.domain.finding import Finding, FindingCandidate
from portconsole.core.domain.model import (
    Change,
    Progress,
    ScanResult,
    port_key,
)
from portconsole.core.domain.schedule import Gap
from portconsole.core.domain.state import PortState
from portconsole.core.domain.targets import PortSpec, expand_targets, parse_ports
from portconsole.core.errors import UserError
from portconsole.core.services.base import finding_resource
from portconsole.core.services.cycle_result import CycleResult
from portconsole.core.services.fingerprint_after import FingerprintAfter
from portconsole.core.services.probe import Probing
from portconsole.core.timeutil import iso

ProgressFn = Callable[[Progress], None]
# Host-level changes of hosts holding no open port, audited as one summary entry per kind.
QUIET_KINDS = {"host_up": "hosts_up", "host_down": "hosts_down"}


class ScanCycle(Probing, FingerprintAfter):
    """Scanning and ingesting, for the Monitor."""

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
        with self._scan_lock(label):  # one run per group at a time; groups in parallel
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
                # Known from history or the baseline: swept without ping discovery (-Pn);
                # a group with discovery = "none" sweeps every address so (None).
                known=None
                if self.settings.group_discovery(label) == "none"
                else {h.address for h in self.store.hosts(addresses)}
                | {a.host for a in self.approvals.all()},
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

    def _enqueue(self, alerts: list[Finding], scan_id: str, scan: ScanResult | None = None) -> None:
        if not alerts:
            return
        # What answered on each port (a finding keeps neither product nor version).
        observed = {
            port_key(h.address, p.port, p.proto): (p.product, p.version)
            for h in (scan.hosts if scan else [])
            for p in h.ports
        }
        self.notifier.enqueue(alerts, scan_id, observed)
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
        a scheduled run that is late) as findings, audited and notified. Returns them.

        Whoever notices a gap raises it, leader or follower, console or daemon: under the
        data lock `find_gaps` returns each gap to one caller only, and the findings book
        folds a gap's later reports into its one finding (same key). A process without the
        data dir's settings does not judge (its groups and intervals are not the data dir's).
        """
        if self.readonly or self.follow_reason:
            return []
        with self.store.lock.hold():
            now = self.clock()
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
                    resource=finding_resource(finding),
                    details={"kind": finding.kind, "severity": finding.severity},
                    at=now,
                )
                for finding in outcome.new
            ]
            self.audit.append_many(entries)
            self._enqueue(alerts, "")
        return alerts

    def _detect(
        self,
        scan: ScanResult,
        known_hosts: list[str],
        gaps: Iterable[Gap],
        current: list[PortState] | list[ObservedPort] | None = None,
    ) -> tuple[list[Finding], list[AuditEntry]]:
        """Raise findings for one ingested scan: those worth a notification, and audit entries.

        `current`: `_open_after(scan)` when the caller has it already (read when None)."""
        now = scan.finished_at
        candidates = detect(
            scan,
            self._open_after(scan) if current is None else current,
            known_hosts,
            self.approvals.all(),  # judged as they stood at `now` (see the module docstring)
            self.settings,
            now,
            self._baseline_hosts(),
        )
        if scan.backfill:
            self._backfilled(candidates, now)
        candidates += [self._gap_candidate(gap, scan.scan_id) for gap in gaps]
        outcome = self.findings_book.ingest_candidates(
            candidates, now, self.settings.scan.flap_window
        )
        # A host that answered nothing (powered off, filtered) proves no port closed; a
        # backfilled scan is older than what the book knows and resolves nothing.
        resolved = (
            []
            if scan.backfill
            else self.findings_book.resolve_missing(
                {c.key for c in candidates}, Coverage.of_scan(scan).covers, now, scan.scan_id
            )
        )
        entries = [
            self._entry(
                action,
                resource=finding_resource(finding),
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

    def _open_after(self, scan: ScanResult) -> list[PortState] | list[ObservedPort]:
        """The open ports detection judges after `scan` is ingested: those of the scan's
        hosts in the store (only their blocks are read), or for a backfilled scan, older than
        what the store knows, the ones it saw itself."""
        if scan.backfill:
            return scan_open_ports(scan)
        return self.store.current_ports(hosts=[*scan.addresses, *(h.address for h in scan.hosts)])

    def _approval_status(self, scan: ScanResult) -> dict[str, str]:
        """Each port's approval status when the scan finished ("host:port/proto" keys)."""
        approvals = self.approvals.index()  # one read, one index, every port of the scan
        return {
            f"{h.address}:{p.port}/{p.proto}": classify_port(
                h.address, p.port, p.proto, p.service, approvals, scan.finished_at
            )
            for h in scan.hosts
            for p in h.ports
        }

    def _backfilled(self, candidates: list[FindingCandidate], at: datetime) -> None:
        """Keep a backfilled scan's candidates that add to history, marked as backfilled:
        a problem whose finding has any step at or after `at` (seen, triaged, resolved) is
        left as the book tells it."""
        later = {
            f.key
            for f in self.findings_book.all()
            if f.last_seen >= at or any(step.at >= at for step in f.timeline)
        }
        candidates[:] = [c for c in candidates if c.key not in later]
        for candidate in candidates:
            candidate.details["backfilled"] = True

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

    def import_xml(self, path: Path) -> CycleResult:
        """Ingest an nmap XML report made elsewhere through the same path as a scan."""
        from portconsole.core.adapters.nmapxml import import_report

        self._require_write("import scans")
        # Bounded: regular files only (a FIFO or /dev/zero is refused), size-capped.
        scan = import_report(Path(path), self.scope)
        changes, alerts, gaps = self._ingest_and_detect(scan, scan.group, len(scan.addresses))
        status = self._approval_status(scan)
        return CycleResult(scan, changes, alerts, status, [], gaps)
