"""The audit chain: appends, verification, and every way of tampering with the files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portconsole.core.adapters.journal import AuditEntry, AuditLog
from portconsole.core.adapters.storage import DataLock
from portconsole.core.domain.chain import GENESIS_HASH, event_hash
from portconsole.core.identity import Actor, clean_text, parse_ssh_client

APRIL = datetime(2026, 4, 30, 23, 0, tzinfo=UTC)
MAY = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
ALICE = Actor(user="alice", host="console1", origin="tui", ssh_client="127.0.5.3")


def make_log(data_dir: Path) -> AuditLog:
    return AuditLog(data_dir, DataLock(data_dir / "store.lock"))


@pytest.fixture
def chain(tmp_path: Path) -> AuditLog:
    """Six events: 1-3 in April's segment, 4-6 in May's."""
    log = make_log(tmp_path)
    for index in range(3):
        log.append(
            "finding.ack",
            actor=ALICE,
            resource={"host": "127.0.0.2", "port": 8000 + index, "finding_id": f"F-{index}"},
            details={"note": f"april {index}"},
            at=APRIL + timedelta(minutes=index),
        )
    for index in range(3):
        log.append(
            "scan.end",
            actor=ALICE,
            outcome="failure" if index == 1 else "success",
            details={"n": index},
            at=MAY + timedelta(minutes=index),
        )
    return log


def segment_path(log: AuditLog) -> Path:
    (path,) = log.segments()
    return path


def read_records(log: AuditLog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in segment_path(log).read_bytes().splitlines()]


def write_records(log: AuditLog, records: list[dict[str, Any]]) -> None:
    segment_path(log).write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))


def split_in_two(log: AuditLog) -> tuple[Path, Path]:
    """Events 1-3 in an older month's segment, 4-6 in the newer (as a month change leaves)."""
    path = segment_path(log)
    lines = path.read_bytes().splitlines(keepends=True)
    older, newer = log.folder / "2000-01.jsonl", log.folder / "2000-02.jsonl"
    older.write_bytes(b"".join(lines[:3]))
    newer.write_bytes(b"".join(lines[3:]))
    path.unlink()
    return older, newer


def test_intact_chain_verifies_with_count(chain: AuditLog) -> None:
    result = chain.verify()
    assert result.ok, result.reason
    assert result.count == 6
    assert result.first_bad_seq is None
    names = sorted(p.name for p in chain.folder.iterdir())
    assert names == [segment_path(chain).name, "head.json"]
    assert segment_path(chain).name.endswith(".jsonl")
    events = chain.events()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    head = chain.head()
    assert head is not None and (head.seq, head.hash) == (6, events[-1].hash)
    assert events[0].at == APRIL and events[0].recorded_at is not None
    assert events[0].recorded_at > APRIL  # observed in April, recorded now
    assert events[0].actor == {
        "user": "alice",
        "sudo_user": None,
        "ssh_client": "127.0.5.3",
        "host": "console1",
    }
    assert events[0].origin == "tui"
    assert events[0].who == "alice@console1 via 127.0.5.3"


def test_empty_chain_verifies(tmp_path: Path) -> None:
    result = make_log(tmp_path).verify()
    assert result.ok and result.count == 0


@pytest.mark.parametrize("seq", [1, 2, 3, 4, 5, 6])
def test_editing_an_event_fails_at_that_event(chain: AuditLog, seq: int) -> None:
    records = read_records(chain)
    records[seq - 1]["details"]["forged"] = True
    write_records(chain, records)
    result = chain.verify()
    assert not result.ok
    assert result.first_bad_seq == seq
    assert result.count == seq - 1
    assert f"event {seq}" in result.reason


