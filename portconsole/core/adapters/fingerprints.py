"""Fingerprints after detection: one bounded nmap -sV run over the ports that need it.

Why its own run: service detection on a port that accepts a connection and answers nothing
(a "silent" port) costs nmap ~165 s, probe after probe. The cycle detects and notifies
from the sweep; this run comes afterwards (services/fingerprint_after.py), over every host
at once, bounded by `--host-timeout` (a host out of budget is reported with no ports:
nothing is concluded about it) and by a process timeout, and cancellable (nmap is killed
within a second, nothing is kept). A host that ran out of budget (a silent port takes the
host's other ports down with it) is tried once more with `--version-light`, within the
same budget.

What it gives back is only what -sV saw open on the ports asked (an answer that names no
product or version is no fingerprint: the store keeps the one it has, domain/changes.py).
A port it did not see open proves nothing: the next sweep decides. `fingerprint_scan`
makes that a ScanResult of scan type "fingerprint" with no port list, every port it holds
lying `outside` it, so its coverage is exactly those ports (domain/coverage.py) and the
store, history and detection take it like any other scan.

A scanner other than the nmap one (a replay, a remote site) is asked host by host through
`ScannerLike.fingerprint`, within the same budget. With sites (adapters/site_router.py), the
addresses scanned here get the local scanner's run and each site address a signed
fingerprint job at its own site: the central never runs -sV against a site's addresses.
"""

from __future__ import annotations

import ipaddress
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from msgspec import Struct, field
from msgspec.structs import replace

from portconsole.core.adapters.scan_batches import port_argument
from portconsole.core.adapters.scanning import (
    ScanCancelled,
    ScannerLike,
    checked_addresses,
    new_scan_id,
)
from portconsole.core.domain.model import OPEN, HostObservation, ScanResult
from portconsole.core.domain.raw_xml import GzipDocuments, GzipMember
from portconsole.core.domain.targets import ip_sort_key
from portconsole.core.errors import UserError
from portconsole.core.timeutil import utcnow

if TYPE_CHECKING:
    # nmap's reader (defusedxml) and process runner are imported where a run starts, so a
    # command that only reads the store never loads them (tests/test_startup.py).
    from portconsole.core.adapters.nmap_process import AnyEvent
    from portconsole.core.adapters.scan_command import NmapCommand

Pair = tuple[int, str]
SCAN_TYPE = "fingerprint"

# The budget of one host: BASE + PER_PORT for each port asked on it, at most the cap the
# caller derives from the group (see services/fingerprint_after.py).
BASE_SECONDS = 30.0
PER_PORT_SECONDS = 10.0
# nmap works on this many hosts at once, so a run lasts about one host budget per group.
MAX_HOSTGROUP = 256
# At most this many -sV probes in flight in one run (nmap's --min-parallelism).
MAX_VERSION_PARALLELISM = 256
# What a process may take beyond its hosts' budgets (start-up, the XML) before it is killed.
PROCESS_SLACK_SECONDS = 30.0


def host_budget(ports: int, cap: float) -> float:
    """Seconds of -sV one host with `ports` ports to fingerprint may take."""
    return max(1.0, min(cap, BASE_SECONDS + PER_PORT_SECONDS * max(1, ports)))


class FingerprintRun(Struct):
    """What one bounded -sV run saw: the open ports it identified, by host."""

    started: datetime
    finished: datetime
    host_timeout: float
    hosts: dict[str, HostObservation] = field(default_factory=dict)
    raw: list[GzipMember] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    out_of_time: list[str] = field(default_factory=list)  # hosts that used up their budget
    cancelled: bool = False
    nmap_version: str = ""


def longest_run_seconds(hosts: int, host_timeout: float) -> float:
    """The longest `run_fingerprints` over `hosts` hosts may take: a full and a light round
    of one nmap per address family, each killed at its hosts' budget plus slack
    (`_nmap_round`), or host by host (`_host_by_host`)."""
    groups = math.ceil(max(1, hosts) / MAX_HOSTGROUP)
    rounds = 2 * 2 * (host_timeout * groups + PROCESS_SLACK_SECONDS)
    return max(rounds, host_timeout * (max(1, hosts) + 1))


