"""The scanner: the real nmap, driven from a fixed profile, one process per host batch.

Why we run nmap ourselves instead of calling ``nmap.PortScanner().scan()``:

* python-nmap splits its hosts string on spaces into nmap arguments, so any text that
  reached it unparsed could add options. We build the argument vector ourselves from a
  fixed profile and a list of validated IP addresses; nothing a user typed is ever an
  nmap argument.
* A running ``PortScanner.scan()`` cannot be stopped. We start nmap ourselves
  (``nmap_process.run_process``) in its own session and poll every 0.1 s, so a cancel (or
  a batch timeout) kills the whole process group within a second and leaves no nmap
  behind; and each nmap is killed by the kernel if we die (``PR_SET_PDEATHSIG``).

nmap's XML is read by ``nmap_parse.ReportStream``, the same reader as an imported report,
so a scan and an import of one network agree; it is parsed once, as nmap writes it, and a
sweep keeps only open ports (a /16 of closed ports is never held). python-nmap is only used to find nmap's
version. Banners are untrusted: they are kept as bounded plain text and escaped where
they are displayed.

Cancellation contract: ``Scanner.scan`` never raises on cancel. It returns the hosts that
finished with ``outcome="cancelled"``. ``probe`` and ``fingerprint`` answer a question
about specific ports, where "no answer" must not read as "closed", so they raise
``ScanCancelled`` instead.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import nmap

from portconsole.core.adapters.nmap_output import NmapOutput
from portconsole.core.adapters.nmap_parse import ReportRefused
from portconsole.core.adapters.nmap_process import (
    AnyEvent,
    Cancellable,
    raw_sockets_allowed,
    run_process,
    wait_all,
)
from portconsole.core.adapters.scanning import (
    Fingerprint,
    ScanCancelled,
    ScanProgress,
    ScanTally,
    check_fingerprint_mode,
    check_pairs,
    checked_addresses,
    chosen_ports,
    new_scan_id,
)
from portconsole.core.domain.model import (
    OPEN,
    HostObservation,
    PortObservation,
    Progress,
    ScanResult,
)
from portconsole.core.domain.raw_xml import GzipMember
from portconsole.core.domain.targets import PortSpec, Scope, ip_sort_key
from portconsole.core.errors import ScannerError, TargetError
from portconsole.core.settings import ScanSettings
from portconsole.core.timeutil import utcnow

__all__ = ["Fingerprint", "ScanCancelled", "Scanner", "new_scan_id"]

# Loopback and LAN answer at once; a real but lossy network gets a few retries, and the
# confirm step (probe) absorbs the rest before anything becomes a finding.
MAX_RETRIES = 3
NMAP_FALLBACK_PATHS = ("/usr/bin/nmap", "/usr/local/bin/nmap", "/opt/local/bin/nmap")
NMAP_MISSING = "nmap is not installed: run 'apt-get install nmap' (or make demo / make test)"


@dataclass(slots=True)
class _RunOutcome:
    """What one nmap process produced: parsed hosts, or why there are none."""

    addresses: list[str]
    xml: GzipMember | None = None
    hosts: dict[str, HostObservation] = field(default_factory=dict)
    error: str = ""
    cancelled: bool = False


def _port_argument(ports: Iterable[tuple[int, str]]) -> str:
    """`T:22,80,U:53` from (port, proto) pairs, ranges merged."""
    by_proto: dict[str, list[int]] = {"tcp": [], "udp": []}
    for port, proto in ports:
        by_proto[proto].append(port)
    parts = []
    for proto, prefix in (("tcp", "T:"), ("udp", "U:")):
        if by_proto[proto]:
            parts.append(prefix + str(PortSpec.of(by_proto[proto])))
    return ",".join(parts)


# Auto batches: a small target set is spread evenly over the workers, at most
# AUTO_BATCH_SMALL hosts per nmap; a large one grows to about AUTO_BATCH_ROUNDS nmap runs
# per worker, at most AUTO_BATCH_MAX hosts each. A /16 at 4 workers is 16 runs of 4,096
# hosts, not 4,096 runs of 16 (each start costs ~0.1 s and nmap schedules a big host group
# itself).
# A grown batch may take at most this many times scan.batch_timeout.
BATCH_TIMEOUT_MAX_FACTOR = 8
AUTO_BATCH_SMALL = 16
AUTO_BATCH_ROUNDS = 4
AUTO_BATCH_MAX = 4096


class Scanner:
    """Runs nmap for the monitor. Thread-safe: one Scanner may serve several scans."""

    def __init__(self, settings: ScanSettings, scope: Scope, nmap_path: str | None = None) -> None:
        self.settings = settings
        self.scope = scope
        self._nmap_path_hint = nmap_path
        self.privileged = raw_sockets_allowed() and not settings.force_unprivileged
        self.scan_type = "syn" if self.privileged else "connect"
        self._analyser: nmap.PortScanner | None = None
        self._analyser_lock = threading.Lock()
        self._version = ""
        self._found_path = ""

    # -- nmap discovery ---------------------------------------------------------------

    def nmap_path(self) -> str:
        """The nmap binary in use, looked up once. Raises ScannerError when there is none.

        A binary removed later is caught when it is run (FileNotFoundError: NMAP_MISSING).
        """
        if not self._found_path:
            self._found_path = self._find_nmap()
        return self._found_path

    def _find_nmap(self) -> str:
        if self._nmap_path_hint:
            found = shutil.which(self._nmap_path_hint)
            if not found:
                raise ScannerError(f"nmap not found at {self._nmap_path_hint}: {NMAP_MISSING}")
            return found
        found = shutil.which("nmap")
        if found:
            return found
        # python-nmap does the same: PATH may lack /usr/bin when started from a service.
        for candidate in NMAP_FALLBACK_PATHS:
            if os.access(candidate, os.X_OK):
                return candidate
        raise ScannerError(NMAP_MISSING)

    def _get_analyser(self) -> nmap.PortScanner:
        with self._analyser_lock:
            if self._analyser is None:
                path = self.nmap_path()
                try:
                    analyser = nmap.PortScanner(nmap_search_path=(path,))
                except nmap.PortScannerError:
                    raise ScannerError(f"{path} did not run as nmap: {NMAP_MISSING}") from None
                major, minor = analyser.nmap_version()
                self._version = f"{major}.{minor}"
                self._analyser = analyser
            return self._analyser

    def batch_size_for(self, hosts: int) -> int:
        """Hosts per nmap process. Auto (0): each nmap start costs a fixed ~0.1 s, so one
        process per host wasted a quarter of a 40-host sweep (4.8 s vs 3.6 s with 10 per
        process); spread the hosts evenly over the workers (at most AUTO_BATCH_SMALL
        each), and let a large target set grow its batches (see AUTO_BATCH_MAX)."""
        if self.settings.batch_size:
            return self.settings.batch_size
        workers = self.settings.workers
        even = min(AUTO_BATCH_SMALL, -(-hosts // workers))
        grown = min(AUTO_BATCH_MAX, -(-hosts // (workers * AUTO_BATCH_ROUNDS)))
        return max(1, even, grown)

    def batch_timeout_for(self, hosts: int) -> float:
        """Seconds one nmap run over `hosts` hosts may take: scan.batch_timeout for each
        AUTO_BATCH_SMALL hosts (a grown batch does the work of several small ones), at most
        BATCH_TIMEOUT_MAX_FACTOR times scan.batch_timeout, so that a hung run is still killed
        within the hour at the defaults (nmap scans a batch's hosts in parallel)."""
        factor = min(max(1, -(-hosts // AUTO_BATCH_SMALL)), BATCH_TIMEOUT_MAX_FACTOR)
        return self.settings.batch_timeout * factor

    def nmap_version(self) -> str:
        """nmap's version, e.g. `7.93`. Raises ScannerError when nmap is missing."""
        self._get_analyser()
        return self._version

    # -- argument vectors (fixed profile only) ------------------------------------------

    def _base_args(self, addresses: Sequence[str], discover: bool = False) -> list[str]:
        args = [
            self.nmap_path(),
            "-n",  # never resolve names: no DNS traffic, and no name-based surprises
            f"-T{self.settings.timing}",
            "--max-retries",
            str(MAX_RETRIES),
        ]
        if not discover:
            # -Pn: scan the host even if it ignores ping. A known host that drops ICMP
            # would otherwise be reported down and its ports never scanned, and for a
            # compliance monitor "not scanned" must never read as "nothing open". Hosts
            # never seen (a range's empty addresses) keep nmap's discovery: -Pn on them
            # probes every port of every empty address.
            args.insert(2, "-Pn")
        if not self.privileged:
            # Make nmap behave as an unprivileged user would (no raw sockets at all), so
            # force_unprivileged really exercises the connect-scan path.
            args.append("--unprivileged")
        elif os.geteuid() != 0:
            args.append("--privileged")  # not root, but allowed raw sockets (capabilities)
        if any(ipaddress.ip_address(a).version == 6 for a in addresses):
            args.append("-6")
        return args

    def _sweep_args(
        self, addresses: Sequence[str], port_argument: str, udp: bool, discover: bool = False
    ) -> list[str]:
        args = self._base_args(addresses, discover)
        args.append("-sS" if self.privileged else "-sT")
        if udp:
            args.append("-sU")
        args += ["-p", port_argument, "-oX", "-", "--", *addresses]
        return args

    def _version_args(self, address: str, ports: Iterable[tuple[int, str]]) -> list[str]:
        pairs = list(ports)
        args = self._base_args([address])
        args.append("-sS" if self.privileged else "-sT")
        if any(proto == "udp" for _, proto in pairs):
            args.append("-sU")
        args += ["-sV", "-p", _port_argument(pairs), "-oX", "-", "--", address]
        return args

    # -- checks -------------------------------------------------------------------------

    def _checked(self, addresses: Iterable[str]) -> list[str]:
        # The last gate before nmap: a caller that skipped target parsing is still refused.
        return checked_addresses(addresses, self.scope)

    def _require_udp_privilege(self) -> None:
        if not self.privileged:
            if os.geteuid() == 0:
                raise ScannerError(
                    "UDP scanning needs raw sockets: unset scan.force_unprivileged or turn UDP off"
                )
            raise ScannerError(
                "UDP scanning needs root: run PortConsole as root or set scan.udp = false"
            )

    # -- running nmap -------------------------------------------------------------------

    def _run(
        self,
        args: list[str],
        addresses: list[str],
        cancel: Cancellable | None,
        timeout: float,
        *,
        open_only: bool = True,
    ) -> _RunOutcome:
        """Run one nmap to completion, timeout or cancel, parsing its XML as it arrives.

        `open_only`: keep only open ports (a sweep or probe); a -sV run keeps every port.
        """
        outcome = _RunOutcome(addresses=addresses)
        reading = NmapOutput(open_only)
        try:
            ran = run_process(args, cancel, timeout, reading.take)
        except FileNotFoundError:
            raise ScannerError(NMAP_MISSING) from None
        except PermissionError:
            raise ScannerError(f"cannot execute {args[0]}: check its permissions") from None
        if ran.cancelled:
            outcome.cancelled = True
            return outcome
        if ran.timed_out:
            outcome.error = (
                f"nmap timed out after {timeout:g} s (scan.batch_timeout per "
                f"{AUTO_BATCH_SMALL} hosts)"
            )
            return outcome
        stderr = ran.stderr.decode("utf-8", "replace")
        if ran.returncode != 0:
            self._raise_if_user_fixable(stderr)
            first = next((ln for ln in stderr.splitlines() if ln.strip()), "no message")
            outcome.error = f"nmap exited with status {ran.returncode}: {first.strip()[:200]}"
            return outcome
        try:
            outcome.hosts = reading.hosts()
        except ReportRefused as error:
            outcome.error = f"nmap output could not be read: not usable nmap XML ({error})"
            return outcome
        outcome.xml = reading.xml()
        return outcome

    def _raise_if_user_fixable(self, stderr: str) -> None:
        lowered = stderr.lower()
        if "requires root privileges" in lowered or "operation not permitted" in lowered:
            raise ScannerError(
                "nmap lacks the privilege for a SYN scan (raw sockets): run as root with "
                "CAP_NET_RAW, or set scan.force_unprivileged = true for a connect scan"
            )

    # -- public API ---------------------------------------------------------------------

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
        """Sweep `ports` on `addresses`, then `-sV` the ports `fingerprint` selects.

        `known`: the hosts known from history or the baseline, swept without ping
        discovery (`-Pn`); the other addresses are swept with nmap's discovery, and one
        that does not answer it is down. None: every address is swept with `-Pn`.

        `fingerprint`: "open" (every open port), "none", or a callable given each swept
        host and returning the (port, proto) pairs to fingerprint. Hosts whose batch
        failed or timed out are left out of `hosts` (not scanned is not closed) and named
        in `error`, with outcome "partial". On cancel, returns what finished with outcome
        "cancelled".
        """
        planned = self._checked(addresses)
        if not planned:
            raise TargetError("no addresses to scan: name targets or configure a target group")
        if not isinstance(ports, PortSpec) or len(ports) == 0:
            raise TargetError("no ports to scan: give ports such as 22,80,443 or 'all'")
        if udp:
            self._require_udp_privilege()
        check_fingerprint_mode(fingerprint)
        version = self.nmap_version()
        started = utcnow()
        protocols = ["tcp", "udp"] if udp else ["tcp"]
        # Rendered from the ranges, so 'all' stays a short argument.
        port_argument = ",".join(f"{proto[0].upper()}:{ports}" for proto in protocols)

        state = ScanProgress(total=len(planned), progress=progress)
        tally = ScanTally(planned)
        # Workers watch `stop`, set on the caller's cancel or on an error that ends the scan.
        stop = threading.Event()
        halt = AnyEvent(stop, cancel)
        size = self.batch_size_for(len(planned))
        known_set = set(planned) if known is None else set(known)
        batches = [
            (batch, False) for batch in _batches([a for a in planned if a in known_set], size)
        ]
        batches += [
            (batch, True) for batch in _batches([a for a in planned if a not in known_set], size)
        ]
        workers = max(1, min(self.settings.workers, len(batches)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nmap") as pool:
            sweep_futures = [
                pool.submit(self._sweep_batch, batch, port_argument, udp, halt, state, discover)
                for batch, discover in batches
            ]
            tally.cancelled = wait_all(sweep_futures, cancel, stop)
            for result in _finished(sweep_futures):
                if result.error:
                    tally.sweep_failed(result.addresses, result.error)
                elif not result.cancelled:
                    assert result.xml is not None  # a run that ended without error has XML
                    tally.swept(result.addresses, result.hosts, result.xml)

            if not tally.cancelled:
                jobs = [
                    (address, chosen)
                    for address in sorted(tally.hosts, key=ip_sort_key)
                    if (chosen := chosen_ports(tally.hosts[address], fingerprint))
                ]
                if jobs:
                    state.start_phase("fingerprint", len(jobs))
                    version_futures = [
                        pool.submit(self._version_host, address, chosen, halt, state)
                        for address, chosen in jobs
                    ]
                    tally.cancelled = wait_all(version_futures, cancel, stop)
                    for result in _finished(version_futures):
                        if result.cancelled:
                            continue
                        if result.error:
                            tally.fingerprint_failed(result.addresses[0], result.error)
                        else:
                            assert result.xml is not None
                            tally.fingerprinted_host(result.addresses[0], result.hosts, result.xml)

        return tally.result(
            started=started,
            finished=utcnow(),
            nmap_version=version,
            scan_type=self.scan_type,
            privileged=self.privileged,
            targets=targets,
            ports=ports,
            protocols=protocols,
            origin=origin,
            group=group,
            progress=progress,
        )

    def probe(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> set[tuple[int, str]]:
        """Re-sweep just these ports on one host; return the ones open now.

        Raises ScanCancelled on cancel and ScannerError when nmap fails, so that a probe
        that could not answer is never taken for "closed".
        """
        checked = self._checked([address])
        pairs = sorted({(int(p), str(proto)) for p, proto in ports})
        if not pairs:
            return set()
        check_pairs(pairs)
        udp = any(proto == "udp" for _, proto in pairs)
        if udp:
            self._require_udp_privilege()
        self.nmap_version()
        args = self._sweep_args(checked, _port_argument(pairs), udp)
        outcome = self._run(args, checked, cancel, self.settings.batch_timeout)
        if outcome.cancelled:
            raise ScanCancelled(f"probe of {checked[0]} cancelled; nothing was concluded")
        if outcome.error:
            raise ScannerError(f"probe of {checked[0]} failed: {outcome.error}")
        host = outcome.hosts.get(checked[0])
        if host is None:
            raise ScannerError(f"probe of {checked[0]} failed: nmap reported no result")
        wanted = set(pairs)
        return {p.key for p in host.ports if p.state == OPEN and p.key in wanted}

    def fingerprint(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> dict[tuple[int, str], PortObservation]:
        """Service/version detection (-sV) on these ports of one host.

        Returns what nmap reported for each port it listed (open ones carry the service,
        product and version). Raises ScanCancelled or ScannerError like `probe`.
        """
        checked = self._checked([address])
        pairs = sorted({(int(p), str(proto)) for p, proto in ports})
        if not pairs:
            return {}
        check_pairs(pairs)
        if any(proto == "udp" for _, proto in pairs):
            self._require_udp_privilege()
        self.nmap_version()
        outcome = self._run(
            self._version_args(checked[0], pairs),
            checked,
            cancel,
            self.settings.batch_timeout,
            open_only=False,
        )
        if outcome.cancelled:
            raise ScanCancelled(f"service detection on {checked[0]} cancelled")
        if outcome.error:
            raise ScannerError(f"service detection on {checked[0]} failed: {outcome.error}")
        host = outcome.hosts.get(checked[0])
        wanted = set(pairs)
        return {p.key: p for p in (host.ports if host else []) if p.key in wanted}

    # -- workers --------------------------------------------------------------------------

    def _sweep_batch(
        self,
        batch: list[str],
        port_argument: str,
        udp: bool,
        cancel: Cancellable,
        state: ScanProgress,
        discover: bool = False,
    ) -> _RunOutcome:
        args = self._sweep_args(batch, port_argument, udp, discover)
        result = self._run(args, batch, cancel, self.batch_timeout_for(len(batch)))
        if discover and not result.cancelled and not result.error:
            # nmap leaves out a host that did not answer discovery: it is down.
            for address in batch:
                result.hosts.setdefault(address, HostObservation(address, "down"))
        if not result.cancelled:
            opened = 0
            if not result.error:
                opened = sum(len(h.open_ports()) for a, h in result.hosts.items() if a in batch)
            state.done(len(batch), opened)
        return result

    def _version_host(
        self,
        address: str,
        pairs: list[tuple[int, str]],
        cancel: Cancellable,
        state: ScanProgress,
    ) -> _RunOutcome:
        result = self._run(
            self._version_args(address, pairs),
            [address],
            cancel,
            self.settings.batch_timeout,
            open_only=False,
        )
        if not result.cancelled:
            state.done(1, 0)
        return result


# -- helpers ----------------------------------------------------------------------------


def _batches(addresses: list[str], size: int) -> list[list[str]]:
    """Host batches of `size`, never mixing IPv4 and IPv6 (nmap needs -6 for v6)."""
    out: list[list[str]] = []
    for version in (4, 6):
        family = [a for a in addresses if ipaddress.ip_address(a).version == version]
        out += [family[i : i + size] for i in range(0, len(family), size)]
    return out


def _finished(futures: list[Future[_RunOutcome]]) -> list[_RunOutcome]:
    return [f.result() for f in futures if f.done() and not f.cancelled()]
