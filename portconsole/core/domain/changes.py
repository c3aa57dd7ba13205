"""Current state and its change rules: what a scan changes in the hot tables. Pure: no I/O.

The hot tables (`hosts`, `ports`, `meta`) are plain dicts as TinyDB stores them; a port row
is a list in PORT_FIELDS order (3x faster to load and write than a document per port).

Change rules (against the stored state, at the scan's `finished_at`):

- `port_opened`: open in the scan, not open in the state.
- `port_closed`: open in the state; the host is up in this scan and the port lies in the
  scan's port spec and protocols; not open in the scan. A host not in the scan, a host that
  is down (nmap did not probe its ports) or a port outside the spec is *not covered*, never
  closed (see coverage.py).
- `port_filtered`: as `port_closed`, but the scan got no answer on the port (nmap's
  `filtered` or `open|filtered`: a firewall that drops). Filtered is never open, and it is
  not closed either: the row keeps the state `filtered`.
- `service_changed`: service, product or version differ, compared only when both the stored
  port and the new observation were fingerprinted (`-sV`). The first fingerprint of a port
  that a sweep found is the internal event `service_identified`, not a change.
- `host_up` / `host_down`: status differs from the state. A host in a successful scan's
  addresses that nmap did not report is down.
- A host whose state comes from a scan that finished *after* this one is left alone
  (`stale`): a late report changes history, never the current state — unless that newer
  look lies in the future of this clock (the clock stepped back since), which orders nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

from msgspec import Struct, field

from portconsole.core.domain.model import (
    FILTERED,
    FILTERED_STATES,
    OPEN,
    Change,
    PortObservation,
    ScanResult,
)
from portconsole.core.domain.state import (
    ROW_CLOSED,
    ROW_EXTRA,
    ROW_FP_AT,
    ROW_LAST,
    ROW_LAST_SCAN,
    ROW_PRODUCT,
    ROW_SERVICE,
    ROW_STATE,
    ROW_VERSION,
    as_utc,
    parse_time,
    split_port_key,
)
from portconsole.core.domain.targets import PortSpec, parse_ports
from portconsole.core.errors import StoreError
from portconsole.core.timeutil import iso, utcnow


@lru_cache(maxsize=1024)
def port_spec(text: str) -> PortSpec | None:
    """The PortSpec of a stored spec string, or None when it covers nothing parseable."""
    if not text:
        return None
    try:
        return parse_ports(text)
    except ValueError:
        return None


_EMPTY: frozenset[int] = frozenset()


@lru_cache(maxsize=16)
def spec_ports(text: str) -> frozenset[int]:
    """The ports of a stored spec string as a set (membership in the per-port hot loop)."""
    spec = port_spec(text)
    return frozenset(spec.ports()) if spec is not None else _EMPTY


STORE_FORMAT = 2  # 2: segment lines are tagged arrays, checkpoints inside the month


META_NAME = "store"


# A closed port's row stays this long (consoles show recent closes); then only history has it.
CLOSED_ROW_KEEP = timedelta(days=1)


NO_FINGERPRINT_FLAG = "fingerprinted" not in PortObservation.__struct_fields__


CHANGE_KINDS = (
    "port_opened",
    "port_closed",
    "port_filtered",
    "service_changed",
    "host_up",
    "host_down",
)


SERVICE_IDENTIFIED = "service_identified"


SCAN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


def is_fingerprinted(observation: PortObservation) -> bool:
    """Whether an observation comes from service detection (see the module docstring)."""
    flag = getattr(observation, "fingerprinted", None)
    if flag is not None:
        return bool(flag)
    return bool(observation.product or observation.version or observation.extrainfo)


def service_of(row: list[Any]) -> dict[str, Any]:
    return {
        "service": row[ROW_SERVICE],
        "product": row[ROW_PRODUCT],
        "version": row[ROW_VERSION],
        "extrainfo": row[ROW_EXTRA],
    }


def observed_of(obs: PortObservation, fingerprinted: bool) -> dict[str, Any]:
    return {
        "service": obs.service,
        "product": obs.product,
        "version": obs.version,
        "extrainfo": obs.extrainfo,
        "fingerprinted": fingerprinted,
    }


def list_id(items: list[str]) -> str:
    digest = hashlib.sha256("\n".join(items).encode("utf-8")).hexdigest()
    return digest[:16]


def check_scan_id(scan_id: str) -> None:
    """Scan ids name files: refuse anything that could leave the data dir."""
    if not isinstance(scan_id, str) or not SCAN_ID_PATTERN.match(scan_id):
        raise StoreError(
            f"scan id {scan_id!r} is not usable: use letters, digits and . _ : + - (max 128)"
        )


def address_block(address: str) -> str:
    """The block an address's current state is kept in (one projection shard each): its
    IPv4 /24 ("127.0.3") or IPv6 /64 ("2001-0db8-0000-0000"), so a scan of a few hosts
    reads and writes a few hundred hosts' state, never the fleet's."""
    if ":" in address:
        try:
            exploded = ipaddress.IPv6Address(address.split("%", 1)[0]).exploded
        except ValueError:
            return "other"
        return exploded[:19].replace(":", "-")
    head, dot, _ = address.rpartition(".")
    return head if dot and head.replace(".", "").isdigit() else "other"


class TableSource(Protocol):
    """Where HotTables finds its tables: whole in memory (DictSource) or a projection that
    loads each address block on first access (adapters/shards.py)."""

    def live_table(self, name: str) -> dict[str, Any]: ...

    def live_block(self, table: str, block: str, create: bool) -> dict[str, Any] | None: ...

    def block_names(self, table: str) -> list[str]: ...


class DictSource:
    """Tables held whole in one dict (a rebuild, a test): `hosts` and `ports` keyed by address."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        for name, field_name in (("hosts", "address"), ("ports", "host")):
            table = raw.get(name) or {}
            raw[name] = {doc[field_name]: doc for doc in table.values()}

    def live_table(self, name: str) -> dict[str, Any]:
        table: dict[str, Any] = self.raw.setdefault(name, {})
        return table

    def live_block(self, table: str, block: str, create: bool) -> dict[str, Any] | None:
        return self.live_table(table)

    def block_names(self, table: str) -> list[str]:
        return ["*"] if self.raw.get(table) else []


