"""Sites in the monitor: the scanner that sends site groups to their workers, and what is
recorded about each site answer.

The wiring (`with_sites`): when `[sites.NAME]` are configured, the monitor's scanner is a
SiteRouter (adapters/site_router.py) over the local scanner, so a group with `site = "NAME"`
is scanned by that site's workers and every other group here, through the same cycle.

The record: the scan's own `scan.end` event names its `site` and `worker` (`scan_source`,
asked by the cycle). `record_site_event`: every accepted answer is a `site.result.accepted`
event naming the site, worker, job id and nonce (the scan's own events follow in its
cycle); a refused one is a `site.result.refused` event with the reason and a
`site_result_refused` finding for the site (one open finding per site, refreshed by later
refusals); a job the site declined (outside its own scope, past its deadline) is a
`site.job.declined` event.
The group's run then fails, which the scheduler raises as a monitoring gap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portconsole.core.adapters.dns import resolve_host_name
from portconsole.core.adapters.site_router import SiteRouter, replay_window
from portconsole.core.adapters.site_scanner import SiteEvent
from portconsole.core.adapters.site_seen import SeenJobs
from portconsole.core.domain.finding import FindingCandidate
from portconsole.core.services.base import ServiceBase

if TYPE_CHECKING:
    from portconsole.core.adapters.scanning import ScannerLike
    from portconsole.core.services.cycle import ScanCycle

REFUSED_KIND = "site_result_refused"


def with_sites(service: ScanCycle, scanner: ScannerLike | None) -> ScannerLike | None:
    """The scanner for a monitor: a SiteRouter when a group has a site, else `scanner`."""
    if isinstance(scanner, SiteRouter):
        scanner = scanner.local_given  # a reload: route anew over the same local scanner
    if not any(group.site for group in service.settings.groups.values()):
        return scanner

    def local() -> ScannerLike:
        from portconsole.core.adapters.scanner import Scanner

        return Scanner(service.settings.scan, service.scope)

    return SiteRouter(
        service.settings,
        service.scope,
        scanner,
        local,
        SeenJobs(service.paths.data_dir / "sites" / "seen.jsonl", replay_window(service.settings)),
        lambda event: record_site_event(service, event),
        resolve_host_name,
    )


def scan_source(scanner: ScannerLike, scan_id: str) -> dict[str, str]:
    """`site` and `worker` for a scan's `scan.end` event when a site ran it, else {}."""
    return scanner.produced_by(scan_id) if isinstance(scanner, SiteRouter) else {}


def sites_down(service: ServiceBase) -> tuple[str, ...]:
    """Sites whose group's last run failed (no answer, broker down, refused result): the
    console's header names them until a run of theirs succeeds again."""
    groups = service.settings.groups
    if not any(conf.site for conf in groups.values()):
        return ()
    down = {
        site
        for status in service.scheduler.status()
        if (site := groups[status.group].site) and status.last_outcome == "failed"
    }
    return tuple(sorted(down))


def record_site_event(service: ScanCycle, event: SiteEvent) -> None:
    """Journal a site answer; a refused one also raises (or refreshes) its finding."""
    if service.readonly:
        return
    resource = {"site": event.site, "group": event.group, "job_id": event.job_id}
    details = {"worker": event.worker, "reason": event.reason, **event.details}
    refused = event.action == "site.result.refused"
    with service.store.lock.hold():
        now = service.clock()
        entries = [
            service._entry(
                event.action,
                outcome="success" if event.action == "site.result.accepted" else "failure",
                resource=resource,
                details=details,
                at=now,
            )
        ]
        alerts = []
        if refused:
            candidate = FindingCandidate(
                kind=REFUSED_KIND,
                host=event.site,
                port=None,
                proto=None,
                service="",
                severity=service.settings.severity.by_kind.get(REFUSED_KIND, "high"),
                scan_id="",
                details={"group": event.group, "reason": event.reason, "job_id": event.job_id},
            )
            outcome = service.findings_book.ingest_candidates(
                [candidate], now, service.settings.scan.flap_window
            )
            alerts = outcome.new + outcome.lapsed
            entries += service._finding_entries(now, ("finding.raised", outcome.new))
        service.audit.append_many(entries)
        service._enqueue(alerts, "")
