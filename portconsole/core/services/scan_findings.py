"""What a scan raises: detection's findings (new, reopened, risk lapsed, resolved), the
monitoring gaps of the schedule, their audit entries, and their notification (queued in the
same hold of the store lock as the findings). The scan cycle (cycle.py) calls these for each
ingested scan, live or imported; `record_gaps` raises the gaps noticed outside a cycle.

A scan is judged against the approvals in force when it finished (Approval.in_force: recorded
by then, not retired by then), live or imported. A backfilled import (older than what is
known, see adapters/store.py) is history: detection judges what that scan saw, its findings
say `backfilled`, it never resolves a finding, and it leaves alone any problem the book has
already seen at a later time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from portconsole.core.adapters.journal import AuditEntry
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.detect import ObservedPort, classify_port, detect, scan_open_ports
from portconsole.core.domain.finding import Finding, FindingCandidate
from portconsole.core.domain.model import ScanResult, port_key
from portconsole.core.domain.schedule import Gap
from portconsole.core.domain.state import PortState
from portconsole.core.services.base import ServiceBase
from portconsole.core.timeutil import iso


class ScanFindings(ServiceBase):
    """Detection, gaps and their notification, for the scan cycle (a mixin of ScanCycle)."""

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
            entries = self._gap_entries(gaps, now) + self._finding_entries(
                now, ("finding.raised", outcome.new)
            )
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
        entries = self._finding_entries(
            now,
            ("finding.raised", outcome.new),
            ("finding.reopened", outcome.reopened),
            ("finding.risk_lapsed", outcome.lapsed),
            ("finding.resolved", resolved),
        )
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
