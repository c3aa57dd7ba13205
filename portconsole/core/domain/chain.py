"""The journal's chain rules, in the standard library only: hashing and verification.

Kept apart from the journal's file handling so that exactly these rules can be shipped in
an evidence pack and run by an assessor without PortConsole installed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GENESIS_HASH = "0" * 64
JOURNAL_FORMAT = 1
HEAD_MISMATCH = "journal.head_mismatch"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def event_hash(record: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a stored event, leaving out its own `hash`."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The journal's last event: its sequence number, hash and segment file."""

    seq: int
    hash: str
    segment: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": JOURNAL_FORMAT,
            "seq": self.seq,
            "hash": self.hash,
            "segment": self.segment,
        }


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What `audit verify` found: whether the chain holds, how far, and the first break."""

    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str
    head: ChainHead | None = field(default=None)
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.count,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "problems": list(self.problems),
            "head": self.head.to_json() if self.head else None,
        }


def _holds_seq(raw_segments: Sequence[tuple[str, bytes]], seq: int) -> bool:
    """Whether event `seq` is stored anywhere (computed only once a break is found)."""
    needle = re.compile(rb'"seq":\s*' + str(seq).encode() + rb"\s*[,}]")
    return any(needle.search(raw) for _, raw in raw_segments)


def verify_chain(
    raw_segments: Sequence[tuple[str, bytes]],
    head_raw: bytes | None,
    anchors: Mapping[int, str],
    start: tuple[int, str] = (0, GENESIS_HASH),
) -> VerifyResult:
    """Check a journal given as its segments' bytes (in name order) and head.json's bytes.

    `start` is the event the given segments continue from (seq and hash): the genesis for
    a whole journal, the anchor before a period for an evidence pack's excerpt. Standard
    library only, so the same rules run in an exported pack's checker.
    """
    problems: list[tuple[int | None, str]] = []
    count = 0
    expected = start[0] + 1
    prev_hash = start[1]
    hashes: dict[int, str] = {}
    last_seq, last_hash = start
    stopped = False
    for name, raw in raw_segments:
        if stopped:
            break
        lines = raw.split(b"\n")
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                seq = int(record["seq"])
            except (ValueError, KeyError, TypeError):
                torn = index == len(lines) - 1 and name == raw_segments[-1][0]
                problems.append(
                    (
                        expected,
                        f"{name}: "
                        + (
                            "a torn last line (a crash; the next write cuts it)"
                            if torn
                            else f"line {index + 1} is not an event"
                        ),
                    )
                )
                stopped = True
                break
            if seq != expected:
                moved = seq < expected or _holds_seq(raw_segments, expected)
                kind = "out of order" if moved else "missing (deleted?)"
                problems.append(
                    (expected, f"event {expected} is {kind}: found event {seq} in {name}")
                )
                stopped = True
                break
            if record.get("hash") != event_hash(record):
                problems.append(
                    (seq, f"event {seq} was altered: its content does not match its hash")
                )
                stopped = True
                break
            if record.get("prev_hash") != prev_hash:
                problems.append(
                    (
                        seq,
                        f"event {seq} does not link to event {seq - 1}: prev_hash differs "
                        f"(event {seq - 1} or {seq} was rewritten)",
                    )
                )
                stopped = True
                break
            if record.get("action") == HEAD_MISMATCH:
                problem = (record.get("details") or {}).get("problem", "head mismatch")
                problems.append((seq, f"event {seq} records that {problem}"))
            prev_hash = str(record["hash"])
            hashes[seq] = prev_hash
            last_seq, last_hash = seq, prev_hash
            expected = seq + 1
            count += 1
    head: ChainHead | None = None
    if head_raw is None:
        if count:
            problems.append((None, "head.json is missing: the chain's tail cannot be checked"))
    else:
        try:
            data = json.loads(head_raw)
            head = ChainHead(int(data["seq"]), str(data["hash"]), str(data.get("segment", "")))
        except (ValueError, KeyError, TypeError) as error:
            problems.append((None, f"head.json is unreadable ({error})"))
    if head is not None and not stopped and (head.seq, head.hash) != (last_seq, last_hash):
        if head.seq > last_seq:
            problems.append(
                (
                    last_seq + 1,
                    f"events {last_seq + 1}-{head.seq} are missing (deleted?): head.json "
                    f"records {head.seq} events, the journal holds {last_seq}",
                )
            )
        elif head.seq < last_seq:
            if hashes.get(head.seq, GENESIS_HASH if head.seq == 0 else None) != head.hash:
                problems.append((head.seq, f"head.json does not match event {head.seq}"))
            problems.append(
                (
                    head.seq + 1,
                    f"events {head.seq + 1}-{last_seq} are past the head: not "
                    "acknowledged (a crash, an older head.json put back, or events "
                    "appended by hand)",
                )
            )
        else:
            problems.append((last_seq, f"event {last_seq} does not match head.json"))
    for seq, digest in sorted(anchors.items()):
        if seq not in hashes:
            problems.append((seq, f"anchor {seq}: the journal holds no event {seq}"))
        elif hashes[seq] != digest:
            problems.append(
                (
                    seq,
                    f"anchor {seq}: event {seq} no longer has the anchored hash (history "
                    "rewritten since the anchor)",
                )
            )
    if not problems:
        return VerifyResult(True, count, None, "ok", head)
    first = problems[0]
    return VerifyResult(False, count, first[0], first[1], head, tuple(text for _, text in problems))
