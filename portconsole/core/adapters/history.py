"""History: scan records, change events, raw XML and point-in-time answers, read from the
monthly segments (see store_segment.py) without locks: committed sizes and atomic renames
give every reader a consistent snapshot."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from portconsole.core.adapters.store_segment import (
    CHECKPOINT,
    SCAN,
    SEEN_AT,
    SEEN_SCAN,
    Line,
    Segment,
    SegmentCache,
    decode_checkpoint,
    no_gc,
)
from portconsole.core.domain.changes import SERVICE_IDENTIFIED, HotTables, spec_ports
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.finding import stored_time
from portconsole.core.domain.model import OPEN
from portconsole.core.domain.state import (
    DEFAULT_COVERAGE_WINDOW,
    ROW_EXTRA,
    ROW_FIRST,
    ROW_FP_AT,
    ROW_LAST,
    ROW_LAST_SCAN,
    ROW_PRODUCT,
    ROW_SERVICE,
    ROW_STATE,
    ROW_VERSION,
    ChangeEvent,
    HostState,
    PointInTime,
    PortAt,
    PortState,
    Uncovered,
    address_sort_key,
    as_utc,
    change_event_of,
    host_state_of,
    opt_time,
    parse_time,
    port_state_of,
    proto_port,
    split_port_key,
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
        text = line.raw[:_RECORD_PREFIX].decode("utf-8", "replace")
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


class HistoryReader:
    """History queries of the Store (a mixin: the Store sets these attributes)."""

    data_dir: Path
    xml_dir: Path
    _segments: SegmentCache

    def _snapshot(self) -> HotTables:
        raise NotImplementedError

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

    def open_port_sightings(
        self, hosts: Iterable[str] | None = None
    ) -> dict[str, dict[tuple[int, str], tuple[datetime, str]]]:
        """Address -> (port, proto) -> (last seen, last scan id) of its open ports, for
        every host or the `hosts` given: what a console snapshot needs of 200,000 ports
        (counts, approvals, latest sightings) without a PortState each (a sixth of the
        time, and no sort)."""
        hot = self._snapshot()
        if hosts is None:
            docs: Iterable[dict[str, Any]] = hot.ports.values()
        else:
            docs = [doc for doc in map(hot.ports.get, dict.fromkeys(hosts)) if doc is not None]
        with no_gc():
            return {
                doc["host"]: {
                    split_port_key(key): (stored_time(row[ROW_LAST]), row[ROW_LAST_SCAN])
                    for key, row in doc["ports"].items()
                    if row[ROW_STATE] == OPEN
                }
                for doc in docs
            }

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

    def _months(self, hot: HotTables) -> list[str]:
        return sorted(hot.segments)

    def _segment(self, hot: HotTables, month: str) -> Segment:
        return self._segments.load(month, hot.segments.get(month, 0))

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

    def state_at(
        self,
        at: datetime,
        host: str | None = None,
        coverage_window: timedelta | None = None,
        host_windows: Mapping[str, timedelta] | None = None,
    ) -> PointInTime:
        """What was open at `at`: the month's checkpoint plus its events up to `at`, each
        port with the scan that last saw it, and what no scan covered within the window
        (`host_windows`: a host's own window, e.g. its group's interval, over the default)."""
        with no_gc():
            return self._state_at(at, host, coverage_window, host_windows=host_windows)

    def _state_at(
        self,
        at: datetime,
        host: str | None = None,
        coverage_window: timedelta | None = None,
        *,
        hot: HotTables | None = None,
        host_windows: Mapping[str, timedelta] | None = None,
    ) -> PointInTime:
        at = as_utc(at)
        window = coverage_window or DEFAULT_COVERAGE_WINDOW
        windows = host_windows or {}
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
                    or (split_port_key(key)[1] in protocols and split_port_key(key)[0] in in_spec)
                ]
                for key in found:
                    port_seen[(address, key)] = seen
                keys.difference_update(found)
                if not keys:
                    del need_ports[address]
        open_ports: list[PortAt] = []
        uncovered: list[Uncovered] = []
        host_states: list[HostState] = []
        for address in sorted(set(ports) | set(hosts), key=address_sort_key):
            cutoff = at - windows.get(address, window)
            rows = ports.get(address, {})
            host_uncovered: list[Uncovered] = []
            for key in sorted(rows, key=proto_port):
                row = rows[key]
                seen_at, seen_scan = row[ROW_LAST], row[ROW_LAST_SCAN]
                if len(row) > SEEN_SCAN and row[SEEN_AT] is not None:
                    if parse_time(row[SEEN_AT]) >= parse_time(seen_at):
                        seen_at, seen_scan = row[SEEN_AT], row[SEEN_SCAN]
                newer = port_seen.get((address, key))
                if newer is not None and parse_time(newer[0]) > parse_time(seen_at):
                    seen_at, seen_scan = newer
                number, proto = split_port_key(key)
                last_seen = parse_time(seen_at)
                is_covered = last_seen >= cutoff
                open_ports.append(
                    PortAt(
                        address,
                        number,
                        proto,
                        row[ROW_STATE],
                        row[ROW_SERVICE],
                        row[ROW_PRODUCT],
                        row[ROW_VERSION],
                        row[ROW_EXTRA],
                        parse_time(row[ROW_FIRST]),
                        last_seen,
                        seen_scan,
                        opt_time(row[ROW_FP_AT]),
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
                state_h = host_state_of(doc)
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
        elif kind in ("port_closed", "port_filtered"):
            rows.pop(key, None)
        elif key in rows:  # service_changed / service_identified
            row = rows[key]
            row[ROW_SERVICE] = after.get("service", row[ROW_SERVICE])
            row[ROW_PRODUCT] = after.get("product", row[ROW_PRODUCT])
            row[ROW_VERSION] = after.get("version", row[ROW_VERSION])
            row[ROW_EXTRA] = after.get("extrainfo", row[ROW_EXTRA])
            row[ROW_FP_AT] = at_text

    def _history_start(self, hot: HotTables, months: list[str]) -> datetime | None:
        if not months:
            return None
        return datetime.strptime(months[0], "%Y-%m").replace(tzinfo=UTC)
