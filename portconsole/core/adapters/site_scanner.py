"""The central's side of a site: a scanner (ScannerLike) whose scans run at the site.

`SiteScanner` sends one signed job per scan, probe or fingerprint to the site's queue and
waits for the answer until the job's deadline (the group's interval). An answer is taken
only if it is signed with the site's key, answers this very job (job id and nonce, each
accepted once: `SeenJobs`, site_seen.py), came in time, and names no address outside the job's
addresses (which were the group's targets, inside the site's scope). The raw nmap XML is
then parsed by the one parser (nmap_parse.py) and assembled by `ScanTally` into the
ScanResult the cycle ingests, exactly as a local scan's would be.

A refused answer raises `SiteRefused` after `on_event` was told (the monitor records an
event and a finding); no answer in time, or a broker that cannot be reached, raises
`SiteUnavailable`. Both are UserErrors, so the cycle marks the group's run failed and the
scheduler raises the monitoring gap: a broken link is a gap, never a crash.

The monitor holds a `SiteRouter` (site_router.py) that sends each group to its site or here.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, NoReturn

from msgspec import Struct, field

from portconsole.core.adapters.nmap_parse import ReportRefused, parse_report
from portconsole.core.adapters.scanning import (
    Fingerprint,
    ScanCancelled,
    ScanTally,
    check_pairs,
    normalise_addresses,
)
from portconsole.core.adapters.site_celery import (
    TASK_NAME,
    fingerprint_from_json,
    queue_name,
    site_app,
    site_key,
)
from portconsole.core.adapters.site_seen import SeenJobs
from portconsole.core.domain.model import (
    OPEN,
    HostObservation,
    PortObservation,
    Progress,
    ScanResult,
)
from portconsole.core.domain.raw_xml import GzipMember
from portconsole.core.domain.site_envelope import JOB, RESULT, EnvelopeRefused, seal, unseal
from portconsole.core.domain.targets import PortSpec, Scope, ip_sort_key
from portconsole.core.errors import UserError
from portconsole.core.secrets import mask_url
from portconsole.core.settings import Settings
from portconsole.core.timeutil import iso, parse_iso, utcnow

# Site scans whose worker is remembered until their cycle journals them (see SiteScanner).
MAX_UNJOURNALED = 64
# Seconds the central keeps polling for an answer while the site's Redis does not answer
# (a restart or a network blip), before the job is a gap. Each failed poll costs a refused
# connection (instant) or at most socket_connect_timeout (3 s, site_celery.site_app).
LOST_BROKER_GRACE = 5.0


class SiteUnavailable(UserError):
    """The site did not answer in time, or its broker could not be reached."""


class SiteRefused(UserError):
    """A site's answer was refused (unsigned, mis-signed, replayed, late, out of scope)."""


class SiteEvent(Struct, frozen=True):
    """What the monitor records about a site's answer (accepted, refused, or declined)."""

    # site.result.accepted | site.result.refused | site.job.declined | site.unavailable
    action: str
    site: str
    group: str
    job_id: str
    reason: str = ""
    worker: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class _Job(Struct):
    """A job sent to a site's queue, and what its result must match to be taken."""

    kind: str
    group: str
    addresses: list[str]
    deadline: datetime
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))


