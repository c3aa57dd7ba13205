"""The one nmap XML reader: real nmap output, masscan's XML, and every junk value refused.

Most tests read small documents built here or stored under tests/data/ (nmap 7.93 output
and masscan's format as its out-xml.c writes it). Two run the real nmap against listeners
the test starts, to prove that a live scan and an import of the same network agree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from portconsole.core.adapters.nmap_parse import (
    CUT_MARK,
    MAX_BANNER_CHARS,
    MAX_HOSTNAME_CHARS,
    ReportRefused,
    ReportStream,
    ReportTooLarge,
    parse_report,
)
from portconsole.core.adapters.nmapxml import ImportRefused, parse_nmap_xml
from portconsole.core.adapters.scanner import Scanner
from portconsole.core.domain.model import HostObservation
from portconsole.core.domain.targets import PortSpec, Scope
from portconsole.core.errors import TargetError, UserError
from portconsole.core.settings import ScanSettings
from tests.fleet import TestFleet

DATA = Path(__file__).parent / "data"
LOOPBACK = Scope(["127.0.0.0/8", "::1/128"])
HAS_NMAP = shutil.which("nmap") is not None


def report(
    *,
    portid: str = "22",
    protocol: str = "tcp",
    state: str = "open",
    hostname: str = "web-1",
    service: str = 'name="ssh"',
    address: str = "127.0.0.2",
    status: str = '<status state="up" reason="syn-ack" reason_ttl="0"/>',
    args: str = "nmap -n -sS -p 22 -oX - 127.0.0.2",
) -> bytes:
    """A one-host nmap report with the given values put in place as they are."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n'
        f'<nmaprun scanner="nmap" args={quoteattr(args)} start="1779876000" version="7.93">'
        '<scaninfo type="syn" protocol="tcp" numservices="1" services="22"/>'
        f'<host>{status}<address addr={quoteattr(address)} addrtype="ipv4"/>'
        f'<hostnames><hostname name={quoteattr(hostname)} type="user"/></hostnames>'
        f"<ports><port protocol={quoteattr(protocol)} portid={quoteattr(portid)}>"
        f'<state state={quoteattr(state)} reason="syn-ack"/><service {service}/></port></ports>'
        "</host>"
        '<runstats><finished time="1779876010" exit="success"/></runstats></nmaprun>\n'
    ).encode()


def test_reads_a_recorded_nmap_report() -> None:
    parsed = parse_report((DATA / "nmap_loopback.xml").read_bytes())
    assert (parsed.scanner, parsed.version, parsed.exit) == ("nmap", "7.93", "success")
    assert parsed.started == datetime(2026, 5, 27, 10, 0, tzinfo=UTC)
    assert parsed.finished == datetime(2026, 5, 27, 10, 0, 14, tzinfo=UTC)
    assert parsed.service_detection
    assert list(parsed.hosts) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    web = parsed.hosts["127.0.0.2"]
    assert (web.status, web.hostname) == ("up", "web-1.example.internal")
    assert [(p.port, p.state, p.service, p.product) for p in web.ports] == [
        (22, "open", "ssh", "OpenSSH"),
        (80, "open", "http", "nginx"),
        (443, "closed", "https", ""),
        (8080, "closed", "http-proxy", ""),
    ]
    assert parsed.hosts["127.0.0.4"].status == "down"
    assert all(p.fingerprinted is True for p in web.ports)  # a -sV run


def test_a_sweep_is_not_a_fingerprint() -> None:
    host = parse_report(report()).hosts["127.0.0.2"]
    assert host.ports[0].fingerprinted is None


def test_pn_host_that_answered_nothing_is_down() -> None:
    user_set = '<status state="up" reason="user-set" reason_ttl="0"/>'
    silent = report(state="filtered", status=user_set)
    assert parse_report(silent).hosts["127.0.0.2"].status == "down"
    refused = report(state="closed", status=user_set)  # an RST is an answer
    assert parse_report(refused).hosts["127.0.0.2"].status == "up"
    extraports = silent.replace(b"<ports>", b'<ports><extraports state="closed" count="9"/>')
    assert parse_report(extraports).hosts["127.0.0.2"].status == "up"


def test_open_only_keeps_open_ports_and_the_answer_of_closed_ones() -> None:
    user_set = '<status state="up" reason="user-set" reason_ttl="0"/>'
    refused = parse_report(report(state="closed", status=user_set), open_only=True)
    assert refused.hosts["127.0.0.2"].status == "up"  # the RST still counts as an answer
    assert refused.hosts["127.0.0.2"].ports == []
    kept = parse_report(report(), open_only=True).hosts["127.0.0.2"].ports
    assert [(p.port, p.state) for p in kept] == [(22, "open")]


def test_a_report_fed_in_pieces_reads_as_one() -> None:
    data = (DATA / "nmap_loopback.xml").read_bytes()
    stream = ReportStream()
    for i in range(0, len(data), 7):  # pieces as small and ragged as a pipe may give
        stream.feed(data[i : i + 7])
    assert stream.close().hosts == parse_report(data).hosts
    with pytest.raises(ReportTooLarge):
        ReportStream(max_bytes=100).feed(data[:101])


