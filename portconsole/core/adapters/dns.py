"""Host names to addresses: the one place PortConsole asks DNS (targets may name hosts)."""

from __future__ import annotations

import ipaddress

from portconsole.core.errors import TargetError
from portconsole.core.textsafe import terminal_safe


def resolve_host_name(name: str) -> list[str]:
    """Every address `name` resolves to (IPv4 and IPv6), in the resolver's order."""
    import socket  # only a target given by name needs it (a scan's start-up does not)

    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise TargetError(
            f"host name {terminal_safe(name, 80)!r} does not resolve: {error.strerror}"
        ) from None
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(ipaddress.ip_address(str(info[4][0]).split("%")[0])), None)
    return list(seen)
