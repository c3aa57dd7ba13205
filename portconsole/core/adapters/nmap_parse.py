"""The one reader of nmap-format XML: live nmap runs, imported reports and masscan's XML.

Why one: we had two parsers (python-nmap's analyser for live scans, our own for imports)
and they disagreed: a scan and an import of the same network gave different results, and
masscan's XML was read as "all hosts down". Every rule about what a report means lives
here once: which hosts are up, which port ids and protocols are real, how long a banner
may be.

Why streaming: python-nmap built a whole tree (705 MB of memory for a 52 MB report);
`iterparse` with each element dropped as soon as it has been read used 12 MB (FACTS.md).
Only one <host> is held at a time, and nothing outside the elements we read is kept.
A live scan feeds nmap's stdout to a `ReportStream` as it arrives, so a batch's XML is
parsed once, while nmap runs, and is never held whole for parsing.

Why strict: a report is untrusted input (banners and host names come from the network;
an imported file comes from anyone). It is parsed through defusedxml, so entity
declarations and external references are refused (nmap's own `<!DOCTYPE nmaprun>` has
none); port ids must be the decimal numbers 1-65535 in ASCII digits; protocols tcp, udp or
sctp; host names and banners are cut at a fixed length and marked. A refusal is a
`ReportRefused` with one line that says what is wrong.

What "up" means (one rule for every source): nmap's own status, except that with `-Pn`
nmap calls every host "up" (reason `user-set`), so a host that answered no probe at all
(every port filtered) is "down" as far as we can tell. masscan writes no status: a host is
up when it reported a port. Several <host> elements for one address (masscan writes one
per port) are merged.
"""

from __future__ import annotations

import io
import ipaddress
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import BinaryIO, cast
from xml.etree.ElementTree import Element, TreeBuilder, XMLPullParser

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError
from msgspec import Struct, field

from portconsole.core.adapters.nmap_merge import merge_host, merge_port
from portconsole.core.domain.model import FILTERED_STATES, OPEN, HostObservation, PortObservation
from portconsole.core.errors import UserError

# A report larger than this is refused before it is parsed (checked while it is read).
MAX_REPORT_BYTES = 256 * 1024 * 1024
MAX_HOSTNAME_CHARS = 255  # the longest DNS name
MAX_BANNER_CHARS = 4096
CUT_MARK = "…[cut]"
PROTOCOLS = ("tcp", "udp", "sctp")
# Every state nmap writes (portlist.cc); masscan writes "open" and "closed".
PORT_STATES = frozenset(
    {"open", "closed", "filtered", "unfiltered", "open|filtered", "closed|filtered", "unknown"}
)
# States that prove the host answered a probe (an RST counts; silence does not).
_ANSWERED = frozenset({"open", "closed", "unfiltered", "closed|filtered"})
# Bytes fed to the parser at a time. expat (2.5, without reparse deferral) scans a token
# that spans chunks again from its start at every feed, so a 50 MB host name fed in 16 KiB
# pieces (what `iterparse` does) took 66 s. A feed that completes no element doubles the
# next one, which makes that linear (see parse_report); a productive feed resets it.
_MIN_FEED = 64 * 1024
_MAX_FEED = 16 * 1024 * 1024
_PORT_ID = re.compile(r"[1-9][0-9]{0,4}", re.ASCII)
_EPOCH = re.compile(r"[0-9]{1,12}", re.ASCII)


class ReportRefused(UserError):
    """An XML report that is not a usable nmap report (bad XML, entities, junk values)."""


class ReportTooLarge(ReportRefused):
    """A report over the size cap."""


class NotARegularFile(ReportRefused):
    """A path that is a FIFO, a device, a directory or a socket."""


def cut(text: str, limit: int) -> str:
    """`text` at most `limit` characters; a longer one is cut and ends with CUT_MARK."""
    if len(text) <= limit:
        return text
    return text[: limit - len(CUT_MARK)] + CUT_MARK


def port_id(text: str) -> int:
    """A port id as nmap writes it: ASCII digits, 1-65535, no sign, space or leading zero."""
    if _PORT_ID.fullmatch(text) is None or int(text) > 65535:
        raise ReportRefused(
            f"port id {text[:20]!r} is not a port number 1-65535; "
            "this is not a report nmap or masscan wrote: fix or drop that <port>"
        )
    return int(text)


def protocol(text: str) -> str:
    if text not in PROTOCOLS:
        raise ReportRefused(
            f"protocol {text[:20]!r} is not tcp, udp or sctp; "
            "only those ports can be monitored: drop the other <port> elements"
        )
    return text


