"""The finding book: raising without duplicates, flapping, triage transitions, timelines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tinydb import TinyDB

from portconsole.core.adapters import shards
from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.findings_reads import ParsedShard
from portconsole.core.adapters.storage import AtomicJSONStorage, DataLock
from portconsole.core.adapters.store import Store
from portconsole.core.domain.finding import (
    Finding,
    FindingCandidate,
    finding_key,
    findings_from_stored,
)
from portconsole.core.domain.model import severity_rank
from portconsole.core.errors import NotFoundError, UserError

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
ALICE = "alice@console via 127.0.5.9"
BOB = "bob@ops1"


def open_book(tmp_path: Path) -> FindingBook:
    db = TinyDB(tmp_path / "hot.json", storage=AtomicJSONStorage)
    return FindingBook(db, DataLock(tmp_path / "store.lock"))


@pytest.fixture
def book(tmp_path: Path) -> FindingBook:
    return open_book(tmp_path)


def candidate(
    port: int = 6379, kind: str = "unapproved_port", severity: str = "high", scan: str = "S-1"
) -> FindingCandidate:
    return FindingCandidate(
        kind=kind,
        host="127.77.0.50",
        port=port,
        proto="tcp",
        service="redis",
        severity=severity,
        scan_id=scan,
        details={"product": "Redis key-value store"},
    )


def test_raise_creates_one_finding_and_never_duplicates(book: FindingBook) -> None:
    (first,) = book.raise_candidates([candidate(), candidate()], T0)
    assert first.id == "F-000001" and first.status == "new"
    assert (first.first_seen, first.last_seen, first.scan_id) == (T0, T0, "S-1")
    assert [(e.step, e.at, e.actor) for e in first.timeline] == [("detected", T0, "portconsole")]
    later = T0 + timedelta(minutes=15)
    assert book.raise_candidates([candidate(scan="S-2")], later) == []
    (stored,) = book.all()
    # seen again and nothing else changed: the finding is not rewritten
    assert stored == first and (stored.last_seen, stored.last_scan_id) == (T0, "S-1")
    assert book.get("f-1") == stored and book.get("1") == stored
    with pytest.raises(NotFoundError):
        book.get("F-000404")


def test_a_finding_is_written_only_when_it_changes(tmp_path: Path, book: FindingBook) -> None:
    (first,) = book.raise_candidates([candidate()], T0)
    hot = tmp_path / "hot.json"
    written = hot.read_bytes()
    outcome = book.ingest_candidates([candidate(scan="S-2")], T0 + timedelta(minutes=1))
    # refreshed (the caller sees the scan that refreshed it), but the file is untouched
    assert [(f.id, f.last_scan_id) for f in outcome.refreshed] == [(first.id, "S-2")]
    assert hot.read_bytes() == written
    # new details are a change: written, with the scan that made it
    changed = candidate(scan="S-3")
    changed.details["product"] = "Redis 7.2"
    later = T0 + timedelta(minutes=2)
    book.ingest_candidates([changed], later)
    stored = book.get(first.id)
    assert stored.details["product"] == "Redis 7.2"
    assert (stored.last_seen, stored.last_scan_id) == (later, "S-3")
    assert hot.read_bytes() != written


def test_a_backfill_seeing_an_open_finding_leaves_it_as_it_is(book: FindingBook) -> None:
    (first,) = book.raise_candidates([candidate()], T0)
    book.ingest_candidates([candidate(scan="S-3")], T0 + timedelta(hours=1))
    older = candidate(scan="S-2")  # an older report imported late (ScanCycle._backfilled)
    older.details.update({"backfilled": True, "product": "Redis 6"})
    outcome = book.ingest_candidates([older], T0 + timedelta(minutes=30))
    assert [f.id for f in outcome.refreshed] == [first.id]
    assert book.get(first.id) == first


def test_open_queue_is_sorted_by_severity_then_age(book: FindingBook) -> None:
    book.raise_candidates([candidate(8081, severity="medium")], T0)
    book.raise_candidates([candidate(23, severity="high")], T0 + timedelta(minutes=2))
    book.raise_candidates([candidate(6379, severity="high")], T0 + timedelta(minutes=1))
    book.raise_candidates([candidate(9000, severity="critical")], T0 + timedelta(minutes=3))
    assert [f.port for f in book.open()] == [9000, 6379, 23, 8081]


def test_full_lifecycle_with_timeline_and_actors(book: FindingBook) -> None:
    (finding,) = book.raise_candidates([candidate()], T0)
    fid = finding.id
    book.record_notification(fid, {"ok": True, "target": "json://127.0.0.1:8099/"}, T0)
    book.record_notification(fid, {"ok": False, "error": "refused"}, T0)
    acked = book.ack(fid, ALICE, T0 + timedelta(minutes=5))
    assert acked.status == "acknowledged"
    with pytest.raises(UserError, match="cannot acknowledge F-000001: it is acknowledged"):
        book.ack(fid, ALICE)
    book.note(fid, BOB, "owner says a developer left it running", T0 + timedelta(minutes=6))
    with pytest.raises(UserError, match="note needs text"):
        book.note(fid, BOB, "   ")
    with pytest.raises(UserError, match="justification is required"):
        book.approve(fid, BOB, "A-000009", "  ")
    approved = book.approve(
        fid, BOB, "A-000009", "Cache for the batch jobs", "CHG-7", T0 + timedelta(minutes=9)
    )
    assert approved.status == "approved" and approved.approval_id == "A-000009"
    assert approved.justification == "Cache for the batch jobs" and approved.ticket == "CHG-7"
    assert book.open() == []
    stored = book.get(fid)
    assert [(e.step, e.actor) for e in stored.timeline] == [
        ("detected", "portconsole"),
        ("notified", "portconsole"),
        ("acknowledged", ALICE),
        ("noted", BOB),
        ("decided", BOB),
    ]
    assert all(
        e.at.tzinfo is not None and e.at.utcoffset() == timedelta(0) for e in stored.timeline
    )
    assert len(stored.notifications) == 2 and stored.notifications[1]["error"] == "refused"
    assert stored.step_time("acknowledged") == T0 + timedelta(minutes=5)
    # approved findings are decided: no second decision
    with pytest.raises(UserError, match="cannot flag F-000001: it is approved"):
        book.flag(fid, BOB, "changed my mind")
    # timestamps are stored as UTC ISO 8601 with Z
    raw = book.table.get(doc_id=1)
    assert isinstance(raw, dict) and raw["first_seen"] == "2026-11-27T09:00:00Z"


def test_flag_then_scan_shows_it_remediated(book: FindingBook) -> None:
    (finding,) = book.raise_candidates([candidate(23)], T0)
    with pytest.raises(UserError, match="reason is required"):
        book.flag(finding.id, ALICE, "")
    flagged = book.flag(finding.id, ALICE, "telnet is forbidden by policy")
    assert flagged.status == "flagged" and flagged.reason == "telnet is forbidden by policy"
    assert [f.id for f in book.open()] == [finding.id]  # flagged stays in the queue
    later = T0 + timedelta(hours=1)
    # covered scan that no longer sees it: resolved with remediated + verified steps
    resolved = book.resolve_missing(set(), lambda h, p, pr: True, later, "S-9")
    assert [f.id for f in resolved] == [finding.id]
    stored = book.get(finding.id)
    assert stored.status == "resolved" and stored.resolved_at == later
    assert [e.step for e in stored.timeline][-2:] == ["remediated", "verified"]
    assert "S-9" in stored.timeline[-1].text
    with pytest.raises(UserError, match="cannot approve"):
        book.approve(finding.id, BOB, "A-1", "too late")


def test_resolve_missing_respects_coverage_and_still_true(book: FindingBook) -> None:
    book.raise_candidates([candidate(23), candidate(6379)], T0)
    gone = book.resolve_missing(
        {finding_key("unapproved_port", "127.77.0.50", 6379, "tcp")},
        lambda h, p, pr: p == 23,
        T0,
        "S-2",
    )
    assert [f.port for f in gone] == [23]
    # not scanned is not closed
    assert book.resolve_missing(set(), lambda h, p, pr: False, T0, "S-3") == []
    assert [f.port for f in book.open()] == [6379]
    # manual kinds (monitoring gaps) are never auto-resolved
    book.raise_candidates([candidate(kind="monitoring_gap")], T0)
    book.resolve_missing(set(), lambda h, p, pr: True, T0, "S-4")
    assert [f.kind for f in book.open()] == ["monitoring_gap"]


def test_flapping_within_the_window_reopens_instead_of_adding(book: FindingBook) -> None:
    (finding,) = book.raise_candidates([candidate()], T0)
    book.ack(finding.id, ALICE, T0)
    book.resolve_missing(set(), lambda h, p, pr: True, T0 + timedelta(minutes=10), "S-2")
    outcome = book.ingest_candidates([candidate(scan="S-3")], T0 + timedelta(minutes=20), 3600)
    assert outcome.new == [] and [f.id for f in outcome.reopened] == [finding.id]
    stored = book.get(finding.id)
    assert stored.status == "acknowledged"  # its triage survives the flap
    assert stored.flap_count == 1 and stored.timeline[-1].step == "reopened"
    assert len(book.all()) == 1
    # resolved again, and back after the window: a new finding
    book.resolve_missing(set(), lambda h, p, pr: True, T0 + timedelta(minutes=30), "S-4")
    (fresh,) = book.raise_candidates([candidate(scan="S-5")], T0 + timedelta(hours=3), 3600)
    assert fresh.id != finding.id and len(book.all()) == 2


def test_risk_acceptance_until_a_date_then_lapses(book: FindingBook) -> None:
    (finding,) = book.raise_candidates([candidate()], T0)
    with pytest.raises(UserError, match="must end in the future"):
        book.risk_accept(finding.id, BOB, T0 - timedelta(days=1), "ok", now=T0)
    with pytest.raises(UserError, match="reason is required"):
        book.risk_accept(finding.id, BOB, T0 + timedelta(days=30), "n/a", now=T0)
    until = T0 + timedelta(days=30)
    accepted = book.risk_accept(finding.id, BOB, until, "vendor fix due next month", now=T0)
    assert accepted.status == "risk_accepted" and accepted.risk_until == until
    assert book.open() == []
    # still true during the acceptance: quietly refreshed
    assert book.ingest_candidates([candidate()], T0 + timedelta(days=1)).refreshed
    assert book.get(finding.id).status == "risk_accepted"
    # after it lapses: open again, reported as lapsed (not as new)
    outcome = book.ingest_candidates([candidate()], until + timedelta(minutes=1))
    assert outcome.new == [] and [f.id for f in outcome.lapsed] == [finding.id]
    stored = book.get(finding.id)
    assert stored.status == "new" and "lapsed" in stored.timeline[-1].text


def test_a_problem_back_after_approval_is_a_new_finding(book: FindingBook) -> None:
    (finding,) = book.raise_candidates([candidate()], T0)
    decided = T0 + timedelta(minutes=1)
    book.approve(finding.id, BOB, "A-1", "Cache for batch jobs", now=decided)
    # A scan that finished before the approval, ingested after it (a cycle in flight while
    # the operator approved), saw what the approval answered: no second finding.
    outcome = book.ingest_candidates([candidate(scan="S-2")], decided - timedelta(seconds=5))
    assert (outcome.new, outcome.refreshed) == ([], [])
    assert [f.status for f in book.all()] == ["approved"]
    # A scan after the decision that still sees the problem is a new episode.
    (again,) = book.raise_candidates([candidate(scan="S-3")], decided + timedelta(seconds=1))
    assert again.id != finding.id and again.scan_id == "S-3"


def test_a_gap_closed_while_a_cycle_ran_does_not_swallow_the_cycles_gap(
    book: FindingBook,
) -> None:
    gap = FindingCandidate(
        kind="monitoring_gap",
        host="web",
        port=None,
        proto=None,
        service="",
        severity="high",
        scan_id="S-1",
        details={},
    )
    (first,) = book.raise_candidates([gap], T0)
    book.close(first.id, BOB, "scanner host rebooted", now=T0 + timedelta(minutes=2))
    (second,) = book.raise_candidates([gap], T0 + timedelta(minutes=1))
    assert second.id != first.id


def test_a_second_process_sees_writes(tmp_path: Path) -> None:
    first = open_book(tmp_path)
    second = open_book(tmp_path)
    (finding,) = first.raise_candidates([candidate()], T0)
    assert [f.id for f in second.open()] == [finding.id]
    second.ack(finding.id, ALICE)
    assert first.get(finding.id).status == "acknowledged"
    (other,) = second.raise_candidates([candidate(23)], T0)
    assert other.id == "F-000002" and len(first.all()) == 2


def test_a_cycle_that_changes_nothing_writes_no_finding(tmp_path: Path) -> None:
    """The journal's last transaction of a no-change cycle carries no `findings` effects."""
    from tests.replay import replay_monitor

    monitor, network = replay_monitor(tmp_path, {"127.0.0.2": {22: "ssh", 8080: "http-proxy"}})

    def last_transaction() -> tuple[list[str], dict]:
        records = list(monitor.audit.records())
        first, count = records[-1]["tx"]
        assert count == len([r for r in records if r["seq"] >= first])
        return [r["action"] for r in records if r["seq"] >= first], records[-1].get("effects") or {}

    for _ in range(3):  # the second cycle may still settle details (a host now seen before)
        monitor.run_cycle(targets=["127.0.0.2"], ports="22,8080")
    first_actions, _ = last_transaction()
    assert len(monitor.findings()) >= 2 and first_actions == ["scan.end"]
    for _ in range(2):
        monitor.run_cycle(targets=["127.0.0.2"], ports="22,8080")
        actions, effects = last_transaction()
        assert actions == ["scan.end"]
        assert "findings" not in effects.get("set", {}) and "findings" not in effects.get("del", {})
    # a cycle that changes something still writes the findings it changes
    network.close_port("127.0.0.2", 8080)
    monitor.run_cycle(targets=["127.0.0.2"], ports="22,8080")
    actions, effects = last_transaction()
    assert "finding.resolved" in actions and "findings" in effects["set"]