@pytest.mark.parametrize("field", ["actor", "outcome", "at", "action", "recorded_at"])
def test_editing_any_field_is_detected(chain: AuditLog, field: str) -> None:
    records = read_records(chain)
    event = records[1]
    forged = {
        "actor": {**event["actor"], "user": "mallory"},
        "outcome": "failure",
        "at": "2026-04-01T00:00:00Z",
        "recorded_at": "2026-04-01T00:00:00Z",
        "action": "finding.approved",
    }[field]
    assert event[field] != forged
    event[field] = forged
    write_records(chain, records)
    assert chain.verify().first_bad_seq == 2


@pytest.mark.parametrize("seq", [2, 3, 4])
def test_edit_with_recomputed_hash_breaks_the_next_link(chain: AuditLog, seq: int) -> None:
    records = read_records(chain)
    event = records[seq - 1]
    event["outcome"] = "failure" if event["outcome"] == "success" else "success"
    event["hash"] = event_hash(event)
    write_records(chain, records)
    result = chain.verify()
    assert not result.ok
    assert result.first_bad_seq == seq + 1
    assert f"event {seq}" in result.reason


def test_edit_of_last_event_with_recomputed_hash_is_caught_by_the_head(chain: AuditLog) -> None:
    records = read_records(chain)
    records[-1]["details"]["n"] = 99
    records[-1]["hash"] = event_hash(records[-1])
    write_records(chain, records)
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 6


@pytest.mark.parametrize("seq", [1, 2, 3, 4, 5])
def test_deleting_an_event_fails_at_that_event(chain: AuditLog, seq: int) -> None:
    records = read_records(chain)
    del records[seq - 1]
    write_records(chain, records)
    result = chain.verify()
    assert not result.ok
    assert result.first_bad_seq == seq
    assert "missing" in result.reason


def test_deleting_the_last_event_is_caught_by_the_head(chain: AuditLog) -> None:
    write_records(chain, read_records(chain)[:-1])
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 6 and "missing" in result.reason


def test_deleting_a_whole_segment_is_detected(chain: AuditLog) -> None:
    older, newer = split_in_two(chain)
    assert chain.verify().ok
    older.unlink()
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 1


def test_deleting_the_newest_segment_is_detected(chain: AuditLog) -> None:
    _, newer = split_in_two(chain)
    newer.unlink()
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 4 and result.count == 3


def test_reordering_fails_at_the_first_moved_event(chain: AuditLog) -> None:
    records = read_records(chain)
    records[1], records[2] = records[2], records[1]
    write_records(chain, records)
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 2
    assert "out of order" in result.reason


def test_swapping_whole_segment_contents_is_detected(chain: AuditLog) -> None:
    older, newer = split_in_two(chain)
    a, b = older.read_bytes(), newer.read_bytes()
    older.write_bytes(b)
    newer.write_bytes(a)
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 1


def test_an_event_inserted_in_the_middle_is_detected(chain: AuditLog) -> None:
    records = read_records(chain)
    forged = {**records[2], "details": {"forged": True}}
    forged["hash"] = event_hash(forged)
    records.insert(3, forged)
    write_records(chain, records)
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 4


def test_tampered_head_is_an_inconsistency(chain: AuditLog) -> None:
    original = chain.head_path.read_bytes()
    head = json.loads(original)

    chain.head_path.write_text(json.dumps({**head, "hash": "f" * 64}))
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 6

    chain.head_path.write_text(json.dumps({**head, "seq": 3}))
    result = chain.verify()
    assert not result.ok and any("past the head" in p for p in result.problems)

    chain.head_path.write_text("{not json")
    assert not chain.verify().ok

    chain.head_path.unlink()
    result = chain.verify()
    assert not result.ok and "missing" in result.reason

    chain.head_path.write_bytes(original)
    assert chain.verify().ok


def test_a_forged_event_appended_past_the_head_fails(chain: AuditLog) -> None:
    records = read_records(chain)
    forged = {
        **records[-1],
        "seq": 7,
        "action": "approval.added",
        "prev_hash": records[-1]["hash"],
        "tx": [7, 1],
    }
    forged["hash"] = event_hash(forged)
    write_records(chain, [*records, forged])
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 7 and "past the head" in result.reason


