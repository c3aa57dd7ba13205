"""The audit chain: every action as an event that carries the hash of the one before.

Layout, under `<data_dir>/audit/` (folder 0700, files 0600, never pruned):

- `YYYY-MM.json`, then `YYYY-MM.1.json`, `YYYY-MM.2.json`, ...: segments. An event goes
  into the segment of the month of its `at`, and a segment is rolled to the next part once
  it holds `segment_max_events` events, because every append rewrites the whole segment
  atomically (temp file, fsync, rename): a size cap keeps one append cheap however busy a
  month is (1,000 events, about 0.5 MB: an append then costs 20-50 ms, mostly fsync).
  If the clock steps back a month, the event goes into the newest segment, so segments are
  always in chain order and segment `M` holds only events from month `M` or earlier.
- `head.json`: the chain's tip (seq, hash, segment). Append reads only the newest segment
  and the head, never the whole history. The head also anchors the tail: deleting the last
  events of a segment leaves the head pointing past them, which `verify` reports. A fresh
  chain writes its head (seq 0) before its first event, so a missing head beside events is
  damage.

Each event's `hash` is sha256 of the canonical JSON (sorted keys, compact separators, UTF-8)
of the event without `hash`; `prev_hash` is the hash of the event before (64 zeros for the
first). `verify` recomputes every hash in order, so editing, deleting or reordering a stored
event fails at that event (an edit whose author also recomputed that event's hash fails
at the next event, whose prev_hash no longer matches, or at the head for the last event).
Limits: someone who can write the files and recomputes every later hash and the head can
rewrite history undetected; to guard against that, copy the head (`AuditLog.head()`)
somewhere else regularly (e.g. print it in reports).

`details` is stored as given: callers pass text with secrets already masked (the
notifications module masks apprise URLs before it audits an attempt).

Crash safety: segments are written before the head, so a crash between the two leaves
the head at an earlier event of a valid chain; append and verify accept exactly that (the
head's seq and hash must match that event). A head ahead of the events, or matching none
of them, fails verification. Batches (`append_many`) cost one write per touched segment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from portconsole.core.errors import StoreError
from portconsole.core.identity import Actor
from portconsole.core.storage import (
    DataLock,
    atomic_write_bytes,
    ensure_private_dir,
    load_json_file,
)
from portconsole.core.timeutil import iso, month_key, parse_iso, utcnow

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
SEGMENT_FORMAT = 1
DEFAULT_SEGMENT_MAX_EVENTS = 1000
OUTCOMES = ("success", "failure")
_SEGMENT_NAME = re.compile(r"^(\d{4}-\d{2})(?:\.(\d+))?\.json$")


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def event_hash(record: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a stored event, leaving out its own `hash`."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _plain(value: Any) -> Any:
    """The JSON value exactly as it will read back (tuples become lists, keys strings...),
    so the hash is computed over what is stored."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


@dataclass(frozen=True, slots=True)
class SegmentName:
    month: str
    part: int

    @property
    def filename(self) -> str:
        return f"{self.month}.json" if self.part == 0 else f"{self.month}.{self.part}.json"

    def __str__(self) -> str:
        return self.filename.removesuffix(".json")

    @classmethod
    def parse(cls, filename: str) -> SegmentName | None:
        match = _SEGMENT_NAME.match(filename)
        if match is None:
            return None
        return cls(match.group(1), int(match.group(2) or 0))


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event as stored. `actor` is the stored {user, sudo_user, ssh_client, host} map."""

    seq: int
    id: str
    at: datetime
    actor: dict[str, Any]
    origin: str
    action: str
    outcome: str
    resource: dict[str, Any]
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def who(self) -> str:
        """The display form, "alice@myhost via 127.0.5.3"."""
        return str(Actor.from_json(self.actor, origin=self.origin))

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "at": iso(self.at),
            "actor": dict(self.actor),
            "origin": self.origin,
            "action": self.action,
            "outcome": self.outcome,
            "resource": dict(self.resource),
            "details": dict(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> AuditEvent:
        actor = record.get("actor")
        return cls(
            seq=int(record["seq"]),
            id=str(record.get("id", "")),
            at=parse_iso(str(record["at"])),
            actor=dict(actor) if isinstance(actor, dict) else {},
            origin=str(record.get("origin", "")),
            action=str(record.get("action", "")),
            outcome=str(record.get("outcome", "")),
            resource=dict(record.get("resource") or {}),
            details=dict(record.get("details") or {}),
            prev_hash=str(record.get("prev_hash", "")),
            hash=str(record.get("hash", "")),
        )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An event to append (see `AuditLog.append` for the fields)."""

    action: str
    actor: Actor
    outcome: str = "success"
    resource: Mapping[str, Any] | None = None
    details: Mapping[str, Any] | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: str
    segment: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SEGMENT_FORMAT,
            "seq": self.seq,
            "hash": self.hash,
            "segment": self.segment,
        }


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str
    head: ChainHead | None = field(default=None)