class SiteScanner:
    """One site's workers as a scanner: each call is a signed job on the site's queue."""

    scan_type = "site"

    def __init__(
        self,
        name: str,
        settings: Settings,
        seen: SeenJobs,
        on_event: Callable[[SiteEvent], None],
        interval_of: Callable[[str, list[str]], float],
    ) -> None:
        self.name = name
        self.site = settings.sites[name]
        self.scope: Scope = settings.site_scope(name)
        self.seen = seen
        self.on_event = on_event
        self.interval_of = interval_of  # (group, addresses) -> seconds a job may take
        # scan id -> the worker whose answer it is, until the cycle journals the scan
        # (`answered_by`); bounded, in case a scan is never ingested (its cycle failed).
        self._workers: dict[str, str] = {}
        self._workers_lock = threading.Lock()

    # -- ScannerLike ----------------------------------------------------------------------

    def scan(
        self,
        addresses: list[str],
        ports: PortSpec,
        *,
        udp: bool = False,
        fingerprint: Fingerprint = "open",
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        targets: list[str] | None = None,
        origin: str = "cli",
        group: str = "",
        known: Iterable[str] | None = None,
    ) -> ScanResult:
        planned = normalise_addresses(addresses)
        self.scope.check_addresses(planned)
        job = self._job("scan", group, planned)
        wanted = set(planned)
        extra = {
            "ports": str(ports),
            "udp": udp,
            "known": sorted(a for a in known if a in wanted) if known is not None else None,
        }
        answer = self._call(job, extra, cancel)
        if answer is None:
            tally = ScanTally(planned, cancelled=True)
            now = utcnow()
            return tally.result(
                started=now, finished=now, nmap_version="", scan_type=self.scan_type,
                privileged=False, targets=targets, ports=ports, protocols=["tcp"],
                origin=origin, group=group, progress=progress,
            )  # fmt: skip
        meta, reports = answer
        return self._scan_result(job, meta, reports, ports, targets, origin, progress)

    def probe(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> set[tuple[int, str]]:
        pairs = sorted({(int(p), str(proto)) for p, proto in ports})
        if not pairs:
            return set()
        check_pairs(pairs)
        job = self._job("probe", "", normalise_addresses([address]))
        answer = self._call(job, {"pairs": pairs}, cancel)
        if answer is None:
            raise ScanCancelled(f"probe of {address} at site {self.name} cancelled")
        found = {(int(p), str(proto)) for p, proto in answer[0].get("open", [])}
        return found & set(pairs)

    def fingerprint(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> dict[tuple[int, str], PortObservation]:
        pairs = sorted({(int(p), str(proto)) for p, proto in ports})
        if not pairs:
            return {}
        check_pairs(pairs)
        job = self._job("fingerprint", "", normalise_addresses([address]))
        answer = self._call(job, {"pairs": pairs}, cancel)
        if answer is None:
            raise ScanCancelled(f"service detection on {address} at site {self.name} cancelled")
        wanted = set(pairs)
        seen = [fingerprint_from_json(item) for item in answer[0].get("ports", [])]
        return {p.key: p for p in seen if p.key in wanted}

    def answered_by(self, scan_id: str) -> str | None:
        """The worker that ran this site scan (asked once, by the cycle); None if not ours."""
        with self._workers_lock:
            return self._workers.pop(scan_id, None)

    # -- the round trip -------------------------------------------------------------------

    def _job(self, kind: str, group: str, addresses: list[str]) -> _Job:
        self.scope.check_addresses(addresses)
        seconds = self.interval_of(group, addresses)
        return _Job(kind, group, addresses, utcnow() + timedelta(seconds=seconds))

    def _call(
        self, job: _Job, extra: dict[str, Any], cancel: threading.Event | None
    ) -> tuple[dict[str, Any], list[bytes]] | None:
        """Send the job, wait for its answer until the deadline; None if cancelled."""
        key = site_key(self.name, self.site)
        meta = {
            "v": 1,
            "kind": job.kind,
            "job_id": job.job_id,
            "nonce": job.nonce,
            "site": self.name,
            "group": job.group,
            "addresses": job.addresses,
            "deadline": iso(job.deadline),
            **extra,
        }
        app = site_app(self.name, self.site)
        where = f"site {self.name}" + (f", group {job.group}" if job.group else "")
        try:
            pending = app.send_task(
                TASK_NAME,
                args=[seal(JOB, meta, key)],
                queue=queue_name(self.name),
                task_id=job.job_id,
                expires=job.deadline,
                retry=False,
            )
        except Exception as error:  # noqa: BLE001 - any transport failure is a gap
            # Fast: the central's app tries Redis twice (site_celery.CENTRAL_RETRY).
            self._unavailable(
                job,
                "broker",
                f"{where}: the broker {mask_url(self.site.broker)} {_why(error)}",
            )
        sent = time.monotonic()
        lost: float | None = None  # since when the backend has not answered a poll
        while True:
            if cancel is not None and cancel.is_set():
                self._revoke(app, job.job_id)
                return None
            try:
                if pending.ready():
                    value = pending.result
                    state = str(pending.state)
                    break
                lost = None
            except Exception as error:  # noqa: BLE001 - the backend went away mid-wait
                # A short blip is waited out (the worker stores its result once Redis is
                # back: site_celery.WORKER_RETRY); a longer loss is a gap.
                lost = time.monotonic() if lost is None else lost
                if time.monotonic() - lost >= LOST_BROKER_GRACE:
                    self._unavailable(
                        job,
                        "broker",
                        f"{where}: lost the broker {mask_url(self.site.broker)} while "
                        f"waiting: it {_why(error)}",
                    )
            if utcnow() >= job.deadline:
                self._revoke(app, job.job_id)
                self._unavailable(
                    job,
                    "no-answer",
                    f"{where}: no answer within the deadline ({iso(job.deadline)})",
                )
            # A GET on loopback costs ~0.1 ms: poll often at first, then at 1/40 of the time
            # waited, so the answer is seen at most ~2.5% after it came (at most 0.25 s).
            waited = time.monotonic() - sent
            time.sleep(0.005 if waited < 2 else min(0.25, waited / 40))
        try:
            pending.forget()
        except Exception:  # noqa: BLE001, S110 - the result expires on its own anyway
            pass
        if state != "SUCCESS":
            # FAILURE (the task raised), REVOKED (expired at its deadline): no answer at all.
            self._unavailable(
                job, "failed", f"{where}: the job ended as {state} ({type(value).__name__})"
            )
        return self._verified(job, value)

    def _unavailable(self, job: _Job, reason: str, text: str) -> NoReturn:
        """The site could not answer: told to the monitor (`site.unavailable`), then raised."""
        self.on_event(SiteEvent("site.unavailable", self.name, job.group, job.job_id, reason))
        raise SiteUnavailable(f"{text}; not scanned")

    @staticmethod
    def _revoke(app: Any, job_id: str) -> None:
        try:
            app.control.revoke(job_id)
        except Exception:  # noqa: BLE001, S110 - the job also expires at its deadline
            pass

    def _verified(self, job: _Job, value: object) -> tuple[dict[str, Any], list[bytes]]:
        """The answer's meta and reports, or SiteRefused (the monitor is told first)."""
        if isinstance(value, dict) and set(value) == {"refused"}:
            self._refuse(
                job, "job-refused", "", "the worker refused the job: its key is not the site's"
            )
        try:
            meta, reports = unseal(RESULT, value, site_key(self.name, self.site))
        except EnvelopeRefused as error:
            self._refuse(job, error.reason, "", str(error))
        worker = str(meta.get("worker", ""))[:200]
        same = (meta.get("job_id"), meta.get("nonce"), meta.get("site"), meta.get("kind"))
        if same != (job.job_id, job.nonce, self.name, job.kind):
            self._refuse(job, "replayed", worker, "the result answers another job")
        if not self.seen.first_time(job.job_id, job.nonce):
            self._refuse(job, "replayed", worker, "this job's result was already taken")
        if utcnow() > job.deadline:
            self._refuse(job, "late", worker, "the result came after the job's deadline")
        if meta.get("outcome") == "refused":
            reason = str(meta.get("error", ""))[:500]
            self.on_event(
                SiteEvent("site.job.declined", self.name, job.group, job.job_id, reason, worker)
            )
            raise SiteUnavailable(f"site {self.name} did not run the job: {reason}")
        if job.kind != "scan":  # a scan's answer is recorded once its XML is read too
            self.on_event(
                SiteEvent(
                    "site.result.accepted",
                    self.name,
                    job.group,
                    job.job_id,
                    "",
                    worker,
                    {"kind": job.kind, "nonce": job.nonce, "addresses": job.addresses},
                )
            )
        return meta, reports

    def _refuse(self, job: _Job, reason: str, worker: str, text: str) -> NoReturn:
        self.on_event(
            SiteEvent(
                "site.result.refused",
                self.name,
                job.group,
                job.job_id,
                reason,
                worker,
                {"kind": job.kind, "nonce": job.nonce, "message": text},
            )
        )
        raise SiteRefused(f"site {self.name}: result refused ({reason}): {text}; not scanned")

    def _scan_result(
        self,
        job: _Job,
        meta: dict[str, Any],
        reports: list[bytes],
        ports: PortSpec,
        targets: list[str] | None,
        origin: str,
        progress: Callable[[Progress], None] | None,
    ) -> ScanResult:
        """The ScanResult of a verified answer: its XML through the one parser."""
        planned = job.addresses
        wanted = set(planned)
        worker = str(meta.get("worker", ""))[:200]
        tally = ScanTally(list(planned))
        try:
            listed = [str(entry["sha256"]) for entry in meta.get("xml", [])]
            down = [str(a) for a in meta.get("down", [])]
            failed = [str(a) for a in meta.get("failed", [])]
            for data, plain in zip(reports, listed, strict=True):
                member = GzipMember(data, plain)
                document = member.document()
                if hashlib.sha256(document).hexdigest() != plain:
                    self._refuse(job, "xml-mismatch", worker, "a report is not the signed one")
                found = parse_report(document, open_only=True).hosts
                self._check_addresses(job, worker, list(found) + down + failed, wanted)
                first = min(found, key=ip_sort_key) if found else planned[0]
                tally.raw.append((0, first, member))
                for address, host in found.items():
                    host.ports = [p for p in host.ports if p.state == OPEN]
                    tally.hosts[address] = host
            self._check_addresses(job, worker, down + failed, wanted)
            started, finished = parse_iso(str(meta["started"])), parse_iso(str(meta["finished"]))
        except (
            ReportRefused,
            KeyError,
            ValueError,
            TypeError,
            OSError,
            EOFError,
            zlib.error,
        ) as error:
            self._refuse(job, "malformed", worker, f"its report cannot be read: {error}"[:300])
        for address in down:
            tally.hosts.setdefault(address, HostObservation(address, "down"))
        for address in planned:
            if address not in tally.hosts:
                tally.failed.append(address)
        if meta.get("error"):
            tally.errors.append(f"site {self.name}: {str(meta['error'])[:2000]}")
        elif tally.failed:
            tally.errors.append(f"site {self.name}: no result for {len(tally.failed)} host(s)")
        result = tally.result(
            started=started,
            finished=finished,
            nmap_version=str(meta.get("nmap_version", ""))[:50],
            scan_type=str(meta.get("scan_type", ""))[:20],
            privileged=bool(meta.get("privileged")),
            targets=targets,
            ports=ports,
            protocols=[str(p) for p in meta.get("protocols", ["tcp"])][:2],
            origin=origin,
            group=job.group,
            progress=progress,
        )
        with self._workers_lock:
            while len(self._workers) >= MAX_UNJOURNALED:
                self._workers.pop(next(iter(self._workers)))
            self._workers[result.scan_id] = worker
        self.on_event(
            SiteEvent(
                "site.result.accepted",
                self.name,
                job.group,
                job.job_id,
                "",
                worker,
                {
                    "kind": job.kind,
                    "nonce": job.nonce,
                    "scan_id": result.scan_id,
                    "raw_xml_sha256": result.raw_xml_sha256,
                    "hosts": len(result.hosts),
                },
            )
        )
        return result

    def _check_addresses(
        self, job: _Job, worker: str, addresses: Iterable[str], wanted: set[str]
    ) -> None:
        for address in addresses:
            if address in wanted:
                continue
            if not self.scope.contains_address(address):
                self._refuse(
                    job, "out-of-scope", worker, f"it holds {address}, outside the site's scope"
                )
            self._refuse(
                job, "not-a-target", worker, f"it holds {address}, not a target of the job"
            )


def _why(error: BaseException) -> str:
    """Why the site's Redis failed us, for a message: a refused password is said as such
    (Celery raises its own RuntimeError from redis-py's AuthenticationError)."""
    seen: BaseException | None = error
    while seen is not None:
        if "Authentication" in type(seen).__name__:
            return f"refused the password ({type(seen).__name__})"
        seen = seen.__cause__ or seen.__context__
    return f"cannot be reached ({type(error).__name__})"