def run_fingerprints(
    scanner: ScannerLike,
    wanted: Mapping[str, Sequence[Pair]],
    host_timeout: float,
    cancel: threading.Event,
    also: Sequence[threading.Event | None] = (),
    clock: Callable[[], datetime] | None = None,
) -> FingerprintRun:
    """-sV on `wanted` (address -> ports), each host within `host_timeout` seconds.

    `cancel` (and any of `also`: the cycle's cancel, the process's stop) ends the run:
    nmap is killed and the run comes back `cancelled`, with nothing in it.
    """
    from portconsole.core.adapters.nmap_process import AnyEvent

    now = clock or utcnow
    halt = AnyEvent(cancel, *also)
    run = FingerprintRun(started=now(), finished=now(), host_timeout=host_timeout)
    asked = {a: sorted(set(p)) for a, p in wanted.items() if p}
    # With sites (site_router.py): the addresses scanned here get the local scanner's run,
    # a site's addresses a job at their site each (the central may not reach them).
    router = sys.modules.get("portconsole.core.adapters.site_router")
    if router is not None and isinstance(scanner, router.SiteRouter):
        here = scanner.scanned_here(asked)
        if here:
            _dispatch(scanner.local, {a: asked[a] for a in here}, run, cancel, halt)
        away = {a: ps for a, ps in asked.items() if a not in here}
        if away and not run.cancelled:
            _host_by_host(scanner, away, run, cancel, halt)
    else:
        _dispatch(scanner, asked, run, cancel, halt)
    run.finished = max(run.started, now())
    if run.cancelled:
        run.hosts.clear()
        run.raw.clear()
    return run


def _dispatch(
    scanner: ScannerLike,
    asked: dict[str, list[Pair]],
    run: FingerprintRun,
    cancel: threading.Event,
    halt: AnyEvent,
) -> None:
    """One nmap run if `scanner` is the nmap one, else host by host through the scanner."""
    # Never imported here: a replay loads no python-nmap.
    nmap_scanner = sys.modules.get("portconsole.core.adapters.scanner")
    if nmap_scanner is not None and isinstance(scanner, nmap_scanner.Scanner):
        _nmap_run(scanner, asked, run, halt)
    else:
        _host_by_host(scanner, asked, run, cancel, halt)


def _nmap_run(
    scanner: object, asked: dict[str, list[Pair]], run: FingerprintRun, halt: AnyEvent
) -> None:
    """All hosts in one nmap run, one port list (nmap takes one -p for all; only each
    host's own ports are kept from its answer), then the hosts out of time once more."""
    from portconsole.core.adapters.scan_command import NmapCommand
    from portconsole.core.adapters.scanner import Scanner

    assert isinstance(scanner, Scanner)
    if not scanner.privileged:  # UDP needs raw sockets; a sweep without them found none
        asked = {a: [p for p in ps if p[1] == "tcp"] for a, ps in asked.items()}
        asked = {a: ps for a, ps in asked.items() if ps}
    if not asked:
        return
    try:
        checked_addresses(asked, scanner.scope)  # the last gate before nmap, as for a sweep
        run.nmap_version = scanner.nmap_version()
        command = NmapCommand(scanner.settings, scanner.privileged, scanner.nmap_path())
    except UserError as error:
        run.errors.append(f"service detection: {error}")
        return
    first = sorted(asked, key=ip_sort_key)
    _nmap_round(command, first, asked, run, halt, light=False)
    # A port that answers nothing costs a host its whole budget at nmap's full intensity,
    # and the host's other ports with it: such a host is tried once more, light (nmap's
    # --version-light: its ~20 most likely probes, ~26 s on a silent port instead of ~165).
    again = [a for a in first if a in run.out_of_time]
    if again and not run.cancelled and not halt.is_set():
        run.out_of_time = [a for a in run.out_of_time if a not in again]
        _nmap_round(command, again, asked, run, halt, light=True)


def _nmap_round(
    command: NmapCommand,
    addresses: list[str],
    asked: dict[str, list[Pair]],
    run: FingerprintRun,
    halt: AnyEvent,
    *,
    light: bool,
) -> None:
    """One bounded -sV nmap per address family over `addresses` (nmap needs -6 for IPv6)."""
    for family in (4, 6):
        hosts = [a for a in addresses if ipaddress.ip_address(a).version == family]
        if not hosts or halt.is_set():
            continue
        pairs = sorted({p for a in hosts for p in asked[a]})
        args = command.base_args(hosts)
        args.append("-sS" if command.privileged else "-sT")
        if any(proto == "udp" for _, proto in pairs):
            args.append("-sU")
        args += ["-sV", *(["--version-light"] if light else [])]
        args += [
            "--host-timeout",
            f"{math.ceil(run.host_timeout)}s",
            "--min-hostgroup",
            str(min(len(hosts), MAX_HOSTGROUP)),
            # nmap's -sV keeps ~30 probes going at -T4, and each waits up to 6 s for a
            # banner first: 250 ports took 57 s. One probe per port asked, bounded.
            "--min-parallelism",
            str(min(sum(len(asked[a]) for a in hosts), MAX_VERSION_PARALLELISM)),
            "-p",
            port_argument(pairs),
            "-oX",
            "-",
            "--",
            *hosts,
        ]
        limit = run.host_timeout * math.ceil(len(hosts) / MAX_HOSTGROUP) + PROCESS_SLACK_SECONDS
        found = _run_nmap(args, halt, limit, run)
        if run.cancelled:
            return
        for address in hosts if found is not None else []:
            _keep(run, address, found.get(address) if found else None, asked[address])