def test_findings_show_the_latest_scan_that_saw_them(tmp_path: Path) -> None:
    """A finding is not rewritten when a cycle sees it again, but what `findings()` shows
    (the CLI, the console) is still the latest sighting, taken from the scan state."""
    from tests.replay import replay_monitor

    monitor, _ = replay_monitor(tmp_path, {"127.0.0.2": {8080: "http-proxy"}})
    monitor.run_cycle(targets=["127.0.0.2"], ports="8080")
    (first,) = [f for f in monitor.findings() if f.port == 8080]
    stored_before = monitor.findings_book.get(first.id).last_seen
    latest = monitor.run_cycle(targets=["127.0.0.2"], ports="8080")
    (shown,) = [f for f in monitor.findings() if f.port == 8080]
    assert monitor.findings_book.get(first.id).last_seen == stored_before  # not rewritten
    (port,) = monitor.store.current_ports("127.0.0.2")
    assert shown.last_seen == port.last_seen > stored_before
    assert shown.last_scan_id == port.last_scan_id == latest.scan.scan_id
    assert monitor.finding_as_seen(first.id).last_seen == port.last_seen


# --------------------------------------------------------------------------- shared reads


def store_book(tmp_path: Path) -> tuple[FindingBook, Store]:
    """A book over a real store's sharded projection (as the Monitor opens it)."""
    store = Store(tmp_path)
    return FindingBook(store.hot, store.lock), store


