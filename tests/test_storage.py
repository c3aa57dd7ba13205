"""The shared TinyDB table (fresh ids across processes, distinct ids within one write) and
the projection cache's shard files (adapters/shards.py)."""

from __future__ import annotations

import json
import shutil
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from portconsole.core.adapters import shards
from portconsole.core.adapters.shards import Projection
from portconsole.core.adapters.storage import DataLock, open_tinydb
from portconsole.core.adapters.store import Store
from portconsole.core.errors import StoreError
from tests.projection_files import read_projection
from tests.replay import replay_monitor
from tests.test_store import T0, make_scan, obs


def test_insert_multiple_gives_every_document_its_own_id(tmp_path: Path) -> None:
    db = open_tinydb(tmp_path / "hot.json")
    lock = DataLock(tmp_path / "store.lock")
    with lock.hold():
        ids = db.table("outbox").insert_multiple([{"n": 1}, {"n": 2}, {"n": 3}])
    assert len(set(ids)) == 3
    assert sorted(d["n"] for d in db.table("outbox").all()) == [1, 2, 3]


def test_two_instances_never_reuse_an_id(tmp_path: Path) -> None:
    first = open_tinydb(tmp_path / "hot.json")
    second = open_tinydb(tmp_path / "hot.json")
    lock = DataLock(tmp_path / "store.lock")
    with lock.hold():
        first.table("t").insert({"by": "first"})
        second.table("t").insert({"by": "second"})
        first.table("t").insert_multiple([{"by": "first"}, {"by": "first"}])
        second.table("t").insert({"by": "second"})
    docs = first.table("t").all()
    assert len(docs) == 5
    assert len({d.doc_id for d in docs}) == 5


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    # Writing a report into a shared folder (say /tmp) must not lock others out of it.
    import stat

    from portconsole.core.adapters.storage import atomic_write_bytes

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    atomic_write_bytes(shared / "report.html", b"<html></html>")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    fresh = tmp_path / "fresh" / "data"
    atomic_write_bytes(fresh / "hot.json", b"{}")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE((fresh / "hot.json").stat().st_mode) == 0o600


# --------------------------------------------------------------------------- the projection's shards


def _three_blocks(tmp_path: Path) -> Store:
    store = Store(tmp_path)
    fleet = {f"127.0.{block}.{host}": [obs(22), obs(80)] for block in (1, 2, 3) for host in (5, 6)}
    store.ingest(make_scan("s0", T0, fleet))
    return store


