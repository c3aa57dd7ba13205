"""The store: current state in a small hot file, history as changes in monthly segments.

Layout of the data dir (0700, files 0600):

- `hot.json` — TinyDB (atomic writes). Tables `hosts` (one document per host), `ports`
  (one document per host: `{"host": ADDR, "ports": {"PORT/PROTO": [PORT_FIELDS...]}}` — a
  row per port as a list, which makes the file 3x faster to load and write than a document
  per port; read it through `Store.current_ports()`), `meta` (the store's bookkeeping,
  including each segment's committed size). Other modules keep their own tables here
  (approvals, findings, outbox, leader): they use `Store.hot` inside `Store.lock.hold()`.
- `scans/YYYY-MM.jsonl` — the month's checkpoints, scan records and change events
  (see store_segment.py). JSON Lines so an ingest appends instead of rewriting. A new
  checkpoint is appended (before the ingest's scan line) once the history since the last
  one reaches half its size, so a point-in-time answer parses one checkpoint and a few
  days of scans instead of the month; its cost depends on the fleet, not on history.
- `xml/YYYY-MM/<scan_id>.xml.gz` — the raw XML of a scan, one gzip member per nmap run.

Ingest is one transaction: under the lock, the raw XML is written, the segment lines are
appended (fsync), then the hot file is replaced atomically with the new state *and* the
segment's new committed size. That rename is the commit: a crash before it leaves bytes past
the committed size, which the next transaction (or opening the store) cuts off; a crash after
it leaves a complete ingest. So `kill -9` at any moment keeps every file loadable and every
acknowledged ingest present, and no journal has to be written.

Change rules (against the stored state, at the scan's `finished_at`):

- `port_opened`: open in the scan, not open in the state.
- `port_closed`: open in the state; the host is up in this scan and the port lies in the
  scan's port spec and protocols; not open in the scan. A host not in the scan, a host that
  is down (nmap did not probe its ports) or a port outside the spec is *not covered*, never
  closed.
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
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from tinydb import TinyDB

from portconsole.core.adapters.journal import AuditEntry, AuditLog
from portconsole.core.adapters.projection import (
    apply_effects,
    chunk_sha256,
    compare_tables,
    position_of,
    set_position,
    well_formed,
)
from portconsole.core.adapters.storage import (
    FILE_MODE,
    DataLock,
    atomic_write_bytes,
    ensure_private_dir,
    fsync_dir,
    open_tinydb,
)
from portconsole.core.adapters.store_segment import (
    CHECKPOINT,
    LIST,
    SCAN,
    SEEN_AT,
    SEEN_SCAN,
    SEGMENT_SUFFIX,
    Line,
    Segment,
    SegmentCache,
    decode_checkpoint,
    encode_checkpoint,
    encode_lines,
    no_gc,
    parse_time,
    spec_ports,
)
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.model import OPEN, Change, PortObservation, ScanResult, port_key
from portconsole.core.errors import StoreError
from portconsole.core.identity import Actor
from portconsole.core.settings import RetentionSettings
from portconsole.core.timeutil import add_months, iso, month_key, utcnow

log = logging.getLogger(__name__)

STORE_FORMAT = 2  # 2: segment lines are tagged arrays, checkpoints inside the month
HOT_FILE = "hot.json"
LOCK_FILE = "store.lock"
SEGMENT_DIR = "scans"
XML_DIR = "xml"
META_NAME = "store"
RECENT_SCAN_IDS = 256
DEFAULT_COVERAGE_WINDOW = timedelta(hours=24)
# A new checkpoint is written once the lines appended since the last one reach this share of
# its size (and at least CHECKPOINT_MIN_BYTES): a point-in-time answer then parses at most
# about 1.5 checkpoints' worth of bytes, and checkpoints take at most 2x the history's disk.
CHECKPOINT_SHARE = 0.5
CHECKPOINT_MIN_BYTES = 64 * 1024

# The order of a port row in the hot file's `ports` table.
PORT_FIELDS = (
    "state",
    "service",
    "product",
    "version",
    "extrainfo",
    "first_seen",
    "last_seen",
    "last_scan_id",
    "fingerprinted_at",
    "closed_at",
)
_STATE, _SERVICE, _PRODUCT, _VERSION, _EXTRA, _FIRST, _LAST, _LAST_SCAN, _FP_AT, _CLOSED = range(10)
# A closed port's row stays this long (consoles show recent closes); then only history has it.
CLOSED_ROW_KEEP = timedelta(days=1)
_NO_FLAG = "fingerprinted" not in PortObservation.__dataclass_fields__

CHANGE_KINDS = ("port_opened", "port_closed", "service_changed", "host_up", "host_down")
SERVICE_IDENTIFIED = "service_identified"

_SCAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")


# --------------------------------------------------------------------------- public types


@dataclass(slots=True)
class PortState:
    """The stored state of one host/port/proto. Text fields come from the network: untrusted."""

    host: str
    port: int
    proto: str
    state: str
    service: str
    product: str
    version: str
    extrainfo: str
    first_seen: datetime  # start of the current (or last) open period
    last_seen: datetime  # last time a scan saw it open
    last_scan_id: str  # the scan that last saw it open
    fingerprinted_at: datetime | None

    @property
    def key(self) -> str:
        return port_key(self.host, self.port, self.proto)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "proto": self.proto,
            "state": self.state,
            "service": self.service,
            "product": self.product,
            "version": self.version,
            "extrainfo": self.extrainfo,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "last_scan_id": self.last_scan_id,
            "fingerprinted_at": iso(self.fingerprinted_at) if self.fingerprinted_at else None,
        }


@dataclass(slots=True)
class PortAt(PortState):
    """A port open at a point in time, with the scan that last saw it before that time."""

    last_seen_scan_id: str
    covered: bool  # seen by a scan within the coverage window before the time asked

    def to_json(self) -> dict[str, Any]:
        data = PortState.to_json(self)
        data["last_seen_scan_id"] = self.last_seen_scan_id
        data["covered"] = self.covered
        return data


@dataclass(slots=True)
class HostState:
    address: str
    status: str  # up | down
    hostname: str
    first_seen: datetime | None  # first time seen up
    last_seen: datetime | None  # last time seen up
    last_scan_id: str  # the scan that last saw it up
    last_covered: datetime | None = None  # last scan that reported its status
    last_covered_scan_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "status": self.status,
            "hostname": self.hostname,
            "first_seen": iso(self.first_seen) if self.first_seen else None,
            "last_seen": iso(self.last_seen) if self.last_seen else None,
            "last_scan_id": self.last_scan_id,
            "last_covered": iso(self.last_covered) if self.last_covered else None,
            "last_covered_scan_id": self.last_covered_scan_id,
        }


@dataclass(slots=True)
class ChangeEvent:
    kind: str
    host: str
    port: int | None
    proto: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime
    scan_id: str

    def change(self) -> Change:
        return Change(self.kind, self.host, self.port, self.proto, self.before, self.after)

    def to_json(self) -> dict[str, Any]:
        return {**self.change().to_json(), "at": iso(self.at), "scan_id": self.scan_id}


@dataclass(slots=True)
class Uncovered:
    """A host (port None) or an open port no scan covered within the window before a time."""

    host: str
    port: int | None
    proto: str | None
    last_covered: datetime | None
    last_scan_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "proto": self.proto,
            "last_covered": iso(self.last_covered) if self.last_covered else None,
            "last_scan_id": self.last_scan_id,
        }


@dataclass(slots=True)
class PointInTime:
    at: datetime
    open_ports: list[PortAt]
    uncovered: list[Uncovered]
    hosts: list[HostState]
    coverage_window: timedelta = DEFAULT_COVERAGE_WINDOW
    history_starts: datetime | None = None  # answers before this time are unknown (pruned)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "coverage_window_seconds": int(self.coverage_window.total_seconds()),
            "history_starts": iso(self.history_starts) if self.history_starts else None,
            "open_ports": [p.to_json() for p in self.open_ports],
            "uncovered": [u.to_json() for u in self.uncovered],
            "hosts": [h.to_json() for h in self.hosts],
        }


# --------------------------------------------------------------------------- helpers


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _opt_time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def is_fingerprinted(observation: PortObservation) -> bool:
    """Whether an observation comes from service detection (see the module docstring)."""
    flag = getattr(observation, "fingerprinted", None)
    if flag is not None:
        return bool(flag)
    return bool(observation.product or observation.version or observation.extrainfo)


def _service(row: list[Any]) -> dict[str, Any]:
    return {
        "service": row[_SERVICE],
        "product": row[_PRODUCT],
        "version": row[_VERSION],
        "extrainfo": row[_EXTRA],
    }


def _observed(obs: PortObservation, fingerprinted: bool) -> dict[str, Any]:
    return {
        "service": obs.service,
        "product": obs.product,
        "version": obs.version,
        "extrainfo": obs.extrainfo,
        "fingerprinted": fingerprinted,
    }


@lru_cache(maxsize=4096)
def _split_key(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    return int(port), proto


def _list_id(items: list[str]) -> str:
    digest = hashlib.sha256("\n".join(items).encode("utf-8")).hexdigest()
    return digest[:16]


def check_scan_id(scan_id: str) -> None:
    """Scan ids name files: refuse anything that could leave the data dir."""
    if not isinstance(scan_id, str) or not _SCAN_ID.match(scan_id):
        raise StoreError(
            f"scan id {scan_id!r} is not usable: use letters, digits and . _ : + - (max 128)"
        )


def _port_state(host: str, key: str, row: list[Any]) -> PortState:
    port, proto = _split_key(key)
    return PortState(
        host=host,
        port=port,
        proto=proto,
        state=row[_STATE],
        service=row[_SERVICE],
        product=row[_PRODUCT],
        version=row[_VERSION],
        extrainfo=row[_EXTRA],
        first_seen=parse_time(row[_FIRST]),
        last_seen=parse_time(row[_LAST]),
        last_scan_id=row[_LAST_SCAN],
        fingerprinted_at=_opt_time(row[_FP_AT]),
    )


def _host_state(doc: dict[str, Any]) -> HostState:
    return HostState(
        address=doc["address"],
        status=doc["status"],
        hostname=doc.get("hostname", ""),
        first_seen=_opt_time(doc.get("first_seen")),
        last_seen=_opt_time(doc.get("last_seen")),
        last_scan_id=doc.get("last_scan_id", ""),
        last_covered=_opt_time(doc.get("last_covered")),
        last_covered_scan_id=doc.get("last_covered_scan_id", ""),
    )


def _event(event: list[Any], at: datetime, scan_id: str) -> ChangeEvent:
    kind, host, port, proto, before, after = event
    return ChangeEvent(kind, host, port, proto, before, after, at, scan_id)


def _proto_port(key: str) -> tuple[str, int]:
    port, proto = _split_key(key)
    return proto, port


@lru_cache(maxsize=65536)
def _ip_sort_key(address: str) -> tuple[int, ...]:
    if ":" in address:
        return (6, *(int(part or "0", 16) for part in address.split(":") if part != ""))
    try:
        return (4, *(int(part) for part in address.split(".")))
    except ValueError:
        return (9,)


def _split_gzip_members(data: bytes) -> list[bytes]:
    documents: list[bytes] = []
    while data:
        decoder = zlib.decompressobj(wbits=31)
        documents.append(decoder.decompress(data) + decoder.flush())
        data = decoder.unused_data
    return documents


# --------------------------------------------------------------------------- hot tables


class _Hot:
    """The hot file's raw table map with indexes by address, mutated in place by a plan."""

    def __init__(self, raw: dict[str, Any] | None) -> None:
        self.raw: dict[str, Any] = raw if raw is not None else {}
        self.hosts_table: dict[str, Any] = self.raw.setdefault("hosts", {})
        self.ports_table: dict[str, Any] = self.raw.setdefault("ports", {})
        meta_table: dict[str, Any] = self.raw.setdefault("meta", {})
        self.hosts: dict[str, dict[str, Any]] = {
            doc["address"]: doc for doc in self.hosts_table.values()
        }
        self.ports: dict[str, dict[str, Any]] = {
            doc["host"]: doc for doc in self.ports_table.values()
        }
        self._next_ids = {
            "hosts": self._next_id(self.hosts_table),
            "ports": self._next_id(self.ports_table),
        }
        meta = next((d for d in meta_table.values() if d.get("name") == META_NAME), None)
        if meta is None:
            meta = {"name": META_NAME, "format": STORE_FORMAT, "segments": {}}
            meta_table[str(self._next_id(meta_table))] = meta
        if meta.get("format", STORE_FORMAT) > STORE_FORMAT:
            raise StoreError(
                f"the data dir was written by a newer PortConsole (store format "
                f"{meta['format']}); upgrade PortConsole to read it"
            )
        if meta.get("format", STORE_FORMAT) < STORE_FORMAT:
            if meta.get("segments"):
                raise StoreError(
                    f"the data dir holds history in an older development format (store format "
                    f"{meta.get('format')}); move it away and start a new one"
                )
            meta["format"] = STORE_FORMAT
        self.meta: dict[str, Any] = meta
        self.meta.setdefault("segments", {})

    @staticmethod
    def _next_id(table: dict[str, Any]) -> int:
        return max((int(k) for k in table), default=0) + 1

    @property
    def segments(self) -> dict[str, int]:
        segments: dict[str, int] = self.meta["segments"]
        return segments

    def host_doc(self, address: str) -> dict[str, Any]:
        doc = self.hosts.get(address)
        if doc is None:
            doc = {"address": address, "status": "down", "hostname": ""}
            self.hosts_table[str(self._next_ids["hosts"])] = doc
            self._next_ids["hosts"] += 1
            self.hosts[address] = doc
        return doc

    def port_rows(self, address: str) -> dict[str, list[Any]]:
        doc = self.ports.get(address)
        if doc is None:
            doc = {"host": address, "ports": {}}
            self.ports_table[str(self._next_ids["ports"])] = doc
            self._next_ids["ports"] += 1
            self.ports[address] = doc
        rows: dict[str, list[Any]] = doc["ports"]
        return rows


