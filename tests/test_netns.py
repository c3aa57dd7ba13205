"""Real networks: hosts that drop pings, ports a firewall drops (filtered), loss, a rate limit.

Loopback is too kind (every 127.x host answers, nothing is filtered), so these tests build a
network out of Linux network namespaces (see ../shared/FACTS.md): a scanner namespace
(198.18.1.1/24), a router (198.18.1.254, 198.18.2.254) and a target (198.18.2.2/24), joined
by veth pairs. Only 198.18.0.0/15 is used, only inside the namespaces the test creates and
deletes, and the scope setting is exactly that range. nmap runs inside the scanner
namespace through a wrapper script; the listeners and iptables rules live in the target.
Those need root, `ip netns` and `iptables` (skipped with the reason otherwise); the rules
they rely on (the change kinds, what the sweep's parser keeps) are also tested without.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from portconsole.core.adapters.nmap_parse import ReportStream
from portconsole.core.adapters.replay import Network, ReplayScanner
from portconsole.core.adapters.scanner import Scanner, spaced_seconds
from portconsole.core.domain.changes import HotTables, apply_scan
from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult
from portconsole.core.domain.targets import PortSpec, Scope
from portconsole.core.monitor import Monitor
from portconsole.core.services.probe import SPACED_HOSTS
from portconsole.core.settings import load_settings
from portconsole.core.timeutil import utcnow
from tests.conftest import write_config

SCOPE = "198.18.0.0/15"
TARGET = "198.18.2.2"
SSH, DROPPED, REJECTED, SWITCHED = 22, 2222, 2223, 8080


def _why_not() -> str:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables", "nmap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "`ip netns` is not available here"
    return ""


needs_netns = pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "runs")

LISTENER = """
import signal, socket, sys
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    socks.append(s)
print("ready", flush=True)
signal.pause()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Net:
    """The namespaces of one test: `run` a command in one, `rule` an iptables rule in the target."""

    scan: str
    router: str
    target: str

    def run(self, namespace: str, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", namespace, *args], check=True, capture_output=True)

    def rule(self, *args: str) -> None:
        self.run(self.target, "iptables", *args)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    tag = uuid.uuid4().hex[:6]
    names = Net(f"pcs-{tag}", f"pcr-{tag}", f"pct-{tag}")
    created: list[str] = []
    listener: subprocess.Popen[str] | None = None
    try:
        for name in (names.scan, names.router, names.target):
            _ip("netns", "add", name)
            created.append(name)
        # veth pairs made straight inside the namespaces: nothing ever exists in the root one.
        _ip("link", "add", "va", "netns", names.scan, "type", "veth", "peer", "name", "ra",
            "netns", names.router)  # fmt: skip
        _ip("link", "add", "vb", "netns", names.target, "type", "veth", "peer", "name", "rb",
            "netns", names.router)  # fmt: skip
        for ns, link, address in (
            (names.scan, "va", "198.18.1.1/24"),
            (names.router, "ra", "198.18.1.254/24"),
            (names.router, "rb", "198.18.2.254/24"),
            (names.target, "vb", f"{TARGET}/24"),
        ):
            names.run(ns, "ip", "addr", "add", address, "dev", link)
            names.run(ns, "ip", "link", "set", link, "up")
        for ns in created:
            names.run(ns, "ip", "link", "set", "lo", "up")
        names.run(names.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        names.run(names.scan, "ip", "route", "add", "default", "via", "198.18.1.254")
        names.run(names.target, "ip", "route", "add", "default", "via", "198.18.2.254")
        listener = subprocess.Popen(
            ["ip", "netns", "exec", names.target, sys.executable, "-c", LISTENER,
             str(SSH), str(DROPPED), str(SWITCHED)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        yield names
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _hide_from_ping(net: Net) -> None:
    """What makes a host "seem down" to nmap's default discovery while port 22 is open."""
    net.rule("-A", "INPUT", "-p", "icmp", "-j", "DROP")
    for port in ("80", "443"):
        net.rule("-A", "INPUT", "-p", "tcp", "--dport", port, "-j", "DROP")


def _firewall_ports(net: Net) -> None:
    net.rule("-A", "INPUT", "-p", "tcp", "--dport", str(DROPPED), "-j", "DROP")
    net.rule("-A", "INPUT", "-p", "tcp", "--dport", str(REJECTED), "-j", "REJECT",
             "--reject-with", "tcp-reset")  # fmt: skip


def _dropped_by(net: Net, match: str) -> int:
    """Packets dropped by the target's INPUT rules whose listing contains `match`."""
    listing = subprocess.run(
        ["ip", "netns", "exec", net.target, "iptables", "-L", "INPUT", "-v", "-n", "-x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[0]) for line in listing.splitlines() if match in line)


def _monitor(tmp_path: Path, net: Net) -> tuple[Monitor, Scanner]:
    wrapper = tmp_path / "nmap-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {net.scan} nmap "$@"\n')
    wrapper.chmod(0o755)
    config = tmp_path / "config.toml"
    config.write_text(
        f'scope = ["{SCOPE}"]\n\n[scan]\ntiming = 4\nworkers = 2\nbatch_timeout = 60.0\n'
        "confirm_probes = 1\n"
    )
    settings, paths = load_settings(config, tmp_path / "data")
    scanner = Scanner(settings.scan, settings.scope_obj(), nmap_path=str(wrapper))
    return Monitor(settings, paths, origin="cli", scanner=scanner), scanner


def _changes(result: object) -> set[tuple[str, int | None]]:
    return {(c.kind, c.port) for c in result.changes}  # type: ignore[attr-defined]


@needs_netns
def test_a_known_host_that_drops_pings_is_scanned_and_found(tmp_path: Path, net: Net) -> None:
    monitor, scanner = _monitor(tmp_path, net)
    ports = f"{SSH},{REJECTED}"
    first = monitor.run_cycle(targets=[TARGET], ports=ports, fingerprint="none")
    assert ("port_opened", SSH) in _changes(first)
    _hide_from_ping(net)
    # Discovery alone (a host never seen) no longer finds it ...
    unknown = scanner.scan([TARGET], PortSpec.of([SSH]), fingerprint="none", known=[])
    assert [(h.address, h.status) for h in unknown.hosts] == [(TARGET, "down")]
    # ... but the cycle knows it from history, so it is swept with -Pn and stays up and open.
    second = monitor.run_cycle(targets=[TARGET], ports=ports, fingerprint="none")
    assert _changes(second) == set()
    assert [(p.host, p.port) for p in monitor.store.current_ports()] == [(TARGET, SSH)]


@needs_netns
def test_a_dropped_port_is_filtered_never_open_or_closed(tmp_path: Path, net: Net) -> None:
    _firewall_ports(net)
    _, scanner = _monitor(tmp_path, net)
    spec = PortSpec.of([SSH, DROPPED, REJECTED])
    result = scanner.scan([TARGET], spec, fingerprint="none", known=[TARGET])
    (host,) = result.hosts
    assert host.status == "up"
    assert [p.port for p in host.open_ports()] == [SSH]  # 2222 has a listener, behind DROP
    assert host.state_of((DROPPED, "tcp")) == "filtered"
    assert host.state_of((REJECTED, "tcp")) == "closed"


@needs_netns
def test_a_port_going_from_open_to_filtered_is_port_filtered(tmp_path: Path, net: Net) -> None:
    monitor, _ = _monitor(tmp_path, net)
    ports = f"{SSH},{SWITCHED}"
    first = monitor.run_cycle(targets=[TARGET], ports=ports, fingerprint="none")
    assert {("port_opened", SSH), ("port_opened", SWITCHED)} <= _changes(first)
    started = time.monotonic()
    assert _changes(monitor.run_cycle(targets=[TARGET], ports=ports, fingerprint="none")) == set()
    steady = time.monotonic() - started
    net.rule("-A", "INPUT", "-p", "tcp", "--dport", str(SWITCHED), "-j", "DROP")
    started = time.monotonic()
    second = monitor.run_cycle(targets=[TARGET], ports=ports, fingerprint="none")
    dropped = time.monotonic() - started
    assert _changes(second) == {("port_filtered", SWITCHED)}
    # Silent at the re-probe and at the spaced one (two tries 1.1 s apart): bounded.
    print(f"steady cycle {steady:.2f} s, with a dropped port {dropped:.2f} s")
    assert dropped - steady < 2 * spaced_seconds(1)
    assert [e.kind for e in monitor.store.history(TARGET, SWITCHED)] == [
        "port_opened",
        "port_filtered",
    ]
    assert [(p.port, p.state) for p in monitor.store.current_ports(TARGET, open_only=False)] == [
        (SSH, "open"),
        (SWITCHED, "filtered"),
    ]


@needs_netns
def test_five_percent_probe_loss_gives_no_flap(tmp_path: Path, net: Net) -> None:
    monitor, _ = _monitor(tmp_path, net)
    # Thirty closed ports besides the two open ones: enough probes that 5% loss really
    # drops some in ten cycles (checked at the end).
    ports = f"{SSH},{SWITCHED},3000-3029"
    first = monitor.run_cycle(targets=[TARGET], ports=ports, fingerprint="none")
    assert {("port_opened", SSH), ("port_opened", SWITCHED)} <= _changes(first)
    net.rule("-A", "INPUT", "-m", "statistic", "--mode", "random", "--probability", "0.05",
             "-j", "DROP")  # fmt: skip
    for _ in range(10):
        later = monitor.run_cycle(targets=[TARGET], ports=ports, fingerprint="none")
        assert _changes(later) == set()
    assert _dropped_by(net, "statistic") > 0  # the loss was real: some probes or answers were lost
    assert sorted(p.port for p in monitor.store.current_ports()) == [SSH, SWITCHED]


def _rate_limit_syns(net: Net, per_second: int) -> None:
    """The target drops new connections (SYNs) from one source above `per_second`."""
    net.rule("-A", "INPUT", "-p", "tcp", "--syn", "-m", "hashlimit", "--hashlimit-above",
             f"{per_second}/sec", "--hashlimit-burst", "1", "--hashlimit-mode", "srcip",
             "--hashlimit-name", "pcrate", "-j", "DROP")  # fmt: skip


@needs_netns
@pytest.mark.parametrize("per_second", [2, 1])
def test_a_syn_rate_limit_gives_no_flap(tmp_path: Path, net: Net, per_second: int) -> None:
    monitor, _ = _monitor(tmp_path, net)
    ports = f"{SSH},{SWITCHED},3000-3039"  # two open, forty closed (no listener)
    first = monitor.run_cycle(targets=[TARGET], ports=ports, fingerprint="none")
    assert {("port_opened", SSH), ("port_opened", SWITCHED)} <= _changes(first)
    # Two SYNs a second (nmap -n -Pn -T4 --max-retries 3 -sS): the sweep of 42 ports loses
    # every try at an open port in most cycles, and with confirm_probes = 0 8080 flapped
    # closed/opened in 3 of 5 cycles. The re-probe (-p of that port alone) finds it open.
    # At one SYN a second the re-probe's four tries (~1 s) were all dropped too in ~2 of 5
    # runs (8080 flapped port_closed/port_opened): the spaced re-probe of a port still
    # silent (tries 1.1 s apart) gets one through.
    _rate_limit_syns(net, per_second)
    rescued = 0
    for _ in range(5):
        later = monitor.run_cycle(targets=[TARGET], ports=ports, fingerprint="none")
        assert _changes(later) == set()
        rescued += len(later.unconfirmed)
    assert _dropped_by(net, "limit: above") > 100  # the limit was real: ~150 SYNs a cycle
    assert rescued > 0  # and it hid an open port from a sweep: 3-4 of 5 cycles measured
    assert sorted(p.port for p in monitor.store.current_ports()) == [SSH, SWITCHED]


def _sweep(n: int, host: HostObservation) -> ScanResult:
    finished = utcnow() - timedelta(minutes=10 - n)
    return ScanResult(
        f"s{n}", finished - timedelta(seconds=3), finished, "7.93", "syn", True,
        [TARGET], [TARGET], "22,80,443", ["tcp"], [host],
    )  # fmt: skip


def test_open_to_filtered_is_port_filtered_and_open_to_closed_is_port_closed() -> None:
    hot = HotTables(None)
    up = [PortObservation(port, "tcp", "open") for port in (22, 80, 443)]
    apply_scan(hot, _sweep(1, HostObservation(TARGET, "up", "", up)))
    # 80 listed filtered by the sweep, 443 listed closed in a full report, 22 still open.
    second = HostObservation(
        TARGET, "up", "", [up[0], PortObservation(443, "tcp", "closed")], filtered=[(80, "tcp")]
    )
    plan = apply_scan(hot, _sweep(2, second))
    assert [(c.kind, c.port, c.after) for c in plan.changes] == [
        ("port_filtered", 80, {"state": "filtered"}),
        ("port_closed", 443, {"state": "closed"}),
    ]
    rows = hot.ports[TARGET]["ports"]
    assert (rows["22/tcp"][0], rows["80/tcp"][0], rows["443/tcp"][0]) == (
        "open",
        "filtered",
        "closed",
    )
    # Every unlisted port filtered (one <extraports state="filtered">): 22 is filtered too.
    third = apply_scan(hot, _sweep(3, HostObservation(TARGET, "up", "", [], unlisted="filtered")))
    assert [(c.kind, c.port) for c in third.changes] == [("port_filtered", 22)]


def _report(ports: str, extraports: str) -> bytes:
    return (
        '<?xml version="1.0"?><nmaprun scanner="nmap" args="nmap -Pn -sS" start="1779876000">'
        f'<host><status state="up" reason="user-set"/><address addr="{TARGET}" addrtype="ipv4"/>'
        f"<ports>{extraports}{ports}</ports></host>"
        '<runstats><finished time="1779876010" exit="success"/></runstats></nmaprun>'
    ).encode()


def _port(number: int, state: str) -> str:
    return f'<port protocol="tcp" portid="{number}"><state state="{state}" reason="x"/></port>'


def _swept(xml: bytes) -> HostObservation:
    stream = ReportStream(open_only=True)
    stream.feed(xml)
    return stream.close().hosts[TARGET]


def test_a_sweep_keeps_which_ports_were_filtered_but_no_closed_port() -> None:
    many_filtered = '<extraports state="filtered" count="28"/>'
    host = _swept(_report(_port(22, "open") + _port(80, "filtered"), many_filtered))
    assert [p.port for p in host.ports] == [22]
    assert (host.filtered, host.unlisted) == ([(80, "tcp")], "filtered")
    assert host.state_of((443, "tcp")) == "filtered"
    # A listed closed port was not kept, so the unlisted state is not known: closed.
    mixed = _swept(_report(_port(22, "open") + _port(25, "closed"), many_filtered))
    assert (mixed.filtered, mixed.unlisted, mixed.state_of((443, "tcp"))) == ([], "", "closed")


class ScriptedReprobe(ReplayScanner):
    """A replay whose next re-probes answer the states in `answers` (the first re-probe,
    then the spaced one: the silence of a rate limit or a DROP rule cannot be replayed from
    a mapping of open ports); once they are used up, re-probes answer as the replay does."""

    def __init__(self, scope: Scope, network: Network) -> None:
        super().__init__(scope, network)
        self.answers: list[str] = []
        self.asked: list[tuple[dict[str, list[tuple[int, str]]], bool]] = []

    def probe_many(
        self,
        questions: Mapping[str, Iterable[tuple[int, str]]],
        cancel: threading.Event | None = None,
        *,
        spaced: bool = False,
    ) -> dict[str, dict[tuple[int, str], str]]:
        asked = {address: sorted(ports) for address, ports in questions.items()}
        self.asked.append((asked, spaced))
        if self.answers:
            state = self.answers.pop(0)
            return {address: dict.fromkeys(ports, state) for address, ports in asked.items()}
        found = {address: self.probe(address, ports, cancel) for address, ports in asked.items()}
        return {
            address: {key: "open" if key in found[address] else "closed" for key in ports}
            for address, ports in asked.items()
        }


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["filtered", "filtered"], {("port_filtered", 8080)}),
        (["filtered", "closed"], {("port_closed", 8080)}),
        (["filtered", "open"], set()),
        (["closed"], {("port_closed", 8080)}),
        (["open"], set()),
    ],
)
def test_a_vanished_port_takes_the_state_its_reprobes_give(
    tmp_path: Path, answers: list[str], expected: set[tuple[str, int]]
) -> None:
    """The sweep reads the lost 8080 as closed (its host's other ports are closed); only a
    reset at a re-probe makes that port_closed, and silence through the spaced re-probe
    makes it port_filtered."""
    host = "127.0.0.2"
    settings, paths = load_settings(write_config(tmp_path / "config.toml"), tmp_path / "data")
    scanner = ScriptedReprobe(settings.scope_obj(), {host: {22: "ssh", 8080: "http"}})
    monitor = Monitor(settings, paths, scanner=scanner)
    first = monitor.run_cycle(targets=[host], ports="22,8080", fingerprint="none")
    assert {("port_opened", 22), ("port_opened", 8080)} <= _changes(first)
    scanner.asked.clear()
    scanner.answers = list(answers)
    scanner.close_port(host, 8080)

    later = monitor.run_cycle(targets=[host], ports="22,8080", fingerprint="none")

    assert _changes(later) == expected
    silent_first = answers[0] == "filtered"
    assert scanner.asked == [({host: [(8080, "tcp")]}, False)] + (
        [({host: [(8080, "tcp")]}, True)] if silent_first else []
    )
    assert later.unconfirmed == ([] if expected else [f"{host}:8080/tcp"])
    states = {p.port: p.state for p in monitor.store.current_ports(host, open_only=False)}
    assert (
        states[8080]
        == {
            "port_filtered": "filtered",
            "port_closed": "closed",
            None: "open",
        }[next(iter(expected), (None,))[0]]
    )


def test_the_spaced_reprobe_is_bounded_and_a_silent_port_beyond_it_is_filtered(
    tmp_path: Path,
) -> None:
    hosts = [f"127.0.1.{n}" for n in range(1, 71)]
    lost = [8080, 8081, 8082, 8083]
    settings, paths = load_settings(write_config(tmp_path / "config.toml"), tmp_path / "data")
    scanner = ScriptedReprobe(settings.scope_obj(), {host: {22: "ssh"} for host in hosts})
    for host in hosts[:10]:  # fewer hosts lose 8083: it is the one port left out
        scanner.open_port(host, 8083)
    for host in hosts:
        for port in lost[:3]:
            scanner.open_port(host, port)
    monitor = Monitor(settings, paths, scanner=scanner)
    ports = "22,8080-8083"
    monitor.run_cycle(targets=hosts, ports=ports, fingerprint="none")
    scanner.asked.clear()
    scanner.answers = ["filtered", "open"]  # the spaced re-probe would find all open again
    scanner.set_network({host: {22: "ssh"} for host in hosts})

    later = monitor.run_cycle(targets=hosts, ports=ports, fingerprint="none")

    (first, _), (spaced, is_spaced) = scanner.asked
    assert is_spaced and len(first) == 70
    assert len(spaced) == SPACED_HOSTS and {k for keys in spaced.values() for k in keys} == {
        (8080, "tcp"), (8081, "tcp"), (8082, "tcp")
    }  # fmt: skip
    # Asked and open again: no change. Not asked (6 hosts, and 8083): filtered, never closed.
    assert len(later.unconfirmed) == SPACED_HOSTS * 3
    expected = {("port_filtered", h, p) for h in hosts[SPACED_HOSTS:] for p in lost[:3]}
    expected |= {("port_filtered", h, 8083) for h in hosts[:10]}
    assert {(c.kind, c.host, c.port) for c in later.changes} == expected
