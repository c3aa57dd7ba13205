"""Targets, ports and scope: our own grammar, so nothing a user types reaches nmap unparsed.

python-nmap splits its hosts string on spaces into nmap arguments, so a target such as
``"127.0.0.2 --script x.nse"`` would run a script. Every target is parsed here into
addresses, checked against the configured scope, and only the resulting plain address
list is ever handed to the scanner.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence

from msgspec import Struct

from portconsole.core.errors import TargetError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_SCOPE: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
MAX_TARGET_ADDRESSES = 65536

_OCTET_RANGE = re.compile(r"^(\d{1,3}(?:-\d{1,3})?)(\.\d{1,3}(?:-\d{1,3})?){3}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_IPV6_CHARS = re.compile(r"^[0-9A-Fa-f:.]+(?:/\d{1,3})?$")
_PORT_TOKEN = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


def ip_sort_key(address: str) -> tuple[int, int]:
    """Sort addresses numerically (127.0.0.9 before 127.0.0.10), IPv4 before IPv6;
    anything that is not an address sorts last."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0)
    return (parsed.version, int(parsed))


def _shown(text: str) -> str:
    """A target as quoted in an error: printable, bounded, never raw control characters."""
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


class Scope:
    """The networks the product may scan. Everything else is refused."""

    def __init__(self, cidrs: Iterable[str] = DEFAULT_SCOPE) -> None:
        networks: list[IPNetwork] = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise TargetError(f"scope entry {_shown(cidr)} is not a CIDR block") from None
        if not networks:
            raise TargetError("scope is empty: set at least one CIDR, e.g. scope = ['127.0.0.0/8']")
        self.networks: tuple[IPNetwork, ...] = tuple(networks)

    def __repr__(self) -> str:
        return f"Scope({[str(n) for n in self.networks]})"

    def contains_address(self, address: IPAddress | str) -> bool:
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        return any(addr.version == n.version and addr in n for n in self.networks)

    def contains_network(self, network: IPNetwork) -> bool:
        return any(
            network.version == n.version and network.subnet_of(n)  # type: ignore[arg-type]
            for n in self.networks
        )

    def check_addresses(self, addresses: Iterable[str]) -> None:
        """Raise TargetError on the first address outside scope (the scanner's last check)."""
        for address in addresses:
            try:
                inside = self.contains_address(address)
            except ValueError:
                raise TargetError(f"{_shown(address)} is not an IP address") from None
            if not inside:
                raise TargetError(
                    f"{address} is outside the configured scope "
                    f"({', '.join(str(n) for n in self.networks)}); refusing to scan it"
                )


def _expand_octet_range(text: str) -> list[str]:
    parts = text.split(".")
    bounds: list[tuple[int, int]] = []
    for part in parts:
        low_text, _, high_text = part.partition("-")
        low = int(low_text)
        high = int(high_text) if high_text else low
        if low > 255 or high > 255 or low > high:
            raise TargetError(f"{_shown(text)}: octet range {part!r} must be 0-255, low to high")
        bounds.append((low, high))
    total = 1
    for low, high in bounds:
        total *= high - low + 1
    if total > MAX_TARGET_ADDRESSES:
        raise TargetError(f"{_shown(text)} expands to {total} addresses; the limit is 65536")
    out = [""]
    for low, high in bounds:
        out = [
            f"{prefix}{'.' if prefix else ''}{n}" for prefix in out for n in range(low, high + 1)
        ]
    return out


Resolver = Callable[[str], list[str]]


def no_resolution(name: str) -> list[str]:
    """The default: the domain does no DNS. The facade passes adapters.dns.resolve_host_name."""
    raise TargetError(f"host name {_shown(name)} is not resolved here: give its address")


class Target(Struct, frozen=True):
    """One parsed target: the text the user gave and the addresses it stands for."""

    text: str
    kind: str  # address | cidr | range | hostname
    addresses: tuple[str, ...]


def _outside(text: str, scope: Scope) -> TargetError:
    return TargetError(
        f"{text} is outside the configured scope "
        f"({', '.join(str(n) for n in scope.networks)}); refusing to scan it"
    )


def parse_target(text: str, scope: Scope, resolve: Resolver = no_resolution) -> Target:
    """Parse one target and check it against scope. Raises TargetError, never runs anything."""
    if not isinstance(text, str) or not text:
        raise TargetError(
            "empty target: give an address, CIDR, range such as 127.0.0.2-41, or name"
        )
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise TargetError(
            f"target {_shown(text)} contains whitespace; give one target per argument"
        )
    if text.startswith("-"):
        raise TargetError(
            f"target {_shown(text)} starts with '-'; options are not accepted as targets"
        )
    if not text.isascii() or not text.isprintable():
        raise TargetError(f"target {_shown(text)} contains characters no address or name has")

    kind: str
    addresses: list[str]
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise TargetError(f"target {_shown(text)} is not a valid CIDR block") from None
        if not scope.contains_network(network):
            raise _outside(text, scope)
        if network.num_addresses > MAX_TARGET_ADDRESSES:
            raise TargetError(f"{text} has {network.num_addresses} addresses; the limit is 65536")
        hosts = list(network.hosts()) if network.num_addresses > 2 else list(network)
        kind, addresses = "cidr", [str(a) for a in hosts]
    elif _OCTET_RANGE.match(text) and "-" in text:
        kind, addresses = "range", _expand_octet_range(text)
    elif _IPV6_CHARS.match(text) and ":" in text or re.match(r"^[\d.]+$", text):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise TargetError(f"target {_shown(text)} is not a valid IP address") from None
        kind, addresses = "address", [str(address)]
    elif _HOSTNAME.match(text):
        kind, addresses = "hostname", resolve(text)
    else:
        raise TargetError(
            f"target {_shown(text)} is not an address, CIDR, octet range (127.0.0.2-41) or host name"
        )
    scope.check_addresses(addresses)
    return Target(text=text, kind=kind, addresses=tuple(addresses))