def _run_nmap(
    args: list[str], halt: AnyEvent, limit: float, run: FingerprintRun
) -> dict[str, HostObservation] | None:
    """Run one -sV nmap; its hosts (every port listed), or None with the error noted."""
    from portconsole.core.adapters.nmap_output import NmapOutput
    from portconsole.core.adapters.nmap_parse import ReportRefused
    from portconsole.core.adapters.nmap_process import run_process
    from portconsole.core.adapters.scan_command import NMAP_MISSING, raise_if_user_fixable

    reading = NmapOutput(open_only=False)
    try:
        ran = run_process(args, halt, limit, reading.take)
    except FileNotFoundError:
        run.errors.append(f"service detection: {NMAP_MISSING}")
        return None
    except PermissionError:
        run.errors.append(f"service detection: cannot execute {args[0]}")
        return None
    if ran.cancelled:
        run.cancelled = True
        return None
    if ran.timed_out:
        run.errors.append(f"service detection: nmap killed after {limit:g} s")
        return None
    if ran.returncode != 0:
        stderr = ran.stderr.decode("utf-8", "replace")
        try:
            raise_if_user_fixable(stderr)
        except UserError as error:
            run.errors.append(f"service detection: {error}")
            return None
        first = next((ln for ln in stderr.splitlines() if ln.strip()), "no message")
        run.errors.append(
            f"service detection: nmap exited with status {ran.returncode}: {first.strip()[:200]}"
        )
        return None
    try:
        hosts = reading.hosts()
    except ReportRefused as error:
        run.errors.append(f"service detection: nmap output could not be read ({error})")
        return None
    run.raw.append(reading.xml())
    return hosts


def _host_by_host(
    scanner: ScannerLike,
    asked: dict[str, list[Pair]],
    run: FingerprintRun,
    cancel: threading.Event,
    halt: AnyEvent,
) -> None:
    deadline = time.monotonic() + run.host_timeout * max(1, len(asked))
    for address in sorted(asked, key=ip_sort_key):
        if halt.is_set():
            run.cancelled = True
            return
        if time.monotonic() > deadline:
            run.out_of_time.append(address)
            continue
        try:
            found = scanner.fingerprint(address, asked[address], cancel=cancel)
        except ScanCancelled:
            run.cancelled = True
            return
        except UserError as error:
            run.errors.append(f"service detection: {error}")
            continue
        observed = HostObservation(address, "up", ports=list(found.values()))
        _keep(run, address, observed, asked[address])


def _keep(
    run: FingerprintRun, address: str, observed: HostObservation | None, asked: list[Pair]
) -> None:
    """Keep the asked ports -sV saw open, as fingerprinted; note a host it never finished."""
    wanted = set(asked)
    ports = [
        p
        for p in (observed.ports if observed is not None else [])
        if p.state == OPEN and p.key in wanted
    ]
    if observed is not None and ports:
        run.hosts[address] = replace(observed, ports=ports)
    elif observed is None or not observed.ports:
        # Every port asked is listed (open or not) unless nmap gave the host up: out of
        # its --host-timeout, nmap drops whatever it had found on it.
        run.out_of_time.append(address)


def fingerprint_scan(
    run: FingerprintRun,
    *,
    scan_type_of: ScannerLike,
    origin: str,
    group: str,
    finished: datetime,
) -> ScanResult:
    """The run as a scan record covering exactly the ports it identified (see the module
    docstring). `finished`: when it is recorded (never before the run ended)."""
    hosts = [run.hosts[a] for a in sorted(run.hosts, key=ip_sort_key)]
    protocols = sorted({p.proto for h in hosts for p in h.ports}) or ["tcp"]
    raw = GzipDocuments(run.raw)
    errors = list(run.errors)
    if run.out_of_time:
        errors.append(
            f"service detection did not finish on {len(run.out_of_time)} host(s) within "
            f"{run.host_timeout:g} s each: " + ", ".join(run.out_of_time[:10])
        )
    privileged = bool(getattr(scan_type_of, "privileged", False))
    return ScanResult(
        scan_id=new_scan_id(run.started),
        started_at=run.started,
        finished_at=max(finished, run.finished),
        nmap_version=run.nmap_version or _version_of(scan_type_of),
        scan_type=SCAN_TYPE,
        privileged=privileged,
        targets=[h.address for h in hosts],
        addresses=[h.address for h in hosts],
        ports="",
        protocols=protocols,
        hosts=hosts,
        raw_xml=raw,
        raw_xml_sha256=raw.sha256() if run.raw else "",
        outcome="partial" if errors else "success",
        error="; ".join(errors),
        origin=origin,
        group=group,
        fingerprinted=sum(len(h.ports) for h in hosts),
    )


def _version_of(scanner: ScannerLike) -> str:
    try:
        version = getattr(scanner, "nmap_version", None)
        return str(version()) if callable(version) else ""
    except UserError:
        return ""