class ByAddress(Mapping[str, dict[str, Any]]):
    """A derived table (`hosts` or `ports`) by address, its blocks loaded on first access."""

    def __init__(self, source: TableSource, table: str) -> None:
        self._source = source
        self._table = table
        self._blocks: dict[str, dict[str, Any] | None] = {}

    def block(self, address: str, create: bool = False) -> dict[str, Any] | None:
        key = address_block(address)
        found = self._blocks.get(key)
        if found is None:
            found = self._source.live_block(self._table, key, create)
            if found is not None or not create:
                self._blocks[key] = found
        return found

    def get(self, address: str, default: Any = None) -> Any:
        block = self.block(address)
        return default if block is None else block.get(address, default)

    def __getitem__(self, address: str) -> dict[str, Any]:
        block = self.block(address)
        if block is None:
            raise KeyError(address)
        doc: dict[str, Any] = block[address]
        return doc

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.get(address) is not None

    def _all(self) -> list[dict[str, Any]]:
        names = self._source.block_names(self._table)
        return [b for b in (self._source.live_block(self._table, n, False) for n in names) if b]

    def __iter__(self) -> Iterator[str]:
        for block in self._all():
            yield from block

    def __len__(self) -> int:
        return sum(len(block) for block in self._all())

    def items(self) -> list[tuple[str, dict[str, Any]]]:  # type: ignore[override]
        return [item for block in self._all() for item in block.items()]

    def values(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [doc for block in self._all() for doc in block.values()]


class HotTables:
    """The projection's current-state tables by address, mutated in place by a plan.

    Built over a TableSource: a scan of a few hosts touches only their address blocks, so
    nothing indexes the whole fleet up front (iterating `hosts` or `ports` loads them all).
    """

    def __init__(self, raw: dict[str, Any] | TableSource | None) -> None:
        source: TableSource = (
            DictSource(raw if raw is not None else {})
            if raw is None or isinstance(raw, dict)
            else raw
        )
        self.source = source
        self.hosts = ByAddress(source, "hosts")
        self.ports = ByAddress(source, "ports")
        meta_table = source.live_table("meta")
        meta = next((d for d in meta_table.values() if d.get("name") == META_NAME), None)
        if meta is None:
            meta = {"name": META_NAME, "format": STORE_FORMAT, "segments": {}}
            meta_table[str(max((int(k) for k in meta_table), default=0) + 1)] = meta
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

    @property
    def raw(self) -> dict[str, Any]:
        """The whole table map (of an in-memory DictSource; a rebuild's result)."""
        assert isinstance(self.source, DictSource)
        return self.source.raw

    @property
    def segments(self) -> dict[str, int]:
        segments: dict[str, int] = self.meta["segments"]
        return segments

    def host_doc(self, address: str) -> dict[str, Any]:
        block = self.hosts.block(address, create=True)
        assert block is not None
        doc = block.get(address)
        if doc is None:
            doc = block[address] = {"address": address, "status": "down", "hostname": ""}
        result: dict[str, Any] = doc
        return result

    def port_rows(self, address: str) -> dict[str, list[Any]]:
        block = self.ports.block(address, create=True)
        assert block is not None
        doc = block.get(address)
        if doc is None:
            doc = block[address] = {"host": address, "ports": {}}
        rows: dict[str, list[Any]] = doc["ports"]
        return rows


class ScanPlan(Struct):
    """What a scan changes in the projection: its changes and events, and the hosts it covered, found down, left stale or outside its scope."""

    changes: list[Change] = field(default_factory=list)
    events: list[list[Any]] = field(
        default_factory=list
    )  # [kind, host, port, proto, before, after]
    cover: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    outside: dict[str, list[str]] = field(default_factory=dict)  # seen beyond the port spec
    up: int = 0


def apply_scan(hot: HotTables, scan: ScanResult, horizon: datetime | None = None) -> ScanPlan:
    """Apply `scan` to the hot state in place; return the changes and events it makes.

    `horizon` is this clock plus the allowed skew: a host last covered after it was covered
    by a clock that has stepped back since.
    """
    if horizon is None:
        horizon = utcnow() + timedelta(minutes=5)
    at = as_utc(scan.finished_at)
    at_text = iso(at)
    scan_id = scan.scan_id
    spec = spec_ports(scan.ports)
    protocols = set(scan.protocols)
    keep_closed_after = at - CLOSED_ROW_KEEP
    reported = {h.address: h for h in scan.hosts}
    plan = ScanPlan()
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
        for obs in observed.ports:
            if obs.state == OPEN:
                seen[f"{obs.port}/{obs.proto}"] = obs
        for key, obs in seen.items():
            if obs.proto not in protocols or obs.port not in spec:
                plan.outside.setdefault(address, []).append(key)
            fingerprinted = (
                bool(obs.product or obs.version or obs.extrainfo)
                if NO_FINGERPRINT_FLAG
                else is_fingerprinted(obs)
            )
            row = rows.get(key)
            if row is None or row[ROW_STATE] != OPEN:
                after = observed_of(obs, fingerprinted)
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
            row[ROW_LAST] = at_text
            row[ROW_LAST_SCAN] = scan_id
            if not fingerprinted:
                continue
            if row[ROW_FP_AT] is None or (row[ROW_SERVICE], row[ROW_PRODUCT], row[ROW_VERSION]) != (
                obs.service,
                obs.product,
                obs.version,
            ):
                kind = "service_changed" if row[ROW_FP_AT] is not None else SERVICE_IDENTIFIED
                record(
                    kind,
                    address,
                    obs.port,
                    obs.proto,
                    service_of(row),
                    observed_of(obs, True),
                    internal=kind == SERVICE_IDENTIFIED,
                )
                row[ROW_SERVICE], row[ROW_PRODUCT], row[ROW_VERSION] = (
                    obs.service,
                    obs.product,
                    obs.version,
                )
            row[ROW_EXTRA] = obs.extrainfo
            row[ROW_FP_AT] = at_text
        expired = []
        for key, row in rows.items():
            if row[ROW_STATE] != OPEN:
                if row[ROW_CLOSED] is None or parse_time(row[ROW_CLOSED]) < keep_closed_after:
                    expired.append(key)
                continue
            if key in seen:
                continue
            port, proto = split_port_key(key)
            if proto in protocols and port in spec:
                now = observed.state_of((port, proto))
                filtered = now in FILTERED_STATES
                record(
                    "port_filtered" if filtered else "port_closed",
                    address,
                    port,
                    proto,
                    service_of(row),
                    {"state": now},
                )
                row[ROW_STATE] = FILTERED if filtered else "closed"
                row[ROW_CLOSED] = at_text
        for key in expired:
            del rows[key]
    return plan
