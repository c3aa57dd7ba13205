"""The shared TinyDB table: fresh ids across processes, distinct ids within one write."""

from __future__ import annotations

from pathlib import Path

from portconsole.core.adapters.storage import DataLock, open_tinydb


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
