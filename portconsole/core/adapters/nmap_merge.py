"""One address or port reported more than once in a report, merged into one observation.

Why its own piece: masscan writes one <host> element per port (and a port twice: once for
the SYN-ACK, once with a banner); nmap never does. The reader (nmap_parse) hands each
repeat here, so the rule for what a repeat means lives in one place.
"""

from __future__ import annotations

from msgspec.structs import replace

from portconsole.core.domain.model import HostObservation, PortObservation


def merge_port(earlier: PortObservation, later: PortObservation) -> PortObservation:
    """One port reported twice (masscan: once for the SYN-ACK, once with a banner)."""
    return replace(
        later,
        service=later.service or earlier.service,
        product=later.product or earlier.product,
        version=later.version or earlier.version,
        extrainfo=later.extrainfo or earlier.extrainfo,
    )


def merge_host(earlier: HostObservation, later: HostObservation) -> HostObservation:
    """One address reported twice: up if either says so, every port kept once."""
    ports = {p.key: p for p in earlier.ports}
    for port in later.ports:
        seen = ports.get(port.key)
        ports[port.key] = port if seen is None else merge_port(seen, port)
    return HostObservation(
        address=earlier.address,
        status="up" if "up" in (earlier.status, later.status) else "down",
        hostname=earlier.hostname or later.hostname,
        ports=sorted(ports.values(), key=lambda p: (p.port, p.proto)),
        filtered=[*earlier.filtered, *later.filtered],
        unlisted=earlier.unlisted if earlier.unlisted == later.unlisted else "",
    )
