"""History: current ports and hosts, scan records, change events and raw XML, read from the
monthly segments (see store_segment.py) without locks: committed sizes and atomic renames
give every reader a consistent snapshot. Point-in-time answers are in history_at.py."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from portconsole.core.adapters.history_at import PointInTimeReader
from portconsole.core.adapters.shards import Projection
from portconsole.core.adapters.sightings import HostPorts, SightingsCache, host_sightings
from portconsole.core.adapters.store_segment import SCAN, Line, Segment, no_gc
from portconsole.core.domain.changes import SERVICE_IDENTIFIED, HotTables
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.model import OPEN
from portconsole.core.domain.state import (
    ROW_STATE,
    ChangeEvent,
    HostState,
    PortState,
    address_sort_key,
    as_utc,
    change_event_of,
    host_state_of,
    parse_time,
    port_state_of,
)
from portconsole.core.errors import StoreError
from portconsole.core.timeutil import iso, month_key


def _split_gzip_members(data: bytes) -> list[bytes]:
    documents: list[bytes] = []
    while data:
        decoder = zlib.decompressobj(wbits=31)
        documents.append(decoder.decompress(data) + decoder.flush())
        data = decoder.unused_data
    return documents


# How much of a scan line `_scan_record` reads first: a record is a few KB at most.
_RECORD_PREFIX = 1 << 16
_DECODER = json.JSONDecoder()


def _scan_record(segment: Segment, line: Line) -> dict[str, Any]:
    """A scan line's record (`["S", at, scan_id, record, events]`) without parsing its
    events: a first sweep of 10,000 hosts has 200,000 of them, one 25 MB line whose
    parse held the GIL for half a second of the console's first read, and stayed parsed
    in the segment cache. Anything unexpected: the whole line, checked (`Segment.record`)."""
    if line.value is None:
        text = segment.raw(line, _RECORD_PREFIX).decode("utf-8", "replace")
        try:
            at = 1  # past "["
            for _ in range(3):  # the tag, the time and the scan id
                _, at = _DECODER.raw_decode(text, at)
                if text[at : at + 1] != ",":
                    raise ValueError(at)
                at += 1
            record, _ = _DECODER.raw_decode(text, at)
        except ValueError:
            record = None
        if isinstance(record, dict) and text.startswith('["S",'):
            return record
    return segment.record(line)


def _proto_port(port: PortState) -> tuple[str, int]:
    return port.proto, port.port


class HistoryReader(PointInTimeReader):
    """History queries of the Store (a mixin: the Store sets these attributes); the
    point-in-time ones are PointInTimeReader's (history_at.py)."""

    data_dir: Path
    xml_dir: Path
    _sightings: SightingsCache

    def current_ports(
        self,
        host: str | None = None,
        open_only: bool = True,
        *,
        hosts: Iterable[str] | None = None,
    ) -> list[PortState]:
        """The current ports of every host, of `host`, or of the `hosts` given (a scan's:
        only their address blocks are read, whatever the size of the fleet)."""
        with no_gc():
            return self._current_ports(host, open_only, hosts)

    def _current_ports(
        self, host: str | None, open_only: bool, only: Iterable[str] | None = None
    ) -> list[PortState]:
        hot = self._snapshot()
        if host is not None:
            only = [host]
        if only is None:
            docs = list(hot.ports.values())
        else:
            docs = [doc for doc in map(hot.ports.get, dict.fromkeys(only)) if doc is not None]
        # By host, then each host's ports: many small sorts, not one of 200,000 rows (a
        # sort holds the GIL throughout: 0.2 s the console's UI thread could not run).
        docs.sort(key=lambda d: address_sort_key(d["host"]))
        result: list[PortState] = []
        for doc in docs:
            address = doc["host"]
            rows = [
                port_state_of(address, key, row)
                for key, row in doc["ports"].items()
                if not open_only or row[ROW_STATE] == OPEN
            ]
            rows.sort(key=_proto_port)
            result += rows
        return result

    def open_port_sightings(self, hosts: Iterable[str] | None = None) -> dict[str, HostPorts]:
        """Address -> (port, proto) -> (last seen, last scan id) of its open ports, for
        every host or the `hosts` given: what a console snapshot needs of 200,000 ports
        (counts, approvals, latest sightings) without a PortState each (a sixth of the
        time, and no sort). The whole fleet's, read lock-free, comes compact from the
        sightings kept by shard file (sightings.py), without keeping the ports parsed."""
        hot = self._snapshot()
        source = hot.source
        with no_gc():
            if hosts is None and isinstance(source, Projection) and source.shared:
                return self._sightings.read(source)
            if hosts is None:
                docs: Iterable[dict[str, Any]] = hot.ports.values()
            else:
                docs = [doc for doc in map(hot.ports.get, dict.fromkeys(hosts)) if doc is not None]
            return {doc["host"]: host_sightings(doc["ports"]) for doc in docs}

    def hosts(self, only: Iterable[str] | None = None) -> list[HostState]:
        """Every host the store tracks, or those of `only` it tracks (their blocks only)."""
        hot = self._snapshot()
        docs = (
            hot.hosts.values()
            if only is None
            else [doc for doc in map(hot.hosts.get, dict.fromkeys(only)) if doc is not None]
        )
        return sorted(
            (host_state_of(doc) for doc in docs), key=lambda h: address_sort_key(h.address)
        )

    def _months_between(
        self, hot: HotTables, since: datetime | None, until: datetime | None
    ) -> list[str]:
        low = month_key(as_utc(since)) if since else ""
        high = month_key(as_utc(until)) if until else "9999-99"
        late: dict[str, str] = hot.meta.get("late") or {}
        until_text = iso(as_utc(until)) if until else "9999"
        return [
            m
            for m in self._months(hot)
            if low <= m <= high or (m > high and late.get(m, "9999") <= until_text)
        ]

    def _expand(self, segment: Segment, line: Line) -> dict[str, Any]:
        record = dict(_scan_record(segment, line))
        # One shared list per coverage id: a year of records costs no extra address lists.
        record["addresses"] = segment.lists.get(record.get("addresses_ref", ""), [])
        return record

    def _scan_lines_between(
        self, hot: HotTables, since: datetime | None, until: datetime | None
    ) -> Iterable[tuple[Segment, Line]]:
        """Scan lines finished in [since, until], in file order (picked by their header)."""
        low = as_utc(since) if since else None
        high = as_utc(until) if until else None
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

    def _find_scan(self, hot: HotTables, scan_id: str) -> tuple[Segment, Line] | None:
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
        self, hot: HotTables, since: datetime | None, until: datetime | None, identified: bool
    ) -> Iterable[tuple[list[Any], datetime, str]]:
        for segment, line in self._scan_lines_between(hot, since, until):
            assert line.at is not None
            for event in segment.each_event(line):
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
        found = [
            change_event_of(*item) for item in self._events_between(hot, since, until, identified)
        ]
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
            change_event_of(event, at, scan_id)
            for event, at, scan_id in self._events_between(hot, since, None, identified)
            if event[1] == host
            and (port is None or event[2] == port)
            and (proto is None or event[3] == proto)
        ]
        found.sort(key=lambda e: e.at)
        return found

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
        at = as_utc(at)
        best: tuple[datetime, str] | None = None
        for segment, line in self._scan_lines_between(hot, at - window, at):
            assert line.at is not None
            if best is None or line.at > best[0]:
                if self._scan_covers(segment, segment.record(line), host, port, proto):
                    best = (line.at, line.scan_id)
        return best[1] if best else None

    def first_scan_at(self) -> datetime | None:
        """When the oldest scan record finished (an imported backfill included), or None."""
        hot = self._snapshot()
        found = [parse_time(text) for text in (hot.meta.get("late") or {}).values()]
        for month in self._months(hot):
            times = [
                line.at
                for line in self._segment(hot, month).lines
                if line.kind == SCAN and line.at is not None
            ]
            if times:
                found.append(min(times))
                break
        return min(found, default=None)
