"""The scanner against the real nmap and real loopback listeners that each test starts.

Every scan here covers only ports the test's own fleet opened (or picked as closed), on
127.88.x.y addresses: other processes listen on 0.0.0.0, which answers on every 127.x.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from portconsole.core.adapters.scan_batches import batch_size_for
from portconsole.core.adapters.scanner import (
    SPACED_DELAY_MS,
    SPACED_TRIES,
    ScanCancelled,
    Scanner,
    spaced_seconds,
)
from portconsole.core.domain.model import HostObservation, Progress, ScanResult
from portconsole.core.domain.raw_xml import GzipDocuments, gzip_members
from portconsole.core.domain.targets import PortSpec, Scope, expand_targets, parse_ports
from portconsole.core.errors import ScannerError, TargetError, UserError
from portconsole.core.settings import ScanSettings, load_settings
from portconsole.demo import (
    DEMO_FLEET,
    DEMO_PORT_OFFSET,
    DRIFT,
    KINDS,
    demo_config_toml,
    demo_services,
)
from tests.fleet import TestFleet, free_port, logging_nmap

pytestmark = [
    pytest.mark.nmap,
    pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed"),
]

LOOPBACK = Scope(["127.0.0.0/8", "::1/128"])
IS_ROOT = os.geteuid() == 0


def nmap_processes(marker: str) -> list[int]:
    """Live nmap processes whose arguments mention `marker` (our test's address)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"nmap") and any(marker.encode() in a for a in argv):
            found.append(int(entry.name))
    return found


@pytest.fixture
def fleet() -> Iterator[TestFleet]:
    with TestFleet() as running:
        yield running


@pytest.fixture
def recording_nmap(tmp_path: Path) -> tuple[str, Path]:
    """A real nmap behind a wrapper that logs each start, to prove none happened."""
    log = tmp_path / "nmap-started.log"
    return str(logging_nmap(tmp_path, log)), log


def scan_args(result_xml: bytes) -> str:
    return ElementTree.fromstring(result_xml).get("args", "")


def test_reports_exactly_the_open_ports(fleet: TestFleet) -> None:
    hosts = [fleet.new_address() for _ in range(3)]
    for address, kinds in zip(
        hosts, (["ssh", "tcp", "http"], ["tcp", "tcp"], ["redis"]), strict=True
    ):
        for kind in kinds:
            fleet.listen(address, kind)
        fleet.closed_port(address)
    # One listener opened then closed again: it must not be reported.
    gone = fleet.listen(hosts[1], "tcp")
    fleet.close(hosts[1], gone)
    ports = PortSpec.of(p for h in hosts for p in fleet.ports_of(h))
    seen: list[Progress] = []
    scanner = Scanner(ScanSettings(workers=2, batch_size=1), LOOPBACK)

    result = scanner.scan(hosts, ports, fingerprint="none", progress=seen.append, group="g")

    assert result.outcome == "success" and result.error == ""
    assert [h.address for h in result.hosts] == sorted(
        hosts, key=lambda a: tuple(map(int, a.split(".")))
    )
    for host in result.hosts:
        assert host.status == "up"
        assert [p.port for p in host.ports] == fleet.open_ports_of(host.address)
        assert all(p.state == "open" and p.proto == "tcp" for p in host.ports)
    assert result.open_port_count() == 6
    assert result.scan_type == ("syn" if IS_ROOT else "connect")
    assert result.privileged is IS_ROOT
    assert result.addresses == hosts and result.targets == hosts and result.group == "g"
    assert result.ports == str(ports) and result.protocols == ["tcp"]
    assert result.nmap_version.split(".")[0].isdigit()
    assert result.scan_id.startswith("s-") and result.scan_id[2:18].endswith("Z")
    assert result.started_at <= result.finished_at
    assert len(result.raw_xml) == 3
    assert result.raw_xml_sha256 == hashlib.sha256(b"".join(result.raw_xml)).hexdigest()
    # Kept compressed as nmap wrote it; stored as the same .xml.gz the store used to write.
    blob, digests = gzip_members(result.raw_xml)
    assert isinstance(result.raw_xml, GzipDocuments)
    assert blob == b"".join(gzip.compress(doc, mtime=0) for doc in result.raw_xml)
    assert digests == [hashlib.sha256(doc).hexdigest() for doc in result.raw_xml]
    args = scan_args(result.raw_xml[0])
    assert " -n " in args and " -Pn " in args and ("-sS" if IS_ROOT else "-sT") in args
    assert seen[-1].phase == "done" and seen[-1].hosts_done == 3 and seen[-1].open_ports == 6
    # One combined figure (ScanProgress), not a report per batch: a running batch counts
    # a host nmap has written before the batch ends, reports come at most every
    # LIVE_REPORT_SECONDS and an unchanged figure is not repeated, so batches ending
    # together may show as one step (1, 3) and a slow run may report 0 hosts at a percent.
    sweep = [p for p in seen if p.phase == "sweep"]
    done = [p.hosts_done for p in sweep]
    assert done == sorted(done) and done[0] < 3 and done[-1] == 3, done
    assert [p.percent for p in sweep] == sorted(p.percent or 0.0 for p in sweep)
    assert {p.hosts_total for p in sweep} == {3} and sweep[-1].open_ports == 6


def test_forced_unprivileged_uses_a_connect_scan(fleet: TestFleet) -> None:
    host = fleet.new_address()
    open_port = fleet.listen(host, "tcp")
    closed = fleet.closed_port(host)
    scanner = Scanner(ScanSettings(force_unprivileged=True), LOOPBACK)
    assert scanner.scan_type == "connect" and scanner.privileged is False

    result = scanner.scan([host], PortSpec.of([open_port, closed]), fingerprint="none")

    assert result.scan_type == "connect" and result.privileged is False
    assert [p.port for p in result.hosts[0].ports] == [open_port]
    args = scan_args(result.raw_xml[0])
    assert "-sT" in args and "--unprivileged" in args and "-sS" not in args


def test_udp_needs_privilege(fleet: TestFleet) -> None:
    host = fleet.new_address()
    scanner = Scanner(ScanSettings(force_unprivileged=True), LOOPBACK)
    with pytest.raises(ScannerError, match="UDP"):
        scanner.scan([host], PortSpec.of([fleet.closed_port(host)]), udp=True)


def test_unprivileged_user_gets_a_connect_scan(fleet: TestFleet, tmp_path: Path) -> None:
    """As `nobody` (optional: needs runuser and an interpreter nobody may run)."""
    runuser = shutil.which("runuser")
    if not IS_ROOT or runuser is None:
        pytest.skip("needs root and runuser")
    probe = subprocess.run(
        [runuser, "-u", "nobody", "--", sys.executable, "-c", "import portconsole, nmap"],
        capture_output=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    if probe.returncode != 0:
        pytest.skip("user nobody cannot run this Python interpreter here")
    host = fleet.new_address()
    port = fleet.listen(host, "tcp")
    code = (
        "from portconsole.core.adapters.scanner import Scanner;"
        "from portconsole.core.settings import ScanSettings;"
        "from portconsole.core.domain.targets import Scope, parse_ports;"
        "s = Scanner(ScanSettings(), Scope(['127.0.0.0/8']));"
        f"r = s.scan(['{host}'], parse_ports('{port}'), fingerprint='none');"
        "print(r.scan_type, r.privileged, [p.port for p in r.hosts[0].ports])"
    )
    out = subprocess.run(
        [runuser, "-u", "nobody", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["connect", "False", f"[{port}]"]


def test_cancel_during_sweep_returns_within_a_second(fleet: TestFleet) -> None:
    host = fleet.new_address()
    ports = PortSpec.of([fleet.listen(host, "tcp"), fleet.closed_port(host)])
    # -T0 waits minutes between probes: the sweep cannot finish on its own in this test.
    scanner = Scanner(ScanSettings(timing=0), LOOPBACK)
    cancel = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        holder["result"] = scanner.scan([host], ports, cancel=cancel)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while not nmap_processes(host) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert nmap_processes(host), "nmap never started"
    cancelled_at = time.monotonic()
    cancel.set()
    worker.join(timeout=5)
    elapsed = time.monotonic() - cancelled_at

    assert not worker.is_alive()
    assert elapsed < 1.0
    assert nmap_processes(host) == []
    result = holder["result"]
    assert isinstance(result, ScanResult)
    assert result.outcome == "cancelled"
    assert result.hosts == []  # not scanned is not closed


def test_cancel_during_fingerprint_returns_within_a_second(fleet: TestFleet) -> None:
    host = fleet.new_address()
    # A silent service keeps -sV busy for many seconds (it tries probe after probe).
    port = fleet.listen(host, "tcp")
    cancel = threading.Event()

    def on_progress(progress: Progress) -> None:
        if progress.phase == "fingerprint":
            threading.Timer(0.3, cancel.set).start()

    scanner = Scanner(ScanSettings(), LOOPBACK)
    started = time.monotonic()
    result = scanner.scan([host], PortSpec.of([port]), progress=on_progress, cancel=cancel)
    assert time.monotonic() - started < 0.3 + 1.0 + 2.0  # sweep + cancel margin
    assert result.outcome == "cancelled"
    assert nmap_processes(host) == []
    # The sweep finished before the cancel: its findings are kept.
    assert [p.port for p in result.hosts[0].ports] == [port]


def test_cancel_before_start_runs_nothing(
    fleet: TestFleet, recording_nmap: tuple[str, Path]
) -> None:
    path, log = recording_nmap
    host = fleet.new_address()
    cancel = threading.Event()
    cancel.set()
    scanner = Scanner(ScanSettings(), LOOPBACK, nmap_path=path)
    result = scanner.scan([host], PortSpec.of([fleet.listen(host)]), cancel=cancel)
    assert result.outcome == "cancelled" and result.hosts == []
    assert "-oX" not in (log.read_text() if log.exists() else "")  # only `nmap -V` ran


def test_batch_timeout_reports_hosts_as_not_scanned(fleet: TestFleet) -> None:
    hosts = [fleet.new_address(), fleet.new_address()]
    ports = PortSpec.of([fleet.listen(h, "tcp") for h in hosts])
    scanner = Scanner(ScanSettings(timing=0, batch_timeout=0.5, workers=2), LOOPBACK)

    result = scanner.scan(hosts, ports)

    assert result.outcome == "failed"
    assert result.hosts == []  # neither "down" nor "closed": not scanned
    assert all(h in result.error for h in hosts) and "timed out" in result.error
    assert all(nmap_processes(h) == [] for h in hosts)


HOSTILE = [
    "127.0.0.2 --script x.nse",
    "-iL /etc/passwd",
    "127.0.0.2;id",
    "$(id)",
    "127.0.0.2 -oN /tmp/f",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_targets_are_refused_and_no_nmap_starts(
    text: str, recording_nmap: tuple[str, Path]
) -> None:
    path, log = recording_nmap
    with pytest.raises(TargetError):
        expand_targets([text], LOOPBACK)
    scanner = Scanner(ScanSettings(), LOOPBACK, nmap_path=path)
    # Even a caller that skips target parsing is refused by the scanner itself.
    with pytest.raises(TargetError):
        scanner.scan([text], PortSpec.of([22]))
    with pytest.raises(TargetError):
        scanner.probe(text, [(22, "tcp")])
    with pytest.raises(TargetError):
        scanner.fingerprint(text, [(22, "tcp")])
    with pytest.raises(TargetError):
        scanner.probe_many({"127.0.0.2": [(22, "tcp")], text: [(22, "tcp")]})
    assert not log.exists()


@pytest.mark.parametrize("address", ["10.0.0.1", "192.168.1.1", "8.8.8.8", "::2"])
def test_scanner_refuses_out_of_scope_addresses(
    address: str, recording_nmap: tuple[str, Path]
) -> None:
    path, log = recording_nmap
    scanner = Scanner(ScanSettings(), LOOPBACK, nmap_path=path)
    with pytest.raises(TargetError, match="outside the configured scope"):
        scanner.scan(["127.0.0.2", address], PortSpec.of([22]))
    with pytest.raises(TargetError, match="outside"):
        scanner.probe(address, [(22, "tcp")])
    narrow = Scanner(ScanSettings(), Scope(["127.88.0.0/16"]), nmap_path=path)
    with pytest.raises(TargetError, match="outside"):
        narrow.scan(["127.0.0.1"], PortSpec.of([22]))
    assert not log.exists()


def test_missing_nmap_is_a_one_line_error() -> None:
    scanner = Scanner(ScanSettings(), LOOPBACK, nmap_path="/nonexistent/nmap")
    with pytest.raises(ScannerError, match="apt-get install nmap") as caught:
        scanner.scan(["127.0.0.2"], PortSpec.of([22]))
    assert "\n" not in str(caught.value)


def test_a_sweep_learns_nmaps_version_from_its_report_without_nmap_v(
    fleet: TestFleet, recording_nmap: tuple[str, Path], tmp_path: Path
) -> None:
    path, log = recording_nmap
    host = fleet.new_address()
    port = fleet.listen(host, "tcp")
    scanner = Scanner(ScanSettings(), LOOPBACK, nmap_path=path)

    result = scanner.scan([host], PortSpec.of([port]), fingerprint="none")

    asked = subprocess.run([path, "-V"], capture_output=True, text=True, check=True).stdout
    assert result.nmap_version and f"version {result.nmap_version}" in asked
    runs = log.read_text().splitlines()[:-1]  # the last line is this test's own -V
    assert len(runs) == 1 and "-oX" in runs[0] and "-V" not in runs[0].split()
    # The version is known: a probe after the sweep starts no `nmap -V` either.
    scanner.probe(host, [(port, "tcp")])
    assert [r for r in log.read_text().splitlines() if r.split() == ["-V"]] == ["-V"]

    # A binary that is not nmap is refused by name, as before (its report is no nmap XML).
    fake = tmp_path / "not-nmap"
    fake.write_text("#!/bin/sh\necho hello\n", encoding="utf-8")
    fake.chmod(0o755)
    with pytest.raises(ScannerError, match="did not run as nmap"):
        Scanner(ScanSettings(), LOOPBACK, nmap_path=str(fake)).scan([host], PortSpec.of([port]))


def test_fingerprint_callable_selects_ports(fleet: TestFleet) -> None:
    host = fleet.new_address()
    ssh = fleet.listen(host, "ssh")
    other = fleet.listen(host, "tcp")
    asked: list[HostObservation] = []

    def only_ssh(observed: HostObservation) -> list[tuple[int, str]]:
        asked.append(observed)
        # A port the sweep did not see open is ignored, never fingerprinted.
        return [(ssh, "tcp"), (1, "tcp")]

    result = Scanner(ScanSettings(), LOOPBACK).scan(
        [host], PortSpec.of([ssh, other]), fingerprint=only_ssh
    )

    assert [h.address for h in asked] == [host]
    assert result.fingerprinted == 1
    by_port = {p.port: p for p in result.hosts[0].ports}
    assert by_port[ssh].product == "OpenSSH"
    assert by_port[other].product == ""
    assert f"-p T:{ssh} " in scan_args(result.raw_xml[1])


def test_probe_confirms_and_fingerprint_method(fleet: TestFleet) -> None:
    host = fleet.new_address()
    ssh = fleet.listen(host, "ssh")
    flapping = fleet.listen(host, "tcp")
    closed = fleet.closed_port(host)
    scanner = Scanner(ScanSettings(), LOOPBACK)
    pairs = [(ssh, "tcp"), (flapping, "tcp"), (closed, "tcp")]

    assert scanner.probe(host, pairs) == {(ssh, "tcp"), (flapping, "tcp")}
    fleet.close(host, flapping)
    assert scanner.probe(host, pairs) == {(ssh, "tcp")}

    found = scanner.fingerprint(host, [(ssh, "tcp")])
    assert set(found) == {(ssh, "tcp")}
    assert found[(ssh, "tcp")].product == "OpenSSH" and found[(ssh, "tcp")].state == "open"

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ScanCancelled):
        scanner.probe(host, pairs, cancel=cancel)


def test_probe_many_asks_many_hosts_in_a_few_nmap_runs(
    fleet: TestFleet, recording_nmap: tuple[str, Path]
) -> None:
    path, log = recording_nmap
    hosts = [fleet.new_address() for _ in range(20)]
    listening = {host: fleet.listen(host, "tcp") for host in hosts}
    # The first host also listens on the second host's port, but is not asked about it.
    fleet.listen(hosts[0], "tcp", port=listening[hosts[1]])
    closed = {host: fleet.closed_port(host) for host in hosts}
    questions = {host: [(listening[host], "tcp"), (closed[host], "tcp")] for host in hosts}
    scanner = Scanner(ScanSettings(workers=4), LOOPBACK, nmap_path=path)

    answered = scanner.probe_many(questions)

    # Each asked port with its state: a closed one is answered closed (a reset), not
    # merely "not open", so a vanished port is called closed only on that answer.
    assert answered == {
        host: {(listening[host], "tcp"): "open", (closed[host], "tcp"): "closed"} for host in hosts
    }
    # 20 hosts asked 40 ports in all: one run, not 20 (lines of runs started at once may
    # interleave in the log: count the runs, not the lines).
    assert log.read_text().count("-oX") == 1
    assert "--scan-delay" not in log.read_text()
    # probe() agrees host by host on what is open.
    assert scanner.probe(hosts[2], questions[hosts[2]]) == {(listening[hosts[2]], "tcp")}

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ScanCancelled):
        scanner.probe_many(questions, cancel=cancel)


def test_a_spaced_probe_spreads_its_tries_in_one_bounded_run(
    fleet: TestFleet, recording_nmap: tuple[str, Path]
) -> None:
    path, log = recording_nmap
    hosts = [fleet.new_address() for _ in range(3)]
    listening = {host: fleet.listen(host, "tcp") for host in hosts}
    closed = {host: fleet.closed_port(host) for host in hosts}
    questions = {host: [(listening[host], "tcp"), (closed[host], "tcp")] for host in hosts}
    scanner = Scanner(ScanSettings(workers=4), LOOPBACK, nmap_path=path)

    started = time.monotonic()
    answered = scanner.probe_many(questions, spaced=True)
    took = time.monotonic() - started

    assert answered == {
        host: {(listening[host], "tcp"): "open", (closed[host], "tcp"): "closed"} for host in hosts
    }
    # Every host in one run, not one per batch.
    (run,) = [line for line in log.read_text().splitlines() if "-oX" in line]
    assert f"--scan-delay {SPACED_DELAY_MS}ms --max-retries {SPACED_TRIES - 1}" in run
    # A host's two ports are asked SPACED_DELAY_MS apart; the hosts go in parallel.
    assert SPACED_DELAY_MS / 1000 <= took < spaced_seconds(2), took


@pytest.mark.parametrize("connect", [False, True], ids=["nmap-only", "connect-first"])
def test_a_cycle_confirms_new_ports_with_batched_reprobes(
    fleet: TestFleet, tmp_path: Path, connect: bool
) -> None:
    """The real scanner's confirm: a port that closed between the sweep and the re-probe
    is unconfirmed and raises nothing. nmap-only: every suspect host re-probed together in
    one round. connect-first: the new ports that accept a TCP connect are confirmed with no
    nmap run; only the one that closed is asked of nmap, which finds it closed."""
    from msgspec.structs import replace

    from portconsole.core.monitor import Monitor
    from tests.conftest import write_config

    hosts = [fleet.new_address() for _ in range(6)]
    steady = {host: fleet.listen(host, "tcp") for host in hosts}
    flapping = fleet.listen(hosts[3], "tcp")
    asked: list[dict[str, list[tuple[int, str]]]] = []
    connected: list[dict[str, list[tuple[int, str]]]] = []

    class FlapBeforeReprobe(Scanner):
        def confirm_open(self, questions, cancel=None):  # type: ignore[no-untyped-def]
            connected.append({a: sorted(p) for a, p in questions.items()})
            fleet.close(hosts[3], flapping)
            return super().confirm_open(questions, cancel)

        def probe_many(self, questions, cancel=None, *, spaced=False):  # type: ignore[no-untyped-def]
            asked.append({a: sorted(p) for a, p in questions.items()})
            fleet.close(hosts[3], flapping)
            return super().probe_many(questions, cancel, spaced=spaced)

    settings, paths = load_settings(write_config(tmp_path / "config.toml"), tmp_path / "data")
    scan_settings = replace(settings.scan, confirm_connect=connect)
    monitor = Monitor(
        settings, paths, scanner=FlapBeforeReprobe(scan_settings, settings.scope_obj())
    )
    ports = ",".join(str(p) for p in [*steady.values(), flapping])

    result = monitor.run_cycle(targets=hosts, ports=ports, fingerprint="none")

    if connect:
        assert len(connected) == 1 and set(connected[0]) == set(hosts)
        assert asked == [{hosts[3]: [(flapping, "tcp")]}]
    else:
        assert len(asked) == 1 and set(asked[0]) == set(hosts)  # one batched re-probe round
    assert result.unconfirmed == [f"{hosts[3]}:{flapping}/tcp"]
    raised = {(f.host, f.port) for f in result.findings if f.port is not None}
    assert raised == {(host, port) for host, port in steady.items()}


def test_ipv6_loopback(fleet: TestFleet) -> None:
    try:
        port = fleet.listen("::1", "tcp")
    except Exception:  # noqa: BLE001 - some CI containers have no ::1
        pytest.skip("::1 is not available")
    result = Scanner(ScanSettings(), LOOPBACK).scan(
        ["::1"], PortSpec.of([port]), fingerprint="none"
    )
    assert result.hosts[0].address == "::1"
    assert [p.port for p in result.hosts[0].ports] == [port]
    assert " -6 " in scan_args(result.raw_xml[0])


def test_untrusted_xml_with_entities_is_refused(tmp_path: Path) -> None:
    """What a process writes is parsed as it streams; a bomb or junk is a batch error."""
    scanner = Scanner(ScanSettings(), LOOPBACK)
    bomb = tmp_path / "bomb.xml"
    bomb.write_bytes(
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><nmaprun>&a;</nmaprun>'
    )
    junk = tmp_path / "junk.xml"
    junk.write_bytes(b"<html>not nmap</html>")
    for path in (bomb, junk):
        outcome = scanner._run(["/bin/cat", str(path)], ["127.0.0.2"], None, 5)
        assert "not usable nmap XML" in outcome.error and outcome.hosts == {}


def test_demo_listeners_are_identified_by_nmap(fleet: TestFleet) -> None:
    """Each demo behaviour makes nmap -sV name the service the demo fleet claims."""
    host = fleet.new_address()
    # Redis is left out: off port 6379 nmap only reaches it after ~12 s of probes (the
    # demo runs it on 6379, where it is named at once).
    ports = {kind: fleet.listen(host, kind) for kind in KINDS if kind not in ("tcp", "redis")}
    closed = fleet.closed_port(host)
    expected = {s.kind: s for s in [*DEMO_FLEET, DRIFT]}

    result = Scanner(ScanSettings(), LOOPBACK).scan([host], PortSpec.of([closed, *ports.values()]))

    assert result.outcome == "success", result.error
    assert result.fingerprinted == len(ports) and len(result.raw_xml) == 2
    assert "-sV" in scan_args(result.raw_xml[1]) and "-sV" not in scan_args(result.raw_xml[0])
    by_port = {p.port: p for p in result.hosts[0].ports}
    assert set(by_port) == set(ports.values())
    assert by_port[ports["ssh"]].product == "OpenSSH"
    assert by_port[ports["http"]].product == "nginx"
    for kind, port in ports.items():
        seen = by_port[port]
        if kind in expected:
            assert (seen.service, seen.product, seen.version) == (
                expected[kind].service,
                expected[kind].product,
                expected[kind].version,
            ), kind


def test_fleet_names_a_taken_port(fleet: TestFleet) -> None:
    host = fleet.new_address()
    port = fleet.listen(host, "ssh")
    with pytest.raises(UserError, match=f"{host}:{port} is already in use"):
        fleet.fleet.add(host, port, "http")
    with pytest.raises(UserError, match="unknown listener kind"):
        fleet.fleet.add(host, 0, "gopher")


def test_demo_config_is_valid_and_covers_the_fleet(tmp_path: Path) -> None:
    for offset in (0, DEMO_PORT_OFFSET):
        config = tmp_path / f"demo-{offset}.toml"
        config.write_text(demo_config_toml(tmp_path / "data", offset), encoding="utf-8")
        settings, _paths = load_settings(config=config, environ={})
        scope = settings.scope_obj()
        covered: set[tuple[str, int]] = set()
        for name, group in settings.groups.items():
            spec = parse_ports(settings.group_ports(name))
            for address in expand_targets(group.targets, scope):
                covered |= {(address, p) for p in spec.ports()}
        wanted = {(s.address, s.port) for s in demo_services(offset, include_drift=True)}
        assert wanted <= covered
        assert settings.groups["legacy"].interval == 15  # alerts within 25 s in the demo
        assert settings.tui.refresh_seconds == 1.0


def test_auto_batches_spread_hosts_over_the_workers() -> None:
    four = ScanSettings(workers=4)

    def size(hosts: int, ports: int, cpus: int = 16) -> int:
        return batch_size_for(four, hosts, ports, cpus)

    # Much work per host: spread evenly over the workers, at most 16 hosts per run.
    assert [size(n, 1000) for n in (1, 40, 200)] == [1, 10, 16]
    # A large target set grows its batches: a /16 is 16 nmap runs of 4,096, not 4,096 of 16.
    assert [size(n, 1000) for n in (1000, 65534, 1 << 24)] == [63, 4096, 4096]
    # Little work is fewer, bigger runs: each gets 2,048 probes or more, one run per CPU
    # at most (a run costs ~75 ms however small).
    assert size(40, 30) == 40  # 1,200 probes: one run
    assert size(40, 100) == 20  # 4,000 probes: two
    assert size(3, 1000) == 2  # 3,000 probes: two
    assert size(40, 1000, cpus=2) == 20  # two CPUs: two runs
    assert size(1000, 10, cpus=2) == 500
    assert size(65534, 10, cpus=2) == 4096  # a /16 keeps its 16 runs
    auto = Scanner(four, LOOPBACK)
    assert auto.batch_size_for(40, 30) == 40  # the scanner applies it, with this CPU count
    assert auto.batch_timeout_for(10) == 300 and auto.batch_timeout_for(64) == 300 * 4
    assert auto.batch_timeout_for(4096) == 300 * 8  # capped: a hung run dies within the hour
    assert Scanner(ScanSettings(workers=2), LOOPBACK).batch_size_for(3, 1000) == 2
    assert Scanner(ScanSettings(workers=4, batch_size=5), LOOPBACK).batch_size_for(40, 30) == 5


@pytest.mark.parametrize(
    ("settings", "runs"),
    [
        # 1,022 probes: one run (a run costs more to start than they take).
        (ScanSettings(workers=4), 1),
        # Cut by hand: 16 runs, four at a time, their results merged.
        (ScanSettings(workers=4, batch_size=64), 16),
    ],
)
def test_a_large_range_is_few_nmap_runs_and_quiet_hosts_are_up(
    recording_nmap: tuple[str, Path], settings: ScanSettings, runs: int
) -> None:
    """1,022 answering hosts asked one closed port each: each host up with no port."""
    path, log = recording_nmap
    hosts = expand_targets(["127.89.4.0/22"], LOOPBACK)
    closed = free_port(hosts[0])
    scanner = Scanner(settings, LOOPBACK, nmap_path=path)

    result = scanner.scan(hosts, PortSpec.of([closed]), fingerprint="none")

    assert result.outcome == "success", result.error
    # Counted in the text: parallel runs' long log lines may interleave.
    assert log.read_text().count("-oX - --") == len(result.raw_xml) == runs
    assert len(result.hosts) == len(hosts) == 1022
    assert all(h.status == "up" and h.ports == [] for h in result.hosts)


def test_a_reprobe_shares_runs_while_their_ports_stay_few() -> None:
    from portconsole.core.adapters.scan_batches import PROBE_BATCH_PORTS, probe_batches

    same = {f"127.0.1.{i}": {(22, "tcp"), (80, "tcp")} for i in range(1, 201)}
    assert [len(b) for b in probe_batches(same)] == [200]  # 200 hosts, 2 ports: one run
    # Each host its own port: a run holds PROBE_BATCH_PORTS hosts (nmap would ask every
    # host of a run all of the run's ports).
    spread = {f"127.0.2.{i}": {(1000 + i, "tcp")} for i in range(1, 201)}
    batches = probe_batches(spread)
    assert sorted(len(b) for b in batches) == [8, 64, 64, 64]
    assert sorted(a for b in batches for a in b) == sorted(spread)
    # A host asked more ports than the limit runs alone; IPv6 never joins IPv4.
    big = {(p, "tcp") for p in range(1, PROBE_BATCH_PORTS + 10)}
    mixed = {"127.0.3.1": big, "127.0.3.2": {(22, "tcp")}, "::1": {(22, "tcp")}}
    assert sorted(probe_batches(mixed)) == [["127.0.3.1"], ["127.0.3.2"], ["::1"]]


def test_batches_never_mix_ipv4_and_ipv6() -> None:
    # nmap needs -6 for IPv6: a batch is one family (told apart without parsing again).
    from portconsole.core.adapters.scan_batches import plan_batches

    planned = ["127.0.0.2", "::1", "127.0.0.3", "fe80::1", "127.0.0.4"]
    batches = plan_batches(planned, known=["127.0.0.2", "::1"], size=16)
    assert batches == [
        (["127.0.0.2"], False),
        (["::1"], False),
        (["127.0.0.3", "127.0.0.4"], True),
        (["fe80::1"], True),
    ]
