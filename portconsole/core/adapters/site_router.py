"""The monitor's scanner when sites are configured: each group to its site, or scanned here.

A group with `site = "NAME"` goes to that site's `SiteScanner` (site_scanner.py); every
other group, and an ad-hoc scan of addresses in no site group, to the local scanner. A
re-probe or fingerprint (which names an address, not a group) goes where the groups that
name the address are scanned. A scan mixing a site's addresses with others is refused:
one place scans it, or none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from portconsole.core.adapters.scanning import Fingerprint, ScannerLike, normalise_addresses
from portconsole.core.adapters.site_scanner import SiteEvent, SiteScanner
from portconsole.core.adapters.site_seen import SeenJobs
from portconsole.core.domain.model import PortObservation, Progress, ScanResult
from portconsole.core.domain.targets import PortSpec, Scope, expand_targets
from portconsole.core.errors import UserError
from portconsole.core.settings import Settings

# The deadline of a probe or fingerprint job for addresses no site group's interval bounds.
AD_HOC_DEADLINE = 900.0
# Beyond the longest deadline, how long an answered job's id and nonce are still kept
# (clock steps); after that an answer to it is refused as late or foreign anyway.
REPLAY_SLACK_SECONDS = 600.0


def replay_window(settings: Settings) -> float:
    """Seconds a job's id and nonce are kept after its answer (`SeenJobs.keep`): the longest
    deadline a site job can have (see `SiteRouter._interval`), and some slack."""
    longest = max(
        [AD_HOC_DEADLINE, *(float(g.interval) for g in settings.groups.values() if g.site)]
    )
    return longest + REPLAY_SLACK_SECONDS


class SiteRouter:
    """The monitor's scanner when sites are configured: each group to its site or here."""

    def __init__(
        self,
        settings: Settings,
        scope: Scope,
        local: ScannerLike | None,
        local_factory: Callable[[], ScannerLike],
        seen: SeenJobs,
        on_event: Callable[[SiteEvent], None],
        resolve: Callable[[str], list[str]],
    ) -> None:
        self.settings = settings
        self.scope = scope
        self.local_given = local
        self._local = local
        self._local_factory = local_factory
        self._resolve = resolve
        self._site_of_address: dict[str, str] | None = None
        self._lock = threading.Lock()
        self.sites = {
            name: SiteScanner(name, settings, seen, on_event, self._interval)
            for name in sorted({g.site for g in settings.groups.values() if g.site})
        }

    @property
    def local(self) -> ScannerLike:
        with self._lock:
            if self._local is None:
                self._local = self._local_factory()
            return self._local

    @property
    def scan_type(self) -> str:
        """The local scanner's (a site's own scan type is in its results)."""
        return self.local.scan_type

    @scan_type.setter
    def scan_type(self, value: str) -> None:
        self.local.scan_type = value

    def _addresses(self) -> dict[str, str]:
        """Address -> the site of the groups that name it (computed once)."""
        with self._lock:
            if self._site_of_address is None:
                mapping: dict[str, str] = {}
                for group in self.settings.groups.values():
                    if group.site:
                        for address in expand_targets(group.targets, self.scope, self._resolve):
                            mapping.setdefault(address, group.site)
                self._site_of_address = mapping
            return self._site_of_address

    def _interval(self, group: str, addresses: list[str]) -> float:
        conf = self.settings.groups.get(group)
        if conf is not None:
            return float(conf.interval)
        mapping = self._addresses()
        spans = [
            g.interval
            for g in self.settings.groups.values()
            if g.site and any(mapping.get(a) == g.site for a in addresses)
        ]
        return float(min(spans, default=AD_HOC_DEADLINE))

    def _for(self, group: str, addresses: Iterable[str]) -> ScannerLike:
        conf = self.settings.groups.get(group)
        if conf is not None:
            return self.sites[conf.site] if conf.site else self.local
        mapping = self._addresses()
        places = {mapping.get(a, "") for a in normalise_addresses(addresses)}
        if len(places) > 1:
            shown = ", ".join(sorted(p or "here (local)" for p in places))
            raise UserError(
                f"these targets are scanned from different places ({shown}): scan each group"
            )
        place = places.pop() if places else ""
        return self.sites[place] if place else self.local

    def scanned_here(self, addresses: Iterable[str]) -> list[str]:
        """Those of `addresses` no site group names: the local scanner's (as `_for`)."""
        mapping = self._addresses()
        return [a for a in addresses if not mapping.get(a)]

    def produced_by(self, scan_id: str) -> dict[str, str]:
        """`site` and `worker` of a scan a site ran, for its `scan.end` event; {} if local."""
        for name, site in self.sites.items():
            worker = site.answered_by(scan_id)
            if worker is not None:
                return {"site": name, "worker": worker}
        return {}

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
        return self._for(group, addresses).scan(
            addresses, ports, udp=udp, fingerprint=fingerprint, progress=progress,
            cancel=cancel, targets=targets, origin=origin, group=group, known=known,
        )  # fmt: skip

    def probe(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> set[tuple[int, str]]:
        return self._for("", [address]).probe(address, ports, cancel)

    def fingerprint(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> dict[tuple[int, str], PortObservation]:
        return self._for("", [address]).fingerprint(address, ports, cancel)
