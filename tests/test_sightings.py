"""The fleet's open-port sightings, kept compact by shard file: the same answers as reading
each host's rows, and a read after a small change parses only the shards it changed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from portconsole.core.adapters.sightings import HostSightings, host_sightings
from portconsole.core.adapters.store import Store
from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult
from portconsole.core.timeutil import utcnow


def _scan(scan_id: str, hosts: dict[str, list[PortObservation]], moment) -> ScanResult:  # type: ignore[no-untyped-def]
    return ScanResult(
        scan_id=scan_id,
        started_at=moment - timedelta(seconds=5),
        finished_at=moment,
        nmap_version="7.93",
        scan_type="syn",
        privileged=True,
        targets=list(hosts),
        addresses=list(hosts),
        ports="22,53,8000-8010,38412",
        protocols=["tcp", "udp", "sctp"],
        hosts=[HostObservation(a, "up", "", ports) for a, ports in hosts.items()],
    )


def _fleet() -> dict[str, list[PortObservation]]:
    fleet = {}
    for block in range(3):
        for host in range(1, 5):
            ports = [PortObservation(22, "tcp", "open", "ssh", "", "")]
            ports += [PortObservation(8000 + host, "tcp", "open", "http", "", "")]
            if host == 2:
                ports.append(PortObservation(53, "udp", "open", "domain", "", ""))
            if host == 3:
                ports.append(PortObservation(38412, "sctp", "open", "", "", ""))
            fleet[f"127.{block}.0.{host}"] = ports
    return fleet


def test_the_whole_fleet_read_answers_as_each_host_read(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    first = utcnow() - timedelta(minutes=10)
    fleet = _fleet()
    store.ingest(_scan("s1", fleet, first))
    # Block 1 seen again later, one port of it gone: its hosts' sightings now differ by port.
    later = dict(list(fleet.items())[4:8])
    later["127.1.0.1"] = later["127.1.0.1"][:1]
    store.ingest(_scan("s2", later, first + timedelta(minutes=5)))

    whole = store.open_port_sightings()
    each = store.open_port_sightings(list(fleet))
    assert whole == each  # Mapping equality: the same ports, times and scan ids
    assert set(whole) == set(fleet)
    assert isinstance(whole["127.0.0.2"], HostSightings)
    assert dict(whole["127.0.0.2"]) == {
        (22, "tcp"): (first, "s1"),
        (8002, "tcp"): (first, "s1"),
        (53, "udp"): (first, "s1"),
    }
    assert whole["127.1.0.1"].get((8001, "tcp")) is None  # closed by s2
    assert len(whole["127.1.0.3"]) == 3 and (38412, "sctp") in whole["127.1.0.3"]
    for port in store.current_ports():
        assert whole[port.host][(port.port, port.proto)] == (port.last_seen, port.last_scan_id)


def test_a_read_after_a_small_change_reuses_the_untouched_shards(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    moment = utcnow() - timedelta(minutes=10)
    fleet = _fleet()
    store.ingest(_scan("s1", fleet, moment))
    before = store.open_port_sightings()
    store.ingest(_scan("s2", {"127.2.0.1": fleet["127.2.0.1"]}, moment + timedelta(minutes=1)))
    after = store.open_port_sightings()
    assert after["127.0.0.1"] is before["127.0.0.1"]  # its shard was not parsed again
    assert after["127.2.0.1"] is not before["127.2.0.1"]
    assert after["127.2.0.1"][(22, "tcp")] == (moment + timedelta(minutes=1), "s2")
    assert after["127.2.0.2"][(22, "tcp")] == (moment, "s1")


def test_an_uncommon_protocol_is_answered_too() -> None:
    rows = {
        "22/tcp": ["open", "ssh", "", "", "", "t0", "2026-11-01T00:00:00Z", "s1", None, None],
        "0/ip": ["open", "", "", "", "", "t0", "2026-11-01T00:00:00Z", "s1", None, None],
        "23/tcp": ["closed", "", "", "", "", "t0", "2026-11-01T00:00:00Z", "s1", None, None],
    }
    seen = host_sightings(rows, times=str)
    assert dict(seen) == {
        (22, "tcp"): ("2026-11-01T00:00:00Z", "s1"),
        (0, "ip"): ("2026-11-01T00:00:00Z", "s1"),
    }
