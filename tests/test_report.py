"""Reports for auditors: a known history built on a real store, every figure checked.

The history (group "web", hosts .2 and .3, a scan every 6 hours, period 1-8 March 2026):

    Feb 28 12:00  first scan: .2 80 http, 2323 telnet (approved, mitigated); .3 443 https
    Feb 28 18:00  .3 6379 opens                  -> F0 high, never decided (carried over)
    Mar 1  00:00  (period starts)
    Mar 1  06:00  .2 6379 opens                  -> F1 high, flagged 08:00, closes Mar 3 00:00
    Mar 1  12:00  .3 8080 opens                  -> F2 medium, never decided, gone Mar 2 06:00
    Mar 1  18:00, Mar 2 00:00: no scan           -> late gap, F3 high (ack 07:00, flag Mar 3 10:00)
    Mar 2  06:00  .3 22 opens                    -> F4 high, approved 07:30
    Mar 2  18:00  .2 5900 vnc opens              -> F5 critical, approved 23:00 (mitigated)
    Mar 4  12:00  the scan fails                 -> failed gap (refreshes F3)
    Mar 4  18:00  .3 5900 vnc opens              -> F7 critical, flagged Mar 8 02:00 (after end)
    Mar 5  06:00  approval of .3 443 past review -> F6 medium approval_expired, never decided
    Mar 7  18:00  last scan; the period ends Mar 8 00:00
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portconsole.core.adapters.approvals import ApprovalRegistry
from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.store import Store
from portconsole.core.domain.approval import Approval
from portconsole.core.domain.coverage import Coverage
from portconsole.core.domain.detect import detect
from portconsole.core.domain.finding import Finding, FindingCandidate
from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult
from portconsole.core.domain.report_figures import figures_body, p90
from portconsole.core.errors import UserError
from portconsole.core.identity import Actor
from portconsole.core.services.report import export_report, manifest_path, verify_manifest
from portconsole.core.services.schedule import Scheduler
from portconsole.core.settings import GroupSettings, Settings, SeveritySettings
from portconsole.core.timeutil import iso

H2, H3 = "127.0.0.2", "127.0.0.3"
START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 8, tzinfo=UTC)
ACTOR = Actor(user="auditor", host="reports", origin="cli")
HOUR = 3600.0


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def make_settings() -> Settings:
    return Settings(
        scope=["127.0.0.0/8"],
        groups={
            "web": GroupSettings(
                targets=[H2, H3], ports="22,80,443,2323,5900,6379,8080", interval=21600, jitter=0
            )
        },
        severity=SeveritySettings(by_port={"5900": "critical"}),
    )


@dataclass
class History:
    """The monitor's pipeline (ingest, gaps, detect, findings, audit) at chosen times."""

    root: Path
    settings: Settings = field(default_factory=make_settings)
    clock: list[datetime] = field(default_factory=lambda: [at(28, 11, 59, month=2)])

    def __post_init__(self) -> None:
        self.data = self.root / "data"
        self.store = Store(self.data, self.settings.retention)
        self.audit = self.store.journal
        self.approvals = ApprovalRegistry(self.store.hot, self.store.lock, self.settings)
        self.book = FindingBook(self.store.hot, self.store.lock)
        self.scheduler = Scheduler(
            self.settings.groups,
            self.data / "schedule.json",
            now_fn=lambda: self.clock[0],
            grace=self.settings.daemon.gap_grace_seconds,
            lock=self.store.lock,
        )

    def scan(
        self, finished: datetime, hosts: dict[str, list[PortObservation]], outcome: str = "success"
    ) -> str:
        started = finished - timedelta(seconds=30)
        self.clock[0] = started
        self.scheduler.mark_started("web", started)
        scan_id = "web-" + finished.strftime("%Y%m%dT%H%M")
        result = ScanResult(
            scan_id=scan_id,
            started_at=started,
            finished_at=finished,
            nmap_version="7.93",
            scan_type="syn",
            privileged=True,
            targets=[H2, H3],
            addresses=[H2, H3],
            ports=self.settings.group_ports("web"),
            protocols=["tcp"],
            hosts=[HostObservation(a, "up", "", ports) for a, ports in hosts.items()],
            outcome=outcome,
            origin="daemon",
            group="web",
        )
        known = [h.address for h in self.store.hosts() if h.status == "up"]
        self.store.ingest(result)
        self.clock[0] = finished
        self.scheduler.mark_finished("web", finished, outcome, 2, len(result.hosts))
        gaps = self.scheduler.find_gaps(finished)
        self.audit.append(
            "scan.end",
            actor=ACTOR,
            outcome="success" if outcome == "success" else "failure",
            resource={"scan_id": scan_id},
            at=finished,
        )
        for gap in gaps:
            self.audit.append(
                "monitoring.gap",
                actor=ACTOR,
                outcome="failure",
                resource={"group": gap.group},
                details=gap.to_json(),
                at=finished,
            )
        candidates = detect(
            result,
            self.store.current_ports(),
            known,
            self.approvals.active(),
            self.settings,
            finished,
            {a.host for a in self.approvals.all()},
        )
        candidates += [
            FindingCandidate(
                "monitoring_gap",
                gap.group,
                None,
                None,
                "",
                "high",
                scan_id,
                {
                    "group": gap.group,
                    "start": iso(gap.start),
                    "end": iso(gap.end),
                    "reason": gap.reason,
                },
            )
            for gap in gaps
        ]
        self.book.ingest_candidates(candidates, finished, self.settings.scan.flap_window)
        self.book.resolve_missing(
            {c.key for c in candidates}, Coverage.of_scan(result).covers, finished, scan_id
        )
        return scan_id

    def find(self, kind: str, host: str, port: int | None = None) -> Finding:
        (found,) = [f for f in self.book.all() if (f.kind, f.host, f.port) == (kind, host, port)]
        return found

    def approve_port(
        self, host: str, port: int, service: str, when: datetime, mitigation: str = ""
    ) -> Approval:
        return self.approvals.add(
            host=host,
            port=port,
            proto="tcp",
            service=service,
            justification=f"{service} for operations",
            owner="ops team",
            requester="dana",
            approver="erin",
            actor="erin",
            ticket=f"CHG-{port}",
            approved_at=when,
            mitigation=mitigation,
            now=when,
        )

    def export(self, out: Path, fmt: str, **kwargs: Any) -> list[Path]:
        kwargs.setdefault("now", at(10, 9))
        return export_report(
            store=self.store,
            findings=self.book,
            approvals=self.approvals,
            audit=self.audit,
            settings=self.settings,
            actor=ACTOR,
            out=out,
            fmt=fmt,
            **kwargs,
        )