def test_a_shared_finding_keeps_its_value_after_a_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "ID_RANGE", 2)  # ids 1 | 2-3 | 4-5: three shard files
    book, _ = store_book(tmp_path)
    book.raise_candidates([candidate(port) for port in (21, 22, 23, 24, 25)], T0)
    before = book.shared_all()
    assert [f.id for f in before] == [f"F-00000{n}" for n in range(1, 6)]
    assert book.shared_all()[0] is before[0]  # the same objects while nothing changed
    book.ack("F-000002", ALICE, T0 + timedelta(minutes=1))
    after = book.shared_all()
    assert before[1].status == "new" and before[1].timeline[-1].step == "detected"
    assert after[1].status == "acknowledged" and after[1].timeline[-1].actor == ALICE
    assert book.get("F-000002").status == "acknowledged"
    # Only the changed shard's findings were parsed again; the others are the same objects.
    assert [a is b for a, b in zip(before, after, strict=True)] == [True, False, False, True, True]
    assert [f.id for f in book.shared_open()] == [f.id for f in book.open()]
    # A copy handed out may be changed without touching what later reads share.
    mine = book.all()[0]
    mine.timeline.append(mine.timeline[0])
    mine.status = "closed"
    assert book.shared_all()[0].status == "new" and len(book.shared_all()[0].timeline) == 1


