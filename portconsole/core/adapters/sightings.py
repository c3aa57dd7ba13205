"""When each open port of the whole fleet was last seen, kept compact by ports shard file.

A console snapshot needs, of 200,000 open ports, only which ports each host has open and
the scan that last saw each (counts, approval status, the findings' latest sightings). The
ports shards parsed whole and kept (~180 MB at 10,000 hosts) were most of a console's
memory. Here each shard file is parsed once, reduced to a `HostSightings` per host, and let
go; a shard file never changes while it exists (shards.py), so what was derived from one is
kept by its name, and a snapshot after a small change parses only the changed shards.

A host's ports are nearly always seen by the same scans: a HostSightings holds, per
(time, scan id) seen, the ports packed as integers (port * 4 + protocol), ~40 bytes a port
rather than ~600 for a parsed row.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from portconsole.core.adapters.shards import Projection
from portconsole.core.domain.changes import HotTables
from portconsole.core.domain.finding import stored_time
from portconsole.core.domain.model import OPEN
from portconsole.core.domain.state import ROW_LAST, ROW_LAST_SCAN, ROW_STATE, split_port_key

Sighting = tuple[datetime, str]  # (last seen, last scan id)
HostPorts = Mapping[tuple[int, str], Sighting]
_PROTOS = ("tcp", "udp", "sctp")
_CODES = {proto: code for code, proto in enumerate(_PROTOS)}


class HostSightings(HostPorts):
    """One host's open ports -> (last seen, last scan id), read-only and compact."""

    __slots__ = ("_groups",)

    def __init__(self, groups: tuple[tuple[Sighting, tuple[int, ...]], ...]) -> None:
        self._groups = groups

    def __getitem__(self, key: tuple[int, str]) -> Sighting:
        port, proto = key
        code = _CODES.get(proto)
        if code is not None:
            packed = port * 4 + code
            for seen, ports in self._groups:
                if packed in ports:
                    return seen
        raise KeyError(key)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        for _, ports in self._groups:
            for packed in ports:
                yield packed >> 2, _PROTOS[packed & 3]

    def __len__(self) -> int:
        return sum(len(ports) for _, ports in self._groups)


def host_sightings(
    rows: Mapping[str, list[Any]], times: Callable[[str], Any] = stored_time
) -> HostPorts:
    """A host's open ports and their sightings from its stored rows (key -> row); `times`
    makes each stored time what a sighting holds (parsed, by default)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for key, row in rows.items():
        if row[ROW_STATE] != OPEN:
            continue
        port, proto = split_port_key(key)
        code = _CODES.get(proto)
        if code is None:  # a protocol nmap seldom reports: this host as a plain dict
            return {
                split_port_key(k): (times(r[ROW_LAST]), r[ROW_LAST_SCAN])
                for k, r in rows.items()
                if r[ROW_STATE] == OPEN
            }
        groups.setdefault((row[ROW_LAST], row[ROW_LAST_SCAN]), []).append(port * 4 + code)
    return HostSightings(
        tuple(
            ((times(last), sys.intern(scan_id)), tuple(ports))
            for (last, scan_id), ports in groups.items()
        )
    )


def shard_sightings(
    docs: Mapping[str, Any], times: Callable[[str], Any] = stored_time
) -> dict[str, HostPorts]:
    """Address -> its open ports' sightings, for one ports shard's documents."""
    return {sys.intern(doc["host"]): host_sightings(doc["ports"], times) for doc in docs.values()}


def fleet_sightings(
    hot: HotTables, times: Callable[[str], Any] = stored_time
) -> dict[str, HostPorts]:
    """Every host's open ports' sightings in `hot` (a transaction's too), its ports shards
    parsed one at a time and not kept (those the transaction changed: as they are now)."""
    source = hot.source
    if not isinstance(source, Projection):
        return {doc["host"]: host_sightings(doc["ports"], times) for doc in hot.ports.values()}
    out: dict[str, HostPorts] = {}
    for _, docs in source.table_shards("ports"):
        out.update(shard_sightings(docs or {}, times))
    return out


class SightingsCache:
    """The fleet's sightings by ports shard file, for lock-free readers (the Store's)."""

    def __init__(self) -> None:
        self.by_file: dict[str, dict[str, HostPorts]] = {}

    def read(self, projection: Projection) -> dict[str, HostPorts]:
        """Address -> open ports' sightings of every host in a shared projection; only the
        shard files not met before are parsed, each let go once reduced."""
        known = self.by_file
        current: dict[str, dict[str, HostPorts]] = {}
        merged: dict[str, HostPorts] = {}
        for name, docs in projection.table_shards("ports", known):
            part = known.get(name) if docs is None else None
            if part is None:
                part = shard_sightings(docs or {})
            current[name] = part
            merged.update(part)
        self.by_file = current
        return merged