def ports_at(moment: datetime) -> dict[str, list[PortObservation]]:
    def p(port: int, service: str) -> PortObservation:
        return PortObservation(port, "tcp", "open", service)

    h2 = [p(80, "http"), p(2323, "telnet")]
    h3 = [p(443, "https")]
    if at(1, 6) <= moment < at(3, 0):
        h2.append(p(6379, "redis"))
    if moment >= at(2, 18):
        h2.append(p(5900, "vnc"))
    if moment >= at(28, 18, month=2):
        h3.append(p(6379, "redis"))
    if at(1, 12) <= moment < at(2, 6):
        h3.append(p(8080, "http-proxy"))
    if moment >= at(2, 6):
        h3.append(p(22, "ssh"))
    if moment >= at(4, 18):
        h3.append(p(5900, "vnc"))
    return {H2: h2, H3: h3}


def build_history(root: Path) -> History:
    h = History(root)
    # Approvals recorded before the history starts (one retired before the period).
    h.approvals.add(host=H2, port=80, proto="tcp", service="http", justification="public web",
                    owner="web team", requester="dana", approver="erin", actor="erin",
                    ticket="CHG-1", approved_at=at(15, 0, month=1), review_by=at(1, 0, month=7),
                    now=at(15, 0, month=1))  # fmt: skip
    h.approvals.add(host=H3, port=443, proto="tcp", service="https", justification="api",
                    owner="api team", requester="dana", approver="erin", actor="erin",
                    ticket="CHG-2", approved_at=at(1, 0, month=10).replace(year=2025),
                    review_by=at(5, 0), now=at(1, 0, month=1))  # fmt: skip
    h.approvals.add(host=H2, port=2323, proto="tcp", service="telnet",
                    justification="legacy switch console", owner="network team",
                    requester="dana", approver="erin", actor="erin", ticket="CHG-3",
                    approved_at=at(1, 0, month=2), review_by=at(1, 0, month=4),
                    mitigation="reachable only from the jump host VLAN",
                    now=at(1, 0, month=2))  # fmt: skip
    retired = h.approvals.add(host=H2, port=443, proto="tcp", service="https",
                              justification="old site", owner="web team", requester="dana",
                              approver="erin", actor="erin", approved_at=at(1, 0, month=12)
                              .replace(year=2025), review_by=at(1, 0, month=5),
                              now=at(1, 0, month=1))  # fmt: skip
    h.approvals.retire(retired.id, "erin", "site moved", now=at(15, 0, month=2))

    slots = [at(28, 12, month=2), at(28, 18, month=2)]
    moment = START
    while moment < END:
        if moment not in (at(1, 18), at(2, 0)):
            slots.append(moment)
        moment += timedelta(hours=6)

    decisions: list[tuple[datetime, Callable[[], object]]] = [
        (at(1, 8), lambda: h.book.flag(h.find("unapproved_port", H2, 6379).id, "bob",
                                       "nobody asked for redis here", now=at(1, 8))),
        (at(2, 7), lambda: h.book.ack(h.find("monitoring_gap", "web").id, "bob", now=at(2, 7))),
        (at(2, 7, 30), lambda: h.book.approve(
            h.find("unapproved_port", H3, 22).id, "carol",
            h.approve_port(H3, 22, "ssh", at(2, 7, 30)).id, "admin ssh", "CHG-22",
            now=at(2, 7, 30))),
        (at(2, 23), lambda: h.book.approve(
            h.find("unapproved_port", H2, 5900).id, "carol",
            h.approve_port(H2, 5900, "vnc", at(2, 23), mitigation="VPN only").id,
            "remote support", now=at(2, 23))),
        (at(3, 10), lambda: h.book.flag(h.find("monitoring_gap", "web").id, "bob",
                                        "leader host was down", now=at(3, 10))),
    ]  # fmt: skip
    for slot in slots:
        while decisions and decisions[0][0] <= slot:
            decisions.pop(0)[1]()
        if slot == at(4, 12):
            h.scan(slot, {}, outcome="failed")
        else:
            h.scan(slot, ports_at(slot))
    for _, decide in decisions:
        decide()
    # After the period: a decision and an approval the pack must not count.
    h.book.flag(h.find("unapproved_port", H3, 5900).id, "bob", "shut it", now=at(8, 2))
    h.approve_port(H2, 8080, "http", at(10, 0))
    return h


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return build_history(tmp_path_factory.mktemp("history"))