def epoch(text: str | None) -> datetime | None:
    """A Unix time attribute as a UTC datetime; anything else is None."""
    if not text or _EPOCH.fullmatch(text) is None:
        return None
    try:
        return datetime.fromtimestamp(int(text), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


class ScanInfo(Struct, frozen=True):
    """One <scaninfo>: scan type, protocol and the port list nmap was given."""

    type: str
    protocol: str
    services: str


class ParsedReport(Struct):
    """What a report says, bounded and validated. `hosts` is in document order."""

    scanner: str = ""  # "nmap", "masscan", ...
    args: str = ""
    version: str = ""
    started: datetime | None = None
    finished: datetime | None = None  # <runstats><finished time>; None: no runstats
    exit: str | None = None  # "success", "error"; None: the run did not finish
    errormsg: str = ""
    last_host_end: datetime | None = None
    scaninfo: list[ScanInfo] = field(default_factory=list)
    hosts: dict[str, HostObservation] = field(default_factory=dict)

    @property
    def service_detection(self) -> bool:
        """Whether the run did service detection (`-sV`, or `-A` which implies it)."""
        words = self.args.split()
        return "-sV" in words or "-A" in words


class LiveCounts(Struct):
    """How far a running nmap has got: <host>s completed, their open ports, and the newest
    `<taskprogress>` percent (`--stats-every`) since then: of the host group nmap scans now
    (it writes a group's hosts when the group ends)."""

    hosts: int = 0
    open_ports: int = 0
    percent: float | None = None
    task: str = ""


class _HostDraft(Struct):
    """One <host> of the report as it streams in, until its closing tag makes it a HostResult."""

    status: str | None = None  # None: no <status> (masscan)
    reason: str = ""
    address: str = ""
    hostname: str = ""
    answered: bool = False
    ports: dict[tuple[int, str], PortObservation] = field(default_factory=dict)
    filtered: list[tuple[int, str]] = field(default_factory=list)  # open_only: keys only
    extraports: list[str] = field(default_factory=list)  # states of the unlisted ports
    dropped: bool = False  # open_only dropped a listed port that is neither open nor filtered


class _PortDraft(Struct):
    """One <port> of the host being read, until its closing tag."""

    port: int
    proto: str
    state: str = "unknown"
    service: Mapping[str, str] = field(default_factory=dict)


class ReportStream:
    """A report fed in pieces as they arrive (a running nmap's stdout), parsed as it comes.

    The one parsing path: `parse_report` feeds a file or bytes through it too. Bytes are
    counted against `max_bytes` as they are fed (ReportTooLarge past it). With
    `open_only`, a port that is not open still counts as the host's answer but is not kept
    (a sweep keeps nothing else: a /16 of closed ports is not held in memory).
    """

    def __init__(self, max_bytes: int = MAX_REPORT_BYTES, *, open_only: bool = False) -> None:
        self._max = max_bytes
        self._read = 0
        self._reader = _Reader(open_only=open_only)
        # iterparse through defusedxml, with our own feed sizes (see _MIN_FEED).
        safe = DefusedXMLParser(
            target=TreeBuilder(), forbid_dtd=False, forbid_entities=True, forbid_external=True
        )
        self._pull: XMLPullParser[Element] = XMLPullParser(events=("start", "end"), _parser=safe)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._feed = _MIN_FEED

    @property
    def live(self) -> LiveCounts:
        return self._reader.live  # updated in place as pieces are parsed

    def feed(self, data: bytes) -> None:
        """Take the next piece. Raises ReportRefused (ReportTooLarge past the cap)."""
        self._read += len(data)
        if self._read > self._max:
            raise ReportTooLarge(_too_large(self._read, self._max))
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self._feed:
            self._flush()

    def poke(self) -> None:
        """Parse what is pending now, below the feed size (a live run's progress), unless a
        token spans feeds (the feed size grew, see _MIN_FEED). Raises ReportRefused."""
        if self._feed == _MIN_FEED:
            self._flush()

    def close(self) -> ParsedReport:
        """The report, once every piece is fed. Raises ReportRefused."""
        self._flush()
        with _refusals():
            self._pull.close()
            self._reader.take(self._pull)
        if not self._reader.seen_root:
            raise ReportRefused("XML report is empty: is this an nmap -oX report?")
        return self._reader.report

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        with _refusals():
            self._pull.feed(data)
            productive = self._reader.take(self._pull)
        self._feed = _MIN_FEED if productive else min(self._feed * 2, _MAX_FEED)


@contextmanager
def _refusals() -> Iterator[None]:
    """The parser's errors as the one-line ReportRefused a user reads."""
    try:
        yield
    except DefusedXmlException as error:
        raise ReportRefused(
            f"XML report refused: it declares entities or external references "
            f"({error.__class__.__name__}); nmap never writes those"
        ) from None
    except ParseError as error:
        raise ReportRefused(f"XML report is not well-formed XML ({error})") from None


def parse_report(
    source: bytes | BinaryIO, max_bytes: int = MAX_REPORT_BYTES, *, open_only: bool = False
) -> ParsedReport:
    """Read an nmap-format XML report (nmap or masscan). Raises ReportRefused.

    Bytes over `max_bytes` are refused before parsing; a stream is read in chunks and
    refused as soon as it passes the cap. `open_only`: see ReportStream.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) > max_bytes:
            raise ReportTooLarge(_too_large(len(source), max_bytes))
        stream: BinaryIO = io.BytesIO(source)
    else:
        stream = source
    report = ReportStream(max_bytes, open_only=open_only)
    while data := stream.read(_MIN_FEED):
        report.feed(data)
    return report.close()


def _too_large(size: int, limit: int) -> str:
    return (
        f"XML report is over the {size_text(limit)} limit ({size} bytes read); "
        "split the scan into smaller reports and import each"
    )


def size_text(limit: int) -> str:
    """`256 MiB` for a size limit (bytes when it is under one MiB)."""
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit >= mib else f"{limit} bytes"


class _Reader:
    """Turns iterparse events into observations, dropping each element once read.

    Attributes are read on "start" (they are complete then); every element is removed
    from its parent on "end", so memory holds the open path and nothing else.
    """

    def __init__(self, *, open_only: bool = False) -> None:
        self.report = ParsedReport()
        self._open_only = open_only
        self.seen_root = False
        self.live = LiveCounts()
        self._stack: list[Element] = []
        self._host: _HostDraft | None = None
        self._port: _PortDraft | None = None
        # Only a service-detection run's answers are fingerprints (see PortObservation).
        self._fingerprinted: bool | None = None

    def take(self, pull: XMLPullParser[Element]) -> bool:
        """Handle the events the parser has ready; False when there were none."""
        any_event = False
        start, end = self.start, self.end
        # With only start and end events, each is (event, element).
        for event, element in cast(Iterator[tuple[str, Element]], pull.read_events()):
            any_event = True
            if event == "start":
                start(element)
            else:
                end(element)
        return any_event

    def start(self, element: Element) -> None:
        tag = element.tag
        attrs = element.attrib
        stack = self._stack
        parent = stack[-1].tag if stack else ""
        stack.append(element)
        depth = len(stack)
        if depth == 1:
            if tag != "nmaprun":
                raise ReportRefused(
                    f"XML report's root is <{str(tag)[:40]}>, not <nmaprun>: not nmap XML"
                )
            self.seen_root = True
            report = self.report
            report.scanner = cut(attrs.get("scanner", ""), 40)
            report.args = cut(attrs.get("args", ""), MAX_BANNER_CHARS)
            report.version = cut(attrs.get("version", ""), 40)
            report.started = epoch(attrs.get("start"))
            self._fingerprinted = True if report.service_detection else None
        elif depth == 2:
            if tag == "host":
                self._host = _HostDraft()
                ended = epoch(attrs.get("endtime"))
                last = self.report.last_host_end
                if ended is not None and (last is None or ended > last):
                    self.report.last_host_end = ended
            elif tag == "taskprogress":
                self._task_progress(attrs)
            elif tag == "scaninfo":
                self.report.scaninfo.append(
                    ScanInfo(
                        cut(attrs.get("type", ""), 40),
                        attrs.get("protocol", ""),
                        attrs.get("services", ""),
                    )
                )
        elif self._host is not None:
            self._host_start(tag, parent, depth, attrs)
        elif tag == "finished" and parent == "runstats" and depth == 3:
            self.report.finished = epoch(attrs.get("time"))
            self.report.exit = cut(attrs.get("exit", "success"), 40)
            self.report.errormsg = cut(attrs.get("errormsg", ""), 500)

    def _task_progress(self, attrs: Mapping[str, str]) -> None:
        try:  # <taskprogress task= percent=> from --stats-every
            percent = float(attrs.get("percent", ""))
        except ValueError:
            return
        if 0.0 <= percent <= 100.0:
            self.live.percent = percent
            self.live.task = cut(attrs.get("task", ""), 80)

    def _host_start(self, tag: str, parent: str, depth: int, attrs: Mapping[str, str]) -> None:
        host = self._host
        assert host is not None
        if depth == 3:
            if tag == "status":
                host.status = attrs.get("state", "")
                host.reason = attrs.get("reason", "")
            elif tag == "address" and attrs.get("addrtype") in ("ipv4", "ipv6"):
                if not host.address:
                    host.address = _address(attrs.get("addr", ""))
        elif depth == 4 and parent == "hostnames" and tag == "hostname":
            if not host.hostname:
                host.hostname = cut(attrs.get("name", ""), MAX_HOSTNAME_CHARS)
        elif depth == 4 and parent == "ports":
            if tag == "port":
                self._port = _PortDraft(
                    port=port_id(attrs.get("portid", "")),
                    proto=protocol(attrs.get("protocol", "")),
                )
            elif tag == "extraports":
                host.extraports.append(attrs.get("state", ""))
                if attrs.get("state", "") in _ANSWERED:
                    host.answered = True
        elif depth == 5 and parent == "port" and self._port is not None:
            if tag == "state":
                self._port.state = _state(attrs.get("state", ""), self._port)
            elif tag == "service":
                self._port.service = dict(attrs)

    def end(self, element: Element) -> None:
        stack = self._stack
        stack.pop()
        depth = len(stack) + 1
        if depth == 4 and self._port is not None and element.tag == "port":
            assert self._host is not None
            self._finish_port(self._host, self._port)
            self._port = None
        elif depth == 2 and self._host is not None and element.tag == "host":
            self._finish_host(self._host)
            self._host = None
        element.clear()
        if stack:
            # Its earlier siblings are gone already, so this is the parent's only child.
            stack[-1].remove(element)

    def _finish_port(self, host: _HostDraft, draft: _PortDraft) -> None:
        service = draft.service
        observed = PortObservation(
            port=draft.port,
            proto=draft.proto,
            state=draft.state,
            service=cut(service.get("name", ""), MAX_BANNER_CHARS),
            product=cut(service.get("product", ""), MAX_BANNER_CHARS),
            version=cut(service.get("version", ""), MAX_BANNER_CHARS),
            # masscan puts what the service said in `banner`; nmap uses extrainfo.
            extrainfo=cut(
                service.get("extrainfo", "") or service.get("banner", ""), MAX_BANNER_CHARS
            ),
            fingerprinted=self._fingerprinted,
        )
        if draft.state in _ANSWERED:
            host.answered = True
        if self._open_only and draft.state != OPEN:
            if draft.state in FILTERED_STATES:
                host.filtered.append(observed.key)  # open -> filtered is not a close
            else:
                host.dropped = True
            return
        earlier = host.ports.get(observed.key)
        host.ports[observed.key] = observed if earlier is None else merge_port(earlier, observed)

    def _finish_host(self, draft: _HostDraft) -> None:
        if not draft.address:
            return  # a host without an IP address (a MAC only) cannot be monitored
        if draft.status is None:
            up = bool(draft.ports)  # masscan: a host that reported a port answered
        else:
            up = draft.status == "up" and (draft.reason != "user-set" or draft.answered)
        ports = sorted(draft.ports.values(), key=lambda p: (p.port, p.proto))
        observed = HostObservation(
            address=draft.address,
            status="up" if up else "down",
            hostname=draft.hostname,
            ports=ports,
            filtered=draft.filtered,
            # Known only when every port nmap listed is kept: otherwise "" (closed; the
            # confirm re-probe gives a vanished port its own state, services/probe.py).
            unlisted=(
                draft.extraports[0] if len(draft.extraports) == 1 and not draft.dropped else ""
            ),
        )
        live = self.live
        live.hosts += 1
        live.open_ports += sum(1 for p in ports if p.state == OPEN)
        live.percent = None  # that group's progress is now counted in hosts
        hosts = self.report.hosts
        earlier = hosts.get(draft.address)
        hosts[draft.address] = observed if earlier is None else merge_host(earlier, observed)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ReportRefused(
            f"host address {text[:60]!r} is not an IP address; "
            "this is not a report nmap or masscan wrote"
        ) from None


def _state(text: str, draft: _PortDraft) -> str:
    if text not in PORT_STATES:
        raise ReportRefused(
            f"port {draft.port}/{draft.proto}: state {text[:30]!r} is not an nmap port state; "
            "fix or drop that <port>"
        )
    return text
