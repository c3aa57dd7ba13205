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

Which nmap and which arguments: ``scan_command``; one run from start to end, and the
scope gate every question passes: ``nmap_runner.NmapRunner``, which ``Scanner`` extends;
how hosts are cut into runs and how long a run may take: ``scan_batches``; one progress
figure over the runs going at once: ``scanning.ScanProgress``, fed live from nmap's own
``--stats-every`` reports; a new port confirmed by a TCP connect: ``connect_probe``.

nmap's XML is read by ``nmap_parse.ReportStream``, the same reader as an imported report,
so a scan and an import of one network agree; it is parsed once, as nmap writes it, and a
sweep keeps only open ports (a /16 of closed ports is never held). python-nmap is only
used to find nmap's version. Banners are untrusted: they are kept as bounded plain text and escaped where
they are displayed.

Cancellation contract: ``Scanner.scan`` never raises on cancel. It returns the hosts that
finished with ``outcome="cancelled"``. ``probe`` and ``fingerprint`` answer a question
about specific ports, where "no answer" must not read as "closed", so they raise
``ScanCancelled`` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from portconsole.core.adapters import connect_probe
from portconsole.core.adapters.nmap_parse import LiveCounts
from portconsole.core.adapters.nmap_process import AnyEvent, Cancellable, wait_all
from portconsole.core.adapters.nmap_runner import NmapRunner, RunOutcome
from portconsole.core.adapters.nmap_spawn import discard as discard_early
from portconsole.core.adapters.nmap_spawn import launched_at
from portconsole.core.adapters.scan_batches import (
    nmap_hostgroup,
    plan_batches,
    port_argument,
    probe_batches,
    split_batches,
    tcp_port_count,
)
from portconsole.core.adapters.scanning import (
    Fingerprint,
    PortStates,
    ScanCancelled,
    ScanProgress,
    ScanTally,
    check_fingerprint_mode,
    check_pairs,
    checked_questions,
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
from portconsole.core.domain.targets import PortSpec, ip_sort_key
from portconsole.core.errors import ScannerError, TargetError
from portconsole.core.timeutil import utcnow

__all__ = ["Fingerprint", "ScanCancelled", "Scanner", "new_scan_id"]

# The spaced re-probe (probe_many(spaced=True)): a SYN rate limit drops tries sent close
# together (nmap -T4 sends its four within ~1 s), so these are sent SPACED_DELAY_MS apart
# per host: at a limit of one SYN a second one of two tries gets through, down to about
# one every two seconds. A port that really drops costs SPACED_TRIES probes of its host.
SPACED_DELAY_MS = 1100
SPACED_TRIES = 2
SPACED_SLACK_SECONDS = 3.0


class Scanner(NmapRunner):
    """Runs nmap for the monitor. Thread-safe: one Scanner may serve several scans."""

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
        self._command.path()  # no nmap: refused before any run
        started = utcnow()
        protocols = ["tcp", "udp"] if udp else ["tcp"]
        sweep_ports, batches, commands = self._sweep_plan(planned, ports, udp, known)

        state = ScanProgress(total=len(planned), progress=progress)
        tally = ScanTally(planned)
        # Workers watch `stop`, set on the caller's cancel or on an error that ends the scan.
        stop = threading.Event()
        halt = AnyEvent(stop, cancel)
        # Sweeps started early for this scan (nmap_spawn.prelaunch) are taken over by the
        # runs below; any other is killed now. The scan started when the first of them did.
        discard_early(keep=commands)
        early = [moment for args in commands if (moment := launched_at(args)) is not None]
        if early:
            started = min(started, datetime.fromtimestamp(min(early), UTC))
        workers = max(1, min(self.settings.workers, len(batches)))
        reported = ""  # the nmap version a sweep's report names
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nmap") as pool:
            sweep_futures = [
                pool.submit(
                    self._sweep_batch, key, batch, args, sweep_ports, udp, halt, state, discover
                )
                for key, ((batch, discover), args) in enumerate(zip(batches, commands, strict=True))
            ]
            tally.cancelled = wait_all(sweep_futures, cancel, stop)
            for result in _finished(sweep_futures):
                if result.error:
                    tally.sweep_failed(result.addresses, result.error)
                elif not result.cancelled:
                    assert result.xml is not None  # a run that ended without error has XML
                    tally.swept(result.addresses, result.hosts, result.xml)
                    reported = reported or result.version

            if not tally.cancelled:
                jobs = [
                    (address, chosen)
                    for address in sorted(tally.hosts, key=ip_sort_key)
                    if (chosen := chosen_ports(tally.hosts[address], fingerprint))
                ]
                if jobs:
                    state.start_phase("fingerprint", len(jobs))
                    version_futures = [
                        pool.submit(self._version_host, key, address, chosen, halt, state)
                        for key, (address, chosen) in enumerate(jobs)
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

        finished = utcnow()
        # The reports name nmap's version; with none (every run failed or was cancelled),
        # `nmap -V` tells it, and refuses a binary that is not nmap.
        version = (self._command.learned(reported) if reported else "") or self.nmap_version()
        return tally.result(
            started=started,
            finished=finished,
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
        args = self._command.sweep_args(checked, port_argument(pairs), udp)
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

    def probe_many(
        self,
        questions: Mapping[str, Iterable[tuple[int, str]]],
        cancel: threading.Event | None = None,
        *,
        spaced: bool = False,
    ) -> dict[str, PortStates]:
        """`probe` for many hosts at once, in as few nmap runs as keep each run's ports few
        (scan_batches.probe_batches: a confirm of 200 new hosts asked the same few ports
        is one run, not 200): address -> the state nmap gave each asked port (a port it
        gave none, e.g. two states folded into <extraports>, is left out).

        `spaced`: every host in one run (per address family), in parallel, its probes
        SPACED_DELAY_MS apart and each port (of all the hosts' ports: nmap asks each host
        every port of its run) tried SPACED_TRIES times, killed after `spaced_seconds`:
        for a few ports of a few hosts (the caller bounds them). A host whose run failed or
        that nmap did not report is left out (it answered nothing, which never reads as
        "closed"); raises ScanCancelled on cancel.
        """
        wanted = checked_questions(questions, self.scope)
        if not wanted:
            return {}
        if any(proto == "udp" for pairs in wanted.values() for _, proto in pairs):
            self._require_udp_privilege()
        self.nmap_version()
        hosts = sorted(wanted, key=ip_sort_key)
        batches = split_batches(hosts, len(hosts)) if spaced else probe_batches(wanted)

        def run(batch: list[str]) -> RunOutcome:
            asked = sorted({pair for address in batch for pair in wanted[address]})
            udp = any(proto == "udp" for _, proto in asked)
            args = self._command.sweep_args(batch, port_argument(asked), udp)
            timeout = self.batch_timeout_for(len(batch))
            if spaced:
                args[args.index("--") : args.index("--")] = [
                    "--scan-delay", f"{SPACED_DELAY_MS}ms", "--max-retries",
                    str(SPACED_TRIES - 1), "--min-hostgroup", str(len(batch)),
                ]  # fmt: skip
                timeout = min(timeout, spaced_seconds(len(asked)))
            # Every state is kept: a probe asks about a few ports, and closed is an answer.
            return self._run(args, batch, cancel, timeout, open_only=False)

        workers = max(1, min(self.settings.workers, len(batches)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nmap-probe") as pool:
            outcomes = list(pool.map(run, batches))
        if any(outcome.cancelled for outcome in outcomes):
            raise ScanCancelled("re-probe cancelled; nothing was concluded")
        return {
            address: _states(host, wanted[address])
            for outcome in outcomes
            if not outcome.error
            for address in outcome.addresses
            if (host := outcome.hosts.get(address)) is not None
        }

    def confirm_open(
        self,
        questions: Mapping[str, Iterable[tuple[int, str]]],
        cancel: threading.Event | None = None,
    ) -> dict[str, set[tuple[int, str]]]:
        """The TCP ports of `questions` (address -> ports the sweep just saw open) that
        accept a connection now (connect_probe.open_ports): open, without an nmap run. A
        port left out is unknown, not closed: the caller asks nmap (`probe_many`). Nothing
        when `scan.confirm_connect` is off."""
        if not self.settings.confirm_connect:
            return {}
        return connect_probe.open_ports(questions, self.scope, cancel)

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
            self._command.version_args(checked[0], pairs),
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

    def sweep_commands(
        self,
        addresses: list[str],
        ports: PortSpec,
        *,
        udp: bool = False,
        known: Iterable[str] | None = None,
    ) -> list[list[str]]:
        """The nmap sweeps `scan` would run for these arguments, in the order it starts
        them (`cli_prelaunch` starts the first ones early, for the next such scan)."""
        return self._sweep_plan(self._checked(addresses), ports, udp, known)[2]

    def _sweep_plan(
        self, planned: list[str], ports: PortSpec, udp: bool, known: Iterable[str] | None
    ) -> tuple[str, list[tuple[list[str], bool]], list[list[str]]]:
        """The sweeps' -p argument, host batches (with discovery or not) and their nmap
        argument vectors: the -p argument is rendered from the ranges, so 'all' stays
        short."""
        protocols = ("tcp", "udp") if udp else ("tcp",)
        sweep_ports = ",".join(f"{proto[0].upper()}:{ports}" for proto in protocols)
        size = self.batch_size_for(len(planned), len(ports) * len(protocols))
        batches = plan_batches(planned, known, size)
        commands = [
            self._command.sweep_args(batch, sweep_ports, udp, discover, stats=True)
            for batch, discover in batches
        ]
        return sweep_ports, batches, commands

    def _sweep_batch(
        self,
        key: int,
        batch: list[str],
        args: list[str],
        ports: str,
        udp: bool,
        cancel: Cancellable,
        state: ScanProgress,
        discover: bool = False,
    ) -> RunOutcome:
        state.begin(key, len(batch), nmap_hostgroup(tcp_port_count(ports), udp))

        def live(counts: LiveCounts) -> None:
            state.live(key, counts.hosts, counts.open_ports, counts.percent)

        result = self._run(
            args, batch, cancel, self.batch_timeout_for(len(batch)), on_progress=live
        )
        if discover and not result.cancelled and not result.error:
            # nmap leaves out a host that did not answer discovery: it is down.
            for address in batch:
                result.hosts.setdefault(address, HostObservation(address, "down"))
        if not result.cancelled:
            opened = 0
            if not result.error:
                opened = sum(len(h.open_ports()) for a, h in result.hosts.items() if a in batch)
            state.done(len(batch), opened, key)
        return result

    def _version_host(
        self,
        key: int,
        address: str,
        pairs: list[tuple[int, str]],
        cancel: Cancellable,
        state: ScanProgress,
    ) -> RunOutcome:
        state.begin(key, 1, 1)

        def live(counts: LiveCounts) -> None:
            # The host's ports were counted by the sweep: only the percent moves here.
            state.live(key, 0, 0, counts.percent)

        result = self._run(
            self._command.version_args(address, pairs, stats=True),
            [address],
            cancel,
            self.settings.batch_timeout,
            open_only=False,
            on_progress=live,
        )
        if not result.cancelled:
            state.done(1, 0, key)
        return result


# -- helpers ----------------------------------------------------------------------------


def _finished(futures: list[Future[RunOutcome]]) -> list[RunOutcome]:
    return [f.result() for f in futures if f.done() and not f.cancelled()]


def spaced_seconds(ports: int) -> float:
    """The most a spaced re-probe of `ports` ports may take (then it is killed):
    its probes, SPACED_DELAY_MS apart, plus SPACED_SLACK_SECONDS for nmap's start and the
    last probe's wait."""
    return ports * SPACED_TRIES * SPACED_DELAY_MS / 1000 + SPACED_SLACK_SECONDS


def _states(host: HostObservation, asked: set[tuple[int, str]]) -> PortStates:
    """The state nmap gave each asked port: listed, or the one state of its <extraports>."""
    listed = {p.key: p.state for p in host.ports}
    states = {key: listed.get(key) or host.unlisted for key in asked}
    return {key: state for key, state in states.items() if state}