def test_an_older_head_put_back_is_recorded_and_stays_visible(chain: AuditLog) -> None:
    older = chain.head_path.read_bytes()
    for index in range(3):
        chain.append("finding.ack", actor=ALICE, details={"i": index})
    chain.head_path.write_bytes(older)  # three transactions behind
    assert not chain.verify().ok
    # The next writer records the mismatch instead of papering over it.
    event = chain.append("export", actor=ALICE)
    result = chain.verify()
    assert not result.ok
    assert any("head.json is behind" in problem for problem in result.problems)
    assert event.seq == 11  # 9 events, the mismatch record, then this one


def test_a_crash_between_journal_and_head_is_repaired_by_the_next_write(chain: AuditLog) -> None:
    old_head = chain.head_path.read_bytes()
    chain.append_many([AuditEntry("scan.start", ALICE), AuditEntry("scan.end", ALICE)])
    chain.head_path.write_bytes(old_head)  # the head write never happened
    assert not chain.verify().ok  # not acknowledged yet: verify says so
    event = chain.append("export", actor=ALICE)
    assert event.seq == 9
    result = chain.verify()
    assert result.ok, result.reason


def test_a_torn_tail_is_cut_and_kept_aside(chain: AuditLog) -> None:
    path = segment_path(chain)
    good, head = path.read_bytes(), chain.head_path.read_bytes()
    chain.append_many([AuditEntry("scan.start", ALICE), AuditEntry("scan.end", ALICE)])
    chain.head_path.write_bytes(head)  # the crash came before the head was written
    whole = path.read_bytes()
    # The crash left the first line of the two-event transaction and half of the second.
    torn = whole[: len(good) + (len(whole) - len(good)) * 3 // 4]
    path.write_bytes(torn)
    event = chain.append("export", actor=ALICE)
    assert event.seq == 7  # the torn transaction never happened
    assert chain.verify().ok
    (aside,) = chain.folder.glob("*.torn-*")
    assert aside.read_bytes() == torn[len(good) :]


def test_anchors_catch_a_whole_chain_rewrite(chain: AuditLog) -> None:
    anchor = (3, read_records(chain)[2]["hash"])
    assert chain.verify([anchor]).ok
    # An insider rewrites event 2 and recomputes every later hash and the head.
    records = read_records(chain)
    records[1]["details"] = {"rewritten": True}
    prev = records[0]["hash"]
    for record in records[1:]:
        record["prev_hash"] = prev
        record["hash"] = event_hash(record)
        prev = record["hash"]
    write_records(chain, records)
    chain.head_path.write_text(json.dumps({"seq": 6, "hash": prev, "segment": ""}))
    assert chain.verify().ok  # without an anchor the rewrite is consistent
    result = chain.verify([anchor])
    assert not result.ok and result.first_bad_seq == 3 and "anchor" in result.reason


def test_events_filter_by_time_and_details_round_trip(chain: AuditLog) -> None:
    may = chain.events(since=MAY)
    assert [e.seq for e in may] == [4, 5, 6]
    window = chain.events(since=APRIL + timedelta(minutes=1), until=MAY + timedelta(minutes=1))
    assert [e.seq for e in window] == [2, 3, 4]
    # Values JSON cannot hold exactly (tuples, datetimes, int keys) are stored as they read back,
    # so the hash covers exactly what is on disk.
    awkward: dict[Any, Any] = {"ports": (22, 80), "when": MAY, 5: "five"}
    event = chain.append("settings.changed", actor=ALICE, details=awkward)
    assert event.details == {"ports": [22, 80], "when": str(MAY), "5": "five"}
    assert chain.verify().ok


def test_files_are_private(chain: AuditLog) -> None:
    assert stat.S_IMODE(chain.folder.stat().st_mode) == 0o700
    for path in chain.folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    with pytest.raises(ValueError):
        log.append("x", actor=ALICE, outcome="maybe")
    with pytest.raises(ValueError):
        log.append("", actor=ALICE)


APPENDER = """
import sys
from pathlib import Path
from portconsole.core.adapters.journal import AuditLog
from portconsole.core.identity import Actor
from portconsole.core.adapters.storage import DataLock
data = Path(sys.argv[1])
log = AuditLog(data, DataLock(data / "store.lock"))
actor = Actor(user=sys.argv[2], host="h", origin="daemon")
for i in range(int(sys.argv[3])):
    log.append("scan.start", actor=actor, details={"i": i})
"""


def test_two_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), name, "25"])
        for name in ("p1", "p2")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    log = make_log(tmp_path)
    result = log.verify()
    assert result.ok, result.reason
    assert result.count == 50
    users = [e.actor["user"] for e in log.events()]
    assert users.count("p1") == 25 and users.count("p2") == 25


