"""The journal's tip read from the end of its last event: seq, hash and tx without parsing an
event of tens of MB, whatever nested `hash` keys its details or resource hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from portconsole.core.adapters.journal import AuditLog
from portconsole.core.adapters.journal_files import chain_fields, last_record
from portconsole.core.adapters.storage import DataLock
from portconsole.core.identity import Actor

ALICE = Actor(user="alice", host="console1", origin="tui")


def make_log(data_dir: Path) -> AuditLog:
    return AuditLog(data_dir, DataLock(data_dir / "store.lock"))


def last_line(log: AuditLog) -> dict:
    (path,) = log.segments()
    return json.loads(path.read_bytes().splitlines()[-1])


def test_the_tip_is_read_past_nested_hash_keys(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.append("finding.ack", actor=ALICE, details={"n": 1})
    # Keys named `hash` below the top level, after it (resource sorts after hash) and
    # before it (details), and text that looks like one inside a string.
    log.append(
        "finding.ack",
        actor=ALICE,
        resource={"finding_id": "F-1", "hash": "f" * 64, "seq": 99, "tx": [1, 1]},
        details={"hash": "e" * 64, "note": ',"hash":"0","seq":7,"tx":[7,1]}', "seq": 5},
    )
    (path,) = log.segments()
    whole = last_line(log)
    tip = last_record(path)
    assert tip is not None
    assert (tip["seq"], tip["hash"], tip["tx"]) == (whole["seq"], whole["hash"], whole["tx"])
    assert tip["seq"] == 2 and tip["resource"]["hash"] == "f" * 64
    assert log.tip().seq == 2 and log.tip().hash == whole["hash"]


def test_a_line_without_canonical_chain_fields_is_not_read_as_one() -> None:
    assert chain_fields(b'{"a":1,"seq":3}') is None  # no hash key
    assert chain_fields(b'{"hash":"x","seq":3}') is None  # hash first: no comma before it
    torn = b'{"action":"a","hash":"' + b"a" * 64 + b'","seq":3,"tx":[3'
    assert chain_fields(torn) is None
    nested = b'{"details":{"x":1,"hash":"n","seq":9},"hash":"h","seq":4,"tx":[4,1]}'
    assert chain_fields(nested) == {"hash": "h", "seq": 4, "tx": [4, 1]}


def test_an_event_not_in_key_order_is_still_read_whole(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.append("finding.ack", actor=ALICE, details={"n": 1})
    (path,) = log.segments()
    record = last_line(log)
    # Another writer's key order (tx first): the tail holds no `,"hash":` after which the
    # chain fields close the event, so the event is parsed whole, as before.
    reordered = {"tx": record["tx"], "seq": record["seq"], **record}
    path.write_bytes(json.dumps(reordered, separators=(",", ":")).encode() + b"\n")
    tip = last_record(path)
    assert tip is not None and tip["seq"] == record["seq"] and tip["hash"] == record["hash"]


_OPEN_PEAK = """
import resource, sys
from pathlib import Path
from portconsole.core.adapters.journal import AuditLog
from portconsole.core.adapters.storage import DataLock
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
log = AuditLog(Path(sys.argv[1]), DataLock(Path(sys.argv[1]) / "store.lock"))
log.begin(); log.discard()
tip = log.tip()
print(tip.seq, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_opening_a_journal_whose_last_event_is_huge_does_not_parse_it(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    # One event of ~19 MB, as a transaction writing 100,000 findings leaves.
    rows = {
        f"F-{i:06d}": {"host": f"127.1.{i // 250}.{i % 250}", "hash": "h"} for i in range(400_000)
    }
    log.append("finding.bulk", actor=ALICE, details={"findings": rows})
    (path,) = log.segments()
    assert path.stat().st_size > 15_000_000
    del rows
    # A fresh process opens it (recovery and the tip): its memory grows by less than the
    # event's size (parsing it whole took ~10x its size).
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_PEAK, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    ).stdout.split()
    assert int(out[0]) == 1
    assert int(out[1]) < 20, f"opening the journal grew the process by {out[1]} MB"
