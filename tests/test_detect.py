"""Detection against approvals (pure), and its effect on the finding book."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from msgspec.structs import replace
from tinydb import TinyDB

from portconsole.core.adapters.approvals import ApprovalRegistry
from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.storage import AtomicJSONStorage, DataLock
from portconsole.core.domain.approval import Approval, approval_in_force
from portconsole.core.domain.approval_index import ApprovalIndex
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.detect import (
    classify_port,
    detect,
    escalation,
    may_escalate,
    product_matches,
    service_matches,
    severity_for,
)
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult
from portconsole.core.errors import UserError
from portconsole.core.settings import Settings, settings_from

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WEB = "127.77.0.10"
LEGACY = "127.77.0.50"
ACTOR = "carol@console"


@dataclass(frozen=True)
class View:
    host: str
    port: int
    proto: str = "tcp"
    service: str = ""
    product: str = ""
    version: str = ""


def scan(
    views: list[View],
    addresses: list[str],
    ports: str = "22,23,80,443,6379,8080",
    outcome: str = "success",
    down: tuple[str, ...] = (),
    scan_id: str = "S-1",
) -> ScanResult:
    hosts = []
    for address in addresses:
        if address in down:
            hosts.append(HostObservation(address, "down"))
            continue
        observed = [
            PortObservation(v.port, v.proto, "open", v.service, v.product, v.version)
            for v in views
            if v.host == address
        ]
        hosts.append(HostObservation(address, "up", ports=observed))
    return ScanResult(
        scan_id=scan_id,
        started_at=NOW,
        finished_at=NOW,
        nmap_version="7.93",
        scan_type="connect",
        privileged=False,
        targets=addresses,
        addresses=addresses,
        ports=ports,
        protocols=["tcp"],
        hosts=hosts,
        outcome=outcome,
    )


@pytest.fixture
def stores(tmp_path: Path) -> tuple[ApprovalRegistry, FindingBook]:
    db = TinyDB(tmp_path / "hot.json", storage=AtomicJSONStorage)
    lock = DataLock(tmp_path / "store.lock")
    return ApprovalRegistry(db, lock, Settings()), FindingBook(db, lock)


def approve(
    registry: ApprovalRegistry,
    host: str,
    port: int,
    service: str,
    *,
    product: str = "",
    approved_at: datetime = NOW - timedelta(days=10),
    mitigation: str = "",
) -> Approval:
    return registry.add(
        host=host,
        port=port,
        proto="tcp",
        service=service,
        justification=f"{service} for the storefront",
        owner="web-team",
        requester="alice",
        approver="bob",
        actor=ACTOR,
        approved_at=approved_at,
        product_pattern=product,
        mitigation=mitigation,
        now=approved_at,
    )


def run(
    result: ScanResult,
    views: list[View],
    approvals: list[Approval],
    settings: Settings | None = None,
    known: tuple[str, ...] = (),
    baseline_hosts: tuple[str, ...] = (),
) -> list[tuple[str, str, int | None]]:
    found = detect(
        result, views, known, approvals, settings or Settings(), NOW, set(baseline_hosts)
    )
    return sorted((c.kind, c.host, c.port) for c in found)


def test_unapproved_port_is_one_candidate_and_one_finding(
    stores: tuple[ApprovalRegistry, FindingBook],
) -> None:
    registry, book = stores
    approve(registry, WEB, 80, "http", product="nginx*")
    views = [View(WEB, 80, service="http", product="nginx", version="1.22.1"), View(WEB, 8080)]
    result = scan(views, [WEB])
    candidates = detect(result, views, [], registry.active(), Settings(), NOW, set())
    assert [(c.kind, c.port) for c in candidates] == [("unapproved_port", 8080)]
    (cand,) = candidates
    assert cand.scan_id == "S-1" and cand.severity == "medium" and cand.proto == "tcp"
    (finding,) = book.raise_candidates(candidates, NOW)
    assert (finding.kind, finding.host, finding.port) == ("unapproved_port", WEB, 8080)
    # the next scan sees it again: no new finding
    again = detect(scan(views, [WEB], scan_id="S-2"), views, [], registry.active(), Settings(), NOW)
    assert book.raise_candidates(again, NOW + timedelta(minutes=5)) == []
    assert len(book.all()) == 1


def test_approving_removes_it_and_it_never_alerts_again(
    stores: tuple[ApprovalRegistry, FindingBook],
) -> None:
    registry, book = stores
    views = [View(LEGACY, 6379, service="redis", product="Redis key-value store")]
    result = scan(views, [LEGACY])
    first = detect(result, views, [], registry.active(), Settings(), NOW, {LEGACY})
    (finding,) = book.raise_candidates(first, NOW)
    approval = approve(registry, LEGACY, 6379, "redis", approved_at=NOW)
    book.approve(finding.id, "bob@ops", approval.id, "Cache for the batch jobs")
    assert book.open() == []
    for minutes in (5, 10, 15):
        later = scan(views, [LEGACY], scan_id=f"S-{minutes}")
        candidates = detect(later, views, [], registry.active(), Settings(), NOW)
        assert candidates == []
        assert book.raise_candidates(candidates, NOW + timedelta(minutes=minutes)) == []
    assert book.open() == []


def test_approved_ports_never_produce_unapproved_port(
    stores: tuple[ApprovalRegistry, FindingBook],
) -> None:
    registry, _ = stores
    approvals = [approve(registry, WEB, p, "http") for p in (80, 443, 8080)]
    views = [View(WEB, p, service="http") for p in (80, 443, 8080)]
    assert run(scan(views, [WEB]), views, approvals) == []
    assert {classify_port(WEB, p, "tcp", "http", approvals, NOW) for p in (80, 443, 8080)} == {
        "approved"
    }
    assert classify_port(WEB, 22, "tcp", "ssh", approvals, NOW) == "unapproved"
    assert classify_port(WEB, 80, "udp", "http", approvals, NOW) == "unapproved"


def test_approval_past_review_by_comes_back_as_a_finding(
    stores: tuple[ApprovalRegistry, FindingBook],
) -> None:
    registry, book = stores
    old = approve(registry, WEB, 80, "http", approved_at=NOW - timedelta(days=200))
    assert old.review_by < NOW
    views = [View(WEB, 80, service="http")]
    candidates = detect(scan(views, [WEB]), views, [], registry.active(), Settings(), NOW)
    assert [(c.kind, c.port, c.details["approval_id"]) for c in candidates] == [
        ("approval_expired", 80, old.id)
    ]
    assert classify_port(WEB, 80, "tcp", "http", registry.active(), NOW) == "expired"
    (finding,) = book.raise_candidates(candidates, NOW)
    assert finding.kind == "approval_expired" and finding.severity == "medium"
    # renewing the approval makes the condition go away on the next covered scan
    renewed = approve(registry, WEB, 80, "http", approved_at=NOW)
    assert renewed.supersedes == [old.id]
    later = detect(scan(views, [WEB]), views, [], registry.active(), Settings(), NOW)
    assert later == []
    coverage = Coverage.of_scan(scan(views, [WEB]))
    resolved = book.resolve_missing({c.key for c in later}, coverage.covers, NOW, "S-2")
    assert [f.id for f in resolved] == [finding.id]


def test_service_and_product_changes(stores: tuple[ApprovalRegistry, FindingBook]) -> None:
    registry, _ = stores
    approvals = [
        approve(registry, WEB, 80, "http", product="nginx*"),
        approve(registry, WEB, 443, "https", product="nginx*"),
        approve(registry, WEB, 22, "ssh", product="re:^OpenSSH 9\\."),
    ]
    views = [
        View(WEB, 80, service="http", product="Apache httpd", version="2.4.57"),
        View(WEB, 443, service="http", product="nginx", version="1.22.1"),  # ssl/http
        View(WEB, 22, service="ssh", product="OpenSSH", version="8.4p1"),
    ]
    assert run(scan(views, [WEB]), views, approvals) == [
        ("service_changed", WEB, 22),
        ("service_changed", WEB, 80),
    ]
    unidentified = [View(WEB, 80), View(WEB, 443), View(WEB, 22, service="ssh")]
    assert run(scan(unidentified, [WEB]), unidentified, approvals) == []
    assert service_matches("https", "ssl/http") and service_matches("http|ssh", "ssh")
    assert not service_matches("ssh", "telnet") and service_matches("*", "telnet")
    assert product_matches("nginx*", "nginx", "1.22.1") and not product_matches(
        "nginx*", "Apache httpd", "2.4"
    )
    assert product_matches("OpenSSH 9.*", "OpenSSH", "9.2p1 Debian")


def test_insecure_services(stores: tuple[ApprovalRegistry, FindingBook]) -> None:
    registry, _ = stores
    # unapproved telnet: one finding, unapproved_port, marked insecure and high
    telnet = [View(LEGACY, 23, service="telnet")]
    (only,) = detect(scan(telnet, [LEGACY]), telnet, [], [], Settings(), NOW, {LEGACY})
    assert only.kind == "unapproved_port" and only.details["insecure"] is True
    assert only.severity == "high"
    offset = [View(LEGACY, 10023, service="telnet")]
    (shifted,) = detect(
        scan(offset, [LEGACY], ports="10023"), offset, [], [], Settings(), NOW, {LEGACY}
    )
    assert shifted.severity == "high"  # raised by insecurity although 10023 is no high port
    # approved with a mitigation: the approval is the accepted control
    mitigated = approve(registry, LEGACY, 23, "telnet", mitigation="Bastion-only; CHG-9")
    assert run(scan(telnet, [LEGACY]), telnet, [mitigated]) == []
    # a port approved for ssh that now answers telnet: changed, and insecure without mitigation
    ssh = approve(registry, LEGACY, 22, "ssh")
    swapped = [View(LEGACY, 22, service="telnet")]
    assert run(scan(swapped, [LEGACY]), swapped, [ssh]) == [
        ("insecure_service", LEGACY, 22),
        ("service_changed", LEGACY, 22),
    ]


def test_gone_ports_and_hosts_and_unknown_hosts(
    stores: tuple[ApprovalRegistry, FindingBook],
) -> None:
    registry, _ = stores
    approvals = [approve(registry, WEB, 80, "http"), approve(registry, WEB, 443, "https")]
    db_host, stranger, spare = "127.77.0.30", "127.77.0.99", "127.77.0.31"
    approvals.append(approve(registry, db_host, 5432, "postgresql"))
    views = [View(WEB, 80, service="http"), View(stranger, 8080)]
    quiet = "127.77.0.98"  # answers, nothing open: inventory only, not an unknown_host
    result = scan(
        views,
        [WEB, db_host, stranger, spare, quiet],
        ports="80,443,5432,8080",
        down=(db_host, spare),
    )
    found = run(result, views, approvals, known=(WEB, spare), baseline_hosts=(spare,))
    assert found == [
        ("approved_port_gone", WEB, 443),
        ("host_gone", db_host, None),  # approved host down: its ports are not each reported
        ("host_gone", spare, None),  # baseline host seen before
        ("unapproved_port", stranger, 8080),
        ("unknown_host", stranger, None),
    ]
    # a baseline host that was never seen up is not "gone"
    never = run(result, views, approvals, known=(WEB,), baseline_hosts=(spare,))
    assert ("host_gone", spare, None) not in never


def test_only_covered_places_are_judged(stores: tuple[ApprovalRegistry, FindingBook]) -> None:
    registry, _ = stores
    approvals = [approve(registry, WEB, 443, "https")]
    other = "127.77.0.11"
    views = [View(WEB, 8080), View(other, 9999)]  # store state: other host, uncovered port
    result = scan(views, [WEB], ports="80,8080")  # 443 and 9999 not scanned
    assert run(result, views, approvals) == [("unapproved_port", WEB, 8080)]
    coverage = Coverage.of_scan(result)
    assert coverage.covers(WEB, 8080, "tcp") and coverage.covers(WEB)
    assert not coverage.covers(WEB, 443, "tcp") and not coverage.covers(other, 9999, "tcp")
    assert not coverage.covers(WEB, 8080, "udp")
    assert run(scan(views, [WEB], ports="80,8080", outcome="failed"), views, approvals) == []
    # A cancelled scan covers the hosts it finished (the store records them too).
    cancelled = scan(views, [WEB], ports="80,8080", outcome="cancelled")
    assert run(cancelled, views, approvals) == [("unapproved_port", WEB, 8080)]
    partial = scan(views, [WEB], ports="80,8080", outcome="partial")
    partial.addresses.append(other)  # planned but never reported on
    assert not Coverage.of_scan(partial).covers(other)


def test_severity_rules() -> None:
    settings = settings_from(
        {"severity": {"by_port": {"8080": "low"}, "by_kind": {"host_gone": "critical"}}}
    )
    assert severity_for("unapproved_port", 5432, settings) == "high"  # database
    assert severity_for("unapproved_port", 22, settings) == "high"  # remote administration
    assert severity_for("unapproved_port", 8080, settings) == "low"  # by_port wins
    assert severity_for("unapproved_port", 8081, settings) == "medium"  # default
    assert severity_for("host_gone", None, settings) == "critical"
    assert severity_for("approved_port_gone", 5432, settings) == "medium"


def test_a_later_fingerprint_escalates_an_open_finding_up_never_down(
    stores: tuple[ApprovalRegistry, FindingBook],
) -> None:
    _, book = stores
    settings = Settings()

    def sighted(services: dict[int, str], scan_id: str) -> dict[int, Finding]:
        views = [View(LEGACY, port, service=name) for port, name in services.items()]
        result = scan(views, [LEGACY], ports="22,2323,8080", scan_id=scan_id)
        book.ingest_candidates(detect(result, views, [], [], settings, NOW, {LEGACY}), NOW)
        return {f.port or 0: f for f in book.open()}

    # The sweep names 2323 by the port table, 22 ssh, 8080 http-proxy: 22 is high (its port).
    before = sighted({2323: "3d-nfsd", 22: "ssh", 8080: "http-proxy"}, "S-1")
    assert [before[p].severity for p in (2323, 22, 8080)] == ["medium", "high", "medium"]
    # -sV: 2323 is telnet (medium -> high); 22 is telnet too (already high: told all the
    # same, newly insecure); 8080 is http (nothing worse).
    after = sighted({2323: "telnet", 22: "telnet", 8080: "http"}, "S-2")
    # Only a scan that saw an insecure service can escalate (the book is read only then).
    telnet = [View(LEGACY, 2323, service="telnet")]
    assert may_escalate(scan(telnet, [LEGACY], ports="2323"), settings)
    web = [View(LEGACY, 8080, service="http")]
    assert not may_escalate(scan(web, [LEGACY], ports="8080"), settings)
    assert escalation(before[2323], after[2323], settings) == "high"
    assert escalation(before[22], after[22], settings) == "high"
    assert escalation(before[8080], after[8080], settings) is None
    # Escalation follows the settings: an insecure_service severity of critical.
    strict = settings_from({"severity": {"by_kind": {"insecure_service": "critical"}}})
    assert escalation(before[2323], after[2323], strict) == "critical"

    raised = book.escalate(after[2323].id, "high", {"escalated_from": "medium"}, "telnet", NOW)
    assert raised.severity == "high" and raised.details["insecure"] is True
    assert [s.step for s in raised.timeline] == ["detected", "escalated"]
    # Once: the escalated finding seen insecure again is nothing new.
    again = sighted({2323: "telnet", 22: "telnet", 8080: "http"}, "S-3")
    assert escalation(raised, again[2323], settings) is None
    # Never down: asked for a lower severity, the book keeps the higher one.
    assert book.escalate(raised.id, "low", {}, "later", NOW).severity == "high"
    # Only an open finding is escalated.
    book.close(raised.id, ACTOR, "decommissioned the legacy host", NOW)
    with pytest.raises(UserError, match="cannot escalate"):
        book.escalate(raised.id, "critical", {}, "too late", NOW)


def test_one_severity_order_everywhere() -> None:
    import typing

    from portconsole.core import settings_sections as settings_module
    from portconsole.core.domain.model import SEVERITIES, most_severe, severity_rank

    # The settings' type is a Literal for its error messages; it may never drift from the order.
    assert typing.get_args(settings_module.Severity) == SEVERITIES
    assert most_severe("low", "critical", "medium") == "critical"
    assert severity_rank("bogus") == -1 < severity_rank("low")


def test_the_approval_index_answers_as_scanning_every_record_does(
    stores: tuple[ApprovalRegistry, FindingBook],
) -> None:
    """The index only narrows the records looked at: the rule stays approval_in_force."""
    registry, _ = stores
    base = approve(registry, WEB, 80, "http")
    day = timedelta(days=1)
    records = [
        base,
        # retired before NOW (no longer counts) and retired after NOW (still counted then)
        replace(base, id="A-900001", port=81, status="retired", retired_at=NOW - day),
        replace(base, id="A-900002", port=82, status="retired", retired_at=NOW + day),
        # recorded after NOW: never counts at NOW, whatever date it says it was given
        replace(base, id="A-900003", port=83, created_at=NOW + day),
        # two in force for one key: the newer approval wins
        replace(base, id="A-900004", port=84, approved_at=NOW - 3 * day),
        replace(base, id="A-900005", port=84, approved_at=NOW - 2 * day),
        # past its review date: expired, not unapproved
        replace(base, id="A-900006", port=85, review_by=NOW - day),
        # same host and port, other protocol
        replace(base, id="A-900007", port=80, proto="udp"),
    ]
    index = ApprovalIndex(records)
    assert len(index) == len(records) and list(index) == records
    keys = [(WEB, port, proto) for port in range(79, 87) for proto in ("tcp", "udp")]
    statuses = set()
    for at in (NOW - 20 * day, NOW, NOW + 2 * day):
        for host, port, proto in keys:
            expected = approval_in_force(records, host, port, proto, at)
            assert index.in_force(host, port, proto, at) == expected, (port, proto, at)
            status = classify_port(host, port, proto, "http", index, at)
            assert status == classify_port(host, port, proto, "http", records, at)
            statuses.add(status)
    assert statuses == {"approved", "unapproved", "expired"}
    assert index.in_force(WEB, 84, "tcp", NOW) == records[5]
    assert index.in_force(WEB, 82, "tcp", NOW) == records[2]
    assert index.in_force(WEB, 81, "tcp", NOW) is None
    assert index.in_force(WEB, 83, "tcp", NOW) is None
    # the registry's index holds every stored record, retired ones included
    registry.retire(base.id, actor=ACTOR, reason="moved", now=NOW + day)
    stored = registry.index()
    assert [a.id for a in stored] == [base.id]
    assert stored.in_force(WEB, 80, "tcp", NOW) is not None
    assert stored.in_force(WEB, 80, "tcp", NOW + 2 * day) is None
    # detection judges the same through an index as through the list
    views = [View(WEB, port, service="http") for port in (80, 81, 84, 85, 86)]
    result = scan(views, [WEB], ports="79-86")
    assert detect(result, views, [], index, Settings(), NOW) == detect(
        result, views, [], records, Settings(), NOW
    )
