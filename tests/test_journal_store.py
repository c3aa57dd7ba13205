"""The journal is the record: every way the cache or the history can be lost or forged.

Each test here is one of the failures found by trying the first version as a new user and
as an insider would; each now holds. Real files in a temp dir, the real CLI for exit codes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import portconsole.core.adapters.store as store_module
from portconsole.core.adapters.store import Store
from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult
from portconsole.core.errors import StoreError, UserError
from portconsole.core.monitor import Monitor
from portconsole.core.timeutil import utcnow
from tests.projection_files import read_projection, write_projection

HOST = "127.0.0.2"
DATA = Path(__file__).parent / "data" / "old_layout"


def scan_of(
    scan_id: str, finished: datetime, ports: list[int], *, imported: bool = False
) -> ScanResult:
    return ScanResult(
        scan_id,
        finished - timedelta(seconds=5),
        finished,
        "7.93",
        "imported" if imported else "connect",
        False,
        [HOST],
        [HOST],
        "22,80,443,8080",
        ["tcp"],
        [
            HostObservation(
                HOST, "up", "", [PortObservation(p, "tcp", "open", "http") for p in ports]
            )
        ],
        imported=imported,
        origin="import" if imported else "cli",
    )


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Monitor]:
    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n[approval]\nseparation_of_duties = false\n')
    opened = Monitor.open(config, tmp_path / "data")
    yield opened
    opened.close()


def reopen(monitor: Monitor, readonly: bool = False) -> Monitor:
    return Monitor.open(monitor.paths.config_file, monitor.paths.data_dir, readonly=readonly)


def approve_8080(monitor: Monitor) -> str:
    now = utcnow()
    monitor._ingest_and_detect(scan_of("s1", now - timedelta(hours=2), [22]), "", 1)
    monitor._ingest_and_detect(scan_of("s2", now - timedelta(hours=1), [22, 8080]), "", 1)
    finding = next(f for f in monitor.findings() if f.port == 8080)
    monitor.approve(finding.id, justification="admin UI, CHG-9", owner="ops", ticket="CHG-9")
    return finding.id


def ports(monitor: Monitor) -> set[str]:
    return {p.key for p in monitor.store.current_ports()}


def cli(monitor: Monitor, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "portconsole.cli", "--config", str(monitor.paths.config_file)]
    command += ["--data-dir", str(monitor.paths.data_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- the cache


def test_a_backup_of_the_cache_put_back_loses_nothing(monitor: Monitor) -> None:
    hot = monitor.paths.data_dir / "hot.json"
    monitor._ingest_and_detect(scan_of("s0", utcnow() - timedelta(hours=3), [22]), "", 1)
    backup = hot.read_bytes()
    approve_8080(monitor)
    segment_sizes = {p.name: p.stat().st_size for p in (monitor.paths.data_dir / "scans").iterdir()}
    hot.write_bytes(backup)  # what our own error messages used to advise
    result = cli(monitor, "state", "--json")  # a read-only command
    assert result.returncode == 0, result.stderr
    assert {
        f"{p['host']}:{p['port']}/{p['proto']}" for p in json.loads(result.stdout)["open_ports"]
    } == {
        f"{HOST}:22/tcp",
        f"{HOST}:8080/tcp",
    }
    after = {p.name: p.stat().st_size for p in (monitor.paths.data_dir / "scans").iterdir()}
    assert after == segment_sizes  # no history was cut
    again = reopen(monitor)  # a writer rebuilds the cache
    assert ports(again) == {f"{HOST}:22/tcp", f"{HOST}:8080/tcp"}
    assert [a.port for a in again.approvals_list()] == [8080]
    assert again.store_check() == []
    assert again.audit_verify().ok


@pytest.mark.parametrize("content", [b"{}", b"null", b"[]", b'{"findings": [1, 2]}', b"\x00\x00"])
def test_an_empty_or_wrong_shape_cache_is_rebuilt(monitor: Monitor, content: bytes) -> None:
    approve_8080(monitor)
    findings = [f.to_json() for f in monitor.findings(include_closed=True)]
    (monitor.paths.data_dir / "hot.json").write_bytes(content)
    again = reopen(monitor)
    assert ports(again) == {f"{HOST}:22/tcp", f"{HOST}:8080/tcp"}
    assert [a.port for a in again.approvals_list()] == [8080]
    assert [f.to_json() for f in again.findings(include_closed=True)] == findings
    assert again.store_check() == []


def test_a_cache_edited_by_hand_fails_verify_and_rebuild_repairs_it(monitor: Monitor) -> None:
    approve_8080(monitor)
    data = read_projection(monitor.paths.data_dir)
    (doc,) = data["approvals"].values()
    doc["approver"], doc["review_by"] = "mallory", "2099-01-01T00:00:00Z"
    write_projection(monitor.paths.data_dir, data)  # shard hashes and manifest fixed too
    result = cli(monitor, "audit", "verify")
    assert result.returncode == 1
    assert "approvals #1" in result.stdout and "approver" in result.stdout
    assert "review_by" in result.stdout
    check = cli(monitor, "store", "check", "--json")
    assert check.returncode == 1 and json.loads(check.stdout)["differences"]
    assert cli(monitor, "store", "rebuild").returncode == 0
    assert cli(monitor, "store", "check").returncode == 0
    again = reopen(monitor, readonly=True)
    assert [a.approver for a in again.approvals_list()] != ["mallory"]
    events = [e.action for e in again.audit_events()]
    assert "store.rebuilt" in events
    assert list(monitor.paths.data_dir.glob("hot.json.replaced-*"))


def test_a_deleted_journal_is_never_silently_restarted(monitor: Monitor) -> None:
    approve_8080(monitor)
    monitor.close()
    shutil.rmtree(monitor.paths.data_dir / "journal")
    with pytest.raises(StoreError, match="journal"):
        reopen(monitor)
    result = cli(monitor, "audit", "verify")
    assert result.returncode == 1 and "journal" in result.stdout
    assert not (monitor.paths.data_dir / "journal").exists()


# --------------------------------------------------------------------------- the history


def test_a_deleted_segment_is_refused_not_overwritten(monitor: Monitor) -> None:
    approve_8080(monitor)
    (segment,) = (monitor.paths.data_dir / "scans").glob("*.jsonl")
    segment.unlink()
    with pytest.raises(StoreError, match="missing"):
        reopen(monitor)
    assert not segment.exists()  # no NUL bytes written in its place
    result = cli(monitor, "audit", "verify")
    assert result.returncode == 1 and segment.name in result.stdout


def test_an_edited_or_truncated_segment_is_caught(monitor: Monitor) -> None:
    approve_8080(monitor)
    (segment,) = (monitor.paths.data_dir / "scans").glob("*.jsonl")
    good = segment.read_bytes()
    segment.write_bytes(good.replace(b"8080", b"8081", 1))
    (monitor.paths.data_dir / "hot.json").write_bytes(b"{}")
    with pytest.raises(StoreError, match="does not hold what the journal recorded"):
        reopen(monitor)
    segment.write_bytes(good[:-10])
    with pytest.raises(StoreError):
        reopen(monitor)


def test_bytes_of_an_operation_that_never_committed_are_kept_aside(monitor: Monitor) -> None:
    approve_8080(monitor)
    (segment,) = (monitor.paths.data_dir / "scans").glob("*.jsonl")
    good = segment.read_bytes()
    with segment.open("ab") as handle:
        handle.write(b'["S","2026-11-30T00:00:00Z","ghost",{}')
    again = reopen(monitor)
    assert segment.read_bytes() == good
    (aside,) = segment.parent.glob("*.torn-*")
    assert aside.read_bytes().startswith(b'["S"')
    assert again.audit_verify().ok


# --------------------------------------------------------------------------- time


def test_a_report_from_the_future_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ahead = scan_of("far", utcnow() + timedelta(hours=3), [22], imported=True)
    with pytest.raises(StoreError, match="ahead of this machine's clock"):
        store.ingest(ahead)
    assert store.scans() == []
    live = scan_of("live", utcnow() + timedelta(hours=3), [22])
    store.ingest(live)  # a live scan while the clock jumps: recorded at the clock's time
    (record,) = store.scans()
    assert datetime.fromisoformat(record["finished_at"]) <= utcnow()
    assert "clock warning" in record["error"]


def test_clock_steps_never_make_later_scans_fail_or_vanish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    clock = [now + timedelta(days=40)]  # the clock runs a month ahead...
    monkeypatch.setattr(store_module, "utcnow", lambda: clock[0])
    store = Store(tmp_path)
    store.ingest(scan_of("fast", clock[0], [22]))
    clock[0] = now  # ...then steps back to the right time
    assert [c.kind for c in store.ingest(scan_of("after", now, [22, 443]))] == ["port_opened"]
    assert {p.port for p in store.current_ports()} == {22, 443}
    assert [c.kind for c in store.ingest(scan_of("later", now + timedelta(hours=1), [22]))] == [
        "port_closed"
    ]
    assert [r["scan_id"] for r in store.scans()] == ["after", "later", "fast"]
    assert store.check() == []


def test_an_older_import_is_a_backfill_that_never_changes_the_present(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ingest(scan_of("now", utcnow() - timedelta(minutes=1), [22]))
    old = scan_of("old", utcnow() - timedelta(days=45), [22, 3306], imported=True)
    assert store.ingest(old) == []
    assert old.backfill
    assert {p.port for p in store.current_ports()} == {22}
    record = store.scan("old") or {}
    assert record["backfill"] is True and record["stale"] == [HOST]


# --------------------------------------------------------------------------- atomicity


def test_every_decision_in_the_projection_has_its_event(monitor: Monitor) -> None:
    approve_8080(monitor)
    events = monitor.audit_events()
    added = [e for e in events if e.action == "approval.added"]
    (approval,) = monitor.approvals_list()
    assert [e.resource["approval_id"] for e in added] == [approval.id]
    # The approval, its finding's decision and their events are one transaction.
    records = list(monitor.audit.records())
    tx = next(r["tx"] for r in records if r["action"] == "approval.added")
    together = [r["action"] for r in records if r.get("tx") == tx]
    assert "finding.approved" in together
    assert "approvals" in records[tx[0] + tx[1] - 2]["effects"]["set"]


def test_a_failed_operation_leaves_nothing_behind(monitor: Monitor) -> None:
    approve_8080(monitor)
    before = (monitor.paths.data_dir / "hot.json").read_bytes()
    count = len(list(monitor.audit.records()))
    with pytest.raises(RuntimeError), monitor.store.lock.hold():
        monitor.findings_book.ack(monitor.findings(include_closed=True)[0].id, "someone")
        raise RuntimeError("crash in the middle of an operation")
    assert (monitor.paths.data_dir / "hot.json").read_bytes() == before
    assert len(list(monitor.audit.records())) == count


# --------------------------------------------------------------------------- migration


def test_a_data_dir_of_the_earlier_layout_is_converted_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    os.chmod(data, 0o700)
    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n')
    before = json.loads((data / "hot.json").read_bytes())
    monitor = Monitor.open(config, data)
    assert [a.port for a in monitor.approvals_list()] == [8080]
    assert ports(monitor) == {f"{HOST}:22/tcp", f"{HOST}:8080/tcp"}
    assert list(data.glob("audit.pre-journal-*")) and list(data.glob("hot.json.pre-journal-*"))
    assert not (data / "audit").exists()
    actions = [e.action for e in monitor.audit_events()]
    assert actions.count("store.migrated") == 1
    assert "approval.added" in actions[: actions.index("store.migrated")]  # old events carried
    result = monitor.audit_verify()
    assert result.ok, result.problems
    assert monitor.store_check() == []
    after = read_projection(data)
    assert after["approvals"] == before["approvals"]
    monitor.close()
    again = Monitor.open(config, data)
    assert [e.action for e in again.audit_events()].count("store.migrated") == 1
    again.close()


# --------------------------------------------------------------------------- anchors


def test_anchors_go_to_a_file_and_a_webhook_and_catch_a_rewrite(tmp_path: Path) -> None:
    from tests.servers import HttpCatcher

    anchors = tmp_path / "elsewhere" / "anchors.log"
    with HttpCatcher() as http:
        config = tmp_path / "config.toml"
        config.write_text(
            'scope = ["127.0.0.0/8"]\n[approval]\nseparation_of_duties = false\n'
            f'[audit]\nanchor_interval = 60\nanchor_urls = ["json://127.0.0.1:{http.port}/a"]\n'
            f'anchor_file = "{anchors}"\n'
        )
        monitor = Monitor.open(config, tmp_path / "data")
        approve_8080(monitor)
        anchor = monitor.publish_anchor()
        assert anchor is not None
        assert monitor.publish_anchor() is None  # not due again within the interval
        line = anchors.read_text().splitlines()[-1]
        assert line.startswith(f"{anchor['seq']}:{anchor['hash']} ")
        monitor.flush_outbox(5.0)
        (request,) = http.wait_for(1)
        document = json.loads(request.json()["message"])
        assert document["type"] == "anchor"
        assert document["anchor"]["hash"] == anchor["hash"]
        monitor.close()
    assert "audit.anchor" in [e.action for e in monitor.audit_events()]
    text = line.split()[0]
    assert cli(monitor, "audit", "verify", "--anchor", text).returncode == 0
    # Rewrite the whole chain consistently: only the anchor can tell.
    from portconsole.core.domain.chain import event_hash

    (segment,) = (tmp_path / "data" / "journal").glob("*.jsonl")
    records = [json.loads(x) for x in segment.read_bytes().splitlines()]
    records[0]["details"]["rewritten"] = True
    prev = "0" * 64
    for record in records:
        record["prev_hash"] = prev
        record["hash"] = event_hash(record)
        prev = record["hash"]
    segment.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))
    head = tmp_path / "data" / "journal" / "head.json"
    head.write_text(json.dumps({"seq": records[-1]["seq"], "hash": prev, "segment": ""}))
    assert cli(monitor, "audit", "verify").returncode == 1  # the cache still names the old hash
    data = read_projection(tmp_path / "data")
    data["journal"] = {"1": {"seq": records[-1]["seq"], "hash": prev}}
    write_projection(tmp_path / "data", data)  # a thorough insider fixes that too
    assert cli(monitor, "audit", "verify").returncode == 0
    caught = cli(monitor, "audit", "verify", "--anchor", text, "--json")
    assert caught.returncode == 1
    assert "anchor" in json.loads(caught.stdout)["reason"]
    bad = cli(monitor, "audit", "verify", "--anchor", "12:zz")
    assert bad.returncode == 2 and "SEQ:HASH" in bad.stderr


def test_an_anchor_file_inside_the_data_dir_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    data = tmp_path / "data"
    config.write_text(f'scope = ["127.0.0.0/8"]\n[audit]\nanchor_file = "{data}/anchors.log"\n')
    monitor = Monitor.open(config, data)
    with pytest.raises(UserError, match="inside the data dir"):
        monitor.publish_anchor(force=True)
    monitor.close()


def test_audit_head_prints_what_verify_takes(monitor: Monitor) -> None:
    approve_8080(monitor)
    head = cli(monitor, "audit", "head", "--json")
    assert head.returncode == 0
    data = json.loads(head.stdout)
    assert set(data) == {"seq", "hash", "recorded_at"}
    assert (
        cli(monitor, "audit", "verify", "--anchor", f"{data['seq']}:{data['hash']}").returncode == 0
    )


def test_a_refused_decision_is_an_event_and_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n')  # separation of duties on (the default)
    monitor = Monitor.open(config, tmp_path / "data")
    now = utcnow()
    monitor._ingest_and_detect(scan_of("s1", now - timedelta(hours=1), [22, 8080]), "", 1)
    finding = next(f for f in monitor.findings() if f.port == 8080)
    before = [a.to_json() for a in monitor.approvals_list(include_retired=True)]
    with pytest.raises(UserError, match="separation of duties"):
        monitor.approve(finding.id, justification="admin UI", owner="ops")
    assert [a.to_json() for a in monitor.approvals_list(include_retired=True)] == before
    assert monitor.finding(finding.id).status == "new"
    refused = [e for e in monitor.audit_events() if e.action == "finding.approve.refused"]
    assert len(refused) == 1 and refused[0].outcome == "failure"
    assert "separation of duties" in refused[0].details["reason"]
    assert refused[0].details["asked"]["id"] == finding.id
    assert monitor.audit_verify().ok
    monitor.close()


def test_an_empty_port_list_is_refused_not_read_as_the_defaults(monitor: Monitor) -> None:
    from portconsole.core.errors import TargetError

    with pytest.raises(TargetError, match="empty port list"):
        monitor.resolve_targets(["127.0.0.2"], None, "")
    from portconsole.core.domain.targets import parse_ports

    *_, spec, _udp, _label = monitor.resolve_targets(["127.0.0.2"], None, None)
    assert spec == parse_ports(monitor.settings.scan.ports)  # no --ports: the defaults


def test_history_finds_an_ipv6_port_written_in_brackets(monitor: Monitor) -> None:
    finished = utcnow() - timedelta(minutes=5)
    v6 = ScanResult(
        "v6", finished - timedelta(seconds=2), finished, "7.93", "connect", False,
        ["::1"], ["::1"], "21010", ["tcp"],
        [HostObservation("::1", "up", "", [PortObservation(21010, "tcp", "open", "http")])],
    )  # fmt: skip
    monitor._ingest_and_detect(v6, "", 1)
    for spelling in ("[::1]:21010", "[0:0:0:0:0:0:0:1]:21010/tcp"):
        result = cli(monitor, "history", spelling, "--json")
        assert result.returncode == 0, result.stderr
        events = json.loads(result.stdout)["events"]
        assert [e["kind"] for e in events] == ["port_opened"], spelling
    refused = cli(monitor, "history", "::1:21010")
    assert refused.returncode == 2 and "[ADDRESS]:PORT" in refused.stderr


def test_read_commands_work_on_a_read_only_snapshot(monitor: Monitor, tmp_path: Path) -> None:
    approve_8080(monitor)
    monitor.close()
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    mounted = subprocess.run(
        ["mount", "--bind", str(monitor.paths.data_dir), str(snapshot)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(snapshot)], capture_output=True
        )
        assert remount.returncode == 0, remount.stderr
        config = monitor.paths.config_file
        for args in (["audit", "verify"], ["state", "--json"], ["store", "check"], ["findings"]):
            result = subprocess.run(
                [sys.executable, "-m", "portconsole.cli", "--config", str(config),
                 "--data-dir", str(snapshot), *args],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "8080" in subprocess.run(
            [sys.executable, "-m", "portconsole.cli", "--config", str(config),
             "--data-dir", str(snapshot), "state"],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
    finally:
        subprocess.run(["umount", str(snapshot)], check=False)


def test_an_older_head_put_back_under_a_running_process_is_noticed(monitor: Monitor) -> None:
    # A running process skips re-reading the journal's last record while the last segment
    # and head.json are as it last checked them: a head.json put back must still be seen.
    head = monitor.paths.data_dir / "journal" / "head.json"
    approve_8080(monitor)
    older = head.read_bytes()
    first = next(f.id for f in monitor.findings(include_closed=True))
    monitor.note(first, "checked")
    monitor.note(first, "checked twice")  # two behind: not a crash between events and head
    assert head.read_bytes() != older
    with monitor.store.lock.hold():  # a transaction that appends nothing: the tail agreed
        pass
    head.write_bytes(older)
    monitor.note(next(f.id for f in monitor.findings(include_closed=True)), "checked again")
    mismatches = [e for e in monitor.audit_events() if e.action == "journal.head_mismatch"]
    assert len(mismatches) == 1, [e.action for e in monitor.audit_events()][-5:]
    assert "behind the events" in mismatches[0].details["problem"]
