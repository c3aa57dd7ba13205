"""Point-in-time answers from the history segments: what was open at a moment, each port
with the scan that last saw it, and which hosts and ports no scan covered within the window
(`state --at`, the continuity report). The month's newest usable checkpoint is replayed
forward with the events of its scan lines up to that moment."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
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
from portconsole.core.domain.changes import HotTables, spec_ports
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
    HostState,
    PointInTime,
    PortAt,
    Uncovered,
    address_sort_key,
    as_utc,
    host_state_of,
    opt_time,
    parse_time,
    proto_port,
    split_port_key,
)
from portconsole.core.release import release
from portconsole.core.timeutil import month_key


class PointInTimeReader:
    """The point-in-time queries of the Store, and the month segments they read (a mixin
    under HistoryReader: the Store sets these attributes)."""

    _segments: SegmentCache

    def _snapshot(self) -> HotTables:
        raise NotImplementedError

    def _months(self, hot: HotTables) -> list[str]:
        return sorted(hot.segments)

    def _segment(self, hot: HotTables, month: str) -> Segment:
        return self._segments.load(month, hot.segments.get(month, 0))

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
        # The replayed month, freed a slice at a time (at once: a 43 ms hold of the GIL
        # at 200,000 ports, with a console's UI thread waiting).
        release(ports, hosts)
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
            for event in segment.each_event(line):
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
