"""The service facade: the TUI and the CLI are two faces of this one object.

Neither shell talks to nmap, TinyDB or apprise directly. One scan cycle is:

    targets -> sweep (nmap) -> confirm (re-probe) -> fingerprint (-sV where needed)
            -> store.ingest -> detect -> findings -> outbox -> audit

Every write holds the store's DataLock; every decision is an audit event. The Monitor is
composed of the services (portconsole/core/services/): queries, decisions, the scan cycle,
and leadership (which settings may lead, and the lease); it keeps the wiring, monitoring
state, anchors and notifications.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portconsole.core.adapters import nmap_budget
from portconsole.core.adapters.approvals import ApprovalRegistry
from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.journal import AuditEvent, AuditLog
from portconsole.core.adapters.leader import LeaderElection
from portconsole.core.adapters.notify import DeliveryWorker, Notifier
from portconsole.core.adapters.storage import ensure_private_dir
from portconsole.core.adapters.store import Store
from portconsole.core.domain.chain import VerifyResult
from portconsole.core.domain.notification import DeliveryResult, OutboxMessage
from portconsole.core.errors import StoreError, UserError
from portconsole.core.identity import Actor
from portconsole.core.services.cycle import CycleResult, ScanCycle
from portconsole.core.services.decisions import Decisions
from portconsole.core.services.leadership import Leadership, settings_fingerprint
from portconsole.core.services.queries import HostRow, Overview, PortRow, Queries
from portconsole.core.services.schedule import RunLocks, Scheduler
from portconsole.core.settings import Paths, Settings, load_settings, warn_if_world_readable
from portconsole.core.timeutil import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from portconsole.core.adapters.scanning import ScannerLike


# The hot file's table for console-wide monitoring state (paused). The store owns the
# `hosts`, `ports` and `meta` tables.
MONITORING_TABLE = "monitoring"
ANCHOR_TABLE = "anchors"


class Monitor(Queries, Decisions, ScanCycle, Leadership):
    """One service object over the store, scanner, detection, audit and notifications."""

    def __init__(
        self,
        settings: Settings,
        paths: Paths,
        *,
        origin: str = "cli",
        readonly: bool = False,
        scanner: ScannerLike | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.clock = clock
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
        self.settings_sha256 = settings_fingerprint(settings)
        self.leader = LeaderElection(
            paths.data_dir,
            self.actor,
            settings.daemon.lease_seconds,
            fingerprint=self.settings_sha256,
        )
        # Why this process may not lead ("" when it may); see `lead_refusal`.
        self.follow_reason = ""
        # Set by the supervisor: the event that stops this process. A scheduled run it
        # cancels is handed over to the next leader, not a gap (ScanCycle._settle_run).
        self.stopping = None
        # Tests and replays pass their own scanner; by default the real nmap is used.
        self._scanner: ScannerLike | None = scanner
        if settings.sites:
            # Groups with `site = "NAME"` are scanned by that site's workers (services/sites.py).
            from portconsole.core.services.sites import with_sites

            self._scanner = with_sites(self, scanner)
        self._scan_lock = RunLocks()
        nmap_budget.configure(settings.scan.max_nmap_processes, settings.scan.workers)
        # The -sV runs cycles leave running, by cycle label (services/fingerprint_after.py).
        self._fingerprint_jobs = {}
        self._fingerprint_lock = threading.Lock()
        self.warnings: list[str] = []
        self._delivery: DeliveryWorker | None = None
        self._delivery_stop = threading.Event()
        if settings.notify.urls and paths.config_exists:
            warning = warn_if_world_readable(paths.config_file)
            if warning:
                self.warnings.append(warning)
        if not readonly:
            self._audit_settings_change()

    # ----- construction -------------------------------------------------------------
    @classmethod
    def open(
        cls,
        config: Path | None = None,
        data_dir: Path | None = None,
        *,
        origin: str = "cli",
        readonly: bool = False,
        scanner: ScannerLike | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> Monitor:
        settings, paths = load_settings(config, data_dir)
        return cls(settings, paths, origin=origin, readonly=readonly, scanner=scanner, clock=clock)

    def close(self) -> None:
        self.cancel_fingerprints()
        self.stop_delivery()
        self.hand_over()

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

    # ----- reads --------------------------------------------------------------------

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
        self.store.rebuild(self.actor)

    def audit_tip(self) -> str:
        """A cheap token that changes whenever an event is appended (the chain's head)."""
        head = self.audit.head()
        return f"{head.seq}:{head.hash}" if head else ""

    # ----- monitoring state ------------------------------------------------------------
    @property
    def paused(self) -> bool:
        # A lock-free read (the projection's manifest is its commit point): under the lock,
        # every console read of the header waited for a whole ingest to commit (seconds).
        docs = self.store.hot.table(MONITORING_TABLE).all()
        return bool(docs and docs[0].get("paused"))

    def _set_paused(self, paused: bool) -> None:
        self._require_write("pause or resume monitoring")
        with self.store.lock.hold():
            table = self.store.hot.table(MONITORING_TABLE)
            if table.all():
                table.update({"paused": paused, "changed_at": iso(self.clock())})
            else:
                table.insert({"paused": paused, "changed_at": iso(self.clock())})
            self._audit("monitoring.paused" if paused else "monitoring.resumed")

    def pause(self) -> None:
        self._set_paused(True)

    def resume(self) -> None:
        self._set_paused(False)

    def due_groups(self) -> list[str]:
        if self.paused:
            return []
        return self.scheduler.due(self.clock())

    # ----- decisions -------------------------------------------------------------------

    # ----- scanning --------------------------------------------------------------------

    # ----- baselines, imports, retention ------------------------------------------------

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
        with_raw: bool = False,
        sign_key: Path | None = None,
        samples: Sequence[datetime] = (),
    ) -> list[Path]:
        """A point-in-time report (`at`) or an evidence pack (`start`..`end`, with the
        open-port population at each of `samples` too); audited."""
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
            with_raw=with_raw,
            sign_key=sign_key,
            samples=samples,
            now=self.clock(),
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
            now = self.clock()
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
        """Record each delivery attempt on its findings (one record naming the message, all
        of them in one write) and in the audit chain."""
        with self.store.lock.hold():
            # Ids with no finding (a test message, a finding archived since) are skipped.
            self.findings_book.record_notifications(message.finding_ids, result.finding_record())
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


__all__ = [
    "CycleResult",
    "HostRow",
    "Monitor",
    "Overview",
    "PortRow",
]
