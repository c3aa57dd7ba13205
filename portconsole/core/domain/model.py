"""Plain records (msgspec Structs, see records.py) shared by every part of the core. No I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from msgspec import Struct, field

from portconsole.core.domain.records import asdict
from portconsole.core.timeutil import iso

# Port states as nmap reports them; only "open" counts as exposure.
OPEN = "open"
# No answer at all (a firewall that drops): never open, and not closed either. UDP's
# "open|filtered" is silence too, so it counts as filtered.
FILTERED = "filtered"
FILTERED_STATES = frozenset({FILTERED, "open|filtered"})


class Severity(StrEnum):
    """How bad a finding is. The one severity order: least severe first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITIES: tuple[str, ...] = tuple(Severity)


def severity_rank(value: str) -> int:
    """0 (low) to 3 (critical); -1 for a value that is not a severity (it never outranks one)."""
    return SEVERITIES.index(value) if value in SEVERITIES else -1


def most_severe(*levels: str) -> str:
    return max(levels, key=severity_rank)


class FindingKind(StrEnum):
    """What a finding is about (detection's kinds, and the monitor's own failures)."""

    UNAPPROVED_PORT = "unapproved_port"
    APPROVED_PORT_GONE = "approved_port_gone"
    SERVICE_CHANGED = "service_changed"
    UNKNOWN_HOST = "unknown_host"
    HOST_GONE = "host_gone"
    APPROVAL_EXPIRED = "approval_expired"
    INSECURE_SERVICE = "insecure_service"
    MONITORING_GAP = "monitoring_gap"


class ChangeKind(StrEnum):
    """What a scan changed in the stored state."""

    PORT_OPENED = "port_opened"
    PORT_CLOSED = "port_closed"
    PORT_FILTERED = "port_filtered"
    SERVICE_CHANGED = "service_changed"
    HOST_UP = "host_up"
    HOST_DOWN = "host_down"


class ScanOutcome(StrEnum):
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventOutcome(StrEnum):
    """The outcome of a journal event."""

    SUCCESS = "success"
    FAILURE = "failure"


class PortObservation(Struct, frozen=True):
    """One port on one host as one scan saw it. Text fields come from the network: untrusted."""

    port: int
    proto: str  # "tcp" | "udp"
    state: str  # open | closed | filtered | open|filtered ...
    service: str = ""
    product: str = ""
    version: str = ""
    extrainfo: str = ""
    # True: from service detection (-sV). False: service text carried over from an earlier
    # fingerprint. None: unknown (a sweep, or an imported report): judged by its content.
    fingerprinted: bool | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.port, self.proto)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class HostObservation(Struct):
    """One host in one scan: `up` or `down`, with the ports the scan found (open ones only
    unless the caller asked for more).

    `filtered`: ports a sweep saw filtered (it keeps no other non-open port), so a port that
    went from open to silent is `port_filtered`, not `port_closed`. `unlisted`: the state
    nmap gave every port it did not list (one `<extraports>`), or "" when that is unknown.
    """

    address: str
    status: str  # "up" | "down"
    hostname: str = ""
    ports: list[PortObservation] = field(default_factory=list)
    filtered: list[tuple[int, str]] = field(default_factory=list)
    unlisted: str = ""

    def state_of(self, key: tuple[int, str]) -> str:
        """The state this scan gives a port that it did not report open."""
        for port in self.ports:
            if port.key == key:
                return port.state
        if key in self.filtered:
            return FILTERED
        return self.unlisted or "closed"

    def open_ports(self) -> list[PortObservation]:
        return [p for p in self.ports if p.state == OPEN]

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "status": self.status,
            "hostname": self.hostname,
            "ports": [p.to_json() for p in self.ports],
        }