@dataclass(slots=True)
class _Plan:
    changes: list[Change] = field(default_factory=list)
    events: list[list[Any]] = field(
        default_factory=list
    )  # [kind, host, port, proto, before, after]
    cover: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    outside: dict[str, list[str]] = field(default_factory=dict)  # seen beyond the port spec
    up: int = 0


def _apply_scan(hot: _Hot, scan: ScanResult, horizon: datetime | None = None) -> _Plan:
    """Apply `scan` to the hot state in place; return the changes and events it makes.

    `horizon` is this clock plus the allowed skew: a host last covered after it was covered
    by a clock that has stepped back since.
    """
    if horizon is None:
        horizon = utcnow() + timedelta(minutes=5)
    at = _utc(scan.finished_at)
    at_text = iso(at)
    scan_id = scan.scan_id
    spec = spec_ports(scan.ports)
    protocols = set(scan.protocols)
    keep_closed_after = at - CLOSED_ROW_KEEP
    reported = {h.address: h for h in scan.hosts}
    plan = _Plan()
    if scan.outcome == "success":
        plan.cover = list(dict.fromkeys([*scan.addresses, *reported]))
    else:
        plan.cover = list(reported)

    def record(kind: str, host: str, port: int | None, proto: str | None,
               before: dict[str, Any] | None, after: dict[str, Any] | None,
               internal: bool = False) -> None:  # fmt: skip
        if not internal:
            plan.changes.append(Change(kind, host, port, proto, before, after))
        plan.events.append([kind, host, port, proto, before, after])

    for address in plan.cover:
        observed = reported.get(address)
        status = observed.status if observed is not None else "down"
        existing = hot.hosts.get(address)
        if existing is not None and existing.get("last_covered"):
            # A report older than what is known of the host (a backfill, a site's late
            # report) changes history, never the current state. But a "newer" look that lies
            # in the future of this clock came from a clock that has since stepped back: it
            # orders nothing, and this scan is the newest look at the host.
            covered = parse_time(existing["last_covered"])
            if at < covered <= horizon:
                plan.stale.append(address)
                continue
        if status != "up":
            plan.down.append(address)
            if existing is None:
                continue  # a host never seen up is not tracked
            if existing["status"] == "up":
                record("host_down", address, None, None, {"status": "up"}, {"status": "down"})
            existing["status"] = "down"
            existing["last_covered"] = at_text
            existing["last_covered_scan_id"] = scan_id
            continue
        plan.up += 1
        hostname = observed.hostname if observed is not None else ""
        if existing is None or existing["status"] != "up":
            before = {"status": existing["status"]} if existing is not None else None
            record("host_up", address, None, None, before, {"status": "up", "hostname": hostname})
        doc = hot.host_doc(address)
        doc["status"] = "up"
        if hostname:
            doc["hostname"] = hostname
        doc.setdefault("first_seen", at_text)
        doc["last_seen"] = at_text
        doc["last_scan_id"] = scan_id
        doc["last_covered"] = at_text
        doc["last_covered_scan_id"] = scan_id
        if observed is None:
            continue
        rows = (
            hot.port_rows(address)
            if observed.ports
            else hot.ports.get(address, {}).get("ports", {})
        )
        seen: dict[str, PortObservation] = {}
        states: dict[str, str] = {}
        for obs in observed.ports:
            key = f"{obs.port}/{obs.proto}"
            states[key] = obs.state
            if obs.state == OPEN:
                seen[key] = obs
        for key, obs in seen.items():
            if obs.proto not in protocols or obs.port not in spec:
                plan.outside.setdefault(address, []).append(key)
            fingerprinted = (
                bool(obs.product or obs.version or obs.extrainfo)
                if _NO_FLAG
                else is_fingerprinted(obs)
            )
            row = rows.get(key)
            if row is None or row[_STATE] != OPEN:
                after = _observed(obs, fingerprinted)
                record("port_opened", address, obs.port, obs.proto, None, after)
                rows[key] = [
                    OPEN,
                    obs.service,
                    obs.product,
                    obs.version,
                    obs.extrainfo,
                    at_text,
                    at_text,
                    scan_id,
                    at_text if fingerprinted else None,
                    None,
                ]
                continue
            row[_LAST] = at_text
            row[_LAST_SCAN] = scan_id
            if not fingerprinted:
                continue
            if row[_FP_AT] is None or (row[_SERVICE], row[_PRODUCT], row[_VERSION]) != (
                obs.service,
                obs.product,
                obs.version,
            ):
                kind = "service_changed" if row[_FP_AT] is not None else SERVICE_IDENTIFIED
                record(
                    kind,
                    address,
                    obs.port,
                    obs.proto,
                    _service(row),
                    _observed(obs, True),
                    internal=kind == SERVICE_IDENTIFIED,
                )
                row[_SERVICE], row[_PRODUCT], row[_VERSION] = obs.service, obs.product, obs.version
            row[_EXTRA] = obs.extrainfo
            row[_FP_AT] = at_text
        expired = []
        for key, row in rows.items():
            if row[_STATE] != OPEN:
                if row[_CLOSED] is None or parse_time(row[_CLOSED]) < keep_closed_after:
                    expired.append(key)
                continue
            if key in seen:
                continue
            port, proto = _split_key(key)
            if proto in protocols and port in spec:
                record(
                    "port_closed",
                    address,
                    port,
                    proto,
                    _service(row),
                    {"state": states.get(key, "closed")},
                )
                row[_STATE] = "closed"
                row[_CLOSED] = at_text
        for key in expired:
            del rows[key]
    return plan