def test_findings_spanning_several_id_shards_read_back_once_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "ID_RANGE", 4)
    book, store = store_book(tmp_path)
    severities = ["low", "high", "medium", "critical"]
    for n in range(11):  # one raise per finding: ids 1-11 over shards 0, 1 and 2
        book.raise_candidates(
            [candidate(1000 + n, severity=severities[n % 4])], T0 + timedelta(minutes=n)
        )
    book.close("F-000006", BOB, "decommissioned", T0 + timedelta(hours=1))
    files = json.loads((tmp_path / "hot.json").read_bytes())["files"]
    assert {s for s in files if s.startswith("findings.")} == {
        "findings.000000",
        "findings.000001",
        "findings.000002",
    }
    wanted = [f"F-{n:06d}" for n in range(1, 12)]
    other, _ = store_book(tmp_path)  # another process, reading the files cold
    for reader in (book, other):
        assert [f.id for f in reader.shared_all()] == wanted
        assert [f.id for f in reader.all()] == wanted
        assert [f.port for f in reader.shared_all()] == list(range(1000, 1011))
        queue = reader.shared_open()
        assert [f.id for f in queue] == [f.id for f in reader.open()]
        assert "F-000006" not in {f.id for f in queue} and len(queue) == 10
        assert [severity_rank(f.severity) for f in queue] == sorted(
            (severity_rank(f.severity) for f in queue), reverse=True
        )
        assert reader.get("f-10").port == 1009 and reader.get("F-000006").status == "closed"
        with pytest.raises(NotFoundError):
            reader.get("F-000012")
    # The shared read keeps parsed findings, not their documents as well.
    assert not [name for name in store.storage._cache if name.startswith("findings.")]