def test_masscan_report_is_read_and_merged() -> None:
    data = (DATA / "masscan_loopback.xml").read_bytes()
    parsed = parse_report(data)
    assert parsed.scanner == "masscan"
    hosts = parsed.hosts
    assert list(hosts) == ["127.0.0.2", "127.0.0.3", "::1"]
    assert all(h.status == "up" for h in hosts.values())  # no <status>: a port is an answer
    ports = {(h.address, p.port, p.proto): p for h in hosts.values() for p in h.ports}
    assert sorted(ports) == [
        ("127.0.0.2", 22, "tcp"),
        ("127.0.0.2", 80, "tcp"),
        ("127.0.0.3", 443, "tcp"),
        ("::1", 53, "udp"),  # masscan writes addrtype="ipv4" even for IPv6
    ]
    ssh = ports[("127.0.0.2", 22, "tcp")]
    assert (ssh.state, ssh.service) == ("open", "ssh")
    assert ssh.extrainfo.startswith("SSH-2.0-OpenSSH_9.2p1")

    scan = parse_nmap_xml(data, LOOPBACK)
    assert (scan.outcome, scan.nmap_version, scan.scan_type) == ("success", "1.0-BETA", "imported")
    assert scan.open_port_count() == 4
    # masscan names no port list: coverage is what it reported, both protocols.
    assert (scan.ports, scan.protocols) == ("22,53,80,443", ["tcp", "udp"])
    assert scan.finished_at == datetime(2026, 5, 27, 10, 0, 10, tzinfo=UTC)


def test_interrupted_masscan_report_is_partial() -> None:
    data = (DATA / "masscan_loopback.xml").read_bytes()
    cut_off = data[: data.index(b"<runstats>")] + b"</nmaprun>\r\n"
    scan = parse_nmap_xml(cut_off, LOOPBACK)
    assert scan.outcome == "partial" and scan.open_port_count() == 4
    assert scan.finished_at == datetime(2026, 5, 27, 10, 0, 4, tzinfo=UTC)  # last host


def test_nmap_host_listed_twice_is_merged() -> None:
    doubled = report().replace(
        b"<runstats>",
        b'<host><status state="up" reason="syn-ack"/><address addr="127.0.0.2" addrtype="ipv4"/>'
        b'<ports><port protocol="tcp" portid="80"><state state="open"/></port></ports></host>'
        b"<runstats>",
    )
    host = parse_report(doubled).hosts["127.0.0.2"]
    assert [p.port for p in host.ports] == [22, 80] and host.hostname == "web-1"


JUNK_PORT_IDS = ["-1", "0", "65536", "+22", " 22 ", "22 ", "٢٢", "２２", "022", "", "22.0", "0x16"]


@pytest.mark.parametrize("portid", JUNK_PORT_IDS)
def test_junk_port_ids_are_refused(portid: str) -> None:
    with pytest.raises(ReportRefused, match="not a port number 1-65535") as caught:
        parse_nmap_xml(report(portid=portid), LOOPBACK)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("portid", ["1", "22", "65535"])
def test_real_port_ids_are_read(portid: str) -> None:
    assert parse_report(report(portid=portid)).hosts["127.0.0.2"].ports[0].port == int(portid)


@pytest.mark.parametrize("protocol", ["xyz", "", "TCP", "icmp", "ip", "tcp "])
def test_junk_protocols_are_refused(protocol: str) -> None:
    with pytest.raises(ImportRefused, match="not tcp, udp or sctp"):
        parse_nmap_xml(report(protocol=protocol), LOOPBACK)


def test_sctp_is_a_protocol() -> None:
    assert parse_report(report(protocol="sctp")).hosts["127.0.0.2"].ports[0].proto == "sctp"


@pytest.mark.parametrize("state", ["OPEN", "wide-open", ""])
def test_junk_port_states_are_refused(state: str) -> None:
    with pytest.raises(ReportRefused, match="not an nmap port state"):
        parse_report(report(state=state))


@pytest.mark.parametrize("address", ["127.0.0.256", "localhost", "127.000.0.2", ""])
def test_junk_addresses_are_refused(address: str) -> None:
    with pytest.raises(ReportRefused, match="not an IP address"):
        parse_report(report(address=address))


def test_fifty_megabyte_host_name_is_cut() -> None:
    huge = "a" * 50_000_000
    started = time.monotonic()
    scan = parse_nmap_xml(report(hostname=huge), LOOPBACK)
    elapsed = time.monotonic() - started
    name = scan.hosts[0].hostname
    assert len(name) == MAX_HOSTNAME_CHARS and name.endswith(CUT_MARK)
    assert name.startswith("aaaa")
    assert elapsed < 10


def test_long_banners_are_cut_and_marked() -> None:
    long = "x" * (MAX_BANNER_CHARS + 1)
    exact = "y" * MAX_BANNER_CHARS
    service = (
        f"name={quoteattr(long)} product={quoteattr(exact)} version={quoteattr(long)} "
        f'extrainfo={quoteattr(long)} method="probed"'
    )
    port = parse_report(report(service=service)).hosts["127.0.0.2"].ports[0]
    for value in (port.service, port.version, port.extrainfo):
        assert len(value) == MAX_BANNER_CHARS and value.endswith(CUT_MARK)
    assert port.product == exact  # at the limit: kept whole


