"""Detection: compare what a scan saw with what is approved. Pure functions, no I/O.

Only places the scan covered are judged (not scanned is not closed): a port counts when its
host is among the scan's addresses, the host answered, and the port and protocol were in
the scan's port list. A failed or cancelled scan judges nothing.

Kinds raised (one candidate per problem, keyed by kind + host[:port/proto]):

Approvals are judged as they stood when the scan finished (Approval.in_force, the one rule
for "approved at T"): an approval recorded after a scan does not cover what that scan saw,
live or imported late, and one retired since still covers what an older report saw.

- ``unapproved_port``: an open port no approval in force covers. When its service is insecure
  (telnet, ftp, ...) the candidate says so in ``details.insecure`` and its severity is raised
  to the insecure_service severity; it is not raised twice as insecure_service. Found by a
  sweep (no -sV) and identified as insecure later, the open finding is escalated
  (`escalation`): its severity rises, it is told again, once.
- ``approval_expired``: an active approval past its review date (PCI DSS 1.2.7), on a
  host:port the scan covered, whether or not the port is open (host up or not).
- ``approved_port_gone``: an approved port on a host that answered is not open.
- ``service_changed``: an approved open port answers with another service, or a product
  that does not match the approval's product pattern. Unknown (empty) service or product
  is not evidence of change.
- ``insecure_service``: an approved open port runs an insecure service and its approval has
  no mitigation (an approval recorded before the service was listed as insecure, or an
  approval for another service). With a mitigation the approval is the accepted control.
- ``unknown_host``: an up host with an open port in scope that no baseline selector and no
  approval names. A host that answers with nothing open is counted in the inventory only
  (a /16 of loopback answers everywhere: 65,534 findings of nothing).
- ``host_gone``: a covered host that did not answer, which has active approvals, or which a
  baseline names and the store had seen up before.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from msgspec import Struct

from portconsole.core.domain.approval import Approval, is_insecure
from portconsole.core.domain.approval_index import ApprovalIndex, as_index
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.finding import Finding, FindingCandidate
from portconsole.core.domain.model import ScanResult, most_severe, severity_rank
from portconsole.core.settings import Settings
from portconsole.core.timeutil import iso

# nmap names one service differently with and without -sV, and by port: `https` and
# `http-proxy` from the port table are `http` (tunnel ssl) once fingerprinted.
_SERVICE_ALIASES = {
    "https": "http",
    "http-alt": "http",
    "http-proxy": "http",
    "https-alt": "http",
    "http-mgmt": "http",
    "www": "http",
    "postgres": "postgresql",
    "pgsql": "postgresql",
    "mariadb": "mysql",
    "ssh-alt": "ssh",
}


class PortView(Protocol):
    """An open port as the store knows it after ingest."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def proto(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def product(self) -> str: ...
    @property
    def version(self) -> str: ...


class ObservedPort(Struct, frozen=True):
    """An open port as one scan saw it (a PortView without the store)."""

    host: str
    port: int
    proto: str
    service: str
    product: str
    version: str


def scan_open_ports(scan: ScanResult) -> list[ObservedPort]:
    """The open ports a scan itself saw. Detection of a backfilled scan judges these: the
    store's current state is newer than such a scan and says nothing of its time."""
    return [
        ObservedPort(host.address, p.port, p.proto, p.service, p.product, p.version)
        for host in scan.hosts
        if host.status == "up"
        for p in host.open_ports()
    ]


def canonical_service(name: str) -> str:
    """Fold nmap's spellings of one service together (`ssl/http`, `https` -> `http`)."""
    text = name.strip().lower()
    if text.startswith("ssl/"):
        text = text[4:]
    return _SERVICE_ALIASES.get(text, text)


def service_matches(expected: str, observed: str) -> bool:
    """Does an observed service satisfy an approval's expected service?

    `expected` may list alternatives (`http|https`) and use globs; empty or `*` accepts
    anything. An empty observed service (not identified) never counts as a mismatch.
    """
    wanted = [w.strip() for w in expected.split("|") if w.strip()]
    seen = canonical_service(observed)
    if not wanted or "*" in wanted or not seen:
        return True
    return any(fnmatch.fnmatchcase(seen, canonical_service(w)) for w in wanted)


