"""The store: real TinyDB files in tmp_path, ScanResults built directly (no nmap needed)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portconsole.core.adapters.nmapxml import ImportRefused, parse_nmap_xml
from portconsole.core.adapters.store import Store, load_scan_lines
from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult
from portconsole.core.domain.targets import Scope
from portconsole.core.errors import StoreError, TargetError
from portconsole.core.settings import RetentionSettings
from tests.projection_files import read_projection

DATA = Path(__file__).parent / "data"
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def obs(port: int, service: str = "", product: str = "", version: str = "", state: str = "open",
        proto: str = "tcp") -> PortObservation:  # fmt: skip
    return PortObservation(port, proto, state, service, product, version)


def make_scan(
    scan_id: str,
    at: datetime,
    hosts: dict[str, list[PortObservation] | None],
    *,
    addresses: list[str] | None = None,
    ports: str = "1-1024",
    outcome: str = "success",
    raw: list[bytes] | None = None,
) -> ScanResult:
    """`hosts`: address -> open ports, or None for a host reported down."""
    return ScanResult(
        scan_id=scan_id,
        started_at=at - timedelta(seconds=30),
        finished_at=at,
        nmap_version="7.93",
        scan_type="syn",
        privileged=True,
        targets=["127.0.0.0/28"],
        addresses=addresses if addresses is not None else list(hosts),
        ports=ports,
        protocols=["tcp"],
        hosts=[
            HostObservation(a, "down" if p is None else "up", "", list(p or []))
            for a, p in hosts.items()
        ],
        raw_xml=raw or [],
        outcome=outcome,
    )


def kinds(changes: list) -> list[tuple]:
    return sorted((c.kind, c.host, c.port) for c in changes)


def open_keys(store: Store, at: datetime, host: str | None = None) -> set[str]:
    return {p.key for p in store.state_at(at, host=host).open_ports}


def test_ingest_records_state_changes_and_private_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = Store(data_dir)
    xml = [b"<nmaprun>a</nmaprun>", b"<nmaprun>b</nmaprun>"]
    first = make_scan("s1", T0, {"127.0.0.2": [obs(22, "ssh"), obs(80, "http")]}, raw=xml)
    assert kinds(store.diff(first)) == [
        ("host_up", "127.0.0.2", None),
        ("port_opened", "127.0.0.2", 22),
        ("port_opened", "127.0.0.2", 80),
    ]
    assert store.current_ports() == []  # diff wrote nothing
    changes = store.ingest(first)
    assert (
        len(changes) == 3
        and store.diff(make_scan("s1b", T0, {"127.0.0.2": [obs(22), obs(80)]})) == []
    )
    ports = store.current_ports()
    assert [(p.port, p.state, p.first_seen, p.last_scan_id) for p in ports] == [
        (22, "open", T0, "s1"),
        (80, "open", T0, "s1"),
    ]
    [host] = store.hosts()
    assert (host.address, host.status, host.first_seen, host.last_scan_id) == (
        "127.0.0.2",
        "up",
        T0,
        "s1",
    )
    assert store.raw_xml("s1") == xml
    record = store.scan("s1")
    assert record is not None and record["addresses"] == ["127.0.0.2"]
    assert record["xml"] == "xml/2026-03/s1.xml.gz" and len(record["xml_sha256"]) == 2
    assert store.last_scan() == record
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for path in [
        data_dir / "hot.json",
        data_dir / "scans" / "2026-03.jsonl",
        data_dir / record["xml"],
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((data_dir / "scans").stat().st_mode) == 0o700
    # Re-opening sees everything.
    again = Store(data_dir)
    assert [p.key for p in again.current_ports()] == [p.key for p in ports]


def test_no_change_scan_appends_only_its_record(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ingest(make_scan("s1", T0, {"127.0.0.2": [obs(22, "ssh")]}))
    segment = tmp_path / "scans" / "2026-03.jsonl"
    before = load_scan_lines(segment)
    version = store.data_version()
    assert (
        store.ingest(make_scan("s2", T0 + timedelta(hours=1), {"127.0.0.2": [obs(22, "ssh")]}))
        == []
    )
    after = load_scan_lines(segment)
    assert after[: len(before)] == before
    assert [line["type"] for line in after[len(before) :]] == ["scan"]
    assert store.data_version() != version
    [port] = store.current_ports()
    assert (port.first_seen, port.last_seen, port.last_scan_id) == (
        T0,
        T0 + timedelta(hours=1),
        "s2",
    )


def test_point_in_time_across_scans(tmp_path: Path) -> None:
    store = Store(tmp_path)
    h2, h3 = "127.0.0.2", "127.0.0.3"
    t1, t2, t3, t4 = (T0 + timedelta(hours=i) for i in range(4))
    store.ingest(make_scan("s1", t1, {h2: [obs(22), obs(80)], h3: [obs(443)]}))
    store.ingest(make_scan("s2", t2, {h2: [obs(80), obs(8080)], h3: [obs(443)]}))
    store.ingest(make_scan("s3", t3, {h2: [obs(80), obs(8080)], h3: []}))
    store.ingest(make_scan("s4", t4, {h2: [obs(22), obs(80), obs(8080)], h3: [obs(443)]}))

    assert open_keys(store, t1 - timedelta(seconds=1)) == set()
    assert open_keys(store, t1) == {f"{h2}:22/tcp", f"{h2}:80/tcp", f"{h3}:443/tcp"}
    assert open_keys(store, t2 + timedelta(minutes=30)) == {
        f"{h2}:80/tcp",
        f"{h2}:8080/tcp",
        f"{h3}:443/tcp",
    }
    assert open_keys(store, t3) == {f"{h2}:80/tcp", f"{h2}:8080/tcp"}
    assert open_keys(store, t4) == {
        f"{h2}:22/tcp",
        f"{h2}:80/tcp",
        f"{h2}:8080/tcp",
        f"{h3}:443/tcp",
    }
    assert open_keys(store, t3, host=h3) == set()

    at_t3 = {p.key: p for p in store.state_at(t3 + timedelta(minutes=5)).open_ports}
    port80 = at_t3[f"{h2}:80/tcp"]
    assert (port80.first_seen, port80.last_seen_scan_id, port80.covered) == (t1, "s3", True)
    # 22 reopened at t4: a new open period.
    reopened = {p.key: p for p in store.state_at(t4).open_ports}[f"{h2}:22/tcp"]
    assert (reopened.first_seen, reopened.last_seen_scan_id) == (t4, "s4")

    history = store.history(h2, 22, "tcp")
    assert [(e.kind, e.at, e.scan_id) for e in history] == [
        ("port_opened", t1, "s1"),
        ("port_closed", t2, "s2"),
        ("port_opened", t4, "s4"),
    ]
    assert [e.kind for e in store.history(h3)] == [
        "host_up",
        "port_opened",
        "port_closed",
        "port_opened",
    ]
    assert [s["scan_id"] for s in store.scans()] == ["s1", "s2", "s3", "s4"]
    assert [s["scan_id"] for s in store.scans(since=t2, until=t3)] == ["s2", "s3"]
    assert len(store.events(since=t2, until=t2)) == 2  # 22 closed, 8080 opened


def test_not_covered_is_not_closed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    h2, h3, h4 = "127.0.0.2", "127.0.0.3", "127.0.0.4"
    store.ingest(make_scan("s1", T0, {h2: [obs(22), obs(8080)], h3: [obs(22)], h4: [obs(22)]}))
    # Port spec 1-1024 does not cover 8080; h3 is not in this scan's addresses.
    later = T0 + timedelta(hours=1)
    changes = store.ingest(make_scan("s2", later, {h2: [], h4: None}, ports="1-1024"))
    assert kinds(changes) == [("host_down", h4, None), ("port_closed", h2, 22)]
    keys = {p.key for p in store.current_ports()}
    assert keys == {f"{h2}:8080/tcp", f"{h3}:22/tcp", f"{h4}:22/tcp"}  # down host: ports unknown
    # A cancelled scan that planned h3 but never reported it closes nothing.
    cancelled = make_scan(
        "s3",
        later + timedelta(minutes=5),
        {h2: [obs(8080)]},
        addresses=[h2, h3],
        outcome="cancelled",
    )
    assert store.ingest(cancelled) == []
    assert f"{h3}:22/tcp" in {p.key for p in store.current_ports()}
    # A successful scan that planned h3 and got no answer marks it down, ports still unknown.
    assert kinds(store.ingest(make_scan("s4", later + timedelta(minutes=10), {h2: [obs(8080)]},
                                        addresses=[h2, h3]))) == [("host_down", h3, None)]  # fmt: skip

    window = timedelta(hours=2)
    point = store.state_at(T0 + timedelta(hours=5), coverage_window=window)
    by_key = {p.key: p for p in point.open_ports}
    assert by_key[f"{h3}:22/tcp"].covered is False
    assert by_key[f"{h3}:22/tcp"].last_seen_scan_id == "s1"
    uncovered = {(u.host, u.port): u for u in point.uncovered}
    assert uncovered[(h3, 22)].last_covered == T0
    assert uncovered[(h2, 8080)].last_scan_id == "s4"  # seen at 12:10 > 2 h before 17:00
    assert {h.address: h.status for h in point.hosts} == {h2: "up", h3: "down", h4: "down"}
    assert store.covered(h2, 22, "tcp", later, timedelta(minutes=5)) == "s2"
    assert store.covered(h2, 8080, "tcp", later, timedelta(minutes=5)) is None  # outside spec
    assert store.covered(h3, 22, "tcp", later, timedelta(minutes=5)) is None  # not in scan
    assert store.covered(h2, 22, "udp", later, timedelta(minutes=5)) is None


def test_service_changes_compare_fingerprinted_observations_only(tmp_path: Path) -> None:
    store = Store(tmp_path)
    host = "127.0.0.2"
    at = [T0 + timedelta(hours=i) for i in range(5)]
    store.ingest(make_scan("s1", at[0], {host: [obs(80, "http")]}))  # sweep
    # The first fingerprint identifies the service: no change, an internal event.
    assert store.ingest(make_scan("s2", at[1], {host: [obs(80, "http", "nginx", "1.22.1")]})) == []
    assert store.ingest(make_scan("s3", at[2], {host: [obs(80, "http")]})) == []  # sweep again
    [port] = store.current_ports()
    assert (port.product, port.version, port.fingerprinted_at) == ("nginx", "1.22.1", at[1])
    changes = store.ingest(make_scan("s4", at[3], {host: [obs(80, "http", "nginx", "1.25.3")]}))
    assert [(c.kind, (c.before or {})["version"], (c.after or {})["version"]) for c in changes] == [
        ("service_changed", "1.22.1", "1.25.3")
    ]
    assert [e.kind for e in store.history(host, 80)] == ["port_opened", "service_changed"]
    assert [e.kind for e in store.history(host, 80, identified=True)] == [
        "port_opened",
        "service_identified",
        "service_changed",
    ]
    [at_s2] = store.state_at(at[1]).open_ports
    assert at_s2.version == "1.22.1"
    [at_s0] = store.state_at(at[0]).open_ports
    assert (at_s0.product, at_s0.fingerprinted_at) == ("", None)


def test_duplicate_and_out_of_order_scans(tmp_path: Path) -> None:
    store = Store(tmp_path)
    h2, h3 = "127.0.0.2", "127.0.0.3"
    store.ingest(make_scan("s1", T0, {h2: [obs(22)]}))
    with pytest.raises(StoreError, match="s1 is already stored"):
        store.ingest(make_scan("s1", T0 + timedelta(hours=1), {h2: []}))
    with pytest.raises(StoreError, match="scan id"):
        store.ingest(make_scan("../escape", T0 + timedelta(hours=1), {h2: []}))
    # A report from another site that finished earlier changes only the hosts it is newest for.
    store.ingest(make_scan("s2", T0 + timedelta(hours=2), {h2: [obs(22)]}))
    late = make_scan("site-b", T0 + timedelta(hours=1), {h2: [], h3: [obs(443)]})
    assert kinds(store.ingest(late)) == [("host_up", h3, None), ("port_opened", h3, 443)]
    assert (store.scan("site-b") or {})["stale"] == [h2]
    assert {p.key for p in store.current_ports()} == {f"{h2}:22/tcp", f"{h3}:443/tcp"}
    store.ingest(make_scan("s5", T0 + timedelta(days=40), {h2: [obs(22)]}))
    # A report from a month before the newest history is kept (a late line in the newest
    # segment): it is history, never the current state, and later scans still apply.
    assert store.ingest(make_scan("old", T0 + timedelta(days=1), {h2: []})) == []
    assert (store.scan("old") or {})["stale"] == [h2]
    assert "old" in [r["scan_id"] for r in store.scans(until=T0 + timedelta(days=2))]
    assert {p.key for p in store.current_ports()} == {f"{h2}:22/tcp", f"{h3}:443/tcp"}
    assert kinds(store.ingest(make_scan("s6", T0 + timedelta(days=41), {h2: []}))) == [
        ("port_closed", h2, 22)
    ]


def test_bulk_ingest_writes_the_same_files_as_ingest(tmp_path: Path) -> None:
    scans = [
        make_scan(
            f"s{i}",
            T0 + timedelta(days=7 * i),
            {"127.0.0.2": [obs(22), obs(80 + i % 3)], "127.0.0.3": [obs(443)] if i % 2 else None},
            raw=[f"<x>{i}</x>".encode()],
        )
        for i in range(12)
    ]
    one, bulk = Store(tmp_path / "one"), Store(tmp_path / "bulk")
    for scan in scans:
        one.ingest(scan)
    assert bulk.bulk_ingest(scans) == len(scans)
    # The projection's shard files are content-addressed: ingest leaves earlier versions
    # for a while (lock-free readers); what the manifests name is compared instead.
    files_one = sorted(
        p.relative_to(tmp_path / "one")
        for p in (tmp_path / "one").rglob("*")
        if p.is_file() and p.parent.name != "hot"
    )
    files_bulk = sorted(
        p.relative_to(tmp_path / "bulk")
        for p in (tmp_path / "bulk").rglob("*")
        if p.is_file() and p.parent.name != "hot"
    )
    assert files_one == files_bulk
    for relative in files_one:
        if relative.parts[0] == "journal":
            continue  # event ids and times differ; the chunks they vouch for do not
        one_bytes = (tmp_path / "one" / relative).read_bytes()
        bulk_bytes = (tmp_path / "bulk" / relative).read_bytes()
        if relative.name == "hot.json":
            one_data = read_projection(tmp_path / "one")
            bulk_data = read_projection(tmp_path / "bulk")
            one_data.pop("journal"), bulk_data.pop("journal")
            assert one_data == bulk_data
            assert json.loads(one_bytes)["files"] == json.loads(bulk_bytes)["files"]
            continue
        assert one_bytes == bulk_bytes, relative


def test_a_damaged_cache_is_rebuilt_from_the_journal_and_kept_aside(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ingest(make_scan("s1", T0, {"127.0.0.2": [obs(22)]}))
    hot = tmp_path / "hot.json"
    damaged = hot.read_bytes()[:-40]
    hot.write_bytes(damaged)
    reopened = Store(tmp_path)
    assert [p.key for p in reopened.current_ports()] == ["127.0.0.2:22/tcp"]
    copies = list(tmp_path.glob("hot.json.corrupt-*"))
    assert copies and all(c.read_bytes() == damaged for c in copies)
    assert reopened.check() == []
    reopened.ingest(make_scan("s2", T0 + timedelta(hours=1), {"127.0.0.2": []}))
    assert reopened.current_ports() == []


def test_truncated_or_corrupt_segment_names_it(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for i in range(3):
        store.ingest(make_scan(f"s{i}", T0 + timedelta(hours=i), {"127.0.0.2": [obs(22 + i % 2)]}))
    segment = tmp_path / "scans" / "2026-03.jsonl"
    good = segment.read_bytes()
    segment.write_bytes(good[:-30])
    with pytest.raises(StoreError, match=f"{segment}.*truncated"):
        Store(tmp_path)
    segment.write_bytes(good.replace(b'"port_opened"', b'"port_opened\x00', 1))
    reader = Store(tmp_path)
    with pytest.raises(StoreError, match=f"{segment}.*corrupt"):
        reader.history("127.0.0.2")
    assert list(tmp_path.glob("scans/2026-03.jsonl.corrupt-*"))
    assert segment.read_bytes() != good  # left as found for someone to look at


def test_import_nmap_xml(tmp_path: Path) -> None:
    data = (DATA / "nmap_loopback.xml").read_bytes()
    scan = parse_nmap_xml(data, Scope())
    assert scan.imported and scan.scan_type == "imported" and scan.origin == "import"
    assert (scan.ports, scan.protocols, scan.nmap_version, scan.outcome) == (
        "22,80,443,8080",
        ["tcp"],
        "7.93",
        "success",
    )
    assert scan.finished_at == datetime(2026, 5, 27, 10, 0, 14, tzinfo=UTC)
    store = Store(tmp_path)
    changes = store.ingest(scan)
    assert kinds(changes) == [
        ("host_up", "127.0.0.2", None),
        ("host_up", "127.0.0.3", None),
        ("port_opened", "127.0.0.2", 22),
        ("port_opened", "127.0.0.2", 80),
        ("port_opened", "127.0.0.3", 443),
        ("port_opened", "127.0.0.3", 8080),
    ]
    ports = {p.key: p for p in store.current_ports()}
    assert ports["127.0.0.2:80/tcp"].product == "nginx"
    assert ports["127.0.0.3:8080/tcp"].fingerprinted_at is None  # services-table name only
    record = store.scan(scan.scan_id)
    assert record is not None and record["imported"] is True
    assert store.raw_xml(scan.scan_id) == [data]
    with pytest.raises(StoreError, match="already imported"):
        store.ingest(parse_nmap_xml(data, Scope()))


def test_import_refuses_out_of_scope_and_entities(tmp_path: Path) -> None:
    data = (DATA / "nmap_loopback.xml").read_bytes()
    outside = data.replace(b'addr="127.0.0.3"', b'addr="192.0.2.7"')
    with pytest.raises(TargetError, match="192.0.2.7"):
        parse_nmap_xml(outside, Scope())
    bomb = (
        b'<?xml version="1.0"?>\n<!DOCTYPE nmaprun [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n'
        b'<nmaprun start="1779876000" version="7.93"><host><address addr="127.0.0.2" '
        b'addrtype="ipv4"/><hostnames><hostname name="&c;"/></hostnames></host></nmaprun>'
    )
    with pytest.raises(ImportRefused, match="entities"):
        parse_nmap_xml(bomb, Scope())
    external = (
        b'<?xml version="1.0"?>\n<!DOCTYPE nmaprun [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        b"<nmaprun><host>&x;</host></nmaprun>"
    )
    with pytest.raises(ImportRefused):
        parse_nmap_xml(external, Scope())
    with pytest.raises(ImportRefused, match="not <nmaprun>"):
        parse_nmap_xml(b"<html/>", Scope())


def test_prune_drops_whole_old_months_only(tmp_path: Path) -> None:
    store = Store(tmp_path, RetentionSettings(scan_months=3, raw_xml_months=2))
    approvals = store.hot.table("approvals")
    with store.lock.hold():
        approvals.insert({"host": "127.0.0.2", "port": 22, "proto": "tcp"})
    start = datetime(2025, 1, 15, tzinfo=UTC)
    for month in range(8):  # Jan..Aug 2025; port 8000+month opens each month
        at = start + timedelta(days=31 * month)
        ports = [obs(22), obs(8000 + month)]
        store.ingest(
            make_scan(f"m{month}", at, {"127.0.0.2": ports}, ports="1-9000", raw=[b"<x/>"])
        )
    now = datetime(2025, 8, 20, tzinfo=UTC)
    assert len(list((tmp_path / "scans").glob("*.jsonl"))) == 8
    removed = store.prune(now)
    # Scan history kept for months ending within 3 months of now: May..Aug.
    assert sorted(p.stem for p in (tmp_path / "scans").glob("*.jsonl")) == [
        "2025-05",
        "2025-06",
        "2025-07",
        "2025-08",
    ]
    assert sorted(p.name for p in (tmp_path / "xml").iterdir()) == ["2025-06", "2025-07", "2025-08"]
    assert removed == {"scan_months": 4, "xml_months": 5, "xml_files": 5}
    assert approvals.all() == [{"host": "127.0.0.2", "port": 22, "proto": "tcp"}]
    # Answers after the cut are complete: the May checkpoint carries April's state.
    early_may = store.state_at(datetime(2025, 5, 5, tzinfo=UTC))  # before May's scan (18th)
    assert {p.port for p in early_may.open_ports} == {22, 8003}
    may = store.state_at(datetime(2025, 5, 20, tzinfo=UTC))
    assert {p.port for p in may.open_ports} == {22, 8004}
    assert may.history_starts == datetime(2025, 5, 1, tzinfo=UTC)
    assert store.state_at(datetime(2025, 3, 1, tzinfo=UTC)).open_ports == []
    assert store.raw_xml("m4") == []  # May XML pruned, record kept
    assert store.scan("m4") is not None
    assert Store(tmp_path).prune(now) == {"scan_months": 0, "xml_months": 0, "xml_files": 0}


def test_shared_tables_see_other_instances_writes(tmp_path: Path) -> None:
    first, second = Store(tmp_path), Store(tmp_path)
    table_a, table_b = first.hot.table("approvals"), second.hot.table("approvals")
    for i in range(3):
        with first.lock.hold():
            table_a.insert({"n": i, "by": "a"})
        assert len(table_b.all()) == 2 * i + 1  # no stale query cache
        with second.lock.hold():
            table_b.insert({"n": i, "by": "b"})  # no stale next id
    assert len(table_a.all()) == 6
    # The store's own writes keep the other tables.
    first.ingest(make_scan("s1", T0, {"127.0.0.2": [obs(22)]}))
    assert len(table_b.all()) == 6
    data = read_projection(tmp_path)
    assert set(data) >= {"approvals", "hosts", "ports", "meta"}


def test_crashed_append_past_commit_is_cut_off(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ingest(make_scan("s1", T0, {"127.0.0.2": [obs(22)]}))
    segment = tmp_path / "scans" / "2026-03.jsonl"
    committed = segment.read_bytes()
    with segment.open("ab") as handle:  # what a writer killed before its commit leaves
        handle.write(b'{"type":"scan","scan_id":"ghost","finished')
    assert [s["scan_id"] for s in store.scans()] == ["s1"]  # readers stop at the commit
    Store(tmp_path)
    assert segment.read_bytes() == committed
    # A month segment started by a crashed ingest is removed; older strays are kept aside.
    (tmp_path / "scans" / "2026-04.jsonl").write_bytes(b'{"type":"checkpoint"')
    (tmp_path / "scans" / "2026-01.jsonl").write_bytes(b"{}\n")
    Store(tmp_path)
    assert not (tmp_path / "scans" / "2026-04.jsonl").exists()
    assert list((tmp_path / "scans").glob("2026-01.jsonl.uncommitted-*"))


def test_closed_rows_leave_the_hot_file_after_a_day(tmp_path: Path) -> None:
    store = Store(tmp_path)
    host = "127.0.0.2"
    store.ingest(make_scan("s1", T0, {host: [obs(22), obs(80)]}))
    store.ingest(make_scan("s2", T0 + timedelta(hours=1), {host: [obs(22)]}))
    closed = [p for p in store.current_ports(host, open_only=False) if p.state == "closed"]
    assert [(p.port, p.last_seen) for p in closed] == [(80, T0)]
    store.ingest(make_scan("s3", T0 + timedelta(hours=26), {host: [obs(22)]}))
    assert [p.port for p in store.current_ports(host, open_only=False)] == [22]
    assert [e.kind for e in store.history(host, 80)] == ["port_opened", "port_closed"]
    assert store.state_at(T0 - timedelta(days=1)).open_ports == []
    (tmp_path / ".hot.json.abc.tmp").write_bytes(b"half")
    Store(tmp_path)
    assert not (tmp_path / ".hot.json.abc.tmp").exists()


def test_answers_do_not_depend_on_where_checkpoints_fall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint inside the month gives the answers replaying from the month's start
    gives, late reports (appended after a checkpoint, finished before it) included."""
    import random

    import portconsole.core.adapters.store as store_module

    rng = random.Random(3)
    hosts = [f"127.0.0.{i}" for i in range(2, 8)]
    open_now: dict[str, set[int]] = {h: {22} for h in hosts}
    scans = []
    for step in range(60):
        at = T0 + timedelta(hours=2 * step)
        for address in hosts:
            port = rng.choice([22, 80, 443, 8080])
            open_now[address] ^= {port}
        late = step % 9 == 8  # a report from another site that finished earlier
        finished = at - timedelta(hours=3) if late else at
        reported = {
            h: None
            if rng.random() < 0.1
            else [obs(p, "http", "nginx" if rng.random() < 0.3 else "") for p in open_now[h]]
            for h in hosts
            if rng.random() < 0.9
        }
        scans.append(make_scan(f"s{step}", finished, reported, addresses=hosts, ports="1-9000"))
    answers = []
    for name, every in (("monthly", 1 << 40), ("often", 1)):
        monkeypatch.setattr(store_module, "CHECKPOINT_MIN_BYTES", every)
        store = Store(tmp_path / name)
        for scan in scans:
            store.ingest(scan)
        segment = tmp_path / name / "scans" / "2026-03.jsonl"
        checkpoints = [line for line in load_scan_lines(segment) if line["type"] == "checkpoint"]
        assert len(checkpoints) == 1 if name == "monthly" else len(checkpoints) > 30
        answers.append(
            [
                store.state_at(T0 + timedelta(minutes=50 * i), host=host).to_json()
                for i in range(0, 150)
                for host in (None, "127.0.0.3")
            ]
        )
    assert answers[0] == answers[1]