# --------------------------------------------------------------------------- the store


class Store:
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
        self.hot: TinyDB = open_tinydb(self.hot_path)
        self.journal = AuditLog(self.data_dir, self.lock)
        self._segments = SegmentCache(self.segment_dir)
        self._read_cache: tuple[str, _Hot] | None = None
        self._memory: _Hot | None = None  # a read-only store's projection rebuilt in memory
        self._tx_chunks: dict[int, list[dict[str, Any]]] = {}
        self.damage: str | None = None  # why a read-only store could not check its projection
        self.hot.storage.on_load = self._checked  # type: ignore[attr-defined]
        if readonly:
            # Nothing is written: a projection that does not reflect the journal is rebuilt
            # in memory for this process only (an assessor's read-only snapshot works).
            with self.lock.hold(transaction=False):
                raw = self.hot.storage._load()  # type: ignore[attr-defined]
                try:
                    checked, rebuilt = self._checked(raw, write=False)
                except StoreError as error:
                    self.damage = str(error)
                    return
                if rebuilt:
                    self._memory = _Hot(checked)
            return
        self.lock.hooks = self
        with self.lock.hold():
            hot = self._read_hot()
            self._recover(hot)

    # ------------------------------------------------------------------ transactions

    def begin(self) -> None:
        """The outermost lock hold opens one transaction (see DataLock)."""
        self.journal.begin()
        self.hot.storage.begin()  # type: ignore[attr-defined]
        self._tx_chunks[threading.get_ident()] = []

    def commit(self) -> None:
        """Journal first (one append: events, effects, chunks), then the projection cache."""
        from portconsole.core.adapters.projection import diff_tables

        tx = self.hot.storage.finish()  # type: ignore[attr-defined]
        chunks = self._tx_chunks.pop(threading.get_ident(), [])
        effects = None
        if tx is not None and tx.dirty and tx.data is not None:
            effects = diff_tables(tx.before, tx.data)
        head = self.journal.commit(effects, chunks)
        if tx is not None and tx.dirty and tx.data is not None:
            if head is not None:
                set_position(tx.data, head.seq, head.hash)
            self.hot.storage.write_now(tx.data)  # type: ignore[attr-defined]
            self._read_cache = None

    def rollback(self) -> None:
        """Nothing of a failed operation is kept; scan bytes it appended are cut aside later."""
        self.hot.storage.finish()  # type: ignore[attr-defined]
        self._tx_chunks.pop(threading.get_ident(), None)
        self.journal.discard()
        self._read_cache = None

    def _checked(
        self, data: dict[str, Any] | None, write: bool = True
    ) -> tuple[dict[str, Any], bool]:
        """The projection to use: `data` when it reflects the journal, else a rebuild."""
        from portconsole.core.adapters.migrate import needs_migration

        if write and needs_migration(self.data_dir, data):
            from portconsole.core.adapters.migrate import migrate

            return migrate(self, data), True
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
        for record in self.journal.records():
            number = int(record.get("seq", 0))
            if number == seq and record.get("hash") != digest:
                return False
            if number > seq and (record.get("effects") or record.get("chunks")):
                return False
        return True

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
        raw = path.read_bytes()
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        atomic_write_bytes(path.with_name(f"{path.name}.torn-{stamp}"), raw[keep:])
        with path.open("r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
        self._segments.clear()
        log.warning("history %s: %d uncommitted bytes cut, kept aside", path, len(raw) - keep)

    def _derived(self, committed: dict[str, int], chunks: list[dict[str, Any]]) -> dict[str, Any]:
        """Hosts, ports and the store's bookkeeping as the scan history leaves them."""
        hot = _Hot(None)
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
                    "size": len(mark.raw) + 1,
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
            live = self.hot.storage._load() or {}  # type: ignore[attr-defined]
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

    def rebuild(self) -> dict[str, Any]:
        """Rebuild the projection cache from the journal and write it (a copy of the old is kept)."""
        with self.lock.hold():
            data = self.replay(write=True)
            if self.hot_path.exists():
                stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
                shutil.copy2(self.hot_path, self.hot_path.with_name(f"{HOT_FILE}.replaced-{stamp}"))
            # Written through the transaction: the rebuild is an event, its effects the repair.
            tx = self.hot.storage._tx.get(threading.get_ident())  # type: ignore[attr-defined]
            if tx is not None:
                tx.loaded, tx.dirty = True, True
                tx.before = self.hot.storage._load() if self.hot_path.exists() else None  # type: ignore[attr-defined]
                if not well_formed(tx.before):
                    tx.before = None
                tx.data = data
            self.journal.append_many(
                [
                    AuditEntry(
                        "store.rebuilt", Actor.current("cli"), details={"hot": str(self.hot_path)}
                    )
                ]
            )
        self._read_cache = None
        return data

    # ------------------------------------------------------------------ hot file access

    def _read_hot(self) -> _Hot:
        raw = self.hot.storage.read()
        if raw is None or not well_formed(raw):
            raw = {}
        return _Hot(raw)

    def _write_hot(self, hot: _Hot) -> None:
        self.hot.storage.write(hot.raw)
        self._read_cache = None

    def _snapshot(self) -> _Hot:
        """The hot state for a lock-free read, reused while the file is unchanged."""
        if self._memory is not None:
            return self._memory
        if self.lock.in_transaction:
            return self._read_hot()
        version = self.data_version()
        cached = self._read_cache
        if cached is not None and cached[0] == version:
            return cached[1]
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

    # ------------------------------------------------------------------ recovery

    def _recover(self, hot: _Hot) -> bool:
        """Cut what a failed or crashed operation appended past the commit point, keeping it
        aside (under the lock). The committed sizes come from a projection already checked
        against the journal, so a cache restored from a backup can never cut history.

        Returns whether the hot state needs writing (never, today; kept for callers).
        """
        committed = hot.segments
        files = (
            sorted(self.segment_dir.glob(f"*{SEGMENT_SUFFIX}")) if self.segment_dir.exists() else []
        )
        for path in files:
            month = path.name[: -len(SEGMENT_SUFFIX)]
            size = path.stat().st_size
            want = committed.get(month, 0)
            if size == want:
                continue
            if size < want:
                raise StoreError(
                    f"history segment {path} is truncated ({size} of {want} committed bytes); "
                    "restore it from backup"
                )
            if want == 0:
                stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
                path.rename(path.with_name(f"{path.name}.uncommitted-{stamp}"))
                self._segments.clear()
                continue
            self._cut_aside(path, want)
        for month, want in committed.items():
            if want and not self._segments.path(month).exists():
                raise StoreError(
                    f"history segment {self._segments.path(month)} is missing; restore it from "
                    "backup (`portconsole audit verify` names what the journal recorded)"
                )
        # Temp files of writes a kill cut short (only ours: other modules' files are theirs).
        temps = [*self.data_dir.glob(f".{HOT_FILE}.*.tmp")]
        if self.xml_dir.exists():
            temps += self.xml_dir.glob("*/.*.xml.gz.*.tmp")
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return False

    # ------------------------------------------------------------------ ingest

    def diff(self, scan: ScanResult) -> list[Change]:
        """The changes `ingest(scan)` would record against the current state; writes nothing."""
        return _apply_scan(self._read_hot(), scan, utcnow() + self.future_skew).changes

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

    def _check_new(self, hot: _Hot, scan: ScanResult) -> str:
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
        finished = _utc(scan.finished_at)
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
            scan.started_at = min(_utc(scan.started_at), now)
            scan.finished_at = now
            scan.error = "; ".join(
                filter(None, [scan.error, f"clock warning: finished {ahead} s in the future"])
            )
        month = month_key(_utc(scan.finished_at))
        newest = max(hot.segments, default="")
        if month < newest:
            late = hot.meta.setdefault("late", {})
            at_text = iso(_utc(scan.finished_at))
            if newest not in late or late[newest] > at_text:
                late[newest] = at_text
            return newest
        return month

    def _commit(self, hot: _Hot, scan: ScanResult, *, durable: bool) -> list[Change]:
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
            checkpoint = encode_lines([self._checkpoint(hot, month, committed)])
            mark = {"month": month, "offset": committed, "size": len(checkpoint)}
        else:
            checkpoint = b""
        plan = _apply_scan(hot, scan, utcnow() + self.future_skew)

        def list_ref(items: list[str]) -> str:
            ident = _list_id(items)
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
        if scan.imported and last and parse_time(last) > _utc(scan.finished_at):
            scan.backfill = True
            record["backfill"] = True
        record["xml"] = None
        record["xml_sha256"] = []
        if scan.raw_xml:
            relative = f"{XML_DIR}/{month}/{scan.scan_id}.xml.gz"
            blob = b"".join(gzip.compress(doc, mtime=0) for doc in scan.raw_xml)
            atomic_write_bytes(self.data_dir / relative, blob)
            record["xml"] = relative
            record["xml_sha256"] = [hashlib.sha256(doc).hexdigest() for doc in scan.raw_xml]
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
        finished = iso(_utc(scan.finished_at))
        last = hot.meta.get("last_finished_at")
        if not last or parse_time(last) <= _utc(scan.finished_at):
            hot.meta["last_scan_id"] = scan.scan_id
            hot.meta["last_finished_at"] = finished
            hot.meta["last_scan_month"] = month
        return plan.changes

    def _checkpoint(self, hot: _Hot, month: str, committed: int) -> list[Any]:
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
        port_lines = []
        for address, rows in ports.items():
            current = hot.ports.get(address, {}).get("ports", {})
            items = []
            for key, row in rows.items():
                if row[_STATE] != OPEN:
                    continue
                now = current.get(key)
                if now is not None and now[_STATE] == OPEN:
                    items.append((key, row, now[_LAST], now[_LAST_SCAN]))
                else:
                    items.append((key, row, None, None))
            port_lines.append((address, items))
        return encode_checkpoint(host_lines, port_lines)

    def _append(self, month: str, offset: int, data: bytes, *, durable: bool) -> None:
        created = not self.segment_dir.exists()
        ensure_private_dir(self.segment_dir)
        path = self._segments.path(month)
        created = created or not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
        try:
            os.ftruncate(fd, offset)
            written = os.pwrite(fd, data, offset)
            if written != len(data):
                raise StoreError(f"short write to {path}: disk full? free space and retry")
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if created and durable:
            fsync_dir(self.segment_dir)
            fsync_dir(self.data_dir)

    # ------------------------------------------------------------------ current state

    def current_ports(self, host: str | None = None, open_only: bool = True) -> list[PortState]:
        with no_gc():
            return self._current_ports(host, open_only)

    def _current_ports(self, host: str | None, open_only: bool) -> list[PortState]:
        hot = self._snapshot()
        docs = (
            [hot.ports[host]]
            if host is not None and host in hot.ports
            else ([] if host is not None else list(hot.ports.values()))
        )
        result = [
            _port_state(doc["host"], key, row)
            for doc in docs
            for key, row in doc["ports"].items()
            if not open_only or row[_STATE] == OPEN
        ]
        result.sort(key=lambda p: (_ip_sort_key(p.host), p.proto, p.port))
        return result

    def hosts(self) -> list[HostState]:
        hot = self._snapshot()
        return sorted(
            (_host_state(doc) for doc in hot.hosts.values()),
            key=lambda h: _ip_sort_key(h.address),
        )

    # ------------------------------------------------------------------ history access

    def _months(self, hot: _Hot) -> list[str]:
        return sorted(hot.segments)

    def _segment(self, hot: _Hot, month: str) -> Segment:
        return self._segments.load(month, hot.segments.get(month, 0))

    def _months_between(
        self, hot: _Hot, since: datetime | None, until: datetime | None
    ) -> list[str]:
        low = month_key(_utc(since)) if since else ""
        high = month_key(_utc(until)) if until else "9999-99"
        late: dict[str, str] = hot.meta.get("late") or {}
        until_text = iso(_utc(until)) if until else "9999"
        return [
            m
            for m in self._months(hot)
            if low <= m <= high or (m > high and late.get(m, "9999") <= until_text)
        ]

    def _expand(self, segment: Segment, line: Line) -> dict[str, Any]:
        record = dict(segment.record(line))
        # One shared list per coverage id: a year of records costs no extra address lists.
        record["addresses"] = segment.lists.get(record.get("addresses_ref", ""), [])
        return record

    def _scan_lines_between(
        self, hot: _Hot, since: datetime | None, until: datetime | None
    ) -> Iterable[tuple[Segment, Line]]:
        """Scan lines finished in [since, until], in file order (picked by their header)."""
        low = _utc(since) if since else None
        high = _utc(until) if until else None
        for month in self._months_between(hot, since, until):
            segment = self._segment(hot, month)
            for line in segment.lines:
                if line.kind != SCAN or line.at is None:
                    continue
                if (low and line.at < low) or (high and line.at > high):
                    continue
                yield segment, line

    def scans(self, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
        """Scan records finished in [since, until], oldest first."""
        hot = self._snapshot()
        out = [
            (parse_time(line.at_text), self._expand(segment, line))
            for segment, line in self._scan_lines_between(hot, since, until)
        ]
        out.sort(key=lambda item: item[0])
        return [record for _, record in out]

    def _find_scan(self, hot: _Hot, scan_id: str) -> tuple[Segment, Line] | None:
        months = self._months(hot)
        hinted = (
            hot.meta.get("last_scan_month") if hot.meta.get("last_scan_id") == scan_id else None
        )
        if hinted in months:
            months.remove(hinted)
            months.append(hinted)
        for month in reversed(months):
            segment = self._segment(hot, month)
            for line in reversed(segment.lines):
                if line.kind == SCAN and line.scan_id == scan_id:
                    return segment, line
        return None

    def scan(self, scan_id: str) -> dict | None:
        found = self._find_scan(self._snapshot(), scan_id)
        return self._expand(*found) if found else None

    def last_scan(self) -> dict | None:
        hot = self._snapshot()
        scan_id = hot.meta.get("last_scan_id")
        if not scan_id:
            return None
        found = self._find_scan(hot, scan_id)
        return self._expand(*found) if found else None

    def raw_xml(self, scan_id: str) -> list[bytes]:
        """The scan's raw XML documents, checked against their recorded sha256; [] if none
        was kept or it was pruned."""
        record = self.scan(scan_id)
        if record is None or not record.get("xml"):
            return []
        path = self.data_dir / record["xml"]
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            documents = _split_gzip_members(blob)
        except zlib.error:
            raise StoreError(
                f"raw XML {path} is corrupt (not gzip); restore it from backup"
            ) from None
        hashes = [hashlib.sha256(doc).hexdigest() for doc in documents]
        if hashes != record.get("xml_sha256", hashes):
            raise StoreError(
                f"raw XML {path} does not match the sha256 in scan {scan_id}'s record; "
                "it was altered or damaged"
            )
        return documents

    def _events_between(
        self, hot: _Hot, since: datetime | None, until: datetime | None, identified: bool
    ) -> Iterable[tuple[list[Any], datetime, str]]:
        for segment, line in self._scan_lines_between(hot, since, until):
            assert line.at is not None
            for event in segment.events(line):
                if not identified and event[0] == SERVICE_IDENTIFIED:
                    continue
                yield event, line.at, line.scan_id

    def events(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        identified: bool = False,
    ) -> list[ChangeEvent]:
        """Change events in [since, until], oldest first."""
        hot = self._snapshot()
        found = [_event(*item) for item in self._events_between(hot, since, until, identified)]
        found.sort(key=lambda e: e.at)
        return found

    def history(
        self,
        host: str,
        port: int | None = None,
        proto: str | None = None,
        since: datetime | None = None,
        identified: bool = False,
    ) -> list[ChangeEvent]:
        """One host's (or one port's) events, oldest first."""
        hot = self._snapshot()
        found = [
            _event(event, at, scan_id)
            for event, at, scan_id in self._events_between(hot, since, None, identified)
            if event[1] == host
            and (port is None or event[2] == port)
            and (proto is None or event[3] == proto)
        ]
        found.sort(key=lambda e: e.at)
        return found

    # ------------------------------------------------------------------ coverage

    def _scan_covers(
        self, segment: Segment, line: dict[str, Any], host: str, port: int | None, proto: str | None
    ) -> bool:
        cover = segment.address_set(line.get("cover_ref"))
        return Coverage.of_record(line, cover).covers(host, port, proto)

    def covered(
        self, host: str, port: int, proto: str, at: datetime, window: timedelta
    ) -> str | None:
        """The newest scan finished in [at - window, at] that covered host/port/proto."""
        hot = self._snapshot()
        at = _utc(at)
        best: tuple[datetime, str] | None = None
        for segment, line in self._scan_lines_between(hot, at - window, at):
            assert line.at is not None
            if best is None or line.at > best[0]:
                if self._scan_covers(segment, segment.record(line), host, port, proto):
                    best = (line.at, line.scan_id)
        return best[1] if best else None

    def state_at(
        self,
        at: datetime,
        host: str | None = None,
        coverage_window: timedelta | None = None,
    ) -> PointInTime:
        """What was open at `at`: the month's checkpoint plus its events up to `at`, each
        port with the scan that last saw it, and what no scan covered within the window."""
        with no_gc():
            return self._state_at(at, host, coverage_window)

    def _state_at(
        self,
        at: datetime,
        host: str | None = None,
        coverage_window: timedelta | None = None,
        *,
        hot: _Hot | None = None,
    ) -> PointInTime:
        at = _utc(at)
        window = coverage_window or DEFAULT_COVERAGE_WINDOW
        hot = hot if hot is not None else self._snapshot()
        months = self._months(hot)
        chosen = [m for m in months if m <= month_key(at)]
        starts = self._history_start(hot, months)
        if not chosen:
            return PointInTime(at, [], [], [], window, starts)
        segment = self._segment(hot, chosen[-1])
        hosts, ports, scans = self._replayed(segment, at, host)
        # The scan that last saw each open port: the newest covering scan up to `at`. A row
        # from the checkpoint already names the newest one before it.
        scans.sort(key=lambda item: item[0], reverse=True)
        port_seen: dict[tuple[str, str], tuple[str, str]] = {}
        host_seen: dict[str, tuple[str, str]] = {}
        need_ports = {address: set(rows) for address, rows in ports.items() if rows}
        need_hosts = set(hosts)
        for _, scan_line in scans:
            if not need_ports and not need_hosts:
                break
            record = segment.record(scan_line)
            seen = (scan_line.at_text, scan_line.scan_id)
            cover = segment.address_set(record.get("cover_ref"))
            stale = set(record.get("stale", ()))
            down = set(record.get("down", ()))
            for address in [a for a in need_hosts if a in cover and a not in stale]:
                host_seen[address] = seen
                need_hosts.discard(address)
            in_spec = spec_ports(record.get("ports", ""))
            protocols = record.get("protocols", ())
            outside = record.get("outside", {})
            for address in [
                a for a in need_ports if a in cover and a not in stale and a not in down
            ]:
                keys = need_ports[address]
                beyond = outside.get(address, ())
                found = [
                    key
                    for key in keys
                    if key in beyond
                    or (_split_key(key)[1] in protocols and _split_key(key)[0] in in_spec)
                ]
                for key in found:
                    port_seen[(address, key)] = seen
                keys.difference_update(found)
                if not keys:
                    del need_ports[address]
        cutoff = at - window
        open_ports: list[PortAt] = []
        uncovered: list[Uncovered] = []
        host_states: list[HostState] = []
        for address in sorted(set(ports) | set(hosts), key=_ip_sort_key):
            rows = ports.get(address, {})
            host_uncovered: list[Uncovered] = []
            for key in sorted(rows, key=_proto_port):
                row = rows[key]
                seen_at, seen_scan = row[_LAST], row[_LAST_SCAN]
                if len(row) > SEEN_SCAN and row[SEEN_AT] is not None:
                    if parse_time(row[SEEN_AT]) >= parse_time(seen_at):
                        seen_at, seen_scan = row[SEEN_AT], row[SEEN_SCAN]
                newer = port_seen.get((address, key))
                if newer is not None and parse_time(newer[0]) > parse_time(seen_at):
                    seen_at, seen_scan = newer
                number, proto = _split_key(key)
                last_seen = parse_time(seen_at)
                is_covered = last_seen >= cutoff
                open_ports.append(
                    PortAt(
                        address,
                        number,
                        proto,
                        row[_STATE],
                        row[_SERVICE],
                        row[_PRODUCT],
                        row[_VERSION],
                        row[_EXTRA],
                        parse_time(row[_FIRST]),
                        last_seen,
                        seen_scan,
                        _opt_time(row[_FP_AT]),
                        seen_scan,
                        is_covered,
                    )
                )
                if not is_covered:
                    host_uncovered.append(Uncovered(address, number, proto, last_seen, seen_scan))
            doc = hosts.get(address)
            if doc is not None:
                for covered_by in (
                    (doc.get("seen_at"), doc.get("seen_scan_id")),
                    host_seen.get(address),
                ):
                    if covered_by is None or not covered_by[0]:
                        continue
                    if not doc.get("last_covered") or parse_time(covered_by[0]) >= parse_time(
                        doc["last_covered"]
                    ):
                        doc["last_covered"], doc["last_covered_scan_id"] = covered_by
                state_h = _host_state(doc)
                host_states.append(state_h)
                if state_h.last_covered is None or state_h.last_covered < cutoff:
                    # A host's own line sorts before its ports' (proto "" < "tcp").
                    host_uncovered.insert(
                        0,
                        Uncovered(
                            address, None, None, state_h.last_covered, state_h.last_covered_scan_id
                        ),
                    )
            uncovered.extend(host_uncovered)
        return PointInTime(at, open_ports, uncovered, host_states, window, starts)

    def _replayed(
        self, segment: Segment, at: datetime | None, host: str | None
    ) -> tuple[
        dict[str, dict[str, Any]], dict[str, dict[str, list[Any]]], list[tuple[datetime, Line]]
    ]:
        """The month's hosts and open ports at `at` (None: the end of the segment), and the
        scans after the checkpoint used, finished by `at`."""
        # The newest checkpoint all of whose preceding scans finished by `at` holds the state
        # those scans left (reports that arrive late are appended after it, so later lines
        # are still checked by time). The month's first line always qualifies.
        start = -1
        for index, line in enumerate(segment.lines):
            if line.kind == SCAN:
                assert line.at is not None
                if at is not None and line.at > at:
                    break
            elif line.kind == CHECKPOINT:
                start = index
        if start >= 0:
            state = decode_checkpoint(segment.checkpoint(segment.lines[start]), host, OPEN)
            hosts, ports = state.hosts, state.ports
        else:
            hosts, ports = {}, {}
        replay = self._replay
        scans: list[tuple[datetime, Line]] = []
        for line in segment.lines[start + 1 :]:
            if line.kind != SCAN or line.at is None or (at is not None and line.at > at):
                continue
            scans.append((line.at, line))
            for event in segment.events(line):
                if host is None or event[1] == host:
                    replay(event, line.at_text, line.scan_id, hosts, ports)
        return hosts, ports, scans

    @staticmethod
    def _replay(
        event: list[Any],
        at_text: str,
        scan_id: str,
        hosts: dict[str, dict[str, Any]],
        ports: dict[str, dict[str, list[Any]]],
    ) -> None:
        kind, address, port, proto, _before, after = event
        if kind in ("host_up", "host_down"):
            doc = hosts.get(address)
            if doc is None:
                doc = hosts[address] = {"address": address, "status": "down", "hostname": ""}
            doc["status"] = "up" if kind == "host_up" else "down"
            if kind == "host_up":
                doc.setdefault("first_seen", at_text)
                doc["last_seen"] = at_text
                doc["last_scan_id"] = scan_id
                hostname = (after or {}).get("hostname")
                if hostname:
                    doc["hostname"] = hostname
            return
        key = f"{port}/{proto}"
        rows = ports.get(address)
        if rows is None:
            rows = ports[address] = {}
        after = after or {}
        if kind == "port_opened":
            rows[key] = [
                OPEN,
                after.get("service", ""),
                after.get("product", ""),
                after.get("version", ""),
                after.get("extrainfo", ""),
                at_text,
                at_text,
                scan_id,
                at_text if after.get("fingerprinted") else None,
                None,
            ]
        elif kind == "port_closed":
            rows.pop(key, None)
        elif key in rows:  # service_changed / service_identified
            row = rows[key]
            row[_SERVICE] = after.get("service", row[_SERVICE])
            row[_PRODUCT] = after.get("product", row[_PRODUCT])
            row[_VERSION] = after.get("version", row[_VERSION])
            row[_EXTRA] = after.get("extrainfo", row[_EXTRA])
            row[_FP_AT] = at_text

    def _history_start(self, hot: _Hot, months: list[str]) -> datetime | None:
        if not months:
            return None
        return datetime.strptime(months[0], "%Y-%m").replace(tzinfo=UTC)

    # ------------------------------------------------------------------ retention

    def prune(self, now: datetime | None = None) -> dict[str, int]:
        """Drop whole months of scan history and raw XML past retention.

        A month goes once all of it is older than the retention period. The newest segment
        always stays (it holds the checkpoint current answers start from); each kept month
        carries its own checkpoint, so answers after the cut stay complete. Other tables in
        the hot file (approvals, findings) and the audit chain are never touched.
        """
        moment = _utc(now or utcnow())
        removed = {"scan_months": 0, "xml_months": 0, "xml_files": 0}

        def expired(month: str, keep_months: int) -> bool:
            start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
            return add_months(start, 1 + keep_months) <= moment

        with self.lock.hold():
            hot = self._read_hot()
            self._recover(hot)
            months = self._months(hot)
            drop = [m for m in months[:-1] if expired(m, self.retention.scan_months)]
            if drop:
                for month in drop:
                    del hot.segments[month]
                self._write_hot(hot)  # commit first: a crash leaves only unreferenced files
                for month in drop:
                    with contextlib.suppress(FileNotFoundError):
                        self._segments.path(month).unlink()
                    removed["scan_months"] += 1
                self._segments.clear()
            if self.xml_dir.exists():
                for folder in sorted(self.xml_dir.iterdir()):
                    if not folder.is_dir() or not _MONTH.match(folder.name):
                        continue
                    if expired(folder.name, self.retention.raw_xml_months) or folder.name in drop:
                        removed["xml_files"] += sum(1 for _ in folder.glob("*.xml.gz"))
                        shutil.rmtree(folder)
                        removed["xml_months"] += 1
        return removed


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
                if isinstance(row, list) and row and row[_STATE] == OPEN:
                    ports[f"{doc.get('host')}:{key}"] = tuple(row[_SERVICE:_EXTRA])
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