def _manifest(data_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((data_dir / "hot.json").read_bytes())
    return data


def test_a_small_scan_reads_and_writes_only_its_blocks(tmp_path: Path) -> None:
    store = _three_blocks(tmp_path)
    before = _manifest(tmp_path)["files"]
    assert {"hosts.127.0.1", "ports.127.0.2", "meta"} <= set(before)
    # Other blocks' files damaged in place (same size): reading one would fail the hash.
    for shard in ("hosts.127.0.1", "ports.127.0.1", "hosts.127.0.3", "ports.127.0.3"):
        path = tmp_path / "hot" / before[shard][0]
        path.write_bytes(path.read_bytes().replace(b"127", b"721"))
    store.ingest(make_scan("s1", T0 + timedelta(hours=1), {"127.0.2.5": [obs(22), obs(80)]}))
    after = _manifest(tmp_path)["files"]
    changed = {shard for shard in after if after[shard] != before.get(shard)}
    assert changed == {"hosts.127.0.2", "ports.127.0.2", "meta"}
    assert [p.key for p in store.current_ports(hosts=["127.0.2.5", "127.0.2.9"])] == [
        "127.0.2.5:22/tcp",
        "127.0.2.5:80/tcp",
    ]


def test_a_snapshot_after_a_small_change_parses_only_the_changed_shards(tmp_path: Path) -> None:
    store = _three_blocks(tmp_path)
    first = store._snapshot()
    old = {address: first.ports[address] for address in first.ports}
    store.ingest(make_scan("s1", T0 + timedelta(hours=1), {"127.0.2.5": [obs(22)]}))
    second = store._snapshot()
    assert second is not first
    same = {address for address in second.ports if second.ports[address] is old[address]}
    assert same == {"127.0.1.5", "127.0.1.6", "127.0.3.5", "127.0.3.6"}
    assert second.ports["127.0.2.5"]["ports"]["80/tcp"][0] == "closed"


def test_files_a_manifest_stopped_naming_stay_for_readers_then_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _three_blocks(tmp_path)
    reader = store.storage.load(shared=True)  # a lock-free reader of this manifest
    assert isinstance(reader, Projection)
    old = _manifest(tmp_path)
    store.ingest(make_scan("s1", T0 + timedelta(hours=1), {"127.0.2.5": [obs(22)]}))
    retired = set(_manifest(tmp_path)["retired"])
    assert retired and all((tmp_path / "hot" / name).exists() for name in retired)
    assert reader["ports"]["127.0.2.5"]["ports"]["80/tcp"][0] == "open"  # its own version
    # Two minutes on, the next write deletes them; a reader still on the old manifest
    # re-reads the new one.
    monkeypatch.setattr(shards, "RETIRE_SECONDS", -1.0)
    store.ingest(make_scan("s2", T0 + timedelta(hours=2), {"127.0.3.5": [obs(22)]}))
    files = {p.name for p in (tmp_path / "hot").iterdir()}
    now = _manifest(tmp_path)
    assert files == {entry[0] for entry in now["files"].values()} | set(now["retired"])
    assert not retired & files
    late = Projection(tmp_path / "hot", old, {}, reload=store.storage._manifest)
    assert late["ports"]["127.0.2.5"]["ports"]["80/tcp"][0] == "closed"


def test_a_missing_or_damaged_shard_is_rebuilt_from_the_journal(tmp_path: Path) -> None:
    _three_blocks(tmp_path)
    files = _manifest(tmp_path)["files"]
    (tmp_path / "hot" / files["ports.127.0.2"][0]).unlink()
    reopened = Store(tmp_path)
    assert len(reopened.current_ports()) == 12
    assert list(tmp_path.glob("hot.json.corrupt-*"))
    assert reopened.check() == []
    # The same size, other bytes: the read names the shard, the next operation rebuilds.
    files = _manifest(tmp_path)["files"]
    shard = tmp_path / "hot" / files["hosts.127.0.1"][0]
    shard.write_bytes(shard.read_bytes().replace(b'"up"', b'"dn"'))
    fresh = Store(tmp_path)  # opening checks names and sizes, not every byte
    with pytest.raises(StoreError, match="damaged"):
        fresh.hosts()
    assert list((tmp_path / "hot").glob("*.corrupt-*"))
    again = Store(tmp_path)
    assert {h.status for h in again.hosts()} == {"up"} and len(again.hosts()) == 6
    assert again.check() == []


def test_a_single_file_cache_of_the_earlier_format_is_converted_once(tmp_path: Path) -> None:
    store = _three_blocks(tmp_path)
    with store.lock.hold():
        store.hot.table("approvals").insert({"id": "A-000001", "port": 22})
    tables = read_projection(tmp_path)
    events = len(list(store.journal.records()))
    # What hot.json was before shards: every table in one file, naming its journal position.
    old = {name: table for name, table in tables.items() if name not in ("hosts", "ports")}
    old["hosts"] = {str(i): doc for i, doc in enumerate(tables["hosts"].values(), start=1)}
    old["ports"] = {str(i): doc for i, doc in enumerate(tables["ports"].values(), start=1)}
    shutil.rmtree(tmp_path / "hot")
    (tmp_path / "hot.json").write_text(json.dumps(old))
    converted = Store(tmp_path)
    assert _manifest(tmp_path)["format"] == 2
    assert read_projection(tmp_path) == tables
    assert len(list(converted.journal.records())) == events  # a cache converted, nothing recorded
    assert len(converted.current_ports()) == 12
    assert converted.check() == []
    assert [d["id"] for d in converted.hot.table("approvals").all()] == ["A-000001"]


def test_the_projection_is_written_only_inside_a_transaction(tmp_path: Path) -> None:
    store = _three_blocks(tmp_path)
    with pytest.raises(StoreError, match="transaction"):
        store.hot.table("approvals").insert({"id": "A-1"})
    assert stat.S_IMODE((tmp_path / "hot").stat().st_mode) == 0o700
    for path in (tmp_path / "hot").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_cycle_over_one_block_reads_only_that_block(tmp_path: Path) -> None:
    monitor, _network = replay_monitor(tmp_path, {f"127.0.{b}.5": {22: "ssh"} for b in (1, 2, 3)})
    # No -sV: nothing of this cycle runs on in the background while the files are damaged.
    monitor.run_cycle(
        targets=["127.0.1.5", "127.0.2.5", "127.0.3.5"], ports="22", fingerprint="none"
    )
    data = monitor.paths.data_dir
    before = _manifest(data)["files"]
    for shard in ("hosts.127.0.1", "ports.127.0.1", "hosts.127.0.3", "ports.127.0.3"):
        path = data / "hot" / before[shard][0]  # reading one now fails its hash
        path.write_bytes(path.read_bytes().replace(b"127", b"721"))
    result = monitor.run_cycle(targets=["127.0.2.5"], ports="22", fingerprint="none")
    assert result.changes == []
    after = _manifest(data)["files"]
    changed = {shard for shard in after if after[shard] != before.get(shard)}
    assert {"hosts.127.0.2", "ports.127.0.2"} <= changed
    assert not any(".127.0.1" in shard or ".127.0.3" in shard for shard in changed)


def test_a_console_read_of_the_state_matches_the_port_states_and_skips_scan_events(
    tmp_path: Path,
) -> None:
    """`open_port_sightings` (what a console snapshot reads of every port) agrees with
    `current_ports`, and `last_scan` reads the scan's record without its change events."""
    store = _three_blocks(tmp_path)
    later = T0 + timedelta(hours=1)
    store.ingest(make_scan("s1", later, {"127.0.2.5": [obs(22)], "127.0.2.6": [obs(22), obs(80)]}))
    seen = store.open_port_sightings()
    assert {
        (host, port, proto, when, scan_id)
        for host, ports in seen.items()
        for (port, proto), (when, scan_id) in ports.items()
    } == {(p.host, p.port, p.proto, p.last_seen, p.last_scan_id) for p in store.current_ports()}
    assert seen["127.0.2.5"] == {(22, "tcp"): (later, "s1")}  # 80 closed: not an open port
    assert set(store.open_port_sightings(["127.0.1.5", "127.0.9.9"])) == {"127.0.1.5"}
    assert [p.key for p in store.current_ports()][:3] == [
        "127.0.1.5:22/tcp",
        "127.0.1.5:80/tcp",
        "127.0.1.6:22/tcp",
    ]
    store._segments.clear()
    record = store.last_scan()
    assert record is not None and record["scan_id"] == "s1"
    hot = store._snapshot()
    found = store._find_scan(hot, "s1")
    assert found is not None and found[1].value is None  # the events were not parsed
    full = found[0].record(found[1])
    assert record == {**full, "addresses": record["addresses"]}


def test_findings_held_as_one_shard_are_split_by_the_first_finding_write(tmp_path: Path) -> None:
    from portconsole.core.adapters.findings import FindingBook
    from portconsole.core.domain.finding import FindingCandidate

    def seen(port: int, scan: str) -> FindingCandidate:
        return FindingCandidate("unapproved_port", "127.0.0.9", port, "tcp", "x", "high", scan)

    store = Store(tmp_path)
    FindingBook(store.hot, store.lock).raise_candidates([seen(p, "S-1") for p in (21, 22)], T0)
    # An earlier version's manifest: the findings table as one shard file.
    manifest = _manifest(tmp_path)
    docs = read_projection(tmp_path)["findings"]
    data = shards.encode(docs)
    name = shards.file_name("findings", data)
    (tmp_path / "hot" / name).write_bytes(data)
    files = {s: e for s, e in manifest["files"].items() if not s.startswith("findings.")}
    manifest["files"] = files | {"findings": [name, len(data)]}
    (tmp_path / "hot.json").write_bytes(shards.encode(manifest))
    reopened = Store(tmp_path)
    book = FindingBook(reopened.hot, reopened.lock)
    assert book.raise_candidates([seen(22, "S-2")], T0 + timedelta(minutes=1)) == []
    assert "findings" in _manifest(tmp_path)["files"]  # nothing written: still as it was
    book.ack("F-000002", "alice", T0 + timedelta(minutes=2))
    (record,) = list(Store(tmp_path).journal.records())[-1:]
    assert list(record["effects"]["set"]["findings"]) == ["2"]  # the ack's document only
    split = {s for s in _manifest(tmp_path)["files"] if s.startswith("findings")}
    assert split == {"findings.000000"}
    assert [(f.id, f.status) for f in book.all()] == [
        ("F-000001", "new"),
        ("F-000002", "acknowledged"),
    ]
