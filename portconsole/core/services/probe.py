"""The second look of a cycle: re-probe what changed, choose what to fingerprint (-sV).

Scanners miss ports under load and ports flap, so a new or vanished port is probed again
before it counts (`scan.confirm_probes` rounds). A new TCP port that accepts a connect is
confirmed by that, with no second nmap run (`scan.confirm_connect`, adapters/connect_probe:
a new silent port is a finding ~80 ms sooner); one that does not is asked of nmap with the
rest. A connect only ever confirms "open". A vanished port (open before, not open in
the sweep) takes the state the re-probes give it, not the sweep's guess (a sweep keeps only
open ports, and reads a port it did not list as closed once it listed closed ports):

- open at any re-probe: still there, no change;
- a reset (nmap's `closed`) at any re-probe: `port_closed`;
- silent (`filtered`): probed once more, spaced out, since a SYN rate limit drops tries
  sent close together (nmap -T4 sends its four within ~1 s, and a limit of one SYN a second
  swallowed all of them in ~2 of 5 cycles). Only a port silent through that too is
  `port_filtered`; a silent port is never `port_closed`.

The spaced re-probe is bounded: one nmap run (per address family) over at most
SPACED_HOSTS hosts in parallel and SPACED_PORTS distinct ports, each port tried twice,
1.1 s between a host's probes (scanner.SPACED_*), killed after 3 x 2 x 1.1 + 3 = 9.6 s;
a silent port beyond those bounds is filtered at once. No setting: the bounds hold for a
/16 with many vanished ports. A port behind a DROP rule costs a
cycle about 3.5 s more (measured with one such port). A scanner that names only the open
ports (not a `BatchProber`: the replay, a site) leaves a not-open port the sweep's state.

Service detection costs ~10x a sweep (and ~165 s on a port that answers
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
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar

from msgspec.structs import replace

from portconsole.core.adapters.scanning import BatchProber, OpenConfirmer, PortStates
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.model import (
    FILTERED,
    FILTERED_STATES,
    OPEN,
    HostObservation,
    PortObservation,
    ScanResult,
)
from portconsole.core.domain.state import PortState
from portconsole.core.domain.targets import ip_sort_key
from portconsole.core.errors import UserError
from portconsole.core.services.base import ServiceBase
from portconsole.core.settings import DEFAULT_REFINGERPRINT_HOURS

Key = TypeVar("Key", bound=Hashable)

CLOSED = "closed"
# The spaced re-probe's bounds: at most this many hosts, and this many distinct ports
# (the commonest among the silent ones; nmap asks every host of a run each port of it).
# A silent vanished port beyond them is filtered from the first re-probe's silence.
SPACED_HOSTS = 64
SPACED_PORTS = 3


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


def vanished_state(answers: Sequence[PortStates], key: tuple[int, str]) -> str:
    """What re-probes say of a port the sweep lost: "open" when any found it open,
    "closed" when any got a reset, "filtered" when every one that gave a state got no
    answer, "" when none gave a state (a scanner that names only open ports)."""
    states = {answer[key] for answer in answers if key in answer}
    if OPEN in states:
        return OPEN
    if CLOSED in states:
        return CLOSED
    return FILTERED if states else ""


def _settle(host: HostObservation, states: Mapping[tuple[int, str], str]) -> None:
    """Give the host's vanished ports the states the re-probes concluded ("" keeps the
    sweep's): each is filtered by `host.filtered` or else closed, never by the sweep's
    guess for ports it did not list (`unlisted`), which only vanished ports are read for."""
    if not any(states.values()):
        return
    final = {key: now or host.state_of(key) for key, now in states.items()}
    kept = {key for key in host.filtered if key not in final}
    host.filtered = sorted(kept | {key for key, now in final.items() if now in FILTERED_STATES})
    host.unlisted = ""


def _probe_round(
    scanner: BatchProber,
    suspects: dict[str, set[tuple[int, str]]],
    new: dict[str, set[tuple[int, str]]],
    cancel: threading.Event,
) -> dict[str, PortStates]:
    """One re-probe of every suspect port, as `BatchProber.probe_many` answers it.

    The new ports that accept a TCP connect are open at once (`OpenConfirmer`, when the
    scanner is one): a new port is then confirmed without a second nmap run. nmap asks the
    rest (vanished ports, UDP, and a new port that did not accept) in as few runs as it
    can. A host nmap was asked about and gave no answer for is left out, as before.
    """
    accepted = (
        scanner.confirm_open(new, cancel) if new and isinstance(scanner, OpenConfirmer) else {}
    )
    ask = {a: rest for a, keys in suspects.items() if (rest := keys - accepted.get(a, set()))}
    answers = scanner.probe_many(ask, cancel=cancel) if ask else {}
    found: dict[str, PortStates] = {}
    for address in suspects:
        if address in ask and address not in answers:
            continue
        states = dict(answers.get(address, {}))
        states.update(dict.fromkeys(accepted.get(address, ()), OPEN))
        found[address] = states
    return found


class Probing(ServiceBase):
    """Confirm and fingerprint, for the scan cycle."""

    def _confirm(
        self,
        scan: ScanResult,
        state: dict[tuple[str, int, str], PortState],
        cancel: threading.Event,
    ) -> list[str]:
        """Re-probe new and vanished ports; drop what a re-probe does not confirm.

        Scanners miss ports under load and ports flap: a new open port must still be open
        at every re-probe before it counts, and a vanished port open at any re-probe is
        still there. A vanished port takes the state the re-probes give it (see the module
        docstring): closed only on a reset, filtered when silent through the spaced
        re-probe too.
        """
        probes = self.settings.scan.confirm_probes
        if probes <= 0:
            return []
        coverage = Coverage.of_scan(scan)
        known_by_host: dict[str, set[tuple[int, str]]] = {}
        for address, port, proto in state:
            known_by_host.setdefault(address, set()).add((port, proto))
        new: dict[str, set[tuple[int, str]]] = {}
        gone: dict[str, set[tuple[int, str]]] = {}
        for host in scan.hosts:
            seen = {p.key for p in host.open_ports()}
            known_keys = known_by_host.get(host.address, set())
            if fresh := seen - known_keys:
                new[host.address] = fresh
            # Vanished: known open, covered by this scan (port and protocol), not seen now.
            if lost := {k for k in known_keys - seen if coverage.covers(host.address, *k)}:
                gone[host.address] = lost
        suspects = {a: new.get(a, set()) | gone.get(a, set()) for a in {*new, *gone}}
        if not suspects:
            return []
        outcomes = self._reprobe(suspects, probes, cancel, new)
        settled: dict[str, dict[tuple[int, str], str]] = {}
        for address, answers in outcomes.items():
            if answers:
                settled[address] = {k: vanished_state(answers, k) for k in gone.get(address, ())}
        silent = {
            address: {k for k, s in states.items() if s == FILTERED}
            for address, states in settled.items()
        }
        for address, states in self._spaced_reprobe(silent, cancel).items():
            settled[address].update(states)
        unconfirmed: list[str] = []
        hosts = {h.address: h for h in scan.hosts}  # one index, not a search per host
        for address, answers in outcomes.items():
            target = hosts[address]
            if not answers:
                continue
            for key in new.get(address, ()):
                if all(answer.get(key) == OPEN for answer in answers):
                    continue
                # Opened for one probe and gone at the re-probe: not a new port yet.
                unconfirmed.append(f"{address}:{key[0]}/{key[1]}")
                target.ports = [p for p in target.ports if p.key != key]
            states = settled[address]
            for key, now in states.items():
                if now != OPEN:
                    continue
                # Missed by the sweep but open at a re-probe: the port is still there.
                unconfirmed.append(f"{address}:{key[0]}/{key[1]}")
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
            _settle(target, {k: s for k, s in states.items() if s != OPEN})
            target.ports.sort(key=lambda p: (p.proto, p.port))
        return unconfirmed

    def _spaced_reprobe(
        self, silent: dict[str, set[tuple[int, str]]], cancel: threading.Event
    ) -> dict[str, dict[tuple[int, str], str]]:
        """What a spaced re-probe says of vanished ports silent at the first re-probe:
        "open", "closed" or "filtered" (still silent, or the run failed), for at most
        SPACED_HOSTS hosts and SPACED_PORTS distinct ports (the others are not asked)."""
        scanner = self.scanner
        if not any(silent.values()) or not isinstance(scanner, BatchProber) or cancel.is_set():
            return {}
        counts = Counter(key for keys in silent.values() for key in keys)
        ports = set(sorted(counts, key=lambda k: (-counts[k], k[1], k[0]))[:SPACED_PORTS])
        asked = {
            address: sorted(keys & ports)
            for address, keys in sorted(silent.items(), key=lambda item: ip_sort_key(item[0]))
            if keys & ports
        }
        asked = dict(list(asked.items())[:SPACED_HOSTS])
        try:
            answers = scanner.probe_many(asked, cancel=cancel, spaced=True)
        except UserError:
            answers = {}
        return {
            address: {
                key: vanished_state([answers[address]], key) if address in answers else FILTERED
                for key in asked[address]
            }
            for address in asked
        }

    def _reprobe(
        self,
        suspects: dict[str, set[tuple[int, str]]],
        probes: int,
        cancel: threading.Event,
        new: dict[str, set[tuple[int, str]]],
    ) -> dict[str, list[PortStates]]:
        """Each suspect host with its answer to each of its `probes` re-probes, or with
        none when a re-probe failed or was cancelled: that confirms nothing either way, and
        the sweep's answer stands (better a finding to dismiss than a port never reported).

        A scanner that can (`BatchProber`) re-probes every host together, in host batches
        like a sweep, and gives each port's state (each round first confirms the `new`
        ports it can by a TCP connect: `_probe_round`); another is asked one host at a
        time, `workers` at once, and says only which ports are open.
        """
        scanner = self.scanner
        if isinstance(scanner, BatchProber):
            rounds: list[dict[str, PortStates]] = []
            for _ in range(probes):
                if cancel.is_set():
                    return {address: [] for address in suspects}
                try:
                    rounds.append(_probe_round(scanner, suspects, new, cancel))
                except UserError:
                    return {address: [] for address in suspects}
            return {
                address: [r[address] for r in rounds] if all(address in r for r in rounds) else []
                for address in suspects
            }

        def reprobe(address: str) -> tuple[str, list[PortStates]]:
            answers: list[PortStates] = []
            for _ in range(probes):
                if cancel.is_set():
                    return address, []
                try:
                    found = scanner.probe(address, sorted(suspects[address]), cancel=cancel)
                except UserError:
                    return address, []
                answers.append(dict.fromkeys(found, OPEN))
            return address, answers

        with ThreadPoolExecutor(max_workers=max(1, self.settings.scan.workers)) as pool:
            return dict(pool.map(reprobe, suspects))

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