@pytest.fixture(scope="module")
def pack(history: History, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("pack") / "pack.json"
    history.export(out, "json", start=START, end=END)
    return dict(json.loads(out.read_bytes()))


def by_key(pack: dict[str, Any], kind: str, host: str, port: int | None = None) -> dict[str, Any]:
    (row,) = [
        f for f in pack["findings"] if (f["kind"], f["host"], f["port"]) == (kind, host, port)
    ]
    return dict(row)


# --------------------------------------------------------------------------- figures


def test_p90_is_nearest_rank_and_median_is_the_middle() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert p90(values) == 18.0  # rank ceil(0.9 * 20) = 18
    assert p90([5.0]) == 5.0 and p90([]) is None


def test_scan_cadence_lists_every_scan_and_both_gaps(pack: dict[str, Any]) -> None:
    scans = pack["cadence"]["scans"]
    assert len(scans) == 26  # 28 six-hour slots, two missed
    assert pack["counts"]["scans"] == 26 and pack["counts"]["scans_not_successful"] == 1
    failed = [s for s in scans if s["outcome"] != "success"]
    assert [(s["scan_id"], s["outcome"]) for s in failed] == [("web-20260304T1200", "failed")]
    first = scans[0]
    assert (
        first["started_at"] == "2026-03-01T00:00:00Z"
        or first["finished_at"] == "2026-03-01T00:00:00Z"
    )
    assert all(s["duration_seconds"] == 30.0 for s in scans)
    gaps = [
        (g["reason"], g["start"], g["end"], g["duration_seconds"]) for g in pack["cadence"]["gaps"]
    ]
    assert gaps == [
        ("late", "2026-03-01T17:59:30Z", "2026-03-02T05:59:30Z", 43200.0),
        ("failed", "2026-03-04T11:59:30Z", "2026-03-04T12:00:00Z", 30.0),
    ]
    assert pack["counts"]["gaps"] == 2
    (group,) = pack["cadence"]["groups"]
    assert group == {
        "group": "web",
        "scans": 26,
        "successful": 25,
        "not_successful": 1,
        "gaps": 2,
        "interval_seconds": 21600,
        "allowed_seconds": 21720,
        "longest_without_success_seconds": 18 * HOUR,  # Mar 1 12:00 -> Mar 2 06:00
        "exceeded": True,
    }


def test_continuity_of_a_journal_without_group_definitions(pack: dict[str, Any]) -> None:
    # This history has no settings events: the ledger starts at the group's first scan and
    # says so, and the scope says the groups come from the settings file.
    (web,) = pack["continuity"]["groups"]
    assert web["configured_at"] == "2026-02-28T12:00:00Z"
    assert "first scan" in web["configured_basis"]
    assert web["from"] == iso(START) and web["window_seconds"] == 21720
    gaps = [(e["start"], e["end"], e["cause"]) for e in web["entries"] if e["kind"] == "gap"]
    assert gaps == [
        # The late gap as recorded (from when the 18:00 scan was due) to the next success.
        ("2026-03-01T17:59:30Z", "2026-03-02T06:00:00Z",
         "late: the scheduled scan did not start on time"),
        # The failed run at 12:00 is why coverage lapsed until the 18:00 scan.
        ("2026-03-04T11:59:30Z", "2026-03-04T18:00:00Z",
         "failed: a scan run failed, was cancelled or never finished"),
    ]  # fmt: skip
    assert pack["counts"]["gaps"] == 2 and pack["counts"]["recorded_gaps"] == 2
    assert web["covered_seconds"] + web["gap_seconds"] == (END - START).total_seconds()
    assert any("no group definitions" in text for text in pack["scope"]["limits"])
    assert pack["scope"]["groups_source"].startswith("the current settings file")


def test_every_finding_with_time_to_detect_and_respond(pack: dict[str, Any]) -> None:
    expected = {
        # key: (severity, ttd, ttr, status at end, breach, carried over)
        ("unapproved_port", H3, 6379): ("high", 6 * HOUR, None, "new",
                                        "no response by the period's end", True),
        ("unapproved_port", H2, 6379): ("high", 6 * HOUR, 2 * HOUR, "resolved", "", False),
        # Remediation (the port gone at a later scan) and acknowledgement are responses.
        ("unapproved_port", H3, 8080): ("medium", 6 * HOUR, 18 * HOUR, "resolved", "", False),
        ("monitoring_gap", "web", None): ("high", 12 * HOUR + 30, 1 * HOUR, "flagged", "",
                                          False),
        ("unapproved_port", H3, 22): ("high", 18 * HOUR, 1.5 * HOUR, "approved", "", False),
        ("unapproved_port", H2, 5900): ("critical", 6 * HOUR, 5 * HOUR, "approved",
                                        "responded after the SLA", False),
        ("unapproved_port", H3, 5900): ("critical", 12 * HOUR, None, "new",
                                        "no response by the period's end", False),
        ("approval_expired", H3, 443): ("medium", 6 * HOUR, None, "new", "", False),
    }  # fmt: skip
    got = {
        (f["kind"], f["host"], f["port"]): (
            f["severity"],
            f["time_to_detect_seconds"],
            f["time_to_respond_seconds"],
            f["status_at_end"],
            f["sla_breach"],
            f["carried_over"],
        )
        for f in pack["findings"]
    }
    assert got == expected
    assert pack["counts"]["findings"] == 8
    assert pack["counts"]["findings_detected"] == 7
    assert pack["counts"]["findings_carried_over"] == 1
    assert pack["counts"]["unapproved_port_findings"] == 5
    # The baseline of each port finding is the newest earlier scan that covered it; the
    # failed scan covered nothing, so the .3 vnc port's baseline is the one before it.
    vnc = by_key(pack, "unapproved_port", H3, 5900)
    assert vnc["detected"] == "2026-03-04T18:00:00Z"
    assert vnc["baseline_scan"] == "web-20260304T0600"
    assert vnc["time_to_detect_basis"] == "last scan that did not see the port open"
    ssh = by_key(pack, "unapproved_port", H3, 22)
    assert ssh["baseline_scan"] == "web-20260301T1200"  # the gap hid two scans
    # The decision after the period's end is not counted, nor in the timeline.
    assert vnc["decided"] is None
    assert [e["step"] for e in vnc["timeline"]] == ["detected"]
    gap = by_key(pack, "monitoring_gap", "web")
    assert [e["step"] for e in gap["timeline"]] == ["detected", "acknowledged", "decided"]
    assert gap["decided"] == "2026-03-03T10:00:00Z" and gap["decided_by"] == "bob"


def test_response_metrics_per_severity(pack: dict[str, Any]) -> None:
    ttd = pack["metrics"]["time_to_detect"]
    ttr = pack["metrics"]["time_to_respond"]

    def stats(count: int, med: float | None, p: float | None, top: float | None) -> dict[str, Any]:
        return {"count": count, "median_seconds": med, "p90_seconds": p, "max_seconds": top}

    # The headline counts port findings only: the gap and the expired approval are apart.
    # critical: .2 vnc 6h, .3 vnc 12h
    assert ttd["critical"] == stats(2, 9 * HOUR, 12 * HOUR, 12 * HOUR)
    # high: .2 redis 6h, .3 ssh 18h (the carried-over finding is not counted)
    assert ttd["high"] == stats(2, 12 * HOUR, 18 * HOUR, 18 * HOUR)
    assert ttd["medium"] == stats(1, 6 * HOUR, 6 * HOUR, 6 * HOUR)
    assert ttd["low"] == stats(0, None, None, None)
    # all: 6h, 6h, 6h, 12h, 18h -> p90 rank ceil(4.5) = 5
    assert ttd["all"] == stats(5, 6 * HOUR, 18 * HOUR, 18 * HOUR)
    assert ttr["critical"] == stats(1, 5 * HOUR, 5 * HOUR, 5 * HOUR)
    # high: 1.5h, 2h
    assert ttr["high"] == stats(2, 1.75 * HOUR, 2 * HOUR, 2 * HOUR)
    # medium: .3 8080 gone at the scan 18h after detection (remediated is a response)
    assert ttr["medium"] == stats(1, 18 * HOUR, 18 * HOUR, 18 * HOUR)
    # all: 1.5h, 2h, 5h, 18h -> median (2h + 5h) / 2, p90 rank 4
    assert ttr["all"] == stats(4, 3.5 * HOUR, 18 * HOUR, 18 * HOUR)
    assert pack["metrics"]["findings_counted"] == 5
    assert pack["metrics"]["findings_detected"] == 7
    assert len(pack["metrics"]["undecided_at_end"]) == 3
    assert pack["metrics"]["port_kinds"] == [
        "unapproved_port", "insecure_service", "service_changed", "approved_port_gone"
    ]  # fmt: skip
    by_kind = pack["metrics"]["by_kind"]
    assert set(by_kind) == {"unapproved_port", "monitoring_gap", "approval_expired"}
    # The gap was acknowledged an hour after detection: that is its first response.
    assert by_kind["monitoring_gap"]["time_to_respond"]["all"] == stats(1, HOUR, HOUR, HOUR)
    assert by_kind["monitoring_gap"]["time_to_detect"]["high"] == stats(
        1, 12 * HOUR + 30, 12 * HOUR + 30, 12 * HOUR + 30
    )
    assert by_kind["approval_expired"]["time_to_detect"]["all"] == stats(
        1, 6 * HOUR, 6 * HOUR, 6 * HOUR
    )
    assert by_kind["unapproved_port"]["time_to_detect"] == ttd


def test_sla_breaches(pack: dict[str, Any]) -> None:
    breaches = {
        (b["kind"], b["host"], b["port"]): (b["sla_hours"], b["response_seconds"], b["breach"])
        for b in pack["metrics"]["sla_breaches"]
    }
    # The gap was acknowledged within its SLA (an acknowledgement is a response).
    assert breaches == {
        ("unapproved_port", H3, 6379): (24.0, None, "no response by the period's end"),
        ("unapproved_port", H2, 5900): (4.0, 5 * HOUR, "responded after the SLA"),
        ("unapproved_port", H3, 5900): (4.0, None, "no response by the period's end"),
    }
    assert pack["counts"]["sla_breaches"] == 3
    assert pack["parameters"]["sla_hours"] == {"critical": 4.0, "high": 24.0, "low": 168.0,
                                               "medium": 72.0}  # fmt: skip


def test_approvals_register_due_overdue_and_insecure(pack: dict[str, Any]) -> None:
    register = {(r["host"], r["port"]): r for r in pack["approvals"]["register"]}
    # The one retired before the period and the one added after it are not listed.
    assert set(register) == {(H2, 80), (H3, 443), (H2, 2323), (H3, 22), (H2, 5900)}
    assert {k: r["review"] for k, r in register.items()} == {
        (H2, 80): "ok",
        (H3, 443): "overdue",
        (H2, 2323): "due",
        (H3, 22): "ok",
        (H2, 5900): "ok",
    }
    assert pack["approvals"]["overdue"] == [register[(H3, 443)]["id"]]
    assert pack["approvals"]["due"] == [register[(H2, 2323)]["id"]]
    ssh = register[(H3, 22)]
    assert (ssh["owner"], ssh["requester"], ssh["approver"], ssh["ticket"]) == (
        "ops team", "dana", "erin", "CHG-22",
    )  # fmt: skip
    assert ssh["review_by"] == "2026-09-02T07:30:00Z"
    insecure = {(i["host"], i["port"]): i["mitigation"] for i in pack["approvals"]["insecure"]}
    assert insecure == {
        (H2, 2323): "reachable only from the jump host VLAN",
        (H2, 5900): "VPN only",
    }
    counts = pack["counts"]
    assert (counts["approvals"], counts["approvals_overdue"], counts["approvals_due"]) == (5, 1, 1)
    assert counts["insecure_approvals"] == 2


def test_audit_chain_and_events_in_the_period(pack: dict[str, Any], history: History) -> None:
    chain = pack["audit_chain"]
    assert chain["ok"] is True and chain["reason"] == "ok"
    assert chain["head"]["seq"] == chain["events"]
    assert pack["audit"]["by_action"]["scan.end"] == 26
    assert pack["audit"]["by_action"]["monitoring.gap"] == 2
    in_period = [e for e in history.audit.events() if START <= e.at <= END]
    assert pack["counts"]["audit_events"] == len(in_period)


def test_compliance_mapping_and_no_claim_to_replace_vulnerability_scans(
    pack: dict[str, Any],
) -> None:
    controls = {(c["framework"].split()[0], c["control"]) for c in pack["compliance"]}
    for control in ("1.2.5", "1.2.7", "10.2", "10.7", "11.5"):
        assert ("PCI", control) in controls
    assert ("HIPAA", "164.308(a)(1)(ii)(D)") in controls and ("HIPAA", "164.312(b)") in controls
    for control in ("A.8.9", "A.8.16", "A.8.20"):
        assert ("ISO/IEC", control) in controls
    assert "does NOT replace vulnerability scanning" in pack["statement"]
    assert "11.3" in pack["statement"]
    text = json.dumps(pack["compliance"]).lower()
    assert "replaces vulnerability scanning" not in text
    figures = {c["control"]: c["figures"] for c in pack["compliance"]}
    assert figures["10.7"] == "26 scans, 1 not successful, 2 gaps."
    assert figures["1.2.7"] == (
        "0 reviews recorded; 1 reviews missed in the period; 1 overdue and 1 due within 30 "
        "days at the end."
    )


# --------------------------------------------------------------------------- point in time


def test_point_in_time_matches_the_store_and_approvals(history: History, tmp_path: Path) -> None:
    moment = at(6, 3)
    out = tmp_path / "exposure.json"
    history.export(out, "json", at=moment)
    report = json.loads(out.read_bytes())
    state = history.store.state_at(moment)
    assert [(p["host"], p["port"], p["proto"], p["seen_by_scan"]) for p in report["ports"]] == [
        (p.host, p.port, p.proto, p.last_seen_scan_id) for p in state.open_ports
    ]
    status = {(p["host"], p["port"]): p["approval"] for p in report["ports"]}
    assert status == {
        (H2, 80): "approved",
        (H2, 2323): "approved",
        (H2, 5900): "approved",
        (H3, 22): "approved",
        (H3, 443): "expired",  # review-by was Mar 5
        (H3, 5900): "unapproved",
        (H3, 6379): "unapproved",
    }
    assert {p["seen_by_scan"] for p in report["ports"]} == {"web-20260306T0000"}
    telnet = next(p for p in report["ports"] if p["port"] == 2323)
    assert telnet["justification"] == "legacy switch console"
    assert telnet["owner"] == "network team" and telnet["insecure"] is True
    assert report["counts"]["open_ports"] == 7 and report["counts"]["unapproved"] == 2
    assert report["counts"]["expired"] == 1 and report["uncovered"] == []
    assert report["history_complete"] is True


def test_point_in_time_lists_what_no_scan_covered(history: History, tmp_path: Path) -> None:
    moment = at(2, 3)  # in the late gap: the last scan finished 15 hours before
    out = tmp_path / "gap.json"
    history.export(out, "json", at=moment, coverage_window=timedelta(hours=12))
    report = json.loads(out.read_bytes())
    state = history.store.state_at(moment, coverage_window=timedelta(hours=12))
    assert [(u["host"], u["port"]) for u in report["uncovered"]] == [
        (u.host, u.port) for u in state.uncovered
    ]
    assert report["counts"]["uncovered"] == len(state.uncovered) > 0
    assert {(u["host"], u["port"]) for u in report["uncovered"] if u["port"] is None} == {
        (H2, None),
        (H3, None),
    }
    assert all(p["covered"] is False for p in report["ports"])
    assert report["parameters"]["coverage_window_seconds"] == 12 * 3600


# --------------------------------------------------------------------------- outputs


def test_every_format_carries_the_same_figures_and_a_matching_manifest(
    history: History, tmp_path: Path
) -> None:
    figures = set()
    for fmt, name in (("html", "pack.html"), ("md", "pack.md"), ("json", "pack.json"),
                      ("csv", "pack-csv")):  # fmt: skip
        out = tmp_path / name
        written = history.export(out, fmt, start=START, end=END)
        manifest = manifest_path(out, fmt)
        assert manifest in written and manifest.exists()
        data = json.loads(manifest.read_bytes())
        assert verify_manifest(manifest) == []
        listed = {manifest.parent / f["name"] for f in data["files"]}
        assert listed == set(written[: written.index(manifest)])
        for entry in data["files"]:
            blob = (manifest.parent / entry["name"]).read_bytes()
            assert hashlib.sha256(blob).hexdigest() == entry["sha256"]
            assert len(blob) == entry["bytes"]
        assert data["generated_at"] == "2026-03-10T09:00:00Z"
        assert data["generated_by"] == str(ACTOR) and data["format"] == fmt
        assert data["parameters"]["from"] == iso(START) and data["parameters"]["to"] == iso(END)
        assert data["counts"]["scans"] == 26
        figures.add(data["figures_sha256"])
        for path in written:
            assert path.stat().st_mode & 0o777 == 0o600
    assert len(figures) == 1  # every format shows the same figures
    if fmt == "csv":
        names = {p.name for p in written}
        assert {"summary.csv", "scans.csv", "findings.csv", "timeline.csv",
                "sla_breaches.csv", "approvals.csv", "compliance.csv"} <= names  # fmt: skip
    # A changed file no longer matches its manifest.
    html = tmp_path / "pack.html"
    html.write_bytes(html.read_bytes().replace(b"26", b"27", 1))
    assert verify_manifest(manifest_path(html, "html")) == ["pack.html: sha256 differs (altered)"]


def test_regenerating_later_gives_the_same_figures(history: History, tmp_path: Path) -> None:
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    history.export(one, "json", start=START, end=END, now=at(10, 9))
    history.export(two, "json", start=START, end=END, now=at(20, 9))
    first, second = json.loads(one.read_bytes()), json.loads(two.read_bytes())
    assert first["generated"]["at"] != second["generated"]["at"]
    assert first["scope"]["generated_at"] != second["scope"]["generated_at"]
    # Only the generation block, the chain then, and the scope's generation time differ.
    assert figures_body(first) == figures_body(second)
    assert first["figures_sha256"] == second["figures_sha256"]


def test_html_is_self_contained_and_prints(history: History, tmp_path: Path) -> None:
    out = tmp_path / "pack.html"
    history.export(out, "html", start=START, end=END)
    text = out.read_text("utf-8")
    assert text.startswith("<!DOCTYPE html>") and "@media print" in text
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "src=" not in text and "@import" not in text and "url(" not in text
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))
    assert "default-src &#x27;none&#x27;" in text or "default-src 'none'" in text
    # The figures appear: the high TTR max (2h) and both gaps, highlighted in the cadence
    # and in the continuity ledger.
    assert "Time to respond" in text and ">2h 0m<" in text
    assert text.count('<td class="flag">GAP</td>') == 4
    assert "does NOT replace vulnerability scanning" in text


