"""Fingerprints after detection: the -sV a cycle leaves running once it is done.

A cycle ingests, detects and notifies from its sweep and confirm re-probe only (cycle.py).
The ports that need service detection (new ports, ports never identified, and those
`refingerprint_due` picks, see probe.py) are then fingerprinted in one bounded nmap run
(adapters/fingerprints.py) on a thread the cycle starts: a FingerprintJob. A port that
answers nothing costs that run its budget, never the detection, the schedule (the cycle's
run is marked finished when detection is done) or another group.

Its result is a later transaction: a scan record of type "fingerprint" covering only the
ports -sV saw open, ingested through Store.ingest like any scan (history, point-in-time
replay, `service_identified` / `service_changed`), then detected (a service changed behind
an approved port is a `service_changed` finding), notified, and journalled as
`scan.fingerprint` naming the sweep it followed (`details.after_scan_id`).

A finding the sweep raised that -sV shows worse (an unapproved port that turns out to run
telnet: detect.escalation) is escalated in that same transaction: its severity rises (never
falls), its details say what answered, its timeline says why (`escalated`), the journal has
a `finding.escalated` event, and it is notified again, once (a later cycle sees nothing new).

An approval made from a sweep's finding before -sV identified its port expects the sweep's
guess (nmap's port table: 8081 -> `sunproxyadmin`; domain/approval.py `service_basis`).
The port's first identification is what it awaits: in this same transaction, before
detection, it adopts the service -sV named (`approval.service_adopted`, with the guess and
the identification; its product pattern stays as it was), so detection judges the port
against it and raises no `service_changed` on the port just approved (insecure services
still count). Later identifications are judged against it as any approval's are.

Rules:
- A port -sV answered is fingerprinted even if -sV named nothing (it answers nothing): it
  is not asked again before its age. A host out of budget is concluded nothing about (its
  ports are asked again by the next cycle).
- One job per cycle label (group, "all", "" for ad hoc) at a time: a cycle whose label
  still has one running leaves its ports to a later cycle.
- Budget: each host BASE + PER_PORT seconds per port asked (adapters/fingerprints.py), at
  most the group's interval (a group's fingerprint ends before its next cycle is due) and
  at most scan.batch_timeout.
- Cancel: a job ends on its own cancel (Monitor.close, `cancel_fingerprints`), on the
  cycle's cancel or on the process's stop: nmap is killed and nothing is written.
- Every process's console counts every running job on the data dir: a job marks itself in
  `<data_dir>/fingerprinting/` while its ports are pending (adapters/fingerprint_marks.py),
  and `fingerprints_pending` adds the live marks of other processes to its own jobs.
- Only what still holds is recorded: under the label's run lock (no sweep of the group is
  between its nmap and its ingest), ports the store no longer has open (a later sweep closed them) are left
  out. The record is dated when it is written (after any decision recorded while -sV ran:
  an approval made meanwhile is in force for it), never before the newest look at its
  hosts (a late report would be history only).
  Its group is "": it is no run of the group (the ledger, the cadence and the gap rules
  count sweeps); the `scan.fingerprint` event names the group.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from msgspec import Struct, field
from msgspec.structs import replace

from portconsole.core.adapters.fingerprint_marks import FingerprintMarks, run_seconds
from portconsole.core.adapters.fingerprints import (
    FingerprintRun,
    fingerprint_scan,
    host_budget,
    run_fingerprints,
)
from portconsole.core.adapters.journal import AuditEntry
from portconsole.core.domain.approval import Approval
from portconsole.core.domain.detect import escalation, may_escalate
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.model import OPEN, Change, PortObservation, ScanResult, port_key
from portconsole.core.domain.schedule import Gap
from portconsole.core.domain.state import PortState
from portconsole.core.errors import NotFoundError
from portconsole.core.services.base import ServiceBase, finding_resource

log = logging.getLogger(__name__)

Pair = tuple[int, str]
ACTION = "scan.fingerprint"
# How often a job waiting for the scan lock looks at its cancel.
LOCK_POLL_SECONDS = 0.2


class FingerprintOutcome(Struct):
    """What a fingerprint job recorded (scan None: nothing was, see `error`)."""

    scan: ScanResult | None
    changes: list[Change] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # Findings raised before whose severity this fingerprint raised (notified too).
    escalated: list[Finding] = field(default_factory=list)
    cancelled: bool = False
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan.scan_id if self.scan else None,
            "outcome": "cancelled"
            if self.cancelled
            else (self.scan.outcome if self.scan else "failed"),
            "error": self.error,
            "ports": self.scan.fingerprinted if self.scan else 0,
            "changes": [c.to_json() for c in self.changes],
            "findings": [f.id for f in self.findings],
            "escalated": [f.id for f in self.escalated],
        }


class FingerprintJob:
    """One background -sV run and its later transaction (see the module docstring)."""

    def __init__(
        self,
        label: str,
        after: ScanResult,
        wanted: Mapping[str, Sequence[Pair]],
        begun: datetime,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.label = label
        # Its times are the caller's clock when the cycle handed over, plus the seconds
        # it ran (a clock pinned by a test moves on without it).
        self.begun = begun
        self._t0 = time.monotonic()
        self.after_scan_id = after.scan_id
        self.wanted = {a: list(p) for a, p in wanted.items()}
        self.cancel = threading.Event()
        self.outcome: FingerprintOutcome | None = None
        # Set once its result is being written: from then on its ports are no longer
        # pending (a reader woken by that transaction must not count them).
        self.recording = False
        self._done = threading.Event()
        self.thread: threading.Thread | None = None

    def clock(self) -> datetime:
        return self.begun + timedelta(seconds=time.monotonic() - self._t0)

    @property
    def ports(self) -> int:
        return sum(len(p) for p in self.wanted.values())

    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def pending_ports(self) -> int:
        """The ports it is still identifying (0 once it ended or is writing its result)."""
        return self.ports if self.running() and not self.recording else 0

    def wait(self, timeout: float | None = None) -> FingerprintOutcome | None:
        """The outcome once the job has ended (None if still running after `timeout`)."""
        self._done.wait(timeout)
        return self.outcome

    def start(self, body: Callable[[FingerprintJob], FingerprintOutcome]) -> None:
        def run() -> None:
            try:
                self.outcome = body(self)
            except Exception as error:  # noqa: BLE001 - a thread's failure must be told
                log.exception("fingerprint after scan %s failed", self.after_scan_id)
                self.outcome = FingerprintOutcome(None, error=f"service detection failed: {error}")
            finally:
                self._done.set()

        self.thread = threading.Thread(
            target=run, name=f"fingerprint-{self.label or 'adhoc'}", daemon=True
        )
        self.thread.start()


class FingerprintAfter(ServiceBase):
    """Start, run, record and cancel the fingerprint jobs, for the scan cycle."""

    _fingerprint_jobs: dict[str, FingerprintJob]
    _fingerprint_lock: threading.Lock

    def start_fingerprint(
        self,
        after: ScanResult,
        wanted: Mapping[str, Sequence[Pair]],
        label: str,
        cancel: threading.Event | None = None,
    ) -> FingerprintJob | None:
        """Fingerprint `wanted` (address -> ports) after the sweep `after`, in the
        background; None when there is nothing to do or `label` has a job running."""
        if not any(wanted.values()):
            return None
        with self._fingerprint_lock:
            pending = self._fingerprint_jobs.get(label)
            if pending is not None and pending.running():
                log.info(
                    "fingerprint after %s still running: %s leaves %d port(s) to a later cycle",
                    pending.after_scan_id,
                    after.scan_id,
                    sum(len(p) for p in wanted.values()),
                )
                return None
            job = FingerprintJob(label, after, wanted, self.clock())
            self._fingerprint_jobs[label] = job
        job.start(lambda j: self._run_fingerprint(j, cancel))
        return job

    def wait_fingerprints(self, timeout: float | None = None) -> list[FingerprintOutcome]:
        """Wait for every running job (the CLI before it exits; tests)."""
        with self._fingerprint_lock:
            jobs = list(self._fingerprint_jobs.values())
        return [o for job in jobs if (o := job.wait(timeout)) is not None]

    def fingerprints_pending(self) -> int:
        """How many ports the running jobs of every process on the data dir are still
        identifying (the console's header: "identifying N ports"): this process's own,
        plus the live marks of the others' (never this process's marks: counted here)."""
        with self._fingerprint_lock:
            own = sum(job.pending_ports for job in self._fingerprint_jobs.values())
        marks = self._fingerprint_marks.others(tidy=not self.readonly)
        return own + sum(mark.ports for mark in marks)

    def cancel_fingerprints(self, timeout: float = 5.0) -> None:
        """Cancel every running job and wait for it to end (nmap killed, nothing written);
        their marks come down even if one did not end within `timeout`."""
        with self._fingerprint_lock:
            jobs = list(self._fingerprint_jobs.values())
        for job in jobs:
            job.cancel.set()
        for job in jobs:
            job.wait(timeout)
        self._fingerprint_marks.remove_own()

    @property
    def _fingerprint_marks(self) -> FingerprintMarks:
        """This process's marks (made on first use: no constructor touches the disk; one
        per Monitor, made under the lock, or its own marks would count as another's)."""
        with self._fingerprint_lock:
            marks: FingerprintMarks | None = self.__dict__.get("_marks")
            if marks is None:
                marks = FingerprintMarks(self.paths.data_dir, self.actor.host)
                self.__dict__["_marks"] = marks
            return marks

    def fingerprint_budget(self, label: str, wanted: Mapping[str, Sequence[Pair]]) -> float:
        """Seconds each host of this job may take (see the module docstring)."""
        cap = self.settings.scan.batch_timeout
        conf = self.settings.groups.get(label)
        if conf is not None:
            cap = min(cap, float(conf.interval))
        return host_budget(max((len(p) for p in wanted.values()), default=1), cap)

    # -- what the scan cycle provides (cycle.py, scan_findings.py) -------------------------

    def _detect(
        self, scan: ScanResult, known_hosts: list[str], gaps: Iterable[Gap]
    ) -> tuple[list[Finding], list[AuditEntry]]:
        raise NotImplementedError

    def _change_entries(self, changes: Iterable[Change], scan: ScanResult) -> list[AuditEntry]:
        raise NotImplementedError

    def _enqueue(self, alerts: list[Finding], scan_id: str, scan: ScanResult | None = None) -> None:
        raise NotImplementedError

    # -- the job's body -------------------------------------------------------------------

    def _run_fingerprint(
        self, job: FingerprintJob, cycle_cancel: threading.Event | None
    ) -> FingerprintOutcome:
        """Run `job` marked for the other processes until its ports are no longer pending."""
        marks = self._fingerprint_marks
        seconds = run_seconds(len(job.wanted), self.fingerprint_budget(job.label, job.wanted))
        marks.add(job.id, job.label, job.ports, seconds)
        try:
            return self._fingerprint_body(job, cycle_cancel)
        finally:
            marks.remove(job.id)

    def _fingerprint_body(
        self, job: FingerprintJob, cycle_cancel: threading.Event | None
    ) -> FingerprintOutcome:
        stops = (cycle_cancel, self.stopping)

        def halted() -> bool:
            return job.cancel.is_set() or any(e is not None and e.is_set() for e in stops)

        run = run_fingerprints(
            self.scanner,
            job.wanted,
            self.fingerprint_budget(job.label, job.wanted),
            job.cancel,
            stops,
            job.clock,
        )
        if run.cancelled or halted():
            return FingerprintOutcome(None, cancelled=True)
        # No sweep of the label between its nmap and its ingest while this one is recorded.
        lock = self._scan_lock(job.label)
        while not lock.acquire(timeout=LOCK_POLL_SECONDS):
            if halted():
                return FingerprintOutcome(None, cancelled=True)
        try:
            if halted():
                return FingerprintOutcome(None, cancelled=True)
            job.recording = True
            self._fingerprint_marks.remove(job.id)  # not pending for other processes either
            return self._record_fingerprint(job, run)
        finally:
            lock.release()

    def _record_fingerprint(self, job: FingerprintJob, run: FingerprintRun) -> FingerprintOutcome:
        """The later transaction: ingest, detect, journal and notify what -sV identified."""
        with self.store.lock.hold():
            hosts = list(run.hosts)
            named = _named(run)
            still_open = {
                (p.host, p.port, p.proto): p for p in self.store.current_ports(hosts=hosts)
            }
            for address, host in list(run.hosts.items()):
                ports = [
                    _answered(p, still_open[key])
                    for p in host.ports
                    if (key := (address, p.port, p.proto)) in still_open
                ]
                if ports:
                    run.hosts[address] = replace(host, ports=ports)
                else:
                    del run.hosts[address]
            # Never older than a look at its hosts recorded meanwhile (a later sweep):
            # that would make it a late report, history only (domain/changes.py). Nor
            # than the service clock now, which dated any decision recorded while -sV
            # ran (the job's clock may lag it: a stepped or pinned clock).
            looked = [h.last_covered for h in self.store.hosts(hosts) if h.last_covered]
            scan = fingerprint_scan(
                run,
                scan_type_of=self.scanner,
                origin=self.origin,
                group="",  # no run of the group: its scan.fingerprint event names it
                finished=max([job.clock(), self.clock(), *looked]),
            )
            details = {
                "after_scan_id": job.after_scan_id,
                "group": job.label,
                "asked": job.ports,
                "identified": scan.fingerprinted,
                "host_timeout": run.host_timeout,
                "outcome": scan.outcome,
                "error": scan.error,
            }
            if not scan.hosts:
                self.audit.append_many(
                    [
                        self._entry(
                            ACTION,
                            outcome="failure",
                            resource={"scan_id": job.after_scan_id},
                            details=details,
                            at=scan.finished_at,
                        )
                    ]
                )
                return FingerprintOutcome(None, error=scan.error)
            known_hosts = [h.address for h in self.store.hosts(hosts) if h.status == "up"]
            changes = self.store.ingest(scan)
            adopted = self._adopt_services(scan, named, still_open)
            details["changes"] = len(changes)
            details["raw_xml_sha256"] = scan.raw_xml_sha256
            entries = [
                self._entry(
                    ACTION,
                    outcome="success" if scan.outcome == "success" else "failure",
                    resource={"scan_id": scan.scan_id},
                    details=details,
                    at=scan.finished_at,
                ),
                *self._change_entries(changes, scan),
                *adopted,
            ]
            before = self._open_findings_on(scan) if may_escalate(scan, self.settings) else []
            alerts, finding_entries = self._detect(scan, known_hosts, [])
            escalated = self._escalate(before, scan)
            self.audit.append_many(
                entries + finding_entries + [self._escalated_entry(f, scan) for f in escalated]
            )
            self._enqueue(alerts + escalated, scan.scan_id, scan)
        return FingerprintOutcome(scan, changes, alerts, escalated, error=scan.error)

    def _adopt_services(
        self,
        scan: ScanResult,
        named: Mapping[tuple[str, int, str], str],
        before: Mapping[tuple[str, int, str], PortState],
    ) -> list[AuditEntry]:
        """Approvals awaiting their port's first -sV adopt the service it `named` (see the
        module docstring); `before`: each port as the store had it before this fingerprint.
        A port -sV named nothing keeps its guess. Returns the entries for this transaction."""
        entries = []
        for approval in self.approvals.active():
            port = before.get(approval.key)
            service = named.get(approval.key, "")
            if not service or port is None:
                continue
            if not approval.adopts_from(port.first_seen, port.fingerprinted_at):
                continue
            adopted = self.approvals.adopt_service(approval.id, service)
            entries.append(self._adopted_entry(approval, adopted, scan))
        return entries

    def _adopted_entry(self, guessed: Approval, adopted: Approval, scan: ScanResult) -> AuditEntry:
        return self._entry(
            "approval.service_adopted",
            resource={
                "host": adopted.host,
                "port": adopted.port,
                "proto": adopted.proto,
                "approval_id": adopted.id,
            },
            details={
                "approval_id": adopted.id,
                "guessed": guessed.service,
                "identified": adopted.service,
                "product_pattern": adopted.product_pattern,
                "scan_id": scan.scan_id,
            },
            at=scan.finished_at,
        )

    def _open_findings_on(self, scan: ScanResult) -> list[Finding]:
        """The open findings on the ports a fingerprint scan covers, as they stand."""
        ports = {port_key(h.address, p.port, p.proto) for h in scan.hosts for p in h.ports}
        return self.findings_book.open_on(ports)

    def _escalate(self, before: list[Finding], scan: ScanResult) -> list[Finding]:
        """Escalate each of `before` that the detection after -sV showed worse
        (detect.escalation); returns the findings escalated."""
        escalated = []
        for old in before:
            try:
                current = self.findings_book.get(old.id)
            except NotFoundError:
                continue
            severity = escalation(old, current, self.settings) if current.is_open else None
            if severity is None:
                continue
            insecure = bool(current.details.get("insecure"))
            service = current.service
            text = (
                f"{old.severity} -> {severity}: scan {scan.scan_id} identified "
                f"{service or 'the service'}" + (" (insecure)" if insecure else "")
            )
            details = {"insecure": insecure, "service": service, "escalated_from": old.severity}
            escalated.append(
                self.findings_book.escalate(old.id, severity, details, text, scan.finished_at)
            )
        return escalated

    def _escalated_entry(self, finding: Finding, scan: ScanResult) -> AuditEntry:
        return self._entry(
            "finding.escalated",
            resource=finding_resource(finding),
            details={
                "kind": finding.kind,
                "severity": finding.severity,
                "from": finding.details.get("escalated_from", ""),
                "service": finding.service,
                "insecure": bool(finding.details.get("insecure")),
                "scan_id": scan.scan_id,
            },
            at=scan.finished_at,
        )


def _named(run: FingerprintRun) -> dict[tuple[str, int, str], str]:
    """The service -sV itself named on each port it answered (before `_answered` keeps a
    silent port's old name)."""
    return {
        (address, p.port, p.proto): p.service
        for address, host in run.hosts.items()
        for p in host.ports
        if p.state == OPEN and p.service
    }


def _answered(observed: PortObservation, stored: PortState) -> PortObservation:
    """A port -sV answered on, as recorded: fingerprinted even when -sV named nothing (a port
    that answers nothing is not asked again before its age; the nmap reader marks every port
    of a -sV report so, this holds for any scanner), and a port -sV gave no name keeps the
    name it had (nmap lists a silent port with no service)."""
    service = observed.service or stored.service
    if stored.fingerprinted_at is None or service != observed.service:
        return replace(observed, fingerprinted=True, service=service)
    return observed
