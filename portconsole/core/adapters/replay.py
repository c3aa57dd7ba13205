"""A scanner that answers from recorded nmap XML instead of running nmap.

Why: the scan cycle (sweep, confirm, fingerprint, ingest, detect) is most of what we
test, and a real nmap makes those tests slow, needs listeners, and cannot make a port open
"between two cycles" on demand. `ReplayScanner` satisfies `scanning.ScannerLike`, so a
`Monitor(..., scanner=ReplayScanner(...))` runs a whole cycle with no nmap at all.

How it stays honest, so a test on it means something for the real scanner:
* Every answer is written as the nmap XML that nmap itself writes for that question (a
  `-Pn` sweep with closed ports folded into <extraports>, a probe, a `-sV`), and read
  back through `nmap_parse.parse_report`, the reader of live scans and imports.
* Addresses pass the same scope gate (`checked_addresses`), ports the same check, the
  fingerprint choice, progress reports and the ScanResult (outcome rules, raw XML, its
  sha256, the scan id) come from the same code (`ScanTally`, `ScanProgress`).
* Cancel follows the same contract: `scan` returns what finished with outcome
  "cancelled"; `probe` and `fingerprint` raise `ScanCancelled`.

The network it answers for is a plain mapping, set before each cycle::

    replay = ReplayScanner(scope, {"127.0.0.2": {22: "ssh", 80: "http"}})
    replay.set_network({"127.0.0.2": {22: Service("ssh", "OpenSSH", "9.2p1")}})

or read from recorded nmap or masscan XML (`ReplayScanner.from_xml`, `load_xml`). A host
in the mapping is up (its other ports closed); a host not in it answers nothing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from xml.sax.saxutils import quoteattr

from msgspec import Struct

from portconsole.core.adapters.nmap_parse import parse_report, port_id, protocol
from portconsole.core.adapters.scanning import (
    Fingerprint,
    ScanCancelled,
    ScanProgress,
    ScanTally,
    check_fingerprint_mode,
    check_pairs,
    checked_addresses,
    chosen_ports,
    normalise_addresses,
)
from portconsole.core.domain.model import OPEN, PortObservation, Progress, ScanResult
from portconsole.core.domain.targets import PortSpec, Scope
from portconsole.core.errors import ScannerError, TargetError
from portconsole.core.timeutil import utcnow


class Service(Struct, frozen=True):
    """What a port answers: the name a sweep shows, and what -sV identifies.

    A sweep names an open port from nmap's services table, by its number; `table` is that
    name where it differs from what -sV identifies (a telnetd on 2323 sweeps as "3d-nfsd").
    """

    name: str = ""
    product: str = ""
    version: str = ""
    extrainfo: str = ""
    table: str | None = None


PortKey = int | str | tuple[int, str]  # 22 (tcp), "53/udp", (53, "udp")
Network = Mapping[str, Mapping[PortKey, str | Service]]
_Open = dict[str, dict[tuple[int, str], Service]]


def _key(key: PortKey) -> tuple[int, str]:
    if isinstance(key, int):
        return (port_id(str(key)), "tcp")
    if isinstance(key, str):
        number, _, proto = key.partition("/")
        return (port_id(number), protocol(proto or "tcp"))
    return (port_id(str(key[0])), protocol(key[1]))


def _network(network: Network) -> _Open:
    out: _Open = {}
    for address, ports in network.items():
        (canonical,) = normalise_addresses([address])
        out[canonical] = {
            _key(key): (value if isinstance(value, Service) else Service(name=value))
            for key, value in ports.items()
        }
    return out


class ReplayScanner:
    """A `ScannerLike` over a mapping of open ports, answered as nmap would. Thread-safe."""

    def __init__(
        self,
        scope: Scope,
        network: Network | None = None,
        *,
        privileged: bool = True,
        nmap_version: str = "7.93",
        latency: float = 0.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.scope = scope
        self.privileged = privileged
        self.scan_type = "syn" if privileged else "connect"
        self._version = nmap_version
        # Seconds each simulated nmap run takes; a cancel during it is honoured at once.
        self.latency = latency
        self.clock = clock
        self._lock = threading.Lock()
        self._open: _Open = _network(network or {})
        self._failing: dict[str, str] = {}
        # Every question asked, in order: ("scan" | "probe" | "fingerprint", address, ports).
        self.calls: list[tuple[str, str, str]] = []
        # Called with the same triple before each answer: a test can change the network
        # in the middle of a cycle (a port that flaps between the sweep and the confirm).
        self.on_call: Callable[[str, str, str], None] | None = None

    # -- what the network looks like ----------------------------------------------------

    @classmethod
    def from_xml(cls, scope: Scope, recorded: bytes | Mapping[str, bytes]) -> ReplayScanner:
        """A replay of recorded nmap or masscan XML (see `load_xml`)."""
        replay = cls(scope)
        replay.load_xml(recorded)
        return replay

    def load_xml(self, recorded: bytes | Mapping[str, bytes]) -> None:
        """What the next scans see: the up hosts and open ports of recorded XML.

        `recorded` is a whole report, or one report per address (only that address is
        taken from each). Read by the same parser as a live scan.
        """
        documents = [(None, recorded)] if isinstance(recorded, bytes) else list(recorded.items())
        network: _Open = {}
        for only, data in documents:
            hosts = parse_report(data).hosts
            for address, host in hosts.items():
                if (only is not None and address != only) or host.status != "up":
                    continue
                network.setdefault(address, {}).update(
                    {
                        p.key: Service(p.service, p.product, p.version, p.extrainfo)
                        for p in host.ports
                        if p.state == OPEN
                    }
                )
        with self._lock:
            self._open = network

    def set_network(self, network: Network) -> None:
        """What the next scans see: these hosts up, these ports open, nothing else."""
        parsed = _network(network)
        with self._lock:
            self._open = parsed

    def open_port(self, address: str, port: PortKey, service: str | Service = "") -> None:
        """Open one port (its host comes up)."""
        (canonical,) = normalise_addresses([address])
        value = service if isinstance(service, Service) else Service(name=service)
        with self._lock:
            self._open.setdefault(canonical, {})[_key(port)] = value

    def close_port(self, address: str, port: PortKey) -> None:
        """Close one port; the host stays up."""
        (canonical,) = normalise_addresses([address])
        with self._lock:
            self._open.get(canonical, {}).pop(_key(port), None)

    def fail(self, address: str, message: str | None) -> None:
        """Make every nmap run on `address` fail with `message` (None: stop failing)."""
        (canonical,) = normalise_addresses([address])
        with self._lock:
            if message is None:
                self._failing.pop(canonical, None)
            else:
                self._failing[canonical] = message

    # -- ScannerLike -----------------------------------------------------------------------

    def scan(
        self,
        addresses: list[str],
        ports: PortSpec,
        *,
        udp: bool = False,
        fingerprint: Fingerprint = "open",
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        targets: list[str] | None = None,
        origin: str = "cli",
        group: str = "",
        known: Iterable[str] | None = None,
    ) -> ScanResult:
        """Sweep, then -sV what `fingerprint` selects: the contract of `Scanner.scan`.

        `known` (the hosts nmap sweeps without ping discovery) changes nothing here: a
        replayed network has no discovery to skip.
        """
        planned = checked_addresses(addresses, self.scope)
        if not planned:
            raise TargetError("no addresses to scan: name targets or configure a target group")
        if not isinstance(ports, PortSpec) or len(ports) == 0:
            raise TargetError("no ports to scan: give ports such as 22,80,443 or 'all'")
        if udp:
            self._require_udp_privilege()
        check_fingerprint_mode(fingerprint)
        started = self.clock()
        protocols = ["tcp", "udp"] if udp else ["tcp"]
        state = ScanProgress(total=len(planned), progress=progress)
        tally = ScanTally(planned)
        for address in planned:
            self._record("scan", address, str(ports))
            if not self._wait(cancel):
                tally.cancelled = True
                break
            error = self._failure(address)
            if error:
                tally.sweep_failed([address], error)
                state.done(1, 0)
                continue
            xml = self._sweep_xml(address, ports, protocols)
            tally.swept([address], parse_report(xml).hosts, xml)
            found = tally.hosts.get(address)
            state.done(1, len(found.open_ports()) if found else 0)
        if not tally.cancelled:
            jobs = [
                (address, chosen)
                for address in planned
                if address in tally.hosts
                and (chosen := chosen_ports(tally.hosts[address], fingerprint))
            ]
            if jobs:
                state.start_phase("fingerprint", len(jobs))
            for address, chosen in jobs:
                if not self._wait(cancel):
                    tally.cancelled = True
                    break
                error = self._failure(address)
                if error:
                    tally.fingerprint_failed(address, error)
                else:
                    xml = self._version_xml(address, chosen)
                    tally.fingerprinted_host(address, parse_report(xml).hosts, xml)
                state.done(1, 0)
        return tally.result(
            started=started,
            finished=max(started, self.clock()),
            nmap_version=self._version,
            scan_type=self.scan_type,
            privileged=self.privileged,
            targets=targets,
            ports=ports,
            protocols=protocols,
            origin=origin,
            group=group,
            progress=progress,
        )

    def probe(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> set[tuple[int, str]]:
        """The given ports that are open now; raises ScanCancelled or ScannerError."""
        checked, pairs = self._question(address, ports)
        if not pairs:
            return set()
        self._record("probe", checked, _pairs_text(pairs))
        if not self._wait(cancel):
            raise ScanCancelled(f"probe of {checked} cancelled; nothing was concluded")
        error = self._failure(checked)
        if error:
            raise ScannerError(f"probe of {checked} failed: {error}")
        host = parse_report(self._ports_xml(checked, pairs, detect=False)).hosts.get(checked)
        if host is None:
            raise ScannerError(f"probe of {checked} failed: nmap reported no result")
        wanted = set(pairs)
        return {p.key for p in host.ports if p.state == OPEN and p.key in wanted}

    def fingerprint(
        self,
        address: str,
        ports: Iterable[tuple[int, str]],
        cancel: threading.Event | None = None,
    ) -> dict[tuple[int, str], PortObservation]:
        """-sV on these ports of one host; raises ScanCancelled or ScannerError."""
        checked, pairs = self._question(address, ports)
        if not pairs:
            return {}
        self._record("fingerprint", checked, _pairs_text(pairs))
        if not self._wait(cancel):
            raise ScanCancelled(f"service detection on {checked} cancelled")
        error = self._failure(checked)
        if error:
            raise ScannerError(f"service detection on {checked} failed: {error}")
        host = parse_report(self._version_xml(checked, pairs)).hosts.get(checked)
        wanted = set(pairs)
        return {p.key: p for p in (host.ports if host else []) if p.key in wanted}

    def nmap_version(self) -> str:
        """The nmap version the replay claims, like `Scanner.nmap_version`."""
        return self._version

    # -- helpers ---------------------------------------------------------------------------

    def _require_udp_privilege(self) -> None:
        if not self.privileged:
            raise ScannerError(
                "UDP scanning needs root: run PortConsole as root or set scan.udp = false"
            )

    def _question(
        self, address: str, ports: Iterable[tuple[int, str]]
    ) -> tuple[str, list[tuple[int, str]]]:
        (checked,) = checked_addresses([address], self.scope)
        pairs = sorted({(int(p), str(proto)) for p, proto in ports})
        check_pairs(pairs)
        if any(proto == "udp" for _, proto in pairs):
            self._require_udp_privilege()
        return checked, pairs

    def _record(self, kind: str, address: str, ports: str) -> None:
        with self._lock:
            self.calls.append((kind, address, ports))
        if self.on_call is not None:
            self.on_call(kind, address, ports)

    def _wait(self, cancel: threading.Event | None) -> bool:
        """False when cancelled before or during this simulated run."""
        if cancel is not None and cancel.is_set():
            return False
        if self.latency > 0:
            if cancel is None:
                time.sleep(self.latency)
            elif cancel.wait(self.latency):
                return False
        return True

    def _failure(self, address: str) -> str:
        with self._lock:
            return self._failing.get(address, "")

    def _snapshot(self, address: str) -> dict[tuple[int, str], Service] | None:
        with self._lock:
            ports = self._open.get(address)
            return None if ports is None else dict(ports)

    def _sweep_xml(self, address: str, ports: PortSpec, protocols: list[str]) -> bytes:
        """nmap -Pn -sS/-sT [-sU] -p ... -oX - for one host, as nmap writes it."""
        known = self._snapshot(address)
        flag = "-sS" if self.privileged else "-sT"
        udp = " -sU" if "udp" in protocols else ""
        spec = ",".join(f"{proto[0].upper()}:{ports}" for proto in protocols)
        infos = [(("syn" if self.privileged else "connect"), "tcp", str(ports))]
        if "udp" in protocols:
            infos.append(("udp", "udp", str(ports)))
        body: list[str] = []
        for proto in protocols:
            opened = sorted(
                (k, s) for k, s in (known or {}).items() if k[1] == proto and k[0] in ports
            )
            rest = len(ports) - len(opened)
            if rest:
                state = "closed" if known is not None else "filtered"
                body.append(f'<extraports state="{state}" count="{rest}"/>')
            body += [_port_element(k, OPEN, s, detect=False) for k, s in opened]
        # A real sweep asks nmap for live progress (scan_command.STATS_EVERY).
        return self._document(f"{flag}{udp} -p {spec} --stats-every 2s", infos, address, body)

    def _ports_xml(self, address: str, pairs: list[tuple[int, str]], *, detect: bool) -> bytes:
        """One run over exactly these ports (a probe, or -sV), each listed with its state."""
        known = self._snapshot(address)
        flag = "-sS" if self.privileged else "-sT"
        udp = " -sU" if any(p == "udp" for _, p in pairs) else ""
        body: list[str] = []
        for key in pairs:
            service = (known or {}).get(key)
            if service is not None:
                body.append(_port_element(key, OPEN, service, detect=detect))
            else:
                state = "closed" if known is not None else "filtered"
                body.append(_port_element(key, state, None, detect=False))
        sv = " -sV" if detect else ""
        kind = "syn" if self.privileged else "connect"
        infos = [
            (kind if proto == "tcp" else "udp", proto, str(PortSpec.of(numbers)))
            for proto in ("tcp", "udp")
            if (numbers := [p for p, q in pairs if q == proto])
        ]
        return self._document(f"{flag}{udp}{sv} -p {_pairs_text(pairs)}", infos, address, body)

    def _version_xml(self, address: str, pairs: list[tuple[int, str]]) -> bytes:
        return self._ports_xml(address, pairs, detect=True)

    def _document(
        self, options: str, infos: list[tuple[str, str, str]], address: str, body: list[str]
    ) -> bytes:
        now = int(self.clock().timestamp())
        family = "ipv6" if ":" in address else "ipv4"
        six = " -6" if family == "ipv6" else ""
        args = f"nmap -n -Pn -T4 --max-retries 3{six} {options} -oX - -- {address}"
        scaninfo = "".join(
            f"<scaninfo type={quoteattr(t)} protocol={quoteattr(p)} services={quoteattr(s)}/>\n"
            for t, p, s in infos
        )
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            "<!DOCTYPE nmaprun>",
            f'<nmaprun scanner="nmap" args={quoteattr(args)} start="{now}" '
            f'version={quoteattr(self._version)} xmloutputversion="1.05">',
            scaninfo + f'<host starttime="{now}" endtime="{now}">'
            '<status state="up" reason="user-set" reason_ttl="0"/>',
            f'<address addr={quoteattr(address)} addrtype="{family}"/>',
            "<hostnames>\n</hostnames>",
            "<ports>" + "\n".join(body) + "</ports>",
            "</host>",
            f'<runstats><finished time="{now}" exit="success"/>'
            '<hosts up="1" down="0" total="1"/></runstats>',
            "</nmaprun>",
            "",
        ]
        return "\n".join(lines).encode("utf-8")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _attr(text: str) -> str:
    """An attribute value as nmap writes one: control characters as \\xNN text (XML
    cannot carry them), then quoted and escaped."""
    return quoteattr(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def _pairs_text(pairs: list[tuple[int, str]]) -> str:
    parts = []
    for proto, prefix in (("tcp", "T:"), ("udp", "U:")):
        numbers = [p for p, q in pairs if q == proto]
        if numbers:
            parts.append(prefix + str(PortSpec.of(numbers)))
    return ",".join(parts)


def _port_element(
    key: tuple[int, str], state: str, service: Service | None, *, detect: bool
) -> str:
    reason = {"open": "syn-ack", "closed": "reset"}.get(state, "no-response")
    inner = f'<state state="{state}" reason="{reason}" reason_ttl="64"/>'
    if service is not None:
        probed = detect and bool(service.product or service.version or service.extrainfo)
        shown = service.name if probed or service.table is None else service.table
        attrs = f"name={_attr(shown)}"
        if probed:
            for name, value in (
                ("product", service.product),
                ("version", service.version),
                ("extrainfo", service.extrainfo),
            ):
                if value:
                    attrs += f" {name}={_attr(value)}"
            attrs += ' method="probed" conf="10"'
        else:
            attrs += ' method="table" conf="3"'
        inner += f"<service {attrs}/>"
    return f'<port protocol="{key[1]}" portid="{key[0]}">{inner}</port>'
