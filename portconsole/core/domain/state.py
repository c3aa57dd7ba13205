"""The stored state as its readers see it: hosts, ports, change events, point-in-time answers.

Plain types with their JSON forms (UTC ISO times), built from the hot tables' rows
(PORT_FIELDS order, see changes.py) and from history. Text fields come from the network:
untrusted, escaped where shown.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from msgspec import Struct

from portconsole.core.domain.model import Change, port_key
from portconsole.core.timeutil import iso, parse_iso


# How long after its last scan a port still counts as covered in a point-in-time answer.
@lru_cache(maxsize=65536)
def parse_time(text: str) -> datetime:
    """Parse a stored UTC ISO time (cached: the same few strings recur thousands of times)."""
    return parse_iso(text)


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

(
    ROW_STATE,
    ROW_SERVICE,
    ROW_PRODUCT,
    ROW_VERSION,
    ROW_EXTRA,
    ROW_FIRST,
    ROW_LAST,
    ROW_LAST_SCAN,
    ROW_FP_AT,
    ROW_CLOSED,
) = range(10)


@lru_cache(maxsize=4096)
def split_port_key(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    return int(port), proto


DEFAULT_COVERAGE_WINDOW = timedelta(hours=24)


class PortState(Struct):
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


class PortAt(PortState):
    """A port open at a point in time, with the scan that last saw it before that time."""

    last_seen_scan_id: str
    covered: bool  # seen by a scan within the coverage window before the time asked

    def to_json(self) -> dict[str, Any]:
        data = PortState.to_json(self)
        data["last_seen_scan_id"] = self.last_seen_scan_id
        data["covered"] = self.covered
        return data


class HostState(Struct):
    """A host as the projection knows it: status, name, and when it was last seen and covered."""

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


class ChangeEvent(Struct):
    """One change of a port or host between two scans, as recorded."""

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


class Uncovered(Struct):
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


class PointInTime(Struct):
    """What was open on the fleet at one moment, and how far the record reaches."""

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


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def opt_time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def port_state_of(host: str, key: str, row: list[Any]) -> PortState:
    port, proto = split_port_key(key)
    return PortState(
        host=host,
        port=port,
        proto=proto,
        state=row[ROW_STATE],
        service=row[ROW_SERVICE],
        product=row[ROW_PRODUCT],
        version=row[ROW_VERSION],
        extrainfo=row[ROW_EXTRA],
        first_seen=parse_time(row[ROW_FIRST]),
        last_seen=parse_time(row[ROW_LAST]),
        last_scan_id=row[ROW_LAST_SCAN],
        fingerprinted_at=opt_time(row[ROW_FP_AT]),
    )


def host_state_of(doc: dict[str, Any]) -> HostState:
    return HostState(
        address=doc["address"],
        status=doc["status"],
        hostname=doc.get("hostname", ""),
        first_seen=opt_time(doc.get("first_seen")),
        last_seen=opt_time(doc.get("last_seen")),
        last_scan_id=doc.get("last_scan_id", ""),
        last_covered=opt_time(doc.get("last_covered")),
        last_covered_scan_id=doc.get("last_covered_scan_id", ""),
    )


def change_event_of(event: list[Any], at: datetime, scan_id: str) -> ChangeEvent:
    kind, host, port, proto, before, after = event
    return ChangeEvent(kind, host, port, proto, before, after, at, scan_id)


def proto_port(key: str) -> tuple[str, int]:
    port, proto = split_port_key(key)
    return proto, port


@lru_cache(maxsize=65536)
def address_sort_key(address: str) -> tuple[int, ...]:
    if ":" in address:
        return (6, *(int(part or "0", 16) for part in address.split(":") if part != ""))
    try:
        return (4, *(int(part) for part in address.split(".")))
    except ValueError:
        return (9,)
