"""The second look of a cycle: re-probe what changed, choose what to fingerprint (-sV).

Scanners miss ports under load and ports flap, so a new or vanished port is probed again
before it counts; service detection costs ~10x a sweep (and ~165 s on a port that answers
nothing), so it runs only on new, changed or stale ports, after detection and in the
background (services/fingerprint_after.py); stored fingerprints are carried over meanwhile.

Freshness: a product swapped behind an unchanged port is invisible to a sweep, so every open
port is fingerprinted again within its group's `refingerprint_hours` (the age). A group's
scheduled cycles share that work out (`refingerprint_due`): each takes the oldest
fingerprints that would otherwise outlive the age, at most ceil(ports / cycles) of them,
so a whole re-fingerprint never lands in one cycle unless the age is shorter than a cycle.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

from portconsole.core.adapters.scanning import BatchProber
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.model import (
    OPEN,
    PortObservation,
    ScanResult,
)
from portconsole.core.domain.state import PortState
from portconsole.core.errors import UserError
from portconsole.core.services.base import ServiceBase
from portconsole.core.settings import DEFAULT_REFINGERPRINT_HOURS

Key = TypeVar("Key", bound=Hashable)


def refingerprint_due(
    fingerprinted: Mapping[Key, datetime],
    now: datetime,
    age: timedelta,
    period: timedelta | None,
) -> set[Key]:
    """The ports (of `fingerprinted`: key -> when last fingerprinted) to fingerprint again now.

    `period` bounds the time between two cycles of the group (interval + jitter); None for
    an ad-hoc scan, which takes every port older than `age`. A group's cycle spreads the
    work over the `window` cycles before a fingerprint would pass the age (at most the
    cycles that fit in the age, at most one per port): a port is due once it is older than
    age - window * period, oldest first, at most ceil(ports / window) per cycle. A due port
    waits at most `window` cycles, so none is older than the age when refreshed; an age
    shorter than a cycle makes every port due every cycle.
    """
    if not fingerprinted:
        return set()
    if period is None or period <= timedelta(0):
        threshold, cap = age, len(fingerprinted)
    else:
        window = max(1, min(int(age / period), len(fingerprinted)))
        threshold = age - window * period
        cap = math.ceil(len(fingerprinted) / window)
    due = sorted(
        ((at, index) for index, at in enumerate(fingerprinted.values()) if now - at > threshold),
    )
    keys = list(fingerprinted)
    return {keys[index] for _, index in due[:cap]}


class Probing(ServiceBase):
    """Confirm and fingerprint, for the scan cycle."""

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
        coverage = Coverage.of_scan(scan)
        known_by_host: dict[str, set[tuple[int, str]]] = {}
        for address, port, proto in state:
            known_by_host.setdefault(address, set()).add((port, proto))
        suspects: dict[str, set[tuple[int, str]]] = {}
        for host in scan.hosts:
            seen = {p.key for p in host.open_ports()}
            known_keys = known_by_host.get(host.address, set())
            new = seen - known_keys
            # Vanished: known open, covered by this scan (port and protocol), not seen now.
            gone = {k for k in known_keys - seen if coverage.covers(host.address, *k)}
            if new or gone:
                suspects[host.address] = new | gone
        if not suspects:
            return []
        unconfirmed: list[str] = []
        outcomes = self._reprobe(suspects, probes, cancel)
        hosts = {h.address: h for h in scan.hosts}  # one index, not a search per host
        for address, results in outcomes:
            if not results:
                continue
            target = hosts.get(address)
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

    def _reprobe(
        self,
        suspects: dict[str, set[tuple[int, str]]],
        probes: int,
        cancel: threading.Event,
    ) -> list[tuple[str, list[set[tuple[int, str]]]]]:
        """Each suspect host with the open ports of each of its `probes` re-probes, or with
        none when a re-probe failed or was cancelled: that confirms nothing either way, and
        the sweep's answer stands (better a finding to dismiss than a port never reported).

        A scanner that can (`BatchProber`) re-probes every host together, in host batches
        like a sweep; another is asked one host at a time, `workers` at once.
        """
        scanner = self.scanner
        if isinstance(scanner, BatchProber):
            rounds: list[dict[str, set[tuple[int, str]]]] = []
            for _ in range(probes):
                if cancel.is_set():
                    return [(address, []) for address in suspects]
                try:
                    rounds.append(scanner.probe_many(suspects, cancel=cancel))
                except UserError:
                    return [(address, []) for address in suspects]
            return [
                (address, [r[address] for r in rounds] if all(address in r for r in rounds) else [])
                for address in suspects
            ]

        def reprobe(address: str) -> tuple[str, list[set[tuple[int, str]]]]:
            results = []
            for _ in range(probes):
                if cancel.is_set():
                    return address, []
                try:
                    results.append(scanner.probe(address, sorted(suspects[address]), cancel=cancel))
                except UserError:
                    return address, []
            return address, results

        with ThreadPoolExecutor(max_workers=max(1, self.settings.scan.workers)) as pool:
            return list(pool.map(reprobe, suspects))

    def _fingerprint_plan(
        self,
        scan: ScanResult,
        state: dict[tuple[str, int, str], PortState],
        mode: str,
        label: str = "",
    ) -> dict[str, list[tuple[int, str]]]:
        """The ports to fingerprint (-sV) after this sweep, by host; stored fingerprints
        are carried onto the sweep's ports meanwhile.

        "changed" picks new ports, ports never fingerprinted, and the stale ones
        `refingerprint_due` picks; `label` is the cycle's group ("" or "all": ad-hoc). The
        -sV itself runs after detection, in the background (services/fingerprint_after.py).
        """
        now = self.clock()
        stale = self._stale_fingerprints(scan, state, now, label) if mode == "changed" else set()
        wanted: dict[str, list[tuple[int, str]]] = {}
        for host in scan.hosts:
            for index, port in enumerate(host.ports):
                if port.state != OPEN:
                    continue
                key = (host.address, port.port, port.proto)
                known = state.get(key)
                unknown = known is None or known.fingerprinted_at is None
                if mode == "all" or (mode == "changed" and (unknown or key in stale)):
                    wanted.setdefault(host.address, []).append(port.key)
                if known is not None and (known.product or known.version):
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
        return wanted

    def _stale_fingerprints(
        self,
        scan: ScanResult,
        state: dict[tuple[str, int, str], PortState],
        now: datetime,
        label: str,
    ) -> set[tuple[str, int, str]]:
        """The open ports of `scan` whose stored fingerprint is due again (see the docstring).

        A group's cycle uses the group's age and spreads the work over its cycles; an
        ad-hoc scan takes each port older than the shortest age of the groups naming its
        host (the default for a host in none).
        """
        fingerprinted = {
            key: known.fingerprinted_at
            for host in scan.hosts
            for port in host.open_ports()
            if (known := state.get(key := (host.address, port.port, port.proto))) is not None
            and known.fingerprinted_at is not None
        }
        groups = self.settings.groups
        if label in groups:
            conf = groups[label]
            age = timedelta(hours=conf.refingerprint_hours)
            period = timedelta(seconds=conf.interval + conf.jitter)
            return refingerprint_due(fingerprinted, now, age, period)
        names = self.group_of()
        by_age: dict[float, dict[tuple[str, int, str], datetime]] = {}
        for key, at in fingerprinted.items():
            hours = min(
                (groups[g].refingerprint_hours for g in names.get(key[0], []) if g in groups),
                default=DEFAULT_REFINGERPRINT_HOURS,
            )
            by_age.setdefault(hours, {})[key] = at
        return {
            key
            for hours, ports in by_age.items()
            for key in refingerprint_due(ports, now, timedelta(hours=hours), None)
        }