def test_export_is_an_audit_event_with_the_manifest_hash(history: History, tmp_path: Path) -> None:
    out = tmp_path / "audited.md"
    written = history.export(out, "md", start=START, end=END)
    event = history.audit.events()[-1]
    assert event.action == "export" and event.outcome == "success"
    assert event.actor["user"] == "auditor"
    assert event.details["format"] == "md" and event.details["from"] == iso(START)
    assert event.details["manifest_sha256"] == hashlib.sha256(written[-1].read_bytes()).hexdigest()
    assert event.details["files"][0]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert history.audit.verify().ok


def test_progress_is_reported_to_the_end(history: History, tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    history.export(tmp_path / "p.json", "json", start=START, end=END,
                   progress=lambda stage, fraction: seen.append((stage, fraction)))  # fmt: skip
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and seen[-1] == ("done", 1.0) and len(seen) >= 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "say what to report"),
        ({"at": at(5, 0), "start": START}, "not both"),
        ({"start": END, "end": START}, "must be after"),
        ({"at": at(1, 0, month=12)}, "in the future"),
    ],
)
def test_bad_parameters_are_user_errors(
    history: History, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        history.export(tmp_path / "x.html", "html", **kwargs)


def test_wrong_output_kind_is_refused(history: History, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown report format"):
        history.export(tmp_path / "x.pdf", "pdf", start=START, end=END)
    (tmp_path / "file.csv").write_text("x")
    with pytest.raises(UserError, match="name a folder"):
        history.export(tmp_path / "file.csv", "csv", start=START, end=END)
    assert history.audit.events()[-1].outcome == "failure"  # a failed export is on record
    # An existing folder is not an error for html: it becomes a verifiable pack folder.
    written = history.export(tmp_path, "html", start=START, end=END)
    assert tmp_path / "report.html" in written and tmp_path / "SHA256SUMS" in written


def test_a_broken_chain_shows_in_the_pack(tmp_path: Path) -> None:
    h = History(tmp_path)
    h.scan(at(1, 0), ports_at(at(1, 0)))
    h.scan(at(1, 6), ports_at(at(1, 6)))
    bad = next(e.seq for e in h.audit.events() if e.action == "scan.end")
    segment = next((h.data / "journal").glob("*.jsonl"))
    segment.write_bytes(segment.read_bytes().replace(b'"scan.end"', b'"scan.END"', 1))
    out = tmp_path / "pack.json"
    h.export(out, "json", start=START, end=END)
    chain = json.loads(out.read_bytes())["audit_chain"]
    assert chain["ok"] is False and chain["first_bad_seq"] == bad
    md = tmp_path / "pack.md"
    h.export(md, "md", start=START, end=END)
    assert "AUDIT CHAIN BROKEN" in md.read_text("utf-8")


# --------------------------------------------------------------------------- escaping

SCRIPT = "<script>alert(1)</script>"
FORMULA = "=cmd|' /C calc'!A0"
RICH = "[bold red]boom[/bold red]"
ANSI = "\x1b[31mred\x1b[0m"
MD_LINK = "x | y ](javascript:alert(1))"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> History:
    h = History(tmp_path_factory.mktemp("hostile"))
    h.approvals.add(host=H2, port=80, proto="tcp", service="http", justification=FORMULA,
                    owner=MD_LINK, requester=RICH, approver="erin", actor="erin",
                    ticket=SCRIPT, approved_at=at(1, 0, month=2), mitigation=ANSI,
                    now=at(1, 0, month=2))  # fmt: skip
    ports = [
        PortObservation(80, "tcp", "open", "http", SCRIPT, FORMULA, RICH),
        PortObservation(8080, "tcp", "open", f"{ANSI}{MD_LINK}", SCRIPT, FORMULA, ANSI),
    ]
    h.clock[0] = at(1, 0) - timedelta(seconds=30)
    h.scan(at(1, 0), {H2: ports})
    finding = h.find("unapproved_port", H2, 8080)
    h.book.note(finding.id, f"{RICH}{ANSI}", f"{SCRIPT} {FORMULA} {MD_LINK}", now=at(1, 1))
    h.book.flag(finding.id, "bob", f"{FORMULA} {SCRIPT}", now=at(1, 2))
    return h


def _hostile_exports(h: History, root: Path, fmt: str) -> list[Path]:
    suffix = "" if fmt == "csv" else f".{fmt}"
    files = h.export(root / f"pack-{fmt}{suffix}", fmt, start=START, end=END)
    files += h.export(root / f"pit-{fmt}{suffix}", fmt, at=at(1, 3))
    # The report's own files (a pack folder also holds the journal, sums and a checker).
    return [
        f
        for f in files
        if f.suffix in (".csv", ".html", ".md", ".json")
        and not f.name.endswith("manifest.json")
        and f.name != "pack.json"
    ]


def test_hostile_text_is_inert_in_html(hostile: History, tmp_path: Path) -> None:
    for path in _hostile_exports(hostile, tmp_path, "html"):
        text = path.read_text("utf-8")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "<script" not in text.lower()
        assert "\x1b" not in text
        assert "javascript:" not in re.findall(r'href="([^"]*)"', text)
        assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))