class ScanResult(Struct):
    """One scan cycle's result: metadata plus per-host observations.

    `addresses` is every address the scan was planned to cover and `ports` the port
    specification it covered (for `protocols`); together they are the scan's coverage, so
    a port that was not scanned is never taken for closed.
    """

    scan_id: str
    started_at: datetime
    finished_at: datetime
    nmap_version: str
    scan_type: str  # "syn" | "connect" | "imported"
    privileged: bool
    targets: list[str]
    addresses: list[str]
    ports: str
    protocols: list[str]
    hosts: list[HostObservation]
    # The plain reports; a live scan's are a raw_xml.GzipDocuments (compressed as nmap wrote).
    raw_xml: Sequence[bytes] = field(default_factory=list)
    raw_xml_sha256: str = ""
    outcome: str = "success"  # success | partial | cancelled | failed
    error: str = ""
    origin: str = "cli"  # cli | tui | daemon | import
    imported: bool = False
    group: str = ""
    fingerprinted: int = 0
    # Set by the store: an imported report older than the newest history (changes history,
    # never the current state).
    backfill: bool = False

    def __repr__(self) -> str:
        # Never the raw reports (megabytes for a large range): their count and digest.
        return (
            f"ScanResult(scan_id={self.scan_id!r}, outcome={self.outcome!r}, "
            f"hosts={len(self.hosts)}, raw_xml=<{len(self.raw_xml)} reports, "
            f"sha256 {self.raw_xml_sha256[:12]!r}>)"
        )

    def host(self, address: str) -> HostObservation | None:
        for host in self.hosts:
            if host.address == address:
                return host
        return None

    def open_port_count(self) -> int:
        return sum(len(h.open_ports()) for h in self.hosts)

    def metadata_json(self) -> dict[str, Any]:
        """Everything but the hosts and raw XML, JSON-ready (UTC ISO times)."""
        return {
            "scan_id": self.scan_id,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "nmap_version": self.nmap_version,
            "scan_type": self.scan_type,
            "privileged": self.privileged,
            "targets": list(self.targets),
            "addresses": list(self.addresses),
            "ports": self.ports,
            "protocols": list(self.protocols),
            "raw_xml_sha256": self.raw_xml_sha256,
            "outcome": self.outcome,
            "error": self.error,
            "origin": self.origin,
            "imported": self.imported,
            "group": self.group,
            "fingerprinted": self.fingerprinted,
        }


class Change(Struct, frozen=True):
    """A difference between a scan and the stored state.

    kind: port_opened | port_closed | port_filtered | service_changed | host_up | host_down.
    `before`/`after` are service descriptions (or host status) as dicts, or None.
    """

    kind: str
    host: str
    port: int | None
    proto: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "proto": self.proto,
            "before": self.before,
            "after": self.after,
        }


class Progress(Struct, frozen=True):
    """Scan progress, reported from worker threads. Cheap to make, newest wins."""

    hosts_done: int
    hosts_total: int
    open_ports: int
    phase: str = "sweep"  # sweep | fingerprint | confirm | ingest | done
    # The share of the phase's work done, 0-100, from nmap's own progress inside running
    # batches; None: count hosts (`fraction`). ETA in seconds, None while unknown.
    percent: float | None = None
    eta_seconds: float | None = None

    @property
    def fraction(self) -> float:
        """The phase's work done, 0.0-1.0."""
        if self.percent is not None:
            return min(max(self.percent / 100.0, 0.0), 1.0)
        if not self.hosts_total:
            return 0.0
        return min(self.hosts_done / self.hosts_total, 1.0)

    def eta_text(self) -> str:
        """`ETA 1:05`, `ETA 1:02:03`, or `ETA ?` while unknown."""
        if self.eta_seconds is None:
            return "ETA ?"
        hours, rest = divmod(int(self.eta_seconds + 0.5), 3600)
        minutes, seconds = divmod(rest, 60)
        return (
            f"ETA {hours}:{minutes:02d}:{seconds:02d}" if hours else f"ETA {minutes}:{seconds:02d}"
        )


def port_key(host: str, port: int, proto: str) -> str:
    """The stable key for a host/port/proto, also the TUI's row key."""
    return f"{host}:{port}/{proto}"


def location(host: str, port: int | None, proto: str | None) -> str:
    """`host:port/proto` for a port, the bare host for host-level events and findings."""
    return port_key(host, port, proto or "tcp") if port is not None else host