def product_matches(pattern: str, product: str, version: str = "") -> bool:
    """Does `product version` match an approval's product pattern?

    A glob (case-insensitive) must match the whole `product version` text or the product
    alone; `re:` introduces a regular expression searched in `product version`. An empty
    pattern, or an unidentified product, matches.
    """
    text = f"{product} {version}".strip()
    if not pattern.strip() or not product.strip():
        return True
    if pattern.startswith("re:"):
        try:
            return re.search(pattern[3:], text, re.IGNORECASE) is not None
        except re.error:
            return False  # lint refuses bad expressions; a stored one fails closed
    glob = pattern.lower()
    return fnmatch.fnmatchcase(text.lower(), glob) or fnmatch.fnmatchcase(
        product.strip().lower(), glob
    )


def classify_port(
    host: str,
    port: int,
    proto: str,
    service: str,
    approvals: ApprovalIndex | Iterable[Approval],
    at: datetime,
) -> str:
    """`approved`, `unapproved` or `expired` for one port at `at` (scan --json and the TUI),
    by the approval in force then (approval_in_force).

    Classification is by host/port/proto; `service` does not change it (a different
    service on an approved port is a service_changed finding, not an unapproved port).
    Callers classifying many ports pass one ApprovalIndex built for all of them (a plain
    list is indexed on each call: fine for one port, quadratic for a fleet).
    """
    del service  # part of the call shape for callers; see the docstring
    return as_index(approvals).status(host, port, proto, at)


def severity_for(kind: str, port: int | None, settings: Settings) -> str:
    """Severity of a finding kind on a port, from `[severity]`.

    unapproved_port: by_port, then high_ports (high), then by_kind, then default.
    Other kinds: by_kind, then default.
    """
    rules = settings.severity
    if kind == "unapproved_port" and port is not None:
        if str(port) in rules.by_port:
            return rules.by_port[str(port)]
        if port in rules.high_ports:
            return "high"
    return rules.by_kind.get(kind, rules.default)


def unapproved_severity(port: int, insecure: bool, settings: Settings) -> str:
    """An unapproved port's severity: by its port (severity_for), raised to the
    insecure_service severity when its service is insecure."""
    severity = severity_for("unapproved_port", port, settings)
    if insecure:
        severity = most_severe(severity, severity_for("insecure_service", port, settings))
    return severity


def escalation(before: Finding, after: Finding, settings: Settings) -> str | None:
    """The severity an open finding rises to when a later detection (the one after -sV)
    shows it worse; None when it shows nothing worse.

    `before` is the finding as it stood before that detection, `after` as the detection
    refreshed it (its details are its candidate's: `insecure`, `service`). Worse means the
    candidate's severity outranks the finding's, or its service is newly insecure (told
    even when the severity was already as high). Severity rises, never falls: a finding
    raised as insecure stays so, and one escalated once is not escalated again.
    """
    insecure = bool(after.details.get("insecure"))
    if after.kind == "unapproved_port" and after.port is not None:
        wanted = unapproved_severity(after.port, insecure, settings)
    else:
        wanted = severity_for(after.kind, after.port, settings)
    newly_insecure = insecure and not before.details.get("insecure")
    if severity_rank(wanted) > severity_rank(before.severity) or newly_insecure:
        return most_severe(before.severity, wanted)
    return None


def may_escalate(scan: ScanResult, settings: Settings) -> bool:
    """Can detecting this scan escalate a finding? Only when some port it saw open runs an
    insecure service: that is all a later look (-sV) learns that raises a severity (the
    other rules go by kind and port). Spares the caller reading the book for `escalation`."""
    names = settings.approval.insecure_services
    return any(is_insecure(p.service, names) for p in scan_open_ports(scan))