def check_in_scope(text: str, scope: Scope) -> None:
    """Check a configured target against scope without expanding it (a /16 takes half a
    second to expand, at every settings load). Names pass: they are resolved, and checked,
    per scan. Raises TargetError naming the target."""
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise TargetError(f"target {_shown(text)} is not a valid CIDR block") from None
        if not scope.contains_network(network):
            raise _outside(text, scope)
        return
    if _OCTET_RANGE.match(text) and "-" in text:
        lows = ".".join(part.partition("-")[0] for part in text.split("."))
        highs = ".".join(part.rpartition("-")[2] for part in text.split("."))
        try:
            low, high = ipaddress.IPv4Address(lows), ipaddress.IPv4Address(highs)
            blocks = list(ipaddress.summarize_address_range(low, high))
        except ValueError:
            blocks = []
        if blocks and all(scope.contains_network(block) for block in blocks):
            return
    # An address or a name is cheap to check exactly; so is a range straddling scope blocks
    # (its size is checked before it is expanded).
    parse_target(text, scope, resolve=lambda _name: [])


def expand_targets(
    texts: Sequence[str], scope: Scope, resolve: Resolver = no_resolution
) -> list[str]:
    """Parse every target, check scope, return unique addresses in first-seen order."""
    if not texts:
        raise TargetError("no targets: name targets or configure a target group")
    seen: dict[str, None] = {}
    for text in texts:
        for address in parse_target(text, scope, resolve).addresses:
            seen.setdefault(address, None)
        # Checked after each target: 64 /16s are refused after the second, not expanded.
        if len(seen) > MAX_TARGET_ADDRESSES:
            raise TargetError(
                f"targets expand to more than {MAX_TARGET_ADDRESSES} addresses (at {_shown(text)}); "
                "scan fewer or smaller ranges"
            )
    return list(seen)


class PortSpec(Struct, frozen=True):
    """A validated set of ports, kept as sorted, merged ranges."""

    ranges: tuple[tuple[int, int], ...]

    def __str__(self) -> str:
        if self.ranges == ((1, 65535),):
            return "1-65535"
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in self.ranges)

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int):
            return False
        # The last range starting at or below `port` is the only one that can hold it.
        at = bisect_right(self.ranges, (port, 65536)) - 1
        return at >= 0 and port <= self.ranges[at][1]

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in self.ranges)

    def ports(self) -> list[int]:
        return [p for a, b in self.ranges for p in range(a, b + 1)]

    @classmethod
    def of(cls, ports: Iterable[int]) -> PortSpec:
        return parse_ports(",".join(str(p) for p in sorted(set(ports))))


def parse_ports(text: str) -> PortSpec:
    """Parse `22,80,443,8000-8100` or `all`. Raises TargetError with what is wrong."""
    raw = text.strip() if isinstance(text, str) else ""
    if raw.lower() == "all":
        return PortSpec(((1, 65535),))
    if not raw:
        raise TargetError("empty port list: give ports such as 22,80,443,8000-8100 or 'all'")
    spans: list[tuple[int, int]] = []
    for token in raw.split(","):
        match = _PORT_TOKEN.match(token)
        if not match:
            raise TargetError(
                f"port {_shown(token)} is not a number or range; use e.g. 22,80,8000-8100 or 'all'"
            )
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if not (1 <= low <= 65535 and 1 <= high <= 65535) or low > high:
            raise TargetError(f"port range {token!r} must lie within 1-65535, low to high")
        spans.append((low, high))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return PortSpec(tuple(merged))


_PROTOCOLS = ("tcp", "udp", "sctp")


def parse_location(text: str) -> tuple[str, int | None, str | None]:
    """`HOST`, `HOST:PORT[/PROTO]`, `[IPV6]:PORT[/PROTO]`, `[IPV6]` or a bare IPv6 address.

    The rule: an IPv6 address with a port is written in brackets; without brackets, text
    with more than one colon is an address alone (`::1:21010` is the address ::1:21010, not
    port 21010 of ::1). Addresses come back in canonical form (as the store keys them).
    """
    raw = text.strip()
    rest = ""
    if raw.startswith("["):
        host, closed, rest = raw[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise TargetError(f"{_shown(text)}: expected [IPV6]:PORT[/PROTO], e.g. [::1]:22")
        rest = rest[1:]
    elif raw.count(":") == 1:
        host, _, rest = raw.partition(":")
    else:
        host = raw
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if raw.startswith("[") or raw.count(":") > 1:
            raise TargetError(f"{_shown(text)} is not an IP address; an IPv6 address with a port "
                              "is written [ADDRESS]:PORT") from None  # fmt: skip
    if not rest:
        if raw.startswith("[") and raw.endswith(":"):
            raise TargetError(f"{_shown(text)}: the port is missing")
        return host, None, None
    port_text, _, proto = rest.partition("/")
    proto = proto.lower() or "tcp"
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise TargetError(f"{_shown(text)}: the port must be a number 1-65535, e.g. HOST:22/tcp")
    if proto not in _PROTOCOLS:
        raise TargetError(f"{_shown(text)}: the protocol must be tcp, udp or sctp")
    return host, int(port_text), proto