class AuditLog:
    """Append-only, hash-chained audit events in `<data_dir>/audit/`.

    `lock` is the data dir's DataLock (the one the store uses): appends hold it, and
    `verify` holds it while reading so it never sees a half-finished append.
    """

    def __init__(
        self,
        data_dir: Path,
        lock: DataLock,
        *,
        segment_max_events: int = DEFAULT_SEGMENT_MAX_EVENTS,
    ) -> None:
        if segment_max_events < 1:
            raise ValueError("segment_max_events must be at least 1")
        self.data_dir = Path(data_dir)
        self.folder = self.data_dir / "audit"
        self.head_path = self.folder / "head.json"
        self.lock = lock
        self.segment_max_events = segment_max_events

    # -- files -------------------------------------------------------------------------

    def segments(self) -> list[SegmentName]:
        """Every segment, in chain order."""
        try:
            names = [SegmentName.parse(p.name) for p in self.folder.iterdir()]
        except FileNotFoundError:
            return []
        return sorted((n for n in names if n is not None), key=lambda n: (n.month, n.part))

    def _segment_path(self, name: SegmentName) -> Path:
        return self.folder / name.filename

    def _load_segment(self, name: SegmentName) -> list[dict[str, Any]]:
        data = load_json_file(self._segment_path(name))
        if data is None:
            return []
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list):
            raise StoreError(
                f"audit segment {self._segment_path(name)} has no event list; "
                "restore it from backup and run `portconsole audit verify`"
            )
        return events

    def _write_segment(self, name: SegmentName, events: list[dict[str, Any]]) -> None:
        document = {"format": SEGMENT_FORMAT, "segment": str(name), "events": events}
        atomic_write_bytes(self._segment_path(name), canonical_json(document))

    def _read_head(self) -> ChainHead | None:
        data = load_json_file(self.head_path)
        if data is None:
            return None
        try:
            return ChainHead(int(data["seq"]), str(data["hash"]), str(data.get("segment", "")))
        except (KeyError, TypeError, ValueError):
            raise StoreError(
                f"audit head {self.head_path} is malformed; run `portconsole audit verify`, "
                "then move the file away to let the chain continue from its newest event"
            ) from None

    def head(self) -> ChainHead | None:
        """The chain's tip as recorded in head.json (copy it elsewhere to anchor the chain)."""
        return self._read_head()

    # -- writing -----------------------------------------------------------------------

    def append(
        self,
        action: str,
        *,
        actor: Actor,
        outcome: str = "success",
        resource: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> AuditEvent:
        """Record one event and return it. `details` must already have secrets masked."""
        entry = AuditEntry(action, actor, outcome, resource, details, at)
        return self.append_many([entry])[0]

    def append_many(self, entries: Sequence[AuditEntry]) -> list[AuditEvent]:
        """Record several events with one write per touched segment (e.g. a scan's changes).

        Each append fsyncs the segment and the head (~20-50 ms), so a scan with a hundred
        changes should use this rather than a hundred appends.
        """
        for entry in entries:
            if entry.outcome not in OUTCOMES:
                raise ValueError(f"outcome must be one of {OUTCOMES}, not {entry.outcome!r}")
            if not entry.action:
                raise ValueError("action must not be empty")
        if not entries:
            return []
        records: list[dict[str, Any]] = []
        with self.lock.hold():
            ensure_private_dir(self.folder)
            segments = self.segments()
            current = segments[-1] if segments else None
            events = self._load_segment(current) if current else []
            head = self._read_head()
            if head is None and not events:
                # A fresh chain gets its head before any event, so a missing head.json
                # beside events is always damage, never an interrupted first append.
                atomic_write_bytes(
                    self.head_path, canonical_json(ChainHead(0, GENESIS_HASH, "").to_json())
                )
            prev_seq, prev_hash = self._tip(head, events[-1] if events else None)
            dirty = False
            for entry in entries:
                moment = entry.at or utcnow()
                target = self._target_segment(current, len(events), month_key(moment))
                if target != current:
                    if current is not None and dirty:
                        self._write_segment(current, events)
                    current, events, dirty = target, [], False
                actor_json = entry.actor.to_json()
                actor_json.pop("origin")
                record: dict[str, Any] = _plain(
                    {
                        "seq": prev_seq + 1,
                        "id": uuid.uuid4().hex,
                        "at": iso(moment),
                        "actor": actor_json,
                        "origin": entry.actor.origin,
                        "action": entry.action,
                        "outcome": entry.outcome,
                        "resource": dict(entry.resource or {}),
                        "details": dict(entry.details or {}),
                        "prev_hash": prev_hash,
                    }
                )
                record["hash"] = event_hash(record)
                events.append(record)
                records.append(record)
                prev_seq, prev_hash, dirty = record["seq"], record["hash"], True
            assert current is not None
            # Segments first, head last: a crash in between leaves the head behind, at an
            # earlier event of a valid chain, which append and verify accept.
            self._write_segment(current, events)
            new_head = ChainHead(prev_seq, prev_hash, str(current))
            atomic_write_bytes(self.head_path, canonical_json(new_head.to_json()))
        return [AuditEvent.from_json(record) for record in records]

    def _tip(self, head: ChainHead | None, last: Mapping[str, Any] | None) -> tuple[int, str]:
        """Where the next event links: the newest of the head and the newest stored event.

        The head ahead of the events means events were removed at the tail: linking to the
        head keeps that hole visible to `verify` forever instead of papering over it.
        """
        if last is None:
            return (head.seq, head.hash) if head else (0, GENESIS_HASH)
        last_seq, last_hash = int(last.get("seq", 0)), str(last.get("hash", ""))
        if head is None or head.seq < last_seq:
            return last_seq, last_hash
        if head.seq > last_seq or head.hash != last_hash:
            log.warning("audit head.json does not match the newest event: chain inconsistent")
        return head.seq, head.hash

    def _target_segment(self, latest: SegmentName | None, count: int, month: str) -> SegmentName:
        if latest is None or month > latest.month:
            return SegmentName(month, 0)
        if count >= self.segment_max_events:
            return SegmentName(latest.month, latest.part + 1)
        return latest

    # -- reading -----------------------------------------------------------------------

    def events(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[AuditEvent]:
        """Events with since <= at < until, in chain order (reads every segment)."""
        found: list[AuditEvent] = []
        for name in self.segments():
            # A segment only holds events from its month or earlier (see the module doc),
            # so whole months before `since` can be skipped unread.
            if since is not None and name.month < month_key(since):
                continue
            for record in self._load_segment(name):
                event = AuditEvent.from_json(record)
                if since is not None and event.at < since:
                    continue
                if until is not None and event.at >= until:
                    continue
                found.append(event)
        return found

    def verify(self) -> VerifyResult:
        """Recompute every hash in chain order and check the head; stop at the first break."""
        with self.lock.hold():
            raw_segments: list[tuple[SegmentName, bytes | None]] = []
            for name in self.segments():
                try:
                    raw_segments.append((name, self._segment_path(name).read_bytes()))
                except FileNotFoundError:
                    raw_segments.append((name, None))
            try:
                head_raw: bytes | None = self.head_path.read_bytes()
            except FileNotFoundError:
                head_raw = None
        return _verify(raw_segments, head_raw, self.head_path)


def _verify(
    raw_segments: list[tuple[SegmentName, bytes | None]], head_raw: bytes | None, head_path: Path
) -> VerifyResult:
    count = 0
    expected_seq = 1
    prev_hash = GENESIS_HASH
    last: dict[str, Any] | None = None
    hashes: list[str] = []

    def broken(seq: int | None, reason: str) -> VerifyResult:
        return VerifyResult(False, count, seq, reason)

    for name, raw in raw_segments:
        try:
            document = json.loads(raw or b"")
            records = document["events"]
            if not isinstance(records, list):
                raise TypeError("events is not a list")
        except (ValueError, KeyError, TypeError) as error:
            return broken(expected_seq, f"segment {name.filename} is unreadable ({error})")
        for record in records:
            if not isinstance(record, dict):
                return broken(expected_seq, f"segment {name.filename} holds a non-event")
            try:
                seq = int(record["seq"])
            except (KeyError, TypeError, ValueError):
                return broken(expected_seq, f"event after seq {expected_seq - 1} has no seq")
            if seq > expected_seq:
                if expected_seq in _all_seqs(raw_segments):
                    return broken(
                        expected_seq,
                        f"events out of order: found event {seq} where {expected_seq} was "
                        f"expected in {name.filename}",
                    )
                return broken(
                    expected_seq,
                    f"event {expected_seq} is missing (deleted?): the next event found is {seq} "
                    f"in {name.filename}",
                )
            if seq < expected_seq:
                return broken(
                    expected_seq,
                    f"events out of order: found event {seq} where {expected_seq} was expected "
                    f"in {name.filename}",
                )
            if record.get("hash") != event_hash(record):
                return broken(seq, f"event {seq} was altered: its content does not match its hash")
            if record.get("prev_hash") != prev_hash:
                return broken(
                    seq,
                    f"event {seq} does not link to event {seq - 1}: prev_hash differs "
                    f"(event {seq - 1} or {seq} was rewritten)",
                )
            prev_hash = str(record["hash"])
            hashes.append(prev_hash)
            expected_seq = seq + 1
            count += 1
            last = record

    if head_raw is None:
        if count == 0:
            return VerifyResult(True, count, None, "ok")
        return broken(None, f"{head_path} is missing: the chain's tail cannot be checked")
    try:
        head_data = json.loads(head_raw)
        head = ChainHead(int(head_data["seq"]), str(head_data["hash"]), str(head_data["segment"]))
    except (ValueError, KeyError, TypeError) as error:
        return broken(None, f"{head_path} is unreadable ({error})")
    last_seq = int(last["seq"]) if last else 0
    last_hash = str(last["hash"]) if last else GENESIS_HASH
    if head.seq == last_seq and head.hash == last_hash:
        return VerifyResult(True, count, None, "ok", head)
    if 0 <= head.seq < last_seq and head.hash == (
        hashes[head.seq - 1] if head.seq else GENESIS_HASH
    ):
        # Segments are written before the head: a crash in between leaves the head at an
        # earlier event of a valid chain.
        return VerifyResult(
            True,
            count,
            None,
            f"ok ({last_seq - head.seq} newest events after head.json: an append was interrupted)",
            head,
        )
    if head.seq > last_seq:
        return VerifyResult(
            False,
            count,
            last_seq + 1,
            f"event {last_seq + 1} is missing (deleted?): head.json records {head.seq} events, "
            f"the segments hold {last_seq}",
            head,
        )
    if head.seq == last_seq:
        return VerifyResult(
            False,
            count,
            last_seq,
            f"event {last_seq} does not match head.json (the event or head.json was altered)",
            head,
        )
    return VerifyResult(
        False,
        count,
        head.seq + 1,
        f"head.json records {head.seq} events but the segments hold {last_seq}: "
        "head.json was altered or replaced by an older copy",
        head,
    )


def _all_seqs(raw_segments: list[tuple[SegmentName, bytes | None]]) -> set[int]:
    """Every seq stored anywhere (only computed once a break is found, to name its kind)."""
    found: set[int] = set()
    for _, raw in raw_segments:
        try:
            records = json.loads(raw or b"")["events"]
            found.update(int(r["seq"]) for r in records if isinstance(r, dict) and "seq" in r)
        except (ValueError, KeyError, TypeError):
            continue
    return found
