"""The replay scanner: the scanner seam that lets scan cycles run without nmap.

It must behave like the real scanner where a test could tell (scope, cancel, outcome,
the shape of a ScanResult), and drive the real Monitor end to end: a port that opens
between two cycles becomes a finding, one that flaps between sweep and confirm does not.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from portconsole.core.adapters.nmap_parse import parse_report
from portconsole.core.adapters.replay import ReplayScanner, Service
from portconsole.core.adapters.scanning import ScanCancelled, ScannerLike
from portconsole.core.domain.model import Progress, ScanResult
from portconsole.core.domain.targets import PortSpec, Scope, parse_ports
from portconsole.core.errors import ScannerError, TargetError
from tests.replay import replay_monitor

DATA = Path(__file__).parent / "data"
LOOPBACK = Scope(["127.0.0.0/8", "::1/128"])
PORTS = parse_ports("22,80,443")


def test_scan_reports_the_open_ports_of_the_network() -> None:
    replay = ReplayScanner(
        LOOPBACK,
        {"127.0.0.2": {22: Service("ssh", "OpenSSH", "9.2p1"), 80: "http"}, "127.0.0.3": {}},
    )
    seen: list[Progress] = []
    result = replay.scan(
        ["127.0.0.3", "127.0.0.2", "127.0.0.9"], PORTS, progress=seen.append, group="g"
    )

    assert result.outcome == "success" and result.error == ""
    by_address = {h.address: h for h in result.hosts}
    assert [h.address for h in result.hosts] == ["127.0.0.2", "127.0.0.3", "127.0.0.9"]
    assert [(p.port, p.service, p.product) for p in by_address["127.0.0.2"].ports] == [
        (22, "ssh", "OpenSSH"),
        (80, "http", ""),
    ]
    assert by_address["127.0.0.3"].status == "up" and by_address["127.0.0.3"].ports == []
    # Not in the network: answers nothing, which -Pn reads as down.
    assert by_address["127.0.0.9"].status == "down"
    assert result.fingerprinted == 2 and result.group == "g"
    assert seen[-1] == Progress(3, 3, 2, "done")
    assert [p.phase for p in seen].count("fingerprint") == 2  # phase start + one host


def test_a_sweep_names_a_port_from_the_table_and_sv_from_its_answer() -> None:
    # As nmap does: a telnetd on 2323 sweeps as "3d-nfsd", and -sV says what it is.
    telnetd = Service("telnet", "Linux telnetd", table="3d-nfsd")
    replay = ReplayScanner(LOOPBACK, {"127.0.0.2": {2323: telnetd}})
    swept = replay.scan(["127.0.0.2"], parse_ports("2323"), fingerprint="none")
    assert [(p.service, p.product) for p in swept.hosts[0].ports] == [("3d-nfsd", "")]
    identified = replay.fingerprint("127.0.0.2", [(2323, "tcp")])[(2323, "tcp")]
    assert (identified.service, identified.product) == ("telnet", "Linux telnetd")


def test_result_has_the_shape_of_a_real_scan() -> None:
    replay: ScannerLike = ReplayScanner(LOOPBACK, {"127.0.0.2": {22: "ssh"}}, privileged=False)
    result = replay.scan(["127.0.0.2"], PORTS, fingerprint="none", targets=["127.0.0.2/32"])
    assert isinstance(result, ScanResult)
    assert result.scan_id.startswith("s-") and result.scan_id[2:18].endswith("Z")
    assert result.started_at <= result.finished_at
    assert result.started_at.tzinfo is not None
    assert (result.scan_type, result.privileged) == ("connect", False)
    assert result.targets == ["127.0.0.2/32"] and result.addresses == ["127.0.0.2"]
    assert (result.ports, result.protocols) == ("22,80,443", ["tcp"])
    assert result.nmap_version == "7.93" and result.origin == "cli"
    assert len(result.raw_xml) == 1
    assert result.raw_xml_sha256 == hashlib.sha256(b"".join(result.raw_xml)).hexdigest()
    parsed = parse_report(result.raw_xml[0])
    assert " -n " in parsed.args and " -Pn " in parsed.args and " -sT " in parsed.args
    assert parsed.scaninfo[0].services == "22,80,443"


def test_out_of_scope_and_hostile_addresses_are_refused() -> None:
    replay = ReplayScanner(Scope(["127.88.0.0/16"]), {"127.0.0.1": {22: "ssh"}})
    for address in ("127.0.0.1", "10.0.0.1", "::2"):
        with pytest.raises(TargetError, match="outside"):
            replay.scan([address], PORTS)
        with pytest.raises(TargetError, match="outside"):
            replay.probe(address, [(22, "tcp")])
        with pytest.raises(TargetError, match="outside"):
            replay.fingerprint(address, [(22, "tcp")])
    for text in ("127.88.0.2 --script x.nse", "$(id)"):
        with pytest.raises(TargetError, match="not an IP address"):
            replay.scan([text], PORTS)
    with pytest.raises(TargetError, match="bad port"):
        replay.probe("127.88.0.2", [(0, "tcp")])
    assert replay.calls == []


def test_udp_needs_privilege_like_the_real_scanner() -> None:
    replay = ReplayScanner(LOOPBACK, {"127.0.0.2": {"53/udp": "domain"}}, privileged=False)
    with pytest.raises(ScannerError, match="UDP"):
        replay.scan(["127.0.0.2"], PORTS, udp=True)
    privileged = ReplayScanner(LOOPBACK, {"127.0.0.2": {(53, "udp"): "domain"}})
    result = privileged.scan(["127.0.0.2"], parse_ports("53"), udp=True, fingerprint="none")
    assert result.protocols == ["tcp", "udp"]
    assert [(p.port, p.proto) for p in result.hosts[0].ports] == [(53, "udp")]


def test_cancel_before_and_during_a_scan() -> None:
    replay = ReplayScanner(LOOPBACK, {"127.0.0.2": {22: "ssh"}}, latency=0.2)
    cancel = threading.Event()
    cancel.set()
    result = replay.scan(["127.0.0.2"], PORTS, cancel=cancel)
    assert result.outcome == "cancelled" and result.hosts == []
    with pytest.raises(ScanCancelled):
        replay.probe("127.0.0.2", [(22, "tcp")], cancel=cancel)
    with pytest.raises(ScanCancelled):
        replay.fingerprint("127.0.0.2", [(22, "tcp")], cancel=cancel)

    addresses = [f"127.0.0.{i}" for i in range(2, 12)]
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    result = replay.scan(addresses, PORTS, cancel=cancel)
    assert time.monotonic() - started < 0.6
    assert result.outcome == "cancelled"
    assert 1 <= len(result.hosts) < len(addresses)  # what finished is kept
    assert result.error.startswith("cancelled: ")


def test_network_changes_between_scans_and_failures() -> None:
    replay = ReplayScanner(LOOPBACK, {"127.0.0.2": {22: "ssh"}})
    assert replay.probe("127.0.0.2", [(22, "tcp"), (80, "tcp")]) == {(22, "tcp")}
    replay.open_port("127.0.0.2", 80, "http")
    assert replay.probe("127.0.0.2", [(22, "tcp"), (80, "tcp")]) == {(22, "tcp"), (80, "tcp")}
    replay.close_port("127.0.0.2", 22)
    found = replay.fingerprint("127.0.0.2", [(22, "tcp"), (80, "tcp")])
    assert (found[(22, "tcp")].state, found[(80, "tcp")].state) == ("closed", "open")
    assert found[(80, "tcp")].fingerprinted is True
    replay.set_network({"127.0.0.3": {443: "https"}})
    result = replay.scan(["127.0.0.2", "127.0.0.3"], PORTS, fingerprint="none")
    assert [(h.address, h.status, [p.port for p in h.ports]) for h in result.hosts] == [
        ("127.0.0.2", "down", []),
        ("127.0.0.3", "up", [443]),
    ]

    replay.fail("127.0.0.3", "nmap exited with status 1: boom")
    result = replay.scan(["127.0.0.2", "127.0.0.3"], PORTS)
    assert result.outcome == "partial" and "127.0.0.3: nmap exited" in result.error
    assert [h.address for h in result.hosts] == ["127.0.0.2"]  # not scanned is not closed
    with pytest.raises(ScannerError, match="boom"):
        replay.probe("127.0.0.3", [(443, "tcp")])
    replay.fail("127.0.0.3", None)
    assert replay.probe("127.0.0.3", [(443, "tcp")]) == {(443, "tcp")}


def test_replays_recorded_nmap_and_masscan_xml() -> None:
    recorded = (DATA / "nmap_loopback.xml").read_bytes()
    replay = ReplayScanner.from_xml(LOOPBACK, recorded)
    result = replay.scan(["127.0.0.2", "127.0.0.3", "127.0.0.4"], parse_ports("22,80,443,8080"))
    ports = {(h.address, p.port): p for h in result.hosts for p in h.ports}
    assert sorted(ports) == [
        ("127.0.0.2", 22),
        ("127.0.0.2", 80),
        ("127.0.0.3", 443),
        ("127.0.0.3", 8080),
    ]
    assert ports[("127.0.0.2", 80)].product == "nginx"
    down = result.host("127.0.0.4")
    assert down is not None and down.status == "down"

    # One recorded document per address: only that address is taken from each.
    replay.load_xml(
        {"127.0.0.3": recorded, "127.0.0.2": (DATA / "masscan_loopback.xml").read_bytes()}
    )
    again = replay.scan(["127.0.0.2", "127.0.0.3"], parse_ports("22,80,443,8080"))
    opened = sorted((h.address, p.port) for h in again.hosts for p in h.ports)
    assert opened == [("127.0.0.2", 22), ("127.0.0.2", 80), ("127.0.0.3", 443), ("127.0.0.3", 8080)]


# -- the real Monitor, end to end, no nmap ----------------------------------------------


def test_port_opening_between_cycles_becomes_a_finding(tmp_path: Path) -> None:
    monitor, network = replay_monitor(tmp_path, {"127.0.0.2": {22: "ssh"}})
    try:
        first = monitor.run_cycle(targets=["127.0.0.2"], ports="22,80,443")
        first.settle_fingerprint()  # -sV runs after detection, in the background
        assert {(c.kind, c.port) for c in first.changes} == {("host_up", None), ("port_opened", 22)}
        again = monitor.run_cycle(targets=["127.0.0.2"], ports="22,80,443")
        assert again.changes == [] and again.findings == []

        network.open_port("127.0.0.2", 80, Service("http", "nginx", "1.22.1"))
        second = monitor.run_cycle(targets=["127.0.0.2"], ports="22,80,443")
        assert [(c.kind, c.port) for c in second.changes] == [("port_opened", 80)]
        assert [(f.kind, f.port) for f in second.findings] == [("unapproved_port", 80)]
        assert second.approval_status["127.0.0.2:80/tcp"] == "unapproved"
        second.settle_fingerprint()
        # The sweep, then the confirm probe of the new port, then -sV on it alone.
        assert network.calls[-3:] == [
            ("scan", "127.0.0.2", "22,80,443"),
            ("probe", "127.0.0.2", "T:80"),
            ("fingerprint", "127.0.0.2", "T:80"),
        ]
        assert second.scan.host("127.0.0.2") is not None

        network.close_port("127.0.0.2", 80)
        third = monitor.run_cycle(targets=["127.0.0.2"], ports="22,80,443")
        assert [(c.kind, c.port) for c in third.changes] == [("port_closed", 80)]
    finally:
        monitor.close()


def test_port_that_flaps_before_the_confirm_is_not_a_finding(tmp_path: Path) -> None:
    monitor, network = replay_monitor(tmp_path, {"127.0.0.2": {22: "ssh"}})
    try:
        monitor.run_cycle(targets=["127.0.0.2"], ports="22,8080")
        network.open_port("127.0.0.2", 8080, "http-proxy")

        def close_after_sweep(kind: str, address: str, ports: str) -> None:
            if kind == "probe":
                network.close_port("127.0.0.2", 8080)

        network.on_call = close_after_sweep
        flapped = monitor.run_cycle(targets=["127.0.0.2"], ports="22,8080")
        assert flapped.changes == [] and flapped.findings == []
        assert flapped.unconfirmed == ["127.0.0.2:8080/tcp"]
    finally:
        monitor.close()


_NO_NMAP = """
import sys
from pathlib import Path
from tests.replay import replay_monitor
monitor, network = replay_monitor(Path(sys.argv[1]), {"127.0.0.2": {22: "ssh"}})
monitor.run_cycle(targets=["127.0.0.2"], ports="22,80")
network.open_port("127.0.0.2", 80, "http")
cycle = monitor.run_cycle(targets=["127.0.0.2"], ports="22,80")
monitor.close()
loaded = sorted(m for m in ("nmap", "portconsole.core.adapters.scanner") if m in sys.modules)
print([f.port for f in cycle.findings], loaded)
"""


def test_a_replayed_cycle_runs_no_nmap(tmp_path: Path) -> None:
    """In a fresh process: neither python-nmap nor the real scanner is even imported."""
    result = subprocess.run(
        [sys.executable, "-c", _NO_NMAP, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={"PATH": "/nonexistent", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "[80] []"


@pytest.mark.nmap
@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
def test_replay_and_real_results_have_the_same_shape() -> None:
    from portconsole.core.adapters.scanner import Scanner
    from portconsole.core.settings import ScanSettings
    from tests.fleet import TestFleet

    with TestFleet() as fleet:
        host = fleet.new_address()
        port = fleet.listen(host, "tcp")
        spec = PortSpec.of([port, fleet.closed_port(host)])
        real = Scanner(ScanSettings(), LOOPBACK).scan([host], spec, fingerprint="none")
    replay = ReplayScanner(LOOPBACK, {host: {port: "unknown"}})
    replayed = replay.scan([host], spec, fingerprint="none")

    def shape(result: ScanResult) -> dict[str, type]:
        return {k: type(v) for k, v in result.metadata_json().items()}

    assert shape(real) == shape(replayed)
    assert real.metadata_json()["ports"] == replayed.metadata_json()["ports"]
    assert (real.scan_type, real.privileged) == (replay.scan_type, replay.privileged)
    assert [(h.address, h.status, [p.key for p in h.ports]) for h in real.hosts] == [
        (h.address, h.status, [p.key for p in h.ports]) for h in replayed.hosts
    ]
    real_xml, replay_xml = parse_report(real.raw_xml[0]), parse_report(replayed.raw_xml[0])
    assert real_xml.args.split()[1:-1] == replay_xml.args.split()[1:-1]