def finding_files(data_dir: Path) -> dict[str, str]:
    files = json.loads((data_dir / "hot.json").read_bytes())["files"]
    return {s: str(entry[0]) for s, entry in files.items() if s.startswith("findings.")}


def test_a_write_touches_only_its_findings_shards_and_detection_finds_old_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "ID_RANGE", 2)  # ids 1 | 2-3 | 4-5: three shard files
    book, _ = store_book(tmp_path)
    book.raise_candidates([candidate(port) for port in (21, 22, 23, 24, 25)], T0)
    before = finding_files(tmp_path)
    assert list(before) == ["findings.000000", "findings.000001", "findings.000002"]
    # The shards F-000002 is not in are damaged (same size, other bytes): a transition
    # that read them would fail; an ack reads and rewrites its own shard only.
    others = {s: tmp_path / "hot" / before[s] for s in ("findings.000000", "findings.000002")}
    kept = {s: path.read_bytes() for s, path in others.items()}
    for path in others.values():
        path.write_bytes(b" " * path.stat().st_size)
    acked = book.ack("F-000002", ALICE, T0 + timedelta(minutes=1))
    for s, path in others.items():
        path.write_bytes(kept[s])
    after = finding_files(tmp_path)
    assert acked.status == "acknowledged"
    assert after["findings.000001"] != before["findings.000001"]
    assert {s: after[s] for s in others} == {s: before[s] for s in others}
    # Detection matches keys whose findings live in old shards (one rewritten since the
    # key index was derived, one never read by this book, one in another process's book):
    # no duplicate; a new key's finding goes to a new last shard, the old ones untouched.
    later = T0 + timedelta(minutes=5)
    for reader, ports in ((book, (22, 21)), (store_book(tmp_path)[0], (25, 23))):
        outcome = reader.ingest_candidates([candidate(p, scan="S-2") for p in ports], later)
        assert outcome.new == [] and [f.port for f in outcome.refreshed] == list(ports)
    (new,) = book.raise_candidates([candidate(22, scan="S-3"), candidate(26, scan="S-3")], later)
    assert new.id == "F-000006" and book.get("F-000002").status == "acknowledged"
    final = finding_files(tmp_path)
    assert final == after | {"findings.000003": final["findings.000003"]}
    assert [f.port for f in book.all()] == [21, 22, 23, 24, 25, 26]


