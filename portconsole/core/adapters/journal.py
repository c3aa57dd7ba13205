"""The journal: the record. Every fact is an event that carries the hash of the one before.

Layout, under `<data_dir>/journal/` (folder 0700, files 0600, never pruned, never rewritten):

- `YYYY-MM.jsonl`: segments, JSON Lines, one event a line, appended and never rewritten. A
  transaction goes into the segment of the month of this machine's clock when it is written;
  if the clock steps back a month it goes into the newest segment, so segments are always in
  chain order. Events are ordered by `seq`, never by time.
- `head.json`: the chain's tip (seq, hash, segment) written after each transaction.

An event is `{seq, id, at, recorded_at, actor, origin, action, outcome, resource, details,
tx, prev_hash, hash}` plus, on the last event of a transaction, what the transaction did to
the projections: `effects` (table documents set and removed) and `chunks` (the scan-history
bytes it appended, each with its sha256). `at` is when the fact was observed (a scan's own
time, an imported report's time), `recorded_at` when it was written. `hash` is sha256 of
the canonical JSON (sorted keys, compact separators, UTF-8) of the event without `hash`.

One operation is one transaction, written with one `write` and one fsync: `tx` is
`[first seq, count]` on every event of it. A crash can only leave a torn tail (a partial
line, or a transaction missing its last lines): the next writer cuts it off and keeps the
bytes in `<segment>.torn-<stamp>`. A crash after the append but before head.json leaves the
head exactly one transaction behind; the next writer moves it on. Any other disagreement of
the head and the events (an older head.json put back, events deleted at the tail, events
appended by hand past the head) is itself recorded as a `journal.head_mismatch` event, so
`verify` reports it forever, even after later appends moved the head on.

Limits: someone who can write the files and recomputes every later hash and the head can
rewrite history undetected; anchors (the head published elsewhere, see `verify(anchors=)`)
catch that for everything before the anchor.

`details` is stored as given: callers pass text with secrets already masked. The event
types (`AuditEvent`, `AuditEntry`) and an anchor's text are in adapters/journal_events.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from msgspec import Struct, field

from portconsole.core.adapters.journal_events import AuditEntry, AuditEvent, parse_anchor
from portconsole.core.adapters.journal_files import (
    cut_torn_tail,
    last_record,
    read_records,
    records_backwards,
)
from portconsole.core.adapters.storage import (
    FILE_MODE,
    DataLock,
    atomic_write_bytes,
    ensure_private_dir,
    fsync_dir,
    keep_owner,
)
from portconsole.core.domain.chain import (
    GENESIS_HASH,
    HEAD_MISMATCH,
    ChainHead,
    VerifyResult,
    canonical_json,
    event_hash,
    verify_chain,
)
from portconsole.core.domain.model import EventOutcome
from portconsole.core.errors import StoreError
from portconsole.core.identity import Actor
from portconsole.core.timeutil import iso, month_key, utcnow

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
HEAD_FILE = "head.json"
SEGMENT_SUFFIX = ".jsonl"
OUTCOMES: tuple[str, ...] = tuple(EventOutcome)
_SEGMENT_NAME = re.compile(r"^(\d{4}-\d{2})\.jsonl$")


def _plain(value: Any) -> Any:
    """The JSON value exactly as it will read back (tuples become lists, keys strings...),
    so the hash is computed over what is stored."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


class _Staged(Struct):
    """Events of the open transaction, chained in memory until the transaction commits."""

    records: list[dict[str, Any]] = field(default_factory=list)
    tip: tuple[int, str] = (0, GENESIS_HASH)


