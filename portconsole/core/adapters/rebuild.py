"""Keeping the projections true to the journal: check, replay, rebuild.

On open and at the start of every transaction the store asks `_checked` whether the hot
file reflects the journal (the same event, or only events without effects after it); when
it does not (missing, behind, ahead, empty, of the wrong shape, restored from a backup) it
is rebuilt: the tables from every event's effects, the scan state from the history segments
whose bytes the journal vouches for chunk by chunk.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tinydb import TinyDB

from portconsole.core.adapters.hot_storage import ShardedStorage
from portconsole.core.adapters.journal import AuditEntry, AuditLog
from portconsole.core.adapters.projection import (
    HOT_FILE,
    apply_effects,
    chunk_sha256,
    compare_tables,
    position_of,
    set_position,
    well_formed,
)
from portconsole.core.adapters.shards import encode
from portconsole.core.adapters.storage import (
    DataLock,
    atomic_write_bytes,
    cut_tail_aside,
)
from portconsole.core.adapters.store_segment import (
    CHECKPOINT,
    RECENT_SCAN_IDS,
    SEGMENT_SUFFIX,
    SegmentCache,
)
from portconsole.core.domain.changes import HotTables
from portconsole.core.domain.model import OPEN
from portconsole.core.domain.state import ROW_EXTRA, ROW_SERVICE, ROW_STATE, PointInTime, parse_time
from portconsole.core.errors import StoreError
from portconsole.core.identity import Actor
from portconsole.core.timeutil import iso, month_key, utcnow

if TYPE_CHECKING:
    from portconsole.core.adapters.store import Store

log = logging.getLogger(__name__)


class ProjectionKeeper:
    """The check/replay/rebuild half of the Store (a mixin: the Store sets these attributes)."""

    data_dir: Path
    hot_path: Path
    segment_dir: Path
    hot: TinyDB
    journal: AuditLog
    lock: DataLock
    readonly: bool
    _segments: SegmentCache
    _tx_chunks: dict[int, list[dict[str, Any]]]
    _read_cache: Any

    def _state_at(
        self,
        at: datetime,
        host: str | None = None,
        coverage_window: timedelta | None = None,
        *,
        hot: HotTables | None = None,
    ) -> PointInTime:
        raise NotImplementedError

    def _storage(self) -> ShardedStorage:
        storage = self.hot.storage
        assert isinstance(storage, ShardedStorage)
        return storage

    def _checked(self, data: Any, write: bool = True) -> tuple[Any, bool]:
        """The projection to use: `data` when it reflects the journal, else a rebuild."""
        from portconsole.core.adapters.migrate import needs_migration

        if write and needs_migration(self.data_dir, data):
            from portconsole.core.adapters.migrate import migrate

            return migrate(cast("Store", self), data), True
        tip = self.journal.tip()
        position = position_of(data) if well_formed(data) else None
        if position is None and tip.seq == 0 and not self._has_history():
            fresh: dict[str, Any] = data if well_formed(data) and data else {}
            return fresh, False
        if position is not None and self._reflects(position, tip.seq, tip.hash):
            assert data is not None
            return data, False
        if tip.seq == 0:
            raise StoreError(
                f"the journal in {self.journal.folder} is missing or empty but {self.data_dir} "
                "holds projections or scan history: restore journal/ from backup "
                "(`portconsole audit verify` names what is missing)"
            )
        log.warning(
            "projection %s names journal position %s, the journal is at %d: rebuilding it",
            self.hot_path,
            position[0] if position else "none",
            tip.seq,
        )
        return self.replay(write=write), True

    def _has_history(self) -> bool:
        return self.segment_dir.exists() and any(self.segment_dir.glob(f"*{SEGMENT_SUFFIX}"))

    def _reflects(self, position: tuple[int, str], tip_seq: int, tip_hash: str) -> bool:
        """Whether a projection at `position` is current: the same event, or only events
        without effects after it."""
        seq, digest = position
        if (seq, digest) == (tip_seq, tip_hash):
            return True
        if seq > tip_seq:
            return False
        later = self.journal.records_after(seq)
        if not later or str(later[0].get("prev_hash")) != digest:
            return False  # the event at `seq` is no longer the one the projection saw
        return not any(r.get("effects") or r.get("chunks") for r in later)

    def replay(self, write: bool = True) -> dict[str, Any]:
        """The projection rebuilt from the journal and the scan history it vouches for.

        Raises StoreError when a scan history segment does not hold the bytes the journal
        recorded (deleted, truncated or edited). Bytes past what the journal recorded (an
        operation that never committed) are cut and kept aside when `write`.
        """
        tables: dict[str, Any] = {}
        chunks: list[dict[str, Any]] = []
        last: tuple[int, str] = (0, "")
        for record in self.journal.records():
            effects = record.get("effects")
            if isinstance(effects, dict):
                apply_effects(tables, effects)
            chunks.extend(c for c in record.get("chunks") or () if isinstance(c, dict))
            last = (int(record["seq"]), str(record["hash"]))
        committed = self._check_chunks(chunks, write=write)
        tables.update(self._derived(committed, chunks))
        if last[0]:
            set_position(tables, *last)
        return tables

    def _check_chunks(self, chunks: list[dict[str, Any]], write: bool) -> dict[str, int]:
        committed: dict[str, int] = {}
        by_month: dict[str, list[dict[str, Any]]] = {}
        for chunk in chunks:
            month = str(chunk["month"])
            by_month.setdefault(month, []).append(chunk)
            committed[month] = max(
                committed.get(month, 0), int(chunk["offset"]) + int(chunk["length"])
            )
        for month, items in by_month.items():
            path = self._segments.path(month)
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                raise StoreError(
                    f"history segment {path} is missing but the journal records {len(items)} "
                    "scans in it: restore it from backup (`portconsole audit verify` lists them)"
                ) from None
            for chunk in items:
                start, length = int(chunk["offset"]), int(chunk["length"])
                if chunk_sha256(raw[start : start + length]) != chunk.get("sha256"):
                    raise StoreError(
                        f"history segment {path} does not hold what the journal recorded for scan "
                        f"{chunk.get('scan_id')} (bytes {start}-{start + length} deleted or edited): "
                        "restore it from backup"
                    )
            if len(raw) > committed[month] and write:
                self._cut_aside(path, committed[month])
        self._segments.clear()
        return committed

    def _cut_aside(self, path: Path, keep: int) -> None:
        """Bytes past the committed size: an operation that never committed. Kept, never lost."""
        size = path.stat().st_size
        aside = cut_tail_aside(path, keep)
        self._segments.clear()
        log.warning("history %s: %d uncommitted bytes cut, kept in %s", path, size - keep, aside)

    def _derived(self, committed: dict[str, int], chunks: list[dict[str, Any]]) -> dict[str, Any]:
        """Hosts, ports and the store's bookkeeping as the scan history leaves them."""
        hot = HotTables(None)
        hot.segments.update(committed)
        if committed:
            month = max(committed)
            newest = max(
                (c for c in chunks if c.get("finished_at")),
                key=lambda c: (str(c["finished_at"]), int(c["offset"])),
                default=None,
            )
            far = (
                parse_time(str(newest["finished_at"])) + timedelta(seconds=1)
                if newest
                else utcnow()
            )
            state = self._state_at(far, None, None, hot=hot)
            for host_state in state.hosts:
                doc = hot.host_doc(host_state.address)
                doc.update(
                    {
                        k: v
                        for k, v in host_state.to_json().items()
                        if v is not None and k != "address"
                    }
                )
            for port in state.open_ports:
                hot.port_rows(port.host)[f"{port.port}/{port.proto}"] = [
                    OPEN,
                    port.service,
                    port.product,
                    port.version,
                    port.extrainfo,
                    iso(port.first_seen),
                    iso(port.last_seen),
                    port.last_seen_scan_id,
                    iso(port.fingerprinted_at) if port.fingerprinted_at else None,
                    None,
                ]
            segment = self._segments.load(month, committed[month])
            hot.meta["lists"] = {"month": month, "ids": list(segment.lists)}
            checkpoints = [line for line in segment.lines if line.kind == CHECKPOINT]
            if checkpoints:
                mark = checkpoints[-1]
                hot.meta["checkpoint"] = {
                    "month": month,
                    "offset": mark.offset,
                    "size": mark.length + 1,
                }
            hot.meta["recent"] = [str(c.get("scan_id")) for c in chunks][-RECENT_SCAN_IDS:]
            late: dict[str, str] = {}
            for chunk in chunks:
                at_text = str(chunk.get("finished_at") or "")
                if at_text and at_text[:7] < str(chunk["month"]):
                    if chunk["month"] not in late or late[chunk["month"]] > at_text:
                        late[chunk["month"]] = at_text
            if late:
                hot.meta["late"] = late
            if newest is not None:
                hot.meta["last_scan_id"] = newest.get("scan_id")
                hot.meta["last_finished_at"] = newest["finished_at"]
                hot.meta["last_scan_month"] = month_key(parse_time(str(newest["finished_at"])))
        return {name: hot.raw[name] for name in ("hosts", "ports", "meta")}

    def check(self) -> list[str]:
        """Every difference between the projection cache and a replay of the journal."""
        with self.lock.hold(transaction=False):
            live = self._storage().load_tables() or {}
            if self.journal.tip().seq == 0 and (
                position_of(live) is not None or self._has_history()
            ):
                return [
                    f"the journal in {self.journal.folder} is missing or empty while "
                    "projections or scan history exist"
                ]
            replayed = self.replay(write=False)
        problems = compare_tables(live, replayed)
        position = position_of(live)
        want = position_of(replayed)
        if position != want and not (
            position is not None and want is not None and self._reflects(position, *want)
        ):
            problems.insert(
                0, f"the projection names journal position {position}, the journal is at {want}"
            )
        problems += _compare_state(live, replayed)
        return problems

    def rebuild(self, actor: Actor | None = None) -> dict[str, Any]:
        """Rebuild the projection cache from the journal and write it (a copy of the old is kept).

        The rebuild is a transaction of its own: a `store.rebuilt` event whose effects are the
        repair (the replayed documents over whatever the cache held).
        """
        with self.lock.hold():
            data = self.replay(write=True)
            before = None
            if self.hot_path.exists():
                stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
                aside = self.hot_path.with_name(f"{HOT_FILE}.replaced-{stamp}")
                try:
                    before = self._storage().load_tables()
                except StoreError:
                    before = None
                if before is not None:  # the old cache whole, as one file
                    atomic_write_bytes(aside, encode(before))
                else:
                    shutil.copy2(self.hot_path, aside)
            self._storage().stage(data, before if well_formed(before) else None)
            self.journal.append_many(
                [
                    AuditEntry(
                        "store.rebuilt",
                        actor or Actor.current("system"),
                        details={"hot": str(self.hot_path)},
                    )
                ]
            )
        self._read_cache = None
        return data


