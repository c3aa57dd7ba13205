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

from portconsole.core.audit import GENESIS_HASH, AuditEntry, AuditLog, event_hash
from portconsole.core.identity import Actor, clean_text, parse_ssh_client
from portconsole.core.storage import DataLock

APRIL = datetime(2026, 4, 30, 23, 0, tzinfo=UTC)
MAY = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
ALICE = Actor(user="alice", host="console1", origin="tui", ssh_client="127.0.5.3")


def make_log(data_dir: Path, **kwargs: Any) -> AuditLog:
    return AuditLog(data_dir, DataLock(data_dir / "store.lock"), **kwargs)


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


def segment_path(log: AuditLog, seq: int) -> Path:
    return log.folder / ("2026-04.json" if seq <= 3 else "2026-05.json")


def read_segment(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def write_segment(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data))


def index_of(data: dict[str, Any], seq: int) -> int:
    return next(i for i, event in enumerate(data["events"]) if event["seq"] == seq)


def test_intact_chain_verifies_with_count(chain: AuditLog) -> None:
    result = chain.verify()
    assert result.ok, result.reason
    assert result.count == 6
    assert result.first_bad_seq is None
    assert sorted(p.name for p in chain.folder.iterdir()) == [
        "2026-04.json",
        "2026-05.json",
        "head.json",
    ]
    events = chain.events()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    head = chain.head()
    assert head is not None and (head.seq, head.hash) == (6, events[-1].hash)
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
    path = segment_path(chain, seq)
    data = read_segment(path)
    data["events"][index_of(data, seq)]["details"]["forged"] = True
    write_segment(path, data)
    result = chain.verify()
    assert not result.ok
    assert result.first_bad_seq == seq
    assert result.count == seq - 1
    assert f"event {seq}" in result.reason


@pytest.mark.parametrize("field", ["actor", "outcome", "at", "action"])
def test_editing_any_field_is_detected(chain: AuditLog, field: str) -> None:
    path = segment_path(chain, 2)
    data = read_segment(path)
    event = data["events"][index_of(data, 2)]
    forged = {
        "actor": {**event["actor"], "user": "mallory"},
        "outcome": "failure",
        "at": "2026-04-01T00:00:00Z",
        "action": "finding.approved",
    }[field]
    assert event[field] != forged
    event[field] = forged
    write_segment(path, data)
    assert chain.verify().first_bad_seq == 2


@pytest.mark.parametrize("seq", [2, 3, 4])
def test_edit_with_recomputed_hash_breaks_the_next_link(chain: AuditLog, seq: int) -> None:
    path = segment_path(chain, seq)
    data = read_segment(path)
    event = data["events"][index_of(data, seq)]
    event["outcome"] = "failure" if event["outcome"] == "success" else "success"
    event["hash"] = event_hash(event)
    write_segment(path, data)
    result = chain.verify()
    assert not result.ok
    assert result.first_bad_seq == seq + 1
    assert f"event {seq}" in result.reason


def test_edit_of_last_event_with_recomputed_hash_is_caught_by_the_head(chain: AuditLog) -> None:
    path = segment_path(chain, 6)
    data = read_segment(path)
    data["events"][-1]["details"]["n"] = 99
    data["events"][-1]["hash"] = event_hash(data["events"][-1])
    write_segment(path, data)
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 6


@pytest.mark.parametrize("seq", [1, 2, 3, 4, 5, 6])
def test_deleting_an_event_fails_at_that_event(chain: AuditLog, seq: int) -> None:
    path = segment_path(chain, seq)
    data = read_segment(path)
    del data["events"][index_of(data, seq)]
    write_segment(path, data)
    result = chain.verify()
    assert not result.ok
    assert result.first_bad_seq == seq
    assert "missing" in result.reason


def test_deleting_a_whole_segment_is_detected(chain: AuditLog) -> None:
    (chain.folder / "2026-04.json").unlink()
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 1
    (chain.folder / "2026-05.json").unlink()
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 1


def test_deleting_the_newest_segment_is_detected(chain: AuditLog) -> None:
    (chain.folder / "2026-05.json").unlink()
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 4 and result.count == 3


def test_reordering_within_a_segment_fails_at_the_first_moved_event(chain: AuditLog) -> None:
    path = segment_path(chain, 2)
    data = read_segment(path)
    events = data["events"]
    events[1], events[2] = events[2], events[1]
    write_segment(path, data)
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 2
    assert "out of order" in result.reason


def test_reordering_across_the_segment_boundary_fails_at_that_event(chain: AuditLog) -> None:
    april_path, may_path = segment_path(chain, 3), segment_path(chain, 4)
    april, may = read_segment(april_path), read_segment(may_path)
    april["events"][-1], may["events"][0] = may["events"][0], april["events"][-1]
    write_segment(april_path, april)
    write_segment(may_path, may)
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 3


