"""The scanner seam: what the monitor asks of a scanner, and the rules every scanner shares.

Why a protocol: the scan cycle (sweep, confirm, fingerprint, ingest) is domain logic, and
most of its tests should not need nmap, root or real listeners. `ScannerLike` is exactly
what `Monitor` calls; the real adapter (`scanner.Scanner`, which runs nmap) and the replay
(`replay.ReplayScanner`, which answers from recorded nmap XML) both satisfy it, so a test
swaps one for the other without the monitor knowing.

Why the shared rules live here and not in either scanner: a replay that accepted an
address the real scanner refuses, or named an outcome differently, would let a test pass
that production fails. Both gate addresses with `checked_addresses` and ports with
`check_pairs`, choose ports to fingerprint with `chosen_ports`, report progress with
`ScanProgress` and turn what they gathered into a `ScanResult` with `ScanTally`.
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

from msgspec import Struct, field
from msgspec.structs import replace

from portconsole.core.domain.model import (
    OPEN,
    HostObservation,
    PortObservation,
    Progress,
    ScanResult,
)
from portconsole.core.domain.raw_xml import GzipDocuments, GzipMember
from portconsole.core.domain.targets import PortSpec, Scope, ip_sort_key
from portconsole.core.errors import TargetError, UserError

# "open" (every open port), "none", or a callable choosing (port, proto) pairs per host.
Fingerprint = Callable[[HostObservation], Iterable[tuple[int, str]]] | str

# Protocols a scanner is asked to probe. An imported report may also carry sctp; we
# never scan it ourselves.
SCAN_PROTOCOLS = ("tcp", "udp")


class ScanCancelled(UserError):
    """A probe or fingerprint was cancelled before it could answer."""


class ScannerLike(Protocol):
    """What the monitor needs from a scanner. Signatures are those of `Scanner`.

    Cancellation contract: `scan` never raises on cancel; it returns what finished with
    outcome "cancelled". `probe` and `fingerprint` answer a question about specific ports,
    where "no answer" must not read as "closed", so they raise `ScanCancelled`.
    """

    scan_type: str

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
    ) -> ScanResult: ...

    def probe(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> set[tuple[int, str]]: ...

    def fingerprint(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> dict[tuple[int, str], PortObservation]: ...


# A re-probe's answer for one host: each asked port nmap gave a state for ("open",
# "closed", "filtered", ...). A port missing from it got no state either way.
PortStates = dict[tuple[int, str], str]


@runtime_checkable
class BatchProber(Protocol):
    """A scanner that re-probes many hosts in a few nmap runs (`Scanner.probe_many`): the
    confirm step uses it when the scanner has it, else one `probe` per host.

    It answers each port's state, not only whether it is open, so that a port the sweep
    lost is called closed only on a reset. `spaced`: probes of a host spaced out in time
    (a rate limit on SYNs drops tries sent close together), in one bounded run.
    """

    def probe_many(
        self,
        questions: Mapping[str, Iterable[tuple[int, str]]],
        cancel: threading.Event | None = None,
        *,
        spaced: bool = False,
    ) -> dict[str, PortStates]: ...


@runtime_checkable
class OpenConfirmer(Protocol):
    """A scanner that can confirm a port open without an nmap run (`Scanner.confirm_open`:
    a TCP connect). The confirm step asks it first for the new ports of a sweep; a port
    it does not name goes to the re-probe as before."""

    def confirm_open(
        self,
        questions: Mapping[str, Iterable[tuple[int, str]]],
        cancel: threading.Event | None = None,
    ) -> dict[str, set[tuple[int, str]]]: ...


def normalise_addresses(addresses: Iterable[str]) -> list[str]:
    """Every address as canonical text; anything that is not an IP address is refused."""
    out: dict[str, None] = {}
    for address in addresses:
        if not isinstance(address, str):
            raise TargetError(f"{address!r} is not an IP address; refusing to scan it")
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            shown = repr(address[:80])
            raise TargetError(f"{shown} is not an IP address; refusing to scan it") from None
        out.setdefault(str(parsed), None)
    return list(out)


def checked_addresses(addresses: Iterable[str], scope: Scope) -> list[str]:
    """Canonical addresses, each inside `scope`: the last gate before anything is probed.

    A caller that skipped target parsing is still refused here.
    """
    normalised = normalise_addresses(addresses)
    scope.check_addresses(normalised)
    return normalised


def check_pairs(pairs: Iterable[tuple[int, str]]) -> None:
    """Refuse a (port, proto) pair no scanner may be asked to probe."""
    for port, proto in pairs:
        if proto not in SCAN_PROTOCOLS or not 1 <= port <= 65535:
            raise TargetError(f"bad port {port}/{proto}: ports are 1-65535, tcp or udp")


def checked_questions(
    questions: Mapping[str, Iterable[tuple[int, str]]], scope: Scope
) -> dict[str, set[tuple[int, str]]]:
    """Questions about ports (address -> (port, proto) pairs) keyed by canonical address,
    every address inside `scope` and every pair one a scanner may probe (TargetError
    otherwise); an address asked about no port is left out."""
    wanted: dict[str, set[tuple[int, str]]] = {}
    for address, ports in questions.items():
        pairs = {(int(p), str(proto)) for p, proto in ports}
        if pairs:
            check_pairs(sorted(pairs))
            wanted[checked_addresses([address], scope)[0]] = pairs
    return wanted


def new_scan_id(started: datetime) -> str:
    """A sortable unique id: `s-20261127T143344Z-1a2b3c`."""
    return f"s-{started.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def check_fingerprint_mode(fingerprint: Fingerprint) -> None:
    if isinstance(fingerprint, str) and fingerprint not in ("open", "none"):
        raise ValueError(f"fingerprint must be 'open', 'none' or a callable: {fingerprint!r}")


def chosen_ports(host: HostObservation, fingerprint: Fingerprint) -> list[tuple[int, str]]:
    """The open ports of a swept host that `fingerprint` selects for -sV."""
    open_keys = {p.key for p in host.open_ports()}
    if fingerprint == "none" or not open_keys:
        return []
    if fingerprint == "open":
        return sorted(open_keys)
    assert callable(fingerprint)
    # Only ports this scan saw open: -sV on anything else would probe a port we have
    # no reason to believe is ours to touch.
    return sorted({(int(p), str(proto)) for p, proto in fingerprint(host)} & open_keys)


# Live reports from inside running nmap batches come at most this often; a batch or a
# phase that ends is always reported.
LIVE_REPORT_SECONDS = 0.25
# No ETA until this much of the phase is done and it has run this long: an early guess
# from the first host group is mostly noise.
ETA_MIN_FRACTION = 0.01
ETA_MIN_SECONDS = 1.0


class _Running(Struct):
    """One running batch as ScanProgress counts it: `work` is in host equivalents."""

    size: int
    hostgroup: int
    hosts: int = 0
    open_ports: int = 0
    work: float = 0.0


class ScanProgress:
    """One progress figure for a phase, combined over the batches running at once.

    A batch that ends counts its hosts (`done`). A running one reports what its nmap has
    written so far (`live`): completed hosts, the open ports in them, and nmap's own
    percent for the host group it is scanning (`--stats-every`), so a long run moves the
    figure before its first host group ends. The percent is the hosts done plus that share
    of the group in flight, over the phase's hosts; the ETA is the elapsed time scaled by
    the work left. A running batch's share never goes backwards.
    """

    def __init__(
        self,
        total: int,
        progress: Callable[[Progress], None] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self.total = total
        self.hosts_done = 0
        self.open_ports = 0
        self.phase = "sweep"
        self._progress = progress
        self._clock = clock
        self._started = clock()
        self._finished_hosts = 0
        self._finished_open = 0
        self._running: dict[int, _Running] = {}
        self._last_report = float("-inf")
        self._last_key: tuple[int, int, float, str] | None = None

    # Callbacks run under the lock so that reports arrive in order (a consumer that keeps
    # only the newest never goes backwards); they must be cheap, e.g. post a message.

    def start_phase(self, phase: str, total: int) -> None:
        with self._lock:
            self.phase = phase
            self.total = total
            self._finished_hosts = 0
            self._running.clear()
            self._started = self._clock()
            self._report(force=True)

    def begin(self, key: int, size: int, hostgroup: int) -> None:
        """A batch of `size` hosts starts; nmap scans them `hostgroup` at a time."""
        with self._lock:
            self._running[key] = _Running(size, max(1, min(hostgroup, size)))

    def live(self, key: int, hosts: int, open_ports: int, percent: float | None) -> None:
        """What running batch `key`'s nmap has written so far (see nmap_parse.LiveCounts)."""
        with self._lock:
            batch = self._running.get(key)
            if batch is None:
                return
            batch.hosts = min(hosts, batch.size)
            batch.open_ports = open_ports
            work = float(batch.hosts)
            if percent is not None:
                in_flight = min(batch.hostgroup, batch.size - batch.hosts)
                work += in_flight * percent / 100.0
            batch.work = max(batch.work, min(work, float(batch.size)))
            self._report(force=False)

    def done(self, hosts: int, open_ports: int, key: int | None = None) -> None:
        """`hosts` hosts finished with `open_ports` open ports (batch `key`, if it began)."""
        with self._lock:
            if key is not None:
                self._running.pop(key, None)
            self._finished_hosts += hosts
            self._finished_open += open_ports
            self._report(force=True)

    def _report(self, *, force: bool) -> None:
        running = self._running.values()
        self.hosts_done = min(self.total, self._finished_hosts + sum(b.hosts for b in running))
        self.open_ports = self._finished_open + sum(b.open_ports for b in running)
        if self._progress is None:
            return
        now = self._clock()
        if not force and now - self._last_report < LIVE_REPORT_SECONDS:
            return
        work = self._finished_hosts + sum(b.work for b in running)
        fraction = min(1.0, work / self.total) if self.total else 0.0
        percent = round(100.0 * fraction, 1)
        key = (self.hosts_done, self.open_ports, percent, self.phase)
        if key == self._last_key:
            return
        self._last_key = key
        self._last_report = now
        elapsed = now - self._started
        eta = None
        if fraction >= ETA_MIN_FRACTION and elapsed >= ETA_MIN_SECONDS:
            eta = elapsed * (1.0 - fraction) / fraction
        self._progress(
            Progress(self.hosts_done, self.total, self.open_ports, self.phase, percent, eta)
        )