def _compare_state(live: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    """Differences in what is open and which hosts are up (the facts of the derived tables;
    last-seen times and closed rows kept for display are not compared)."""

    def facts(data: dict[str, Any]) -> tuple[dict[str, str], dict[str, tuple[Any, ...]]]:
        hosts = {
            str(doc.get("address")): str(doc.get("status"))
            for doc in (data.get("hosts") or {}).values()
            if isinstance(doc, dict)
        }
        ports: dict[str, tuple[Any, ...]] = {}
        for doc in (data.get("ports") or {}).values():
            if not isinstance(doc, dict):
                continue
            for key, row in (doc.get("ports") or {}).items():
                if isinstance(row, list) and row and row[ROW_STATE] == OPEN:
                    ports[f"{doc.get('host')}:{key}"] = tuple(row[ROW_SERVICE:ROW_EXTRA])
        return hosts, ports

    live_hosts, live_ports = facts(live)
    want_hosts, want_ports = facts(replayed)
    problems = []
    for address in sorted(set(live_hosts) | set(want_hosts)):
        if live_hosts.get(address, "down") != want_hosts.get(address, "down"):
            problems.append(
                f"host {address}: {live_hosts.get(address)} in the projection, "
                f"{want_hosts.get(address)} in the history"
            )
    for key in sorted(set(live_ports) | set(want_ports)):
        if key not in want_ports:
            problems.append(f"port {key}: open in the projection, not in the history")
        elif key not in live_ports:
            problems.append(f"port {key}: open in the history, missing from the projection")
        elif live_ports[key] != want_ports[key]:
            problems.append(f"port {key}: service differs from the history")
    return problems