def _md_cells(line: str) -> list[str]:
    """Split a Markdown table row on pipes that are not escaped."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_hostile_text_is_inert_in_markdown(hostile: History, tmp_path: Path) -> None:
    seen = ""
    for path in _hostile_exports(hostile, tmp_path, "md"):
        text = path.read_text("utf-8")
        seen += text
        assert "<script" not in text and "\x1b" not in text
        assert "](javascript:" not in text and "[bold red]" not in text
        lines = text.splitlines()
        for number, line in enumerate(lines):
            if line.startswith("|---"):
                width = len(_md_cells(lines[number - 1]))
                rows = lines[number + 1 :]
                for row in rows[
                    : next((i for i, r in enumerate(rows) if not r.startswith("|")), len(rows))
                ]:
                    assert len(_md_cells(row)) == width, row  # no cell broke out
    assert "\\[bold red\\]" in seen and "&lt;script&gt;" in seen


def test_hostile_text_is_inert_in_csv(hostile: History, tmp_path: Path) -> None:
    cells_seen = 0
    texts = ""
    for path in _hostile_exports(hostile, tmp_path, "csv"):
        raw = path.read_text("utf-8")
        texts += raw
        assert "\x1b" not in raw
        for row in csv.reader(io.StringIO(raw)):
            for cell in row:
                cells_seen += 1
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r", "|", "%"):
                    float(cell)  # only a number may start like a formula
    assert cells_seen > 100
    assert "'=cmd|' /C calc'!A0" in texts  # kept readable, but inert


def test_point_in_time_before_the_history_says_it_is_unknown(
    history: History, tmp_path: Path
) -> None:
    out = tmp_path / "early.md"
    history.export(out, "md", at=at(1, 0, month=1))
    text = out.read_text("utf-8")
    assert "the state before then is unknown" in text
    data = json.loads(manifest_path(out, "md").read_bytes())
    assert data["counts"]["open_ports"] == 0 and data["report"] == "point_in_time"
