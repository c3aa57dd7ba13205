"""Coverage: what a scan looked at. Not scanned is not closed; this is the one rule.

A scan *covers* a host when the host was planned (a successful scan: every address it was
given; a partial or cancelled one: the hosts it reported; a failed one: none) and its
report was not older than what was already known of the host (`stale`, a late report).
It covers a port of that host when, in addition, the host answered (a down host's ports
were never probed) and the port lies in the scan's port list and protocols, or the scan saw
it open beyond that list (`outside`). Detection, the store's change rules, the confirm
step, history and point-in-time answers all ask this class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from msgspec import Struct, field

from portconsole.core.domain.model import OPEN, ScanResult
from portconsole.core.domain.targets import PortSpec, parse_ports
from portconsole.core.errors import TargetError


def port_list(text: str) -> PortSpec | None:
    """A scan's port list, or None when it holds none we can read (covers no port)."""
    if not text:
        return None
    try:
        return parse_ports(text)
    except TargetError:
        return None


class Coverage(Struct, frozen=True):
    """What one scan covered: hosts, ports and protocols, and the hosts it found down, stale or outside."""

    hosts: frozenset[str]
    ports: PortSpec | None
    protocols: frozenset[str]
    down: frozenset[str] = frozenset()
    stale: frozenset[str] = frozenset()
    outside: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def scanned(self, host: str, port: int | None = None, proto: str | None = None) -> bool:
        """The scan asked about this host (and port), whatever the host answered."""
        if host not in self.hosts or host in self.stale:
            return False
        if port is None:
            return True
        if f"{port}/{proto}" in self.outside.get(host, ()):
            return True
        return self.ports is not None and port in self.ports and (proto or "tcp") in self.protocols

    def covers(self, host: str, port: int | None = None, proto: str | None = None) -> bool:
        """The scan saw this host's status (and this port's state: the host answered)."""
        if port is not None and host in self.down:
            return False
        return self.scanned(host, port, proto)

    @classmethod
    def of_scan(cls, scan: ScanResult) -> Coverage:
        """A scan's coverage before it is stored (live scans and imports)."""
        if scan.outcome == "failed":
            return cls(frozenset(), None, frozenset())
        reported = {h.address: h for h in scan.hosts}
        planned = (
            set(scan.addresses) | set(reported) if scan.outcome == "success" else set(reported)
        )
        ports = port_list(scan.ports)
        protocols = frozenset(p.lower() for p in scan.protocols) or frozenset({"tcp"})
        down = frozenset(a for a in planned if a not in reported or reported[a].status != "up")
        outside: dict[str, frozenset[str]] = {}
        for host in scan.hosts:
            beyond = frozenset(
                f"{p.port}/{p.proto}"
                for p in host.ports
                if p.state == OPEN
                and (p.proto not in protocols or ports is None or p.port not in ports)
            )
            if beyond:
                outside[host.address] = beyond
        return cls(frozenset(planned), ports, protocols, down, frozenset(), outside)

    @classmethod
    def of_record(cls, record: Mapping[str, Any], cover: Iterable[str]) -> Coverage:
        """A stored scan record's coverage (`cover`: its resolved list of covered hosts)."""
        outside = {h: frozenset(keys) for h, keys in (record.get("outside") or {}).items()}
        return cls(
            frozenset(cover),
            port_list(str(record.get("ports", ""))),
            frozenset(record.get("protocols") or ()),
            frozenset(record.get("down") or ()),
            frozenset(record.get("stale") or ()),
            outside,
        )
