"""The store: current state in a small hot file, history as changes in monthly segments.

Layout of the data dir (0700, files 0600):

- `hot.json` and `hot/` — the projection cache, TinyDB over a manifest and immutable shard
  files (shards.py): a transaction reads the shards it touches and writes those it changed.
  Tables `hosts` (one document per host, by address), `ports` (one document per host:
  `{"host": ADDR, "ports": {"PORT/PROTO": [PORT_FIELDS...]}}` — a row per port as a list,
  3x faster to load and write than a document per port; read it through
  `Store.current_ports()`), both split by address block, and `meta` (the store's
  bookkeeping, including each segment's committed size). Other modules keep their own
  tables here (approvals, findings, outbox, leader): they use `Store.hot` inside
  `Store.lock.hold()`.
- `scans/YYYY-MM.jsonl` — the month's checkpoints, scan records and change events
  (see store_segment.py). JSON Lines so an ingest appends instead of rewriting. A new
  checkpoint is appended (before the ingest's scan line) once the history since the last
  one reaches half its size, so a point-in-time answer parses one checkpoint and a few
  days of scans instead of the month; its cost depends on the fleet, not on history.
- `xml/YYYY-MM/<scan_id>.xml.gz` — the raw XML of a scan, one gzip member per nmap run.

Ingest is one transaction: under the lock, the raw XML is written, the segment lines are
appended (fsync), then the journal (vouching for those bytes: the commit), then the changed
shards and the manifest naming the new state and the segment's committed size. A crash
before the journal append leaves bytes past the committed size, which the next transaction
(or opening the store) cuts off; a crash after it leaves a projection behind the journal,
rebuilt on the next open. So `kill -9` at any moment keeps every file loadable and every
acknowledged ingest present.

Change rules (against the stored state, at the scan's `finished_at`):

- `port_opened`: open in the scan, not open in the state.
- `port_closed`: open in the state; the host is up in this scan and the port lies in the
  scan's port spec and protocols; not open in the scan. A host not in the scan, a host that
  is down (nmap did not probe its ports) or a port outside the spec is *not covered*, never
  closed.
- `port_filtered`: as `port_closed`, but the scan got no answer on the port (filtered).
- `service_changed`: service, product or version differ, compared only when both the stored
  port and the new observation were fingerprinted (`-sV`). An observation counts as
  fingerprinted when it has a product, version or extra info (a sweep only reports the nmap
  services-table name), or when it carries a true `fingerprinted` attribute. The first
  fingerprint of a port that a sweep found is recorded as the internal event
  `service_identified` (replayed for point-in-time answers, hidden from `events()` and
  `history()` unless asked for) and is not a change.
- `host_up` / `host_down`: status differs from the state. A host in a successful scan's
  addresses that nmap did not report is down. A cancelled or partial scan covers only the
  hosts it reported.
- A host whose stored state comes from a scan that finished *after* this one is left alone
  (listed as `stale` in the scan record): reports from several sites may arrive out of order.
  A scan that finished in a month before the newest history segment is refused.

The segment files' upkeep (cutting uncommitted bytes aside, appending, retention) is in
segment_files.py; history queries in history.py (point-in-time ones in history_at.py); the
projection check and rebuild in rebuild.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from tinydb import TinyDB

from portconsole.core.adapters.history import HistoryReader
from portconsole.core.adapters.hot_storage import ShardedStorage, open_projection
from portconsole.core.adapters.journal import AuditLog
from portconsole.core.adapters.projection import (
    HOT_FILE,
    chunk_sha256,
    set_position,
    well_formed,
)
from portconsole.core.adapters.rebuild import ProjectionKeeper
from portconsole.core.adapters.segment_files import SegmentFiles
from portconsole.core.adapters.shards import Projection
from portconsole.core.adapters.sightings import SightingsCache, fleet_sightings
from portconsole.core.adapters.storage import (
    DataLock,
    atomic_write_bytes,
    ensure_private_dir,
    fsync_dir,
)
from portconsole.core.adapters.store_segment import (
    CHECKPOINT,
    LIST,
    RECENT_SCAN_IDS,
    SCAN,
    SEGMENT_DIR,
    SegmentCache,
    decode_checkpoint,
    encode_checkpoint_line,
    encode_lines,
)
from portconsole.core.domain.changes import HotTables, apply_scan, check_scan_id, list_id
from portconsole.core.domain.model import OPEN, Change, ScanResult
from portconsole.core.domain.raw_xml import gzip_members
from portconsole.core.domain.state import ROW_STATE, as_utc, parse_time, split_port_key
from portconsole.core.errors import StoreError
from portconsole.core.release import release
from portconsole.core.settings import RetentionSettings
from portconsole.core.timeutil import iso, month_key, utcnow

log = logging.getLogger(__name__)

LOCK_FILE = "store.lock"
XML_DIR = "xml"
# A new checkpoint is written once the lines appended since the last one reach this share of
# its size (and at least CHECKPOINT_MIN_BYTES): a point-in-time answer then parses at most
# about 1.5 checkpoints' worth of bytes, and checkpoints take at most 2x the history's disk.
CHECKPOINT_SHARE = 0.5
CHECKPOINT_MIN_BYTES = 64 * 1024


# --------------------------------------------------------------------------- public types


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- hot tables


# --------------------------------------------------------------------------- the store


class Store(HistoryReader, ProjectionKeeper, SegmentFiles):
    """The data dir's current state and history. Thread-safe; several processes may share it.

    Reads are lock-free (atomic renames and committed sizes give a consistent snapshot);
    every write holds `lock`.
    """

    def __init__(
        self,
        data_dir: Path,
        retention: RetentionSettings | None = None,
        *,
        readonly: bool = False,
        future_skew: timedelta = timedelta(minutes=5),
    ) -> None:
        self.data_dir = Path(data_dir) if readonly else ensure_private_dir(Path(data_dir))
        self.future_skew = future_skew
        self.retention = retention or RetentionSettings()
        self.readonly = readonly
        self.hot_path = self.data_dir / HOT_FILE
        self.segment_dir = self.data_dir / SEGMENT_DIR
        self.xml_dir = self.data_dir / XML_DIR
        self.lock = DataLock(self.data_dir / LOCK_FILE)
        self.hot: TinyDB = open_projection(self.hot_path)
        self.journal = AuditLog(self.data_dir, self.lock)
        self._segments = SegmentCache(self.segment_dir)
        self._read_cache: tuple[str, HotTables] | None = None
        self._sightings = SightingsCache()
        self._memory: HotTables | None = None  # a read-only store's projection rebuilt in memory
        self._tx_chunks: dict[int, list[dict[str, Any]]] = {}
        self.damage: str | None = None  # why a read-only store could not check its projection
        self.storage.on_load = self._checked
        if readonly:
            # Nothing is written: a projection that does not reflect the journal is rebuilt
            # in memory for this process only (an assessor's read-only snapshot works).
            with self.lock.hold(transaction=False):
                raw = self.storage.load_checked()
                try:
                    checked, rebuilt = self._checked(raw, write=False)
                except StoreError as error:
                    self.damage = str(error)
                    return
                if rebuilt:
                    self.storage.memory = Projection.from_tables(self.storage.folder, checked)
                    self._memory = HotTables(self.storage.memory)
            return
        self.lock.hooks = self
        with self.lock.hold():
            hot = self._read_hot()
            self._recover(hot)

    # ------------------------------------------------------------------ transactions

    @property
    def storage(self) -> ShardedStorage:
        storage = self.hot.storage
        assert isinstance(storage, ShardedStorage)
        return storage

    def begin(self) -> None:
        """The outermost lock hold opens one transaction (see DataLock)."""
        self.journal.begin()
        self.storage.begin()
        self._tx_chunks[threading.get_ident()] = []

    def commit(self) -> None:
        """Journal first (one append: events, effects, chunks), then the projection cache:
        only the shards whose bytes changed, then the manifest naming the new head."""
        tx = self.storage.finish()
        chunks = self._tx_chunks.pop(threading.get_ident(), [])
        effects = None
        changed: dict[str, bytes | None] = {}
        if tx is not None and tx.dirty and tx.data is not None:
            effects, changed = tx.effects_and_changes()
        head = self.journal.commit(effects, chunks)
        if tx is not None and tx.dirty and tx.data is not None:
            if head is not None:
                set_position(tx.data, head.seq, head.hash)
            if changed or tx.wholesale or head is not None:
                tx.data.save(self.hot_path, changed)
                self._read_cache = None

    def rollback(self) -> None:
        """Nothing of a failed operation is kept; scan bytes it appended are cut aside later."""
        self.storage.finish()
        self._tx_chunks.pop(threading.get_ident(), None)
        self.journal.discard()
        self._read_cache = None

    # ------------------------------------------------------------------ hot file access

    def _read_hot(self, private: bool = False) -> HotTables:
        """The current-state tables: the transaction's, or (outside one) a lock-free read
        sharing parsed shards (`private`: a copy of the caller's own, to change freely)."""
        raw = self.storage.read_private() if private else self.storage.read()
        if raw is None or not well_formed(raw):
            raw = {}
        return HotTables(raw)

    def _write_hot(self, hot: HotTables) -> None:
        self.storage.touch()
        self._read_cache = None

    def _snapshot(self) -> HotTables:
        """The hot state for a lock-free read, reused while the file is unchanged."""
        if self._memory is not None:
            return self._memory
        if self.lock.in_transaction:
            return self._read_hot()
        version = self.data_version()
        cached = self._read_cache
        if cached is not None and cached[0] == version:
            return cached[1]
        # Let go of the older state first: the shard cache then frees its documents shard
        # by shard, not 2,000,000 objects in one step holding the GIL (the console's UI).
        self._read_cache = cached = None
        hot = self._read_hot()
        self._read_cache = (version, hot)
        return hot

    def data_version(self) -> str:
        """A cheap token that changes whenever the hot file changes (any process)."""
        try:
            info = self.hot_path.stat()
        except FileNotFoundError:
            return "absent"
        return f"{info.st_ino}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_size}"

    # ------------------------------------------------------------------ ingest

    def diff(self, scan: ScanResult) -> list[Change]:
        """The changes `ingest(scan)` would record against the current state; writes nothing."""
        return apply_scan(self._read_hot(private=True), scan, utcnow() + self.future_skew).changes

    def ingest(self, scan: ScanResult, extra: Callable[[], None] | None = None) -> list[Change]:
        """Record a scan in one transaction and return its changes.

        `extra` runs inside the same lock hold right after the commit, so other processes
        never see the ingest without what `extra` writes (findings, audit, outbox). If it
        raises, the ingest stays committed and the error propagates.
        """
        with self.lock.hold():
            hot = self._read_hot()
            self._recover(hot)
            changes = self._commit(hot, scan, durable=True)
            self._write_hot(hot)
            if extra is not None:
                extra()
        return changes

    def bulk_ingest(self, scans: Iterable[ScanResult]) -> int:
        """Ingest many scans as one transaction (history import, benchmarks).

        Runs exactly the code of `ingest` per scan and writes the same files; only the
        fsyncs and the hot-file write are done once at the end (the commit), so a crash
        keeps none of the batch. Returns the number of scans.
        """
        count = 0
        with self.lock.hold():
            hot = self._read_hot()
            self._recover(hot)
            for scan in scans:
                self._commit(hot, scan, durable=False)
                count += 1
            for month in hot.segments:
                path = self._segments.path(month)
                if path.exists():
                    with path.open("rb+") as handle:
                        os.fsync(handle.fileno())
            if self.segment_dir.exists():
                fsync_dir(self.segment_dir)
            self._write_hot(hot)
        return count

    def _check_new(self, hot: HotTables, scan: ScanResult) -> str:
        """The segment a new scan goes into (refusing duplicates and the future).

        Time never blinds the store: a report dated ahead of this clock is refused (import)
        or recorded at the clock's time (a live scan while the clock jumps); a scan dated
        before the newest history goes into the newest segment as a late line (segments
        stay in arrival order), and `meta.late` lets history queries find it.
        """
        check_scan_id(scan.scan_id)
        recent = hot.meta.get("recent", [])
        if scan.scan_id in recent or (scan.imported and self._find_scan(hot, scan.scan_id)):
            what = "this XML file was already imported" if scan.imported else "already stored"
            raise StoreError(f"scan {scan.scan_id} is {what}; nothing to do")
        now = utcnow()
        finished = as_utc(scan.finished_at)
        if finished > now + self.future_skew:
            ahead = int((finished - now).total_seconds())
            if scan.imported:
                raise StoreError(
                    f"the report {scan.scan_id} is dated {iso(finished)}, {ahead} s ahead of this "
                    f"machine's clock (allowed: {int(self.future_skew.total_seconds())} s): check "
                    "the report's time or this clock ([store] future_skew); nothing was imported"
                )
            log.warning(
                "scan %s finished %d s ahead of this clock: recorded at the clock's time",
                scan.scan_id,
                ahead,
            )
            scan.started_at = min(as_utc(scan.started_at), now)
            scan.finished_at = now
            scan.error = "; ".join(
                filter(None, [scan.error, f"clock warning: finished {ahead} s in the future"])
            )
        month = month_key(as_utc(scan.finished_at))
        newest = max(hot.segments, default="")
        if month < newest:
            late = hot.meta.setdefault("late", {})
            at_text = iso(as_utc(scan.finished_at))
            if newest not in late or late[newest] > at_text:
                late[newest] = at_text
            return newest
        return month

    def _commit(self, hot: HotTables, scan: ScanResult, *, durable: bool) -> list[Change]:
        month = self._check_new(hot, scan)
        lines: list[list[Any]] = []
        committed = hot.segments.get(month, 0)
        lists_meta = hot.meta.get("lists") or {}
        written_lists: list[str] = (
            list(lists_meta.get("ids", [])) if lists_meta.get("month") == month else []
        )
        # Where the month's last checkpoint starts and how long it is: only the newest
        # month's, so the hot file does not grow with history.
        mark = hot.meta.get("checkpoint") or {}
        if mark.get("month") != month:
            mark = {}
        if committed == 0:
            written_lists = []
            mark = {}
        since = committed - mark.get("offset", 0) - mark.get("size", 0)
        if not mark or since >= max(CHECKPOINT_MIN_BYTES, mark["size"] * CHECKPOINT_SHARE):
            checkpoint = self._checkpoint(hot, month, committed)
            mark = {"month": month, "offset": committed, "size": len(checkpoint)}
        else:
            checkpoint = b""
        plan = apply_scan(hot, scan, utcnow() + self.future_skew)

        def list_ref(items: list[str]) -> str:
            ident = list_id(items)
            if ident not in written_lists:
                lines.append([LIST, ident, items])
                written_lists.append(ident)
            return ident

        record = scan.metadata_json()
        addresses = record.pop("addresses")
        record["addresses_ref"] = list_ref(list(addresses))
        record["cover_ref"] = list_ref(plan.cover)
        record["up"] = plan.up
        record["down"] = plan.down
        record["stale"] = plan.stale
        if plan.outside:
            record["outside"] = plan.outside
        record["changes"] = len(plan.changes)
        last = hot.meta.get("last_finished_at")
        if scan.imported and last and parse_time(last) > as_utc(scan.finished_at):
            scan.backfill = True
            record["backfill"] = True
        record["xml"] = None
        record["xml_sha256"] = []
        if scan.raw_xml:
            relative = f"{XML_DIR}/{month}/{scan.scan_id}.xml.gz"
            blob, digests = gzip_members(scan.raw_xml)
            atomic_write_bytes(self.data_dir / relative, blob)
            record["xml"] = relative
            record["xml_sha256"] = digests
            if not record["raw_xml_sha256"]:
                record["raw_xml_sha256"] = hashlib.sha256(b"".join(scan.raw_xml)).hexdigest()
        # Time and id first: readers pick lines by these without parsing the rest.
        lines.append([SCAN, record["finished_at"], scan.scan_id, record, plan.events])
        data = checkpoint + encode_lines(lines)
        self._append(month, committed, data, durable=durable)
        chunks = self._tx_chunks.get(threading.get_ident())
        if chunks is not None:
            chunks.append(
                {
                    "month": month,
                    "offset": committed,
                    "length": len(data),
                    "sha256": chunk_sha256(data),
                    "scan_id": scan.scan_id,
                    "finished_at": record["finished_at"],
                }
            )
        hot.segments[month] = committed + len(data)
        hot.meta["lists"] = {"month": month, "ids": written_lists}
        hot.meta["checkpoint"] = mark
        hot.meta["recent"] = [*hot.meta.get("recent", []), scan.scan_id][-RECENT_SCAN_IDS:]
        finished = iso(as_utc(scan.finished_at))
        last = hot.meta.get("last_finished_at")
        if not last or parse_time(last) <= as_utc(scan.finished_at):
            hot.meta["last_scan_id"] = scan.scan_id
            hot.meta["last_finished_at"] = finished
            hot.meta["last_scan_month"] = month
        return plan.changes

    def _checkpoint(self, hot: HotTables, month: str, committed: int) -> bytes:
        """A checkpoint of the history so far: what replaying the month up to here gives
        (so answers do not depend on where checkpoints fall), and from the hot state the
        newest scan that covered each host and open port (so answers need no older scans).
        The month's first is the hot state itself."""
        if committed:
            segment = self._segments.load(month, committed)
            hosts, ports, _ = self._replayed(segment, None, None)
        else:
            hosts = {address: dict(doc) for address, doc in hot.hosts.items()}
            ports = {a: dict(doc["ports"]) for a, doc in hot.ports.items()}
        host_lines = []
        for address, doc in hosts.items():
            now = hot.hosts.get(address, {})
            host_lines.append((doc, now.get("last_covered"), now.get("last_covered_scan_id")))
        # Only when each open port was last seen is needed of the current ports: kept
        # compact, not all 200,000 rows parsed at once (shards read one at a time).
        seen_now = fleet_sightings(hot, times=str)
        nothing: dict[tuple[int, str], tuple[str, str]] = {}
        port_lines = []
        for address, rows in ports.items():
            current = seen_now.get(address, nothing)
            items: list[tuple[str, list[Any], Any, Any]] = []
            for key, row in rows.items():
                if row[ROW_STATE] != OPEN:
                    continue
                now = current.get(split_port_key(key))
                if now is not None:
                    items.append((key, row, now[0], now[1]))
                else:
                    items.append((key, row, None, None))
            port_lines.append((address, items))
        try:
            return encode_checkpoint_line(host_lines, port_lines)
        finally:
            release(port_lines, host_lines, ports, hosts, seen_now)

    # ------------------------------------------------------------------ current state

    # ------------------------------------------------------------------ history access

    # ------------------------------------------------------------------ coverage


def load_scan_lines(path: Path) -> list[dict[str, Any]]:
    """Every record of a segment file as a dict with a `type` (checkpoint, list, scan,
    event: a scan line's events follow its record), for tools and tests that check raw files."""
    out: list[dict[str, Any]] = []
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        if line[0] == CHECKPOINT:
            state = decode_checkpoint(line[1], None, OPEN)
            out.append({"type": "checkpoint", "hosts": state.hosts, "ports": state.ports})
        elif line[0] == LIST:
            out.append({"type": "list", "id": line[1], "items": line[2]})
        else:
            _, at_text, scan_id, record, events = line
            out.append({"type": "scan", **record})
            for event in events:
                kind, host, port, proto, before, after = event
                out.append({"type": "event", "kind": kind, "host": host, "port": port,
                            "proto": proto, "before": before, "after": after, "at": at_text,
                            "scan_id": scan_id})  # fmt: skip
    return out