def detect(
    scan: ScanResult,
    open_ports: Iterable[PortView],
    known_hosts: Iterable[str],
    approvals: ApprovalIndex | Iterable[Approval],
    settings: Settings,
    now: datetime,
    baseline_hosts: Iterable[str] = (),
) -> list[FindingCandidate]:
    """The finding candidates one scan gives rise to (see the module docstring).

    open_ports: the store's open ports after ingesting this scan (all hosts; only those
    the scan covered are judged). known_hosts: hosts the store had seen up before this
    scan. approvals: every approval record (active and retired), or the cycle's
    ApprovalIndex of them; those in force at `now`, the scan's finish, are the ones that
    count. baseline_hosts: every address a baseline selector names (hosts expected even
    without an approved port).
    """
    coverage = Coverage.of_scan(scan)
    if not coverage.hosts:
        return []
    insecure_names = settings.approval.insecure_services
    index = as_index(approvals).all_in_force(now)
    up_hosts = coverage.hosts - coverage.down
    known = set(known_hosts)
    expected_hosts = set(baseline_hosts) | {key[0] for key in index}
    approved_hosts = {key[0] for key in index}
    scan_id = scan.scan_id
    out: list[FindingCandidate] = []

    def add(
        kind: str,
        host: str,
        port: int | None,
        proto: str | None,
        service: str,
        details: dict[str, object],
        severity: str | None = None,
    ) -> None:
        out.append(
            FindingCandidate(
                kind=kind,
                host=host,
                port=port,
                proto=proto,
                service=service,
                severity=severity or severity_for(kind, port, settings),
                scan_id=scan_id,
                details=dict(details),
            )
        )

    open_keys: set[tuple[str, int, str]] = set()
    for view in sorted(open_ports, key=lambda v: (v.host, v.proto, v.port)):
        if not coverage.covers(view.host, view.port, view.proto):
            continue
        key = (view.host, view.port, view.proto)
        if key in open_keys:
            continue
        open_keys.add(key)
        observed = {"service": view.service, "product": view.product, "version": view.version}
        approval = index.get(key)
        if approval is None:
            insecure = is_insecure(view.service, insecure_names)
            add(
                "unapproved_port",
                view.host,
                view.port,
                view.proto,
                view.service,
                {**observed, "insecure": insecure},
                unapproved_severity(view.port, insecure, settings),
            )
            continue
        if approval.is_expired(now):
            continue  # raised below, with the other expired approvals
        expected = {
            "expected_service": approval.service,
            "product_pattern": approval.product_pattern,
        }
        if not service_matches(approval.service, view.service) or not product_matches(
            approval.product_pattern, view.product, view.version
        ):
            add(
                "service_changed",
                view.host,
                view.port,
                view.proto,
                view.service,
                {**observed, **expected, "approval_id": approval.id},
            )
        if is_insecure(view.service, insecure_names) and not approval.mitigation.strip():
            add(
                "insecure_service",
                view.host,
                view.port,
                view.proto,
                view.service,
                {**observed, "approval_id": approval.id},
            )

    for key, approval in sorted(index.items()):
        host, port, proto = key
        # Expiry is about time: raised where the scan looked, whatever the host answered.
        if not coverage.scanned(host, port, proto):
            continue
        if approval.is_expired(now):
            add(
                "approval_expired",
                host,
                port,
                proto,
                approval.service,
                {
                    "approval_id": approval.id,
                    "review_by": iso(approval.review_by_at(now)),
                    "open": key in open_keys,
                },
            )
            continue
        if coverage.covers(host, port, proto) and key not in open_keys:
            add(
                "approved_port_gone",
                host,
                port,
                proto,
                approval.service,
                {"approval_id": approval.id, "expected_service": approval.service},
            )

    serving = {key[0] for key in open_keys}
    for host in sorted((up_hosts & serving) - expected_hosts):
        add("unknown_host", host, None, None, "", {"seen_before": host in known})

    baseline_only = set(baseline_hosts)
    for host in sorted(coverage.hosts - up_hosts):
        if host in approved_hosts or (host in baseline_only and host in known):
            add("host_gone", host, None, None, "", {"approved_ports": host in approved_hosts})
    return out