def _first_seq(path: Path) -> int:
    """The seq of a segment's first event (0 when it has none yet)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline()
        return int(json.loads(first)["seq"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return 0


class AuditLog:
    """The append-only, hash-chained journal in `<data_dir>/journal/`.

    `lock` is the data dir's DataLock. Outside a transaction every `append_many` is its own
    transaction. Inside one (the store opens a transaction for each outermost lock hold) the
    events are staged and written together when the store commits, with the transaction's
    effects on the projections.
    """

    def __init__(self, data_dir: Path, lock: DataLock) -> None:
        self.data_dir = Path(data_dir)
        self.folder = self.data_dir / JOURNAL_DIR
        self.head_path = self.folder / HEAD_FILE
        self.lock = lock
        self._staged: dict[int, _Staged] = {}
        self._pending_mismatch: dict[str, Any] | None = None
        # The last segment as `_recover` last found it agreeing with head.json (path, inode,
        # size, mtime) and that head: unchanged since, its last record is not read again
        # (after a big transaction that record is megabytes, parsed at every begin).
        self._agreed: tuple[tuple[str, int, int, int], tuple[int, str]] | None = None

    # -- files -------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """Every segment, in chain order."""
        try:
            names = [p for p in self.folder.iterdir() if _SEGMENT_NAME.match(p.name)]
        except FileNotFoundError:
            return []
        return sorted(names, key=lambda p: p.name)

    def exists(self) -> bool:
        return bool(self.segments()) or self.head_path.exists()

    def _read_head(self) -> ChainHead | None:
        try:
            raw = self.head_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            return ChainHead(int(data["seq"]), str(data["hash"]), str(data.get("segment", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def head(self) -> ChainHead | None:
        """The chain's tip as recorded in head.json (publish it elsewhere to anchor the chain)."""
        return self._read_head()

    def tip(self) -> ChainHead:
        """The newest event actually stored (seq 0 and the genesis hash when empty)."""
        segments = self.segments()
        for path in reversed(segments):
            last = last_record(path)
            if last is not None:
                return ChainHead(int(last["seq"]), str(last["hash"]), path.name)
        return ChainHead(0, GENESIS_HASH, "")

    # -- transactions ------------------------------------------------------------------

    def in_transaction(self) -> bool:
        return threading.get_ident() in self._staged

    def begin(self) -> None:
        """Open a transaction for this thread (the caller holds the lock)."""
        self._staged[threading.get_ident()] = _Staged()
        self._recover()

    def discard(self) -> None:
        self._staged.pop(threading.get_ident(), None)

    def commit(
        self,
        effects: Mapping[str, Any] | None = None,
        chunks: Sequence[Mapping[str, Any]] = (),
        actor: Actor | None = None,
    ) -> ChainHead | None:
        """Write the staged events (one write, one fsync), effects and chunks on the last.

        A transaction that changed projections but staged no event gets a `store.update`
        event, so no change is ever made without its event. Returns the new head, or None
        when there was nothing to write.
        """
        staged = self._staged.pop(threading.get_ident(), None)
        if staged is None:
            return None
        if (effects or chunks) and not staged.records:
            self._stage(staged, [AuditEntry("store.update", actor or Actor.current("system"))])
        if not staged.records:
            return None
        last = staged.records[-1]
        if effects:
            last["effects"] = _plain(effects)
        if chunks:
            last["chunks"] = _plain(list(chunks))
        return self._write(staged.records)

    def _stage(self, staged: _Staged, entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
        """Chain `entries` after the staged ones; returns their records (only theirs)."""
        asked = len(entries)
        if not staged.records:
            tip = self.tip()
            staged.tip = (tip.seq, tip.hash)
            if self._pending_mismatch is not None:
                mismatch, self._pending_mismatch = self._pending_mismatch, None
                entries = [
                    AuditEntry(HEAD_MISMATCH, Actor.current("system"), "failure", None, mismatch),
                    *entries,
                ]
        # prev_hash is the chain's tip; _write links the staged events to each other.
        prev_seq, prev_hash = staged.tip
        if staged.records:
            prev_seq = int(staged.records[-1]["seq"])
        now = utcnow()
        made: list[dict[str, Any]] = []
        for entry in entries:
            actor_json = entry.actor.to_json()
            actor_json.pop("origin")
            record: dict[str, Any] = _plain(
                {
                    "seq": prev_seq + 1,
                    "id": uuid.uuid4().hex,
                    "at": iso(entry.at or now),
                    "recorded_at": iso(now),
                    "actor": actor_json,
                    "origin": entry.actor.origin,
                    "action": entry.action,
                    "outcome": entry.outcome,
                    "resource": dict(entry.resource or {}),
                    "details": dict(entry.details or {}),
                    "prev_hash": prev_hash,
                }
            )
            # Hashed once, when the transaction is written (_write): the transaction marker
            # joins the hash, so a hash computed now would be computed again.
            record["hash"] = ""
            staged.records.append(record)
            made.append(record)
            prev_seq = record["seq"]
        return made[-asked:]

    def _write(self, records: list[dict[str, Any]]) -> ChainHead:
        first = int(records[0]["seq"])
        for record in records:
            record["tx"] = [first, len(records)]
        # The tx marker joins the hash: recompute the chain over the final records.
        prev = str(records[0]["prev_hash"])
        for record in records:
            record["prev_hash"] = prev
            record["hash"] = event_hash(record)
            prev = record["hash"]
        data = b"".join(canonical_json(r) + b"\n" for r in records)
        created = not self.folder.exists()
        ensure_private_dir(self.folder)
        segments = self.segments()
        month = month_key(utcnow())
        newest = segments[-1].name[: -len(SEGMENT_SUFFIX)] if segments else ""
        path = self.folder / f"{max(month, newest)}{SEGMENT_SUFFIX}"
        created = created or not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        keep_owner(fd, self.folder)
        before = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(28, "short write to the journal (disk full?)")
            os.fsync(fd)
        except OSError as error:
            # Cut what part of the transaction reached the file: it was never acknowledged.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            raise StoreError(
                f"cannot write the journal {path}: {error.strerror or error}; free space and retry"
            ) from None
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.folder)
            fsync_dir(self.data_dir)
        head = ChainHead(int(records[-1]["seq"]), str(records[-1]["hash"]), path.name)
        atomic_write_bytes(self.head_path, canonical_json(head.to_json()))
        return head

    def _recover(self) -> None:
        """Cut a torn tail (kept aside) and reconcile head.json with the events (under lock)."""
        segments = self.segments()
        if not segments:
            head = self._read_head()
            if head is not None and head.seq > 0:
                self._pending_mismatch = {
                    "head_seq": head.seq,
                    "last_seq": 0,
                    "problem": "head.json names events but no journal segment exists",
                }
            return
        path = segments[-1]
        cut_torn_tail(path)
        head = self._read_head()
        stat = path.stat()
        seen = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if (
            head is not None
            and self._agreed is not None
            and self._agreed == (seen, (head.seq, head.hash))
        ):
            return
        last = last_record(path)
        if last is None:
            return
        last_seq, last_hash = int(last["seq"]), str(last["hash"])
        if head is not None and (head.seq, head.hash) == (last_seq, last_hash):
            self._agreed = (seen, (last_seq, last_hash))
            return
        tx = last.get("tx") or [last_seq, 1]
        if head is not None and head.seq == int(tx[0]) - 1:
            # An append that crashed before head.json: move the head on to its events.
            atomic_write_bytes(
                self.head_path, canonical_json(ChainHead(last_seq, last_hash, path.name).to_json())
            )
            return
        self._pending_mismatch = {
            "head_seq": head.seq if head else None,
            "head_hash": head.hash if head else None,
            "last_seq": last_seq,
            "last_hash": last_hash,
            "problem": (
                "head.json is missing beside events"
                if head is None
                else "head.json is ahead of the events (events deleted at the tail?)"
                if head.seq > last_seq
                else "head.json is behind the events (an older head.json put back, or events "
                "appended by hand?)"
                if head.seq < last_seq
                else "head.json does not match the newest event"
            ),
        }

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
        """Record several events as one transaction (or stage them in the open one).

        Inside a transaction the returned events carry their final seq and no hash yet (""):
        the chain is hashed when the transaction commits.
        """
        for entry in entries:
            if entry.outcome not in OUTCOMES:
                raise ValueError(f"outcome must be one of {OUTCOMES}, not {entry.outcome!r}")
            if not entry.action:
                raise ValueError("action must not be empty")
        if not entries:
            return []
        with self.lock.hold():
            staged = self._staged.get(threading.get_ident())
            if staged is not None:
                return [AuditEvent.from_json(r) for r in self._stage(staged, entries)]
            self.begin()
            try:
                made = self._stage(self._staged[threading.get_ident()], entries)
                self.commit()
            finally:
                self.discard()
        return [AuditEvent.from_json(r) for r in made]

    # -- reading -----------------------------------------------------------------------

    def records(self) -> Iterator[dict[str, Any]]:
        """Every stored event record, in chain order (a torn last line is skipped)."""
        for path in self.segments():
            yield from read_records(path)

    def records_backwards(self, before: int | None = None) -> Iterator[dict[str, Any]]:
        """Stored event records newest first, from the one before seq `before` (the head
        when None), reading each segment from its end: the newest page costs what it
        holds, not the size of the journal."""
        for path in reversed(self.segments()):
            if before is not None and _first_seq(path) >= before:
                continue  # a newer segment than the page asked for: not read at all
            for record in records_backwards(path):
                if before is None or int(record["seq"]) < before:
                    yield record

    def records_after(self, seq: int) -> list[dict[str, Any]]:
        """The events after `seq`, oldest first, reading only from the end of the journal
        (cheap when `seq` is near the head, as a projection's position is)."""
        found: list[dict[str, Any]] = []
        for path in reversed(self.segments()):
            for record in records_backwards(path):
                if int(record["seq"]) <= seq:
                    found.reverse()
                    return found
                found.append(record)
        found.reverse()
        return found

    def events(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[AuditEvent]:
        """Events with since <= at < until, in chain order."""
        found: list[AuditEvent] = []
        for record in self.records():
            event = AuditEvent.from_json(record)
            if since is not None and event.at < since:
                continue
            if until is not None and event.at >= until:
                continue
            found.append(event)
        return found

    def verify(self, anchors: Iterable[tuple[int, str]] = ()) -> VerifyResult:
        """Recompute every hash in chain order, check the head, recorded mismatches and anchors."""
        with self.lock.hold(transaction=False):
            raw = []
            for path in self.segments():
                try:
                    raw.append((path.name, path.read_bytes()))
                except FileNotFoundError:
                    continue
            try:
                head_raw: bytes | None = self.head_path.read_bytes()
            except FileNotFoundError:
                head_raw = None
        return verify_chain(raw, head_raw, dict(anchors))


__all__ = [
    "HEAD_FILE",
    "JOURNAL_DIR",
    "OUTCOMES",
    "SEGMENT_SUFFIX",
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "parse_anchor",
]
