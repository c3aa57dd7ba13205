"""Import an nmap (or masscan) XML report made elsewhere: a site scanner, an old scan.

The file is untrusted. It is read by `read_report_file`, which refuses anything but a
regular file before opening it (a FIFO would block the reader forever, `/dev/zero` would
fill memory) and stops at a size cap while reading. The bytes are then parsed by the same
reader as a live scan (`nmap_parse.parse_report`: defusedxml, streaming, bounded values),
so a scan and an import of one network give the same observations. Every address is
checked against scope before anything is stored.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from msgspec.structs import replace

from portconsole.core.adapters.nmap_parse import (
    MAX_REPORT_BYTES,
    PROTOCOLS,
    NotARegularFile,
    ParsedReport,
    ReportRefused,
    ReportTooLarge,
    parse_report,
    size_text,
)
from portconsole.core.domain.model import HostObservation, ScanResult
from portconsole.core.domain.targets import PortSpec, Scope, parse_ports
from portconsole.core.errors import TargetError

# The name the CLI and older callers know; every refusal of a report is one.
ImportRefused = ReportRefused
MAX_XML_BYTES = MAX_REPORT_BYTES
_READ_CHUNK = 1024 * 1024

__all__ = [
    "ImportRefused",
    "MAX_XML_BYTES",
    "NotARegularFile",
    "ReportTooLarge",
    "import_report",
    "imported_scan_id",
    "parse_nmap_xml",
    "read_report_file",
]


def imported_scan_id(data: bytes) -> str:
    """The scan id of an imported file: the same file always gets the same id."""
    return "import-" + hashlib.sha256(data).hexdigest()[:32]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path: Path, mode: int) -> NotARegularFile:
    return NotARegularFile(
        f"{path} is {_kind(mode)}, not a regular file; save the report to a file and import that"
    )


def read_report_file(path: Path, max_bytes: int = MAX_REPORT_BYTES) -> bytes:
    """The bytes of a report file, read in chunks and refused past `max_bytes`.

    Checked with stat before opening, so a FIFO or a device is never opened for a
    blocking read; opened with O_NONBLOCK and checked again, so a file swapped for a FIFO
    in between cannot block either.
    """
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise ReportRefused(f"{path} does not exist; give the path of an nmap XML report") from None
    except OSError as error:
        raise ReportRefused(f"cannot read {path}: {error.strerror}") from None
    if not stat.S_ISREG(before.st_mode):
        raise _not_regular(path, before.st_mode)
    if before.st_size > max_bytes:
        raise ReportTooLarge(
            f"{path} is {before.st_size} bytes, over the {size_text(max_bytes)} limit; "
            "split the scan into smaller reports and import each"
        )
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise ReportRefused(f"cannot read {path}: {error.strerror}") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise _not_regular(path, opened.st_mode)
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except OSError as error:
                raise ReportRefused(f"cannot read {path}: {error.strerror}") from None
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise ReportTooLarge(
                    f"{path} grew past the {size_text(max_bytes)} limit while it was read; "
                    "import a finished report"
                )
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _ports_spec(report: ParsedReport, observed: set[tuple[int, str]]) -> tuple[str, list[str]]:
    """The scan's port spec and protocols from <scaninfo>.

    With several protocols nmap may list different ports for each; the spec kept is their
    intersection, so coverage is never claimed for a port that was not scanned (a port only
    in one protocol's list then counts as not covered, which is the safe direction).
    masscan's <scaninfo> names no ports (and always says tcp): coverage is then only the
    ports and protocols it reported.
    """
    protocols: list[str] = []
    specs: list[PortSpec] = []
    for info in report.scaninfo:
        if info.protocol in PROTOCOLS and info.protocol not in protocols:
            protocols.append(info.protocol)
        if info.services:
            try:
                specs.append(parse_ports(info.services))
            except TargetError:
                raise ImportRefused(
                    f"scaninfo services {info.services[:60]!r} is not a port list; "
                    "is this nmap XML?"
                ) from None
    if not specs:
        seen = [proto for proto in PROTOCOLS if any(q == proto for _, q in observed)]
        numbers = {port for port, _ in observed}
        return (str(PortSpec.of(numbers)) if numbers else "", seen or protocols or ["tcp"])
    common = set(specs[0].ports())
    for spec in specs[1:]:
        common &= set(spec.ports())
    return (str(PortSpec.of(common)) if common else "", protocols)


def _as_imported(host: HostObservation) -> HostObservation:
    # Someone else's -sV is judged by what it found (see PortObservation.fingerprinted):
    # "nothing identified" from their run must not postpone our own fingerprint.
    return replace(host, ports=[replace(p, fingerprinted=None) for p in host.ports])


def parse_nmap_xml(data: bytes, scope: Scope, *, origin: str = "import") -> ScanResult:
    """Parse an nmap or masscan XML report into a ScanResult marked as imported.

    Raises ImportRefused for files that are not usable reports, TargetError for an
    address outside scope.
    """
    report = parse_report(data)
    hosts = [_as_imported(h) for h in report.hosts.values()]
    addresses = [h.address for h in hosts]
    scope.check_addresses(addresses)

    started = report.started
    finished = report.finished or report.last_host_end or started
    if started is None:
        started = finished
    if started is None or finished is None:
        raise ImportRefused("XML report has no start or finish time; is it a complete nmap run?")
    if report.exit is None:
        outcome = "partial"
    elif report.exit == "success":
        outcome = "success"
    else:
        outcome = "failed"
    observed = {p.key for h in hosts for p in h.ports}
    ports_text, protocols = _ports_spec(report, observed)
    scan_kind = report.scaninfo[0].type if report.scaninfo else ""
    return ScanResult(
        scan_id=imported_scan_id(data),
        started_at=started,
        finished_at=finished,
        nmap_version=report.version,
        scan_type="imported",
        privileged=scan_kind == "syn",
        targets=list(addresses),
        addresses=addresses,
        ports=ports_text,
        protocols=protocols,
        hosts=hosts,
        raw_xml=[data],
        raw_xml_sha256=hashlib.sha256(data).hexdigest(),
        outcome=outcome,
        error=report.errormsg,
        origin=origin,
        imported=True,
        fingerprinted=sum(
            1 for h in hosts for p in h.ports if p.product or p.version or p.extrainfo
        ),
    )


def import_report(path: Path, scope: Scope, *, origin: str = "import") -> ScanResult:
    """Read (bounded) and parse a report file: what `portconsole import` does."""
    return parse_nmap_xml(read_report_file(path), scope, origin=origin)