def test_swapping_whole_segment_contents_is_detected(chain: AuditLog) -> None:
    april_path, may_path = segment_path(chain, 1), segment_path(chain, 6)
    april, may = april_path.read_bytes(), may_path.read_bytes()
    april_path.write_bytes(may)
    may_path.write_bytes(april)
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 1


def test_tampered_head_is_an_inconsistency(chain: AuditLog) -> None:
    original = chain.head_path.read_bytes()
    head = json.loads(original)

    chain.head_path.write_text(json.dumps({**head, "hash": "f" * 64}))
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 6

    chain.head_path.write_text(json.dumps({**head, "seq": 3}))
    result = chain.verify()
    assert not result.ok and "head.json" in result.reason

    chain.head_path.write_text("{not json")
    assert not chain.verify().ok

    chain.head_path.unlink()
    result = chain.verify()
    assert not result.ok and "missing" in result.reason

    chain.head_path.write_bytes(original)
    assert chain.verify().ok


def test_append_after_a_tail_deletion_keeps_the_hole_visible(chain: AuditLog) -> None:
    path = segment_path(chain, 6)
    data = read_segment(path)
    data["events"].pop()
    write_segment(path, data)
    event = chain.append("export", actor=ALICE, at=MAY + timedelta(hours=1))
    assert event.seq == 7
    result = chain.verify()
    assert not result.ok and result.first_bad_seq == 6


def test_crash_between_segment_and_head_write_is_accepted(chain: AuditLog) -> None:
    """The segment is written before the head: a crash between leaves the head one behind."""
    old_head = chain.head_path.read_bytes()
    chain.append("scan.start", actor=ALICE, at=MAY + timedelta(hours=2))
    chain.head_path.write_bytes(old_head)
    result = chain.verify()
    assert result.ok and result.count == 7
    event = chain.append("scan.end", actor=ALICE, at=MAY + timedelta(hours=3))
    assert event.seq == 8
    result = chain.verify()
    assert result.ok and result.count == 8


def test_append_many_writes_a_batch_across_segments(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_max_events=3)
    log.append("scan.start", actor=ALICE, at=APRIL)
    old_head = log.head_path.read_bytes()
    batch = [
        AuditEntry("change.port_opened", ALICE, resource={"port": port}, at=APRIL)
        for port in range(4)
    ] + [AuditEntry("scan.end", ALICE, outcome="failure", at=MAY)]
    events = log.append_many(batch)
    assert [e.seq for e in events] == [2, 3, 4, 5, 6]
    assert [s.filename for s in log.segments()] == [
        "2026-04.json",
        "2026-04.1.json",
        "2026-05.json",
    ]
    result = log.verify()
    assert result.ok and result.count == 6
    # A crash after the segments but before the head leaves the head at an earlier event.
    log.head_path.write_bytes(old_head)
    result = log.verify()
    assert result.ok and "interrupted" in result.reason
    assert log.append("export", actor=ALICE, at=MAY).seq == 7
    assert log.verify().ok
    assert log.append_many([]) == []


def test_head_missing_beside_events_is_damage(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.append("daemon.start", actor=ALICE)
    assert log.verify().ok
    log.head_path.unlink()
    assert not log.verify().ok


def test_segments_roll_by_size_and_still_verify(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_max_events=2)
    for index in range(5):
        log.append("note", actor=ALICE, at=MAY + timedelta(minutes=index))
    log.append("note", actor=ALICE, at=MAY.replace(month=6))
    names = sorted(p.name for p in log.folder.glob("2026-*.json"))
    assert names == ["2026-05.1.json", "2026-05.2.json", "2026-05.json", "2026-06.json"]
    assert [str(s) for s in log.segments()] == ["2026-05", "2026-05.1", "2026-05.2", "2026-06"]
    result = log.verify()
    assert result.ok and result.count == 6
    # Deleting the middle part of a month is caught at its first event.
    (log.folder / "2026-05.1.json").unlink()
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3


def test_clock_stepping_back_a_month_keeps_chain_order(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.append("a", actor=ALICE, at=MAY)
    log.append("b", actor=ALICE, at=APRIL)
    assert [s.filename for s in log.segments()] == ["2026-05.json"]
    assert log.verify().ok


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
from portconsole.core.audit import AuditLog
from portconsole.core.identity import Actor
from portconsole.core.storage import DataLock
data = Path(sys.argv[1])
log = AuditLog(data, DataLock(data / "store.lock"), segment_max_events=7)
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