class ScanTally(Struct):
    """What one scan gathered, turned into its ScanResult by `result`.

    The rules for a scan's outcome live here once: a host whose run failed is left out of
    `hosts` (not scanned is not closed) and named in `error`; a cancelled scan keeps what
    finished; raw XML is kept sweep first, then -sV, each in address order.
    """

    planned: list[str]
    hosts: dict[str, HostObservation] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    raw: list[tuple[int, str, GzipMember]] = field(default_factory=list)
    fingerprinted: int = 0
    cancelled: bool = False

    def swept(
        self, addresses: list[str], found: Mapping[str, HostObservation], xml: bytes | GzipMember
    ) -> None:
        """A sweep run over `addresses` ended with this XML; keep its open ports."""
        self.raw.append((0, addresses[0], _member(xml)))
        for address in addresses:
            observed = found.get(address)
            if observed is None:
                # nmap said nothing about a host it was asked to scan: treat like a failed
                # batch rather than inventing a status for it.
                self.failed.append(address)
                self.errors.append(f"{address}: nmap reported no result for this host")
                continue
            observed.ports = [p for p in observed.ports if p.state == OPEN]
            self.hosts[address] = observed

    def sweep_failed(self, addresses: list[str], error: str) -> None:
        self.failed.extend(addresses)
        self.errors.append(f"{', '.join(addresses)}: {error}")

    def fingerprinted_host(
        self, address: str, found: Mapping[str, HostObservation], xml: bytes | GzipMember
    ) -> None:
        """A -sV run on one host ended with this XML; merge what it identified."""
        self.raw.append((1, address, _member(xml)))
        self.fingerprinted += merge_fingerprint(self.hosts[address], found.get(address))

    def fingerprint_failed(self, address: str, error: str) -> None:
        self.errors.append(f"{address}: service detection failed: {error}")

    def result(
        self,
        *,
        started: datetime,
        finished: datetime,
        nmap_version: str,
        scan_type: str,
        privileged: bool,
        targets: list[str] | None,
        ports: PortSpec,
        protocols: list[str],
        origin: str,
        group: str,
        progress: Callable[[Progress], None] | None,
    ) -> ScanResult:
        planned, hosts, errors = self.planned, self.hosts, list(self.errors)
        not_scanned = [a for a in planned if a not in hosts and a not in self.failed]
        outcome = "success"
        if self.cancelled:
            outcome = "cancelled"
            missing = len(not_scanned) + len(self.failed)
            errors.insert(0, f"cancelled: {missing} of {len(planned)} hosts not scanned")
        elif errors:
            outcome = "partial" if hosts else "failed"
        raw = sorted(self.raw, key=lambda item: (item[0], ip_sort_key(item[1])))
        raw_xml = GzipDocuments([member for _, _, member in raw])
        ordered = [hosts[a] for a in sorted(hosts, key=ip_sort_key)]
        for host in ordered:
            host.ports.sort(key=lambda p: (p.port, p.proto))
        scan_result = ScanResult(
            scan_id=new_scan_id(started),
            started_at=started,
            finished_at=finished,
            nmap_version=nmap_version,
            scan_type=scan_type,
            privileged=privileged,
            targets=list(targets) if targets is not None else list(planned),
            addresses=list(planned),
            ports=str(ports),
            protocols=protocols,
            hosts=ordered,
            raw_xml=raw_xml,
            raw_xml_sha256=raw_xml.sha256(),
            outcome=outcome,
            error="; ".join(errors),
            origin=origin,
            group=group,
            fingerprinted=self.fingerprinted,
        )
        if progress is not None:
            progress(Progress(len(ordered), len(planned), scan_result.open_port_count(), "done"))
        return scan_result


def _member(xml: bytes | GzipMember) -> GzipMember:
    """Raw XML as kept for the result: compressed (a replay hands plain bytes)."""
    return xml if isinstance(xml, GzipMember) else GzipMember.of(xml)


def merge_fingerprint(host: HostObservation, versioned: HostObservation | None) -> int:
    """Copy service/product/version from a -sV run into the sweep's open ports."""
    if versioned is None:
        return 0
    found = {p.key: p for p in versioned.ports}
    merged = 0
    updated: list[PortObservation] = []
    for port in host.ports:
        seen = found.get(port.key)
        if seen is not None and seen.state == OPEN:
            updated.append(
                replace(
                    port,
                    service=seen.service,
                    product=seen.product,
                    version=seen.version,
                    extrainfo=seen.extrainfo,
                )
            )
            merged += 1
        else:
            # Closed between sweep and -sV, or nmap gave no verdict: the sweep stands and
            # the confirm step (probe) decides whether it is really open.
            updated.append(port)
    host.ports = updated
    return merged