def test_open_findings_on_some_ports_in_a_transaction_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "ID_RANGE", 2)
    book, store = store_book(tmp_path)
    severities = ["low", "critical", "medium", "high", "critical"]
    for port, severity in zip((21, 22, 23, 24, 25), severities, strict=True):
        book.raise_candidates([candidate(port, severity=severity)], T0)
    book.ack("F-000003", ALICE, T0 + timedelta(minutes=1))
    book.risk_accept("F-000004", BOB, T0 + timedelta(days=9), "vendor fix due", T0)
    book.close("F-000005", BOB, "false alarm", T0 + timedelta(minutes=2))
    places = {f"127.77.0.50:{port}/tcp" for port in (21, 23, 24, 25, 26)}
    wanted = [f for f in book.open() if f.port in (21, 23)]
    assert [f.id for f in wanted] == ["F-000003", "F-000001"]  # the queue's order
    assert book.open_on(places) == wanted
    with store.lock.hold():
        assert book.open_on(places) == wanted
        assert book.open_on(set()) == []


def findings_documents(data_dir: Path) -> dict[str, bytes]:
    """Every findings shard file's bytes, by file name."""
    return {
        name: (data_dir / "hot" / name).read_bytes() for name in finding_files(data_dir).values()
    }


def test_a_shard_decoded_in_one_pass_reads_as_from_json_does(tmp_path: Path) -> None:
    book, _ = store_book(tmp_path)
    raised = book.raise_candidates([candidate(port) for port in (21, 22, 23, 24)], T0)
    first, second, third, fourth = (f.id for f in raised)
    book.record_notification(first, {"ok": True, "target": "json://127.0.0.1:8099/"}, T0)
    book.ack(first, ALICE, T0 + timedelta(minutes=5))
    book.note(first, BOB, "owner says a developer left it running", T0 + timedelta(minutes=6))
    book.risk_accept(second, BOB, T0 + timedelta(days=30), "vendor fix due next month", now=T0)
    book.flag(third, BOB, "nobody owns it", T0 + timedelta(minutes=7))
    book.close(fourth, ALICE, "decommissioned", T0 + timedelta(hours=1))
    files = findings_documents(tmp_path)
    assert files
    for raw in files.values():
        decoded = findings_from_stored(raw)
        assert decoded is not None
        expected = {k: Finding.from_json(v) for k, v in json.loads(raw).items()}
        assert decoded == expected
        # Shared as from_json shares: one host text, one object per timeline step alike.
        found = list(decoded.values())
        assert all(f.host is found[0].host for f in found)
        detected = [f.timeline[0] for f in found]
        assert all(entry is detected[0] for entry in detected)
    other, _ = store_book(tmp_path)  # another process, reading the files cold
    assert other.shared_all() == book.all()
    assert [f.id for f in other.shared_open()] == [first, third]


def test_a_document_in_another_form_is_read_with_from_json() -> None:
    when = "2026-11-27T09:00:00Z"
    document = Finding.from_json(
        {
            "id": "F-000001", "kind": "unapproved_port", "severity": "high",
            "host": "127.77.0.50", "port": 6379, "proto": "tcp", "service": "redis",
            "status": "new", "first_seen": when, "last_seen": when, "scan_id": "S-1",
            "timeline": [{"step": "detected", "at": when, "actor": "portconsole"}],
        }
    ).to_json()  # fmt: skip
    # (a stored form, whether the one-pass decode takes it as it is)
    forms = [
        ({**document, "flap_count": None}, False),  # an earlier version's null
        ({**document, "first_seen": "2026-11-27T10:00:00+01:00"}, False),  # not in UTC
        ({**document, "timeline": [{"step": "detected", "at": "2026-11-27T09:00:00"}]}, False),
        ({k: v for k, v in document.items() if k != "last_scan_id"}, True),  # its default
    ]
    for form, as_it_is in forms:
        raw = json.dumps({"1": form}).encode()
        shard = ParsedShard(raw)
        assert shard.findings == (Finding.from_json(form),)
        assert (findings_from_stored(raw) is not None) is as_it_is
    assert shard.findings[0].first_seen == T0
    with pytest.raises(TypeError, match="lacks 'status'"):
        ParsedShard(
            json.dumps({"1": {k: v for k, v in document.items() if k != "status"}}).encode()
        )