def test_entities_and_other_documents_are_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><nmaprun><host>&a;</host></nmaprun>'
    )
    with pytest.raises(ReportRefused, match="entities"):
        parse_report(bomb)
    external = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><nmaprun>&x;</nmaprun>'
    with pytest.raises(ReportRefused):
        parse_report(external)
    with pytest.raises(ReportRefused, match="not <nmaprun>"):
        parse_report(b"<html><body/></html>")
    with pytest.raises(ReportRefused, match="not well-formed"):
        parse_report(b"<nmaprun><host>")
    with pytest.raises(ReportRefused):
        parse_report(b"")
    assert issubclass(ReportRefused, UserError)


def test_size_cap_is_checked_before_parsing_and_while_streaming(tmp_path: Path) -> None:
    data = report()
    with pytest.raises(ReportTooLarge, match="split the scan"):
        parse_report(data, max_bytes=len(data) - 1)
    assert parse_report(data, max_bytes=len(data)).hosts
    path = tmp_path / "r.xml"
    path.write_bytes(data)
    with path.open("rb") as stream, pytest.raises(ReportTooLarge):
        parse_report(stream, max_bytes=100)
    with path.open("rb") as stream:
        assert list(parse_report(stream).hosts) == ["127.0.0.2"]


def test_out_of_scope_import_names_the_address() -> None:
    with pytest.raises(TargetError, match="192.0.2.7"):
        parse_nmap_xml(report(address="192.0.2.7"), LOOPBACK)


# A large report, mostly text the reader drops (script output), parsed in a child process
# so its peak memory is its own. A whole-tree parse holds all of it several times over.
_MEMORY_PROBE = """
import resource, sys, tracemalloc
from portconsole.core.adapters.nmap_parse import parse_report
hosts = int(sys.argv[1])
script = "<script id='banner' output='" + "z" * 4000 + "'/>"
parts = ['<?xml version="1.0"?><nmaprun scanner="nmap" args="nmap -sV" start="1779876000">']
for i in range(hosts):
    parts.append(
        f'<host><status state="up" reason="syn-ack"/><address addr="127.1.{i // 250}.{i % 250 + 1}"'
        ' addrtype="ipv4"/><ports><port protocol="tcp" portid="22"><state state="open"/>'
        f'<service name="ssh"/>{script * 2}</port></ports></host>'
    )
parts.append("</nmaprun>")
data = "".join(parts).encode()
tracemalloc.start()
parsed = parse_report(data)
peak = tracemalloc.get_traced_memory()[1]
print(len(data), peak, len(parsed.hosts))
"""


def test_parse_streams_a_large_report() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, "5000"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    size, peak, hosts = map(int, out.stdout.split())
    assert hosts == 5000 and size > 40_000_000
    # The 40 MB of script output is dropped as it is read: what stays is the observations.
    assert peak < 20_000_000, f"peak {peak} bytes for a {size}-byte report"


# -- the real nmap: a scan and an import of the same network agree ---------------------


@pytest.mark.nmap
@pytest.mark.skipif(not HAS_NMAP, reason="nmap is not installed")
def test_live_scan_and_import_of_the_same_network_agree(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        # ssh only: nmap -sV names it at once (http takes it ~6 s of probes).
        ssh = fleet.listen(host, "ssh")
        closed = fleet.closed_port(host)
        spec = PortSpec.of([ssh, closed])
        live = Scanner(ScanSettings(), LOOPBACK).scan([host], spec, fingerprint="open")
        # The same network, scanned by someone else and saved to a file.
        recorded = tmp_path / "site-scan.xml"
        subprocess.run(
            [str(shutil.which("nmap")), "-n", "-Pn", "-sT", "-sV", "-p", str(spec)]
            + ["-oX", str(recorded), "--", host],
            check=True,
            capture_output=True,
            timeout=120,
        )
    imported = parse_nmap_xml(recorded.read_bytes(), LOOPBACK)

    def services(hosts: list[HostObservation]) -> list[tuple[int, str, str, str, str, str]]:
        return [
            (p.port, p.proto, p.state, p.service, p.product, p.version)
            for h in hosts
            for p in h.ports
            if p.state == "open"
        ]

    assert live.outcome == "success", live.error
    assert services(live.hosts) == services(imported.hosts)
    assert [p[0] for p in services(imported.hosts)] == [ssh]
    assert services(imported.hosts)[0][4] == "OpenSSH"
    assert [h.status for h in imported.hosts] == [h.status for h in live.hosts] == ["up"]
    assert imported.ports == str(spec) and imported.protocols == ["tcp"]
    # The scanner's own raw XML, imported, gives its observations back.
    for raw in live.raw_xml:
        again = parse_report(raw).hosts[host]
        assert again.status == "up"
    swept = parse_report(live.raw_xml[0]).hosts[host]
    assert {p.port for p in swept.ports if p.state == "open"} == {ssh}
