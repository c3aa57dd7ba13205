"""Import an nmap XML report made elsewhere (a site scanner, an old scan), safely.

The file is untrusted: it is parsed with defusedxml, which refuses entity declarations
(billion laughs, external entities). nmap's own `<!DOCTYPE nmaprun>` carries no entities and
is accepted. Every address is checked against scope before anything is stored.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from portconsole.core.errors import TargetError, UserError
from portconsole.core.model import HostObservation, PortObservation, ScanResult
from portconsole.core.targets import PortSpec, Scope, parse_ports

MAX_XML_BYTES = 512 * 1024 * 1024


class ImportRefused(UserError):
    """An XML report that is not a usable nmap report."""


def imported_scan_id(data: bytes) -> str:
    """The scan id of an imported file: the same file always gets the same id."""
    return "import-" + hashlib.sha256(data).hexdigest()[:32]


def _epoch(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromtimestamp(int(text), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _ports_spec(infos: list[Element], observed: set[int]) -> tuple[str, list[str]]:
    """The scan's port spec and protocols from <scaninfo>.

    With several protocols nmap may list different ports for each; the spec kept is their
    intersection, so coverage is never claimed for a port that was not scanned (a port only
    in one protocol's list then counts as not covered, which is the safe direction).
    """
    protocols: list[str] = []
    specs: list[PortSpec] = []
    for info in infos:
        proto = info.get("protocol", "")
        if proto in ("tcp", "udp", "sctp") and proto not in protocols:
            protocols.append(proto)
        services = info.get("services", "")
        if services:
            try:
                specs.append(parse_ports(services))
            except TargetError:
                raise ImportRefused(
                    f"scaninfo services {services[:60]!r} is not a port list; is this nmap XML?"
                ) from None
    if not specs:
        return (str(PortSpec.of(observed)) if observed else "", protocols or ["tcp"])
    common = set(specs[0].ports())
    for spec in specs[1:]:
        common &= set(spec.ports())
    return (str(PortSpec.of(common)) if common else "", protocols)


def parse_nmap_xml(data: bytes, scope: Scope, *, origin: str = "import") -> ScanResult:
    """Parse an nmap XML report into a ScanResult marked as imported.

    Raises ImportRefused for files that are not nmap XML or use entities, TargetError for an
    address outside scope.
    """
    if len(data) > MAX_XML_BYTES:
        raise ImportRefused(f"XML report is {len(data)} bytes; the limit is {MAX_XML_BYTES}")
    try:
        root = fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise ImportRefused(
            f"XML report refused: it declares entities or external references ({error.__class__.__name__}); "
            "nmap never writes those"
        ) from None
    except ParseError as error:
        raise ImportRefused(f"XML report is not well-formed XML ({error})") from None
    if root.tag != "nmaprun":
        raise ImportRefused(f"XML report's root is <{root.tag[:40]}>, not <nmaprun>: not nmap XML")

    hosts: list[HostObservation] = []
    observed_ports: set[int] = set()
    end_times: list[datetime] = []
    for host_el in root.findall("host"):
        address = ""
        for addr_el in host_el.findall("address"):
            if addr_el.get("addrtype") in ("ipv4", "ipv6"):
                address = addr_el.get("addr", "")
                break
        if not address:
            continue
        status_el = host_el.find("status")
        status = "up" if status_el is not None and status_el.get("state") == "up" else "down"
        hostname_el = host_el.find("hostnames/hostname")
        hostname = hostname_el.get("name", "") if hostname_el is not None else ""
        ports: list[PortObservation] = []
        for port_el in host_el.findall("ports/port"):
            try:
                number = int(port_el.get("portid", ""))
            except ValueError:
                raise ImportRefused(
                    f"host {address}: port id {port_el.get('portid', '')[:20]!r} is not a number"
                ) from None
            state_el = port_el.find("state")
            service_el = port_el.find("service")
            service = service_el.attrib if service_el is not None else {}
            probed = service.get("method") == "probed"
            ports.append(
                PortObservation(
                    port=number,
                    proto=port_el.get("protocol", "tcp"),
                    state=state_el.get("state", "unknown") if state_el is not None else "unknown",
                    service=service.get("name", ""),
                    product=service.get("product", "") if probed else "",
                    version=service.get("version", "") if probed else "",
                    extrainfo=service.get("extrainfo", "") if probed else "",
                )
            )
            observed_ports.add(number)
        ended = _epoch(host_el.get("endtime"))
        if ended:
            end_times.append(ended)
        hosts.append(
            HostObservation(address=address, status=status, hostname=hostname, ports=ports)
        )

    addresses = list(dict.fromkeys(h.address for h in hosts))
    scope.check_addresses(addresses)

    started = _epoch(root.get("start"))
    finished_el = root.find("runstats/finished")
    finished = _epoch(finished_el.get("time")) if finished_el is not None else None
    if finished is None:
        finished = max(end_times, default=None) or started
    if started is None:
        started = finished
    if started is None or finished is None:
        raise ImportRefused("XML report has no start or finish time; is it a complete nmap run?")
    if finished_el is None:
        outcome = "partial"
    elif finished_el.get("exit", "success") == "success":
        outcome = "success"
    else:
        outcome = "failed"
    infos = root.findall("scaninfo")
    ports_text, protocols = _ports_spec(infos, observed_ports)
    scan_kind = infos[0].get("type", "") if infos else ""
    digest = hashlib.sha256(data).hexdigest()
    return ScanResult(
        scan_id=imported_scan_id(data),
        started_at=started,
        finished_at=finished,
        nmap_version=root.get("version", ""),
        scan_type="imported",
        privileged=scan_kind == "syn",
        targets=list(addresses),
        addresses=addresses,
        ports=ports_text,
        protocols=protocols,
        hosts=hosts,
        raw_xml=[data],
        raw_xml_sha256=digest,
        outcome=outcome,
        error=(finished_el.get("errormsg", "") if finished_el is not None else "")[:500],
        origin=origin,
        imported=True,
        fingerprinted=sum(
            1 for h in hosts for p in h.ports if p.product or p.version or p.extrainfo
        ),
    )
