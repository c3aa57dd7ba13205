"""The scanner: the real nmap, driven from a fixed profile, one process per host batch.

Why we run nmap ourselves instead of calling ``nmap.PortScanner().scan()``:

* python-nmap splits its hosts string on spaces into nmap arguments, so any text that
  reached it unparsed could add options. We build the argument vector ourselves from a
  fixed profile and a list of validated IP addresses; nothing a user typed is ever an
  nmap argument.
* A running ``PortScanner.scan()`` cannot be stopped. We start nmap with ``Popen`` in its
  own session and poll every 0.1 s, so a cancel (or a batch timeout) kills the whole
  process group within a second and leaves no nmap behind.

nmap's XML is still parsed by python-nmap's own analyser (``analyse_nmap_xml_scan``).
Its output is untrusted (banners come from the network): we first parse it with
defusedxml so a document with entity declarations is refused, and product/version strings
are kept as plain text; escaping happens where they are displayed.

Cancellation contract: ``Scanner.scan`` never raises on cancel. It returns the hosts that
finished with ``outcome="cancelled"``. ``probe`` and ``fingerprint`` answer a question
about specific ports, where "no answer" must not read as "closed", so they raise
``ScanCancelled`` instead.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import defusedxml.ElementTree as SafeET
import nmap
from defusedxml import DefusedXmlException

from portconsole.core.errors import ScannerError, TargetError, UserError
from portconsole.core.model import OPEN, HostObservation, PortObservation, Progress, ScanResult
from portconsole.core.settings import ScanSettings
from portconsole.core.targets import PortSpec, Scope, ip_sort_key
from portconsole.core.timeutil import utcnow

POLL_SECONDS = 0.1
# Loopback and LAN answer at once; a real but lossy network gets a few retries, and the
# confirm step (probe) absorbs the rest before anything becomes a finding.
MAX_RETRIES = 3
NMAP_FALLBACK_PATHS = ("/usr/bin/nmap", "/usr/local/bin/nmap", "/opt/local/bin/nmap")
NMAP_MISSING = "nmap is not installed: run 'apt-get install nmap' (or make demo / make test)"

Fingerprint = Callable[[HostObservation], Iterable[tuple[int, str]]] | str


class _Cancellable(Protocol):
    def is_set(self) -> bool: ...


class _AnyEvent:
    """Set when any of its events is: the caller's cancel or the scan's own stop."""

    def __init__(self, *events: threading.Event | None) -> None:
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


class ScanCancelled(UserError):
    """A probe or fingerprint was cancelled before it could answer."""


@dataclass(slots=True)
class _RunOutcome:
    """What one nmap process produced: parsed hosts, or why there are none."""

    addresses: list[str]
    xml: bytes = b""
    hosts: dict[str, HostObservation] = field(default_factory=dict)
    error: str = ""
    cancelled: bool = False


def _normalise_addresses(addresses: Iterable[str]) -> list[str]:
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


def new_scan_id(started: Any) -> str:
    """A sortable unique id: `s-20261127T143344Z-1a2b3c`."""
    return f"s-{started.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


AUTO_BATCH_MAX = 16


class Scanner:
    """Runs nmap for the monitor. Thread-safe: one Scanner may serve several scans."""

    def __init__(self, settings: ScanSettings, scope: Scope, nmap_path: str | None = None) -> None:
        self.settings = settings
        self.scope = scope
        self._nmap_path_hint = nmap_path
        self.privileged = os.geteuid() == 0 and not settings.force_unprivileged
        self.scan_type = "syn" if self.privileged else "connect"
        self._analyser: nmap.PortScanner | None = None
        self._analyser_lock = threading.Lock()
        self._version = ""

    # -- nmap discovery ---------------------------------------------------------------

    def nmap_path(self) -> str:
        """The nmap binary in use. Raises ScannerError when there is none."""
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
        process); spread the hosts evenly over the workers, at most AUTO_BATCH_MAX each."""
        if self.settings.batch_size:
            return self.settings.batch_size
        return max(1, min(AUTO_BATCH_MAX, -(-hosts // self.settings.workers)))

    def nmap_version(self) -> str:
        """nmap's version, e.g. `7.93`. Raises ScannerError when nmap is missing."""
        self._get_analyser()
        return self._version

    # -- argument vectors (fixed profile only) ------------------------------------------

    def _base_args(self, addresses: Sequence[str]) -> list[str]:
        args = [
            self.nmap_path(),
            "-n",  # never resolve names: no DNS traffic, and no name-based surprises
            # -Pn: scan every planned host even if it ignores ping. A host that drops
            # ICMP would otherwise be reported down and its ports never scanned, and for a
            # compliance monitor "not scanned" must never read as "nothing open".
            "-Pn",
            f"-T{self.settings.timing}",
            "--max-retries",
            str(MAX_RETRIES),
        ]
        if not self.privileged:
            # Make nmap behave as an unprivileged user would (no raw sockets at all), so
            # force_unprivileged really exercises the connect-scan path.
            args.append("--unprivileged")
        if any(ipaddress.ip_address(a).version == 6 for a in addresses):
            args.append("-6")
        return args

    def _sweep_args(self, addresses: Sequence[str], port_argument: str, udp: bool) -> list[str]:
        args = self._base_args(addresses)
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
        normalised = _normalise_addresses(addresses)
        # The last gate before nmap: a caller that skipped target parsing is still refused.
        self.scope.check_addresses(normalised)
        return normalised

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
        cancel: _Cancellable | None,
        timeout: float,
    ) -> _RunOutcome:
        """Run one nmap to completion, timeout or cancel; parse what it wrote."""
        outcome = _RunOutcome(addresses=addresses)
        if cancel is not None and cancel.is_set():
            outcome.cancelled = True
            return outcome
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so one killpg reaps all
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            )
        except FileNotFoundError:
            raise ScannerError(NMAP_MISSING) from None
        except PermissionError:
            raise ScannerError(f"cannot execute {args[0]}: check its permissions") from None
        deadline = time.monotonic() + timeout
        chunks_out: list[bytes] = []
        chunks_err: list[bytes] = []
        try:
            while True:
                try:
                    out, err = proc.communicate(timeout=POLL_SECONDS)
                    chunks_out.append(out)
                    chunks_err.append(err)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if cancel is not None and cancel.is_set():
                    outcome.cancelled = True
                    break
                if time.monotonic() > deadline:
                    outcome.error = f"nmap timed out after {timeout:g} s (scan.batch_timeout)"
                    break
        finally:
            if proc.returncode is None:
                _kill_group(proc)
        if outcome.cancelled or outcome.error:
            return outcome
        stdout = b"".join(chunks_out)
        stderr = b"".join(chunks_err).decode("utf-8", "replace")
        if proc.returncode != 0:
            self._raise_if_user_fixable(stderr)
            first = next((ln for ln in stderr.splitlines() if ln.strip()), "no message")
            outcome.error = f"nmap exited with status {proc.returncode}: {first.strip()[:200]}"
            return outcome
        try:
            outcome.hosts = self._parse(stdout)
        except ValueError as error:
            outcome.error = f"nmap output could not be read: {error}"
            return outcome
        outcome.xml = stdout
        return outcome

    def _raise_if_user_fixable(self, stderr: str) -> None:
        lowered = stderr.lower()
        if "requires root privileges" in lowered or "operation not permitted" in lowered:
            raise ScannerError(
                "nmap lacks the privilege for a SYN scan (raw sockets): run as root with "
                "CAP_NET_RAW, or set scan.force_unprivileged = true for a connect scan"
            )

    def _parse(self, xml: bytes) -> dict[str, HostObservation]:
        """nmap XML -> observations, via python-nmap's analyser. Raises ValueError."""
        try:
            tree = SafeET.fromstring(xml)
        except (DefusedXmlException, SafeET.ParseError) as error:
            raise ValueError(f"not well-formed nmap XML ({error})") from None
        if tree.tag != "nmaprun":
            raise ValueError("not an nmap XML report")
        answered = _hosts_that_answered(tree)
        # Only a service-detection run's answers are fingerprints (see PortObservation).
        fingerprinted = True if "-sV" in str(tree.get("args", "")).split() else None
        analyser = self._get_analyser()
        try:
            # The analyser keeps its input on the instance, so one parse at a time.
            with self._analyser_lock:
                report = analyser.analyse_nmap_xml_scan(xml.decode("utf-8", "replace"))
        except (nmap.PortScannerError, AttributeError, KeyError) as error:
            raise ValueError(f"python-nmap could not analyse it ({error})") from None
        hosts: dict[str, HostObservation] = {}
        for raw_address, data in report.get("scan", {}).items():
            try:
                address = str(ipaddress.ip_address(str(raw_address)))
            except ValueError:
                continue
            status = str(data.get("status", {}).get("state", "down"))
            reason = str(data.get("status", {}).get("reason", ""))
            if status == "up" and reason == "user-set" and address not in answered:
                # -Pn marks every host up; a host that answered no probe at all (every
                # port filtered) is not there as far as we can tell.
                status = "down"
            ports: list[PortObservation] = []
            for proto in ("tcp", "udp"):
                for port_number, info in (data.get(proto) or {}).items():
                    ports.append(
                        PortObservation(
                            port=int(port_number),
                            proto=proto,
                            state=_text(info.get("state")),
                            service=_text(info.get("name")),
                            product=_text(info.get("product")),
                            version=_text(info.get("version")),
                            extrainfo=_text(info.get("extrainfo")),
                            fingerprinted=fingerprinted,
                        )
                    )
            ports.sort(key=lambda p: (p.port, p.proto))
            hosts[address] = HostObservation(
                address=address, status="up" if status == "up" else "down", ports=ports
            )
        return hosts

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
    ) -> ScanResult:
        """Sweep `ports` on `addresses`, then `-sV` the ports `fingerprint` selects.

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
        if isinstance(fingerprint, str) and fingerprint not in ("open", "none"):
            raise ValueError(f"fingerprint must be 'open', 'none' or a callable: {fingerprint!r}")
        version = self.nmap_version()
        started = utcnow()
        protocols = ["tcp", "udp"] if udp else ["tcp"]
        # Rendered from the ranges, so 'all' stays a short argument.
        port_argument = ",".join(f"{proto[0].upper()}:{ports}" for proto in protocols)

        state = _ScanState(total=len(planned), progress=progress)
        # Workers watch `stop`, set on the caller's cancel or on an error that ends the scan.
        stop = threading.Event()
        halt = _AnyEvent(stop, cancel)
        sweep_results: list[_RunOutcome] = []
        batches = _batches(planned, self.batch_size_for(len(planned)))
        cancelled = False
        workers = max(1, min(self.settings.workers, len(batches)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nmap") as pool:
            sweep_futures = [
                pool.submit(self._sweep_batch, batch, port_argument, udp, halt, state)
                for batch in batches
            ]
            cancelled = _wait_all(sweep_futures, cancel, stop)
            sweep_results = [f.result() for f in sweep_futures if f.done() and not f.cancelled()]

            hosts: dict[str, HostObservation] = {}
            errors: list[str] = []
            failed: list[str] = []
            raw: list[tuple[int, str, bytes]] = []
            for result in sweep_results:
                if result.error:
                    failed.extend(result.addresses)
                    errors.append(f"{', '.join(result.addresses)}: {result.error}")
                    continue
                if result.cancelled:
                    continue
                raw.append((0, result.addresses[0], result.xml))
                for address in result.addresses:
                    observed = result.hosts.get(address)
                    if observed is None:
                        # nmap said nothing about a host it was asked to scan: treat like
                        # a failed batch rather than inventing a status for it.
                        failed.append(address)
                        errors.append(f"{address}: nmap reported no result for this host")
                        continue
                    observed.ports = [p for p in observed.ports if p.state == OPEN]
                    hosts[address] = observed

            fingerprinted = 0
            if not cancelled:
                jobs: list[tuple[str, list[tuple[int, str]]]] = []
                for address in sorted(hosts, key=ip_sort_key):
                    host = hosts[address]
                    chosen = self._chosen_ports(host, fingerprint)
                    if chosen:
                        jobs.append((address, chosen))
                if jobs:
                    state.start_phase("fingerprint", len(jobs))
                    version_futures = [
                        pool.submit(self._version_host, address, chosen, halt, state)
                        for address, chosen in jobs
                    ]
                    cancelled = _wait_all(version_futures, cancel, stop)
                    for future in version_futures:
                        if not future.done() or future.cancelled():
                            continue
                        result = future.result()
                        if result.cancelled:
                            continue
                        address = result.addresses[0]
                        if result.error:
                            errors.append(f"{address}: service detection failed: {result.error}")
                            continue
                        raw.append((1, address, result.xml))
                        fingerprinted += _merge_versions(hosts[address], result)

        finished = utcnow()
        not_scanned = [a for a in planned if a not in hosts and a not in failed]
        outcome = "success"
        if cancelled:
            outcome = "cancelled"
            errors.insert(
                0,
                f"cancelled: {len(not_scanned) + len(failed)} of {len(planned)} hosts not scanned",
            )
        elif errors:
            outcome = "partial" if hosts else "failed"
        raw.sort(key=lambda item: (item[0], ip_sort_key(item[1])))
        raw_xml = [xml for _, _, xml in raw]
        digest = hashlib.sha256(b"".join(raw_xml)).hexdigest()
        ordered = [hosts[a] for a in sorted(hosts, key=ip_sort_key)]
        for host in ordered:
            host.ports.sort(key=lambda p: (p.port, p.proto))
        scan_result = ScanResult(
            scan_id=new_scan_id(started),
            started_at=started,
            finished_at=finished,
            nmap_version=version,
            scan_type=self.scan_type,
            privileged=self.privileged,
            targets=list(targets) if targets is not None else list(planned),
            addresses=list(planned),
            ports=str(ports),
            protocols=protocols,
            hosts=ordered,
            raw_xml=raw_xml,
            raw_xml_sha256=digest,
            outcome=outcome,
            error="; ".join(errors),
            origin=origin,
            group=group,
            fingerprinted=fingerprinted,
        )
        if progress is not None:
            progress(Progress(len(ordered), len(planned), scan_result.open_port_count(), "done"))
        return scan_result

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
        _check_pairs(pairs)
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
        _check_pairs(pairs)
        if any(proto == "udp" for _, proto in pairs):
            self._require_udp_privilege()
        self.nmap_version()
        outcome = self._run(
            self._version_args(checked[0], pairs), checked, cancel, self.settings.batch_timeout
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
        cancel: _Cancellable,
        state: _ScanState,
    ) -> _RunOutcome:
        args = self._sweep_args(batch, port_argument, udp)
        result = self._run(args, batch, cancel, self.settings.batch_timeout)
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
        cancel: _Cancellable,
        state: _ScanState,
    ) -> _RunOutcome:
        result = self._run(
            self._version_args(address, pairs), [address], cancel, self.settings.batch_timeout
        )
        if not result.cancelled:
            state.done(1, 0)
        return result

    @staticmethod
    def _chosen_ports(host: HostObservation, fingerprint: Fingerprint) -> list[tuple[int, str]]:
        open_keys = {p.key for p in host.open_ports()}
        if fingerprint == "none" or not open_keys:
            return []
        if fingerprint == "open":
            return sorted(open_keys)
        assert callable(fingerprint)
        # Only ports this scan saw open: -sV on anything else would probe a port we have
        # no reason to believe is ours to touch.
        return sorted({(int(p), str(proto)) for p, proto in fingerprint(host)} & open_keys)


# -- helpers ----------------------------------------------------------------------------


class _ScanState:
    """Counters shared by worker threads; reports progress as each batch ends."""

    def __init__(self, total: int, progress: Callable[[Progress], None] | None) -> None:
        self._lock = threading.Lock()
        self.total = total
        self.hosts_done = 0
        self.open_ports = 0
        self.phase = "sweep"
        self._progress = progress

    # Callbacks run under the lock so that reports arrive in order (a consumer that keeps
    # only the newest never goes backwards); they must be cheap, e.g. post a message.

    def start_phase(self, phase: str, total: int) -> None:
        with self._lock:
            self.phase = phase
            self.total = total
            self.hosts_done = 0
            self._emit(Progress(0, total, self.open_ports, phase))

    def done(self, hosts: int, open_ports: int) -> None:
        with self._lock:
            self.hosts_done += hosts
            self.open_ports += open_ports
            self._emit(Progress(self.hosts_done, self.total, self.open_ports, self.phase))

    def _emit(self, progress: Progress) -> None:
        if self._progress is not None:
            self._progress(progress)


def _batches(addresses: list[str], size: int) -> list[list[str]]:
    """Host batches of `size`, never mixing IPv4 and IPv6 (nmap needs -6 for v6)."""
    out: list[list[str]] = []
    for version in (4, 6):
        family = [a for a in addresses if ipaddress.ip_address(a).version == version]
        out += [family[i : i + size] for i in range(0, len(family), size)]
    return out


def _wait_all(
    futures: list[Future[_RunOutcome]], cancel: threading.Event | None, stop: threading.Event
) -> bool:
    """Wait for every future, or for cancel. True when cancelled.

    On cancel (or a worker's error), queued work is dropped and running workers notice
    `stop` within one poll, kill their nmap and return; we wait for them so that no nmap
    process outlives the call.
    """
    pending: set[Future[_RunOutcome]] = set(futures)
    while pending:
        done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        for future in done:
            error = future.exception()
            if error is not None:
                # A user-fixable error (no privilege, no nmap): stop the rest, then raise.
                stop.set()
                _drain(pending)
                raise error
        if cancel is not None and cancel.is_set():
            stop.set()
            _drain(pending)
            return True
    return bool(cancel is not None and cancel.is_set())


def _drain(pending: set[Future[_RunOutcome]]) -> None:
    for future in pending:
        future.cancel()
    for future in pending:
        if future.cancelled():
            continue
        try:
            future.result()
        except Exception:  # noqa: BLE001 - the first error is the one reported
            pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _hosts_that_answered(tree: Any) -> set[str]:
    """Addresses where some probe got an answer (a port open, closed or unfiltered)."""
    answered: set[str] = set()
    for host in tree.findall("host"):
        address_el = host.find("address")
        if address_el is None:
            continue
        try:
            address = str(ipaddress.ip_address(address_el.get("addr", "")))
        except ValueError:
            continue
        states = [el.get("state", "") for el in host.findall("ports/port/state")]
        states += [el.get("state", "") for el in host.findall("ports/extraports")]
        if any(s in ("open", "closed", "unfiltered", "closed|filtered") for s in states):
            answered.add(address)
    return answered


def _merge_versions(host: HostObservation, result: _RunOutcome) -> int:
    """Copy service/product/version from a -sV run into the sweep's open ports."""
    versioned = result.hosts.get(host.address)
    if versioned is None:
        return 0
    found = {p.key: p for p in versioned.ports}
    merged = 0
    updated: list[PortObservation] = []
    for port in host.ports:
        seen = found.get(port.key)
        if seen is not None and seen.state == OPEN:
            updated.append(
                PortObservation(
                    port=port.port,
                    proto=port.proto,
                    state=OPEN,
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


def _check_pairs(pairs: Iterable[tuple[int, str]]) -> None:
    for port, proto in pairs:
        if proto not in ("tcp", "udp") or not 1 <= port <= 65535:
            raise TargetError(f"bad port {port}/{proto}: ports are 1-65535, tcp or udp")


def _text(value: object) -> str:
    """Untrusted text from nmap output, kept as a plain string (never evaluated)."""
    return value if isinstance(value, str) else ("" if value is None else str(value))