# -- identity ---------------------------------------------------------------------------


def test_actor_from_environment() -> None:
    env = {
        "SSH_CONNECTION": "127.0.5.3 52311 127.0.5.9 22",
        "SUDO_USER": "alice",
        "USER": "mallory",
    }
    actor = Actor.current("cli", environ=env)
    import pwd

    assert actor.user == pwd.getpwuid(os.geteuid()).pw_name  # never the spoofable $USER
    assert actor.ssh_client == "127.0.5.3"
    assert actor.sudo_user == ("alice" if actor.user != "alice" else None)
    assert actor.origin == "cli"
    assert str(actor).endswith(f"@{actor.host} via 127.0.5.3")
    if actor.user == "root":
        assert actor.person == "alice"
        assert str(actor).startswith("root(sudo:alice)@")
    assert actor.to_json()["ssh_client"] == "127.0.5.3"
    assert Actor.from_json(actor.to_json()) == actor


def test_actor_without_ssh_or_sudo() -> None:
    actor = Actor.current("daemon", environ={})
    assert actor.ssh_client is None and actor.sudo_user is None
    assert str(actor) == f"{actor.user}@{actor.host}"
    assert actor.person == actor.user


def test_untrusted_environment_text_is_tamed() -> None:
    assert parse_ssh_client({"SSH_CONNECTION": "; rm -rf / 1 2 3"}) is None
    assert parse_ssh_client({"SSH_CONNECTION": "\x1b[31m 1 2 3"}) is None
    assert parse_ssh_client({"SSH_CONNECTION": "::1 5000 ::1 22"}) == "::1"
    assert parse_ssh_client({"SSH_CONNECTION": "fe80::1%eth0 5000 fe80::2 22"}) == "fe80::1%eth0"
    assert parse_ssh_client({"SSH_CLIENT": "127.0.0.9 5000 22"}) == "127.0.0.9"
    assert parse_ssh_client({"SSH_CONNECTION": ""}) is None
    assert clean_text("bob\x1b[2J\nroot" + "x" * 500) == ("bob?[2J?root" + "x" * 500)[:64]
    actor = Actor.current("tui", environ={"SUDO_USER": "eve\x07\x1b]0;pwn\x07"})
    assert actor.sudo_user is not None
    assert all(ch.isprintable() for ch in actor.sudo_user)
    with pytest.raises(ValueError):
        Actor.current("web")


@pytest.mark.parametrize("chunk", [16, 100, 64 * 1024])
def test_records_after_reads_back_from_the_end(
    chain: AuditLog, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import portconsole.core.adapters.journal_files as journal_files

    monkeypatch.setattr(journal_files, "TAIL_CHUNK", chunk)
    split_in_two(chain)
    for after in range(0, 7):
        assert [r["seq"] for r in chain.records_after(after)] == list(range(after + 1, 7))
