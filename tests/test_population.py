"""Populations and the one rule "approved at T means recorded by T": detection, point-in-time
reports and the pack's populations agree, and backfilled evidence says so.

The history (group "web", 127.0.0.2-3, a scan every day at 06:00, everything through the
Monitor on a real store with the replayed scanner at a pinned clock):

    Nov 1  06:00  .2 22 ssh, .2 443 https, .3 22 ssh open  -> three unapproved_port findings
    Nov 1  09:00  .2 22 approved (alice asked at 08:00, bob approves)
    Nov 9  12:00  an nmap report dated Oct 25 is imported (backfilled): .3 up with nothing
                  open, .4 (never scanned live) with 80 open
    Nov 10 10:00  a baseline approves .2 443, naming approved_at 2026-10-01 (recorded now)
    Nov 15 12:00  the period (Nov 1 - Nov 15 12:00) ends
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portconsole.cli import main
from portconsole.core.adapters.replay import ReplayScanner
from portconsole.core.domain.population import SERIES_LIMIT, series_times
from portconsole.core.domain.population_sections import population_sections
from portconsole.core.identity import Actor
from portconsole.core.monitor import Monitor
from portconsole.core.services.cycle import CycleResult
from portconsole.core.settings import load_settings
from portconsole.core.timeutil import iso
from tests.assessor_history import nmap_report
from tests.conftest import write_config

H2, H3, H4 = "127.0.0.2", "127.0.0.3", "127.0.0.4"
ALICE = Actor(user="alice", host="ops1", origin="cli")
BOB = Actor(user="bob", host="ops2", origin="cli")
SCANNER = Actor(user="portconsole", host="scanner1", origin="daemon")
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 11, 15, 12, tzinfo=UTC)
SAMPLE = datetime(2026, 11, 6, tzinfo=UTC)  # `--sample 2026-11-05`: the end of that day
BASELINE = """\
version: 1
defaults:
  owner: web-team
  requester: alice
  approver: bob
  approved_at: 2026-10-01
hosts:
  - selector: 127.0.0.2
    rules:
      - ports: 443
        service: https
        justification: Card portal
        ticket: CHG-7
"""


def day(d: int, hour: int = 6, month: int = 11) -> datetime:
    return datetime(2026, month, d, hour, tzinfo=UTC)


@dataclass
class PopulationHistory:
    root: Path
    now: list[datetime] = field(default_factory=lambda: [day(31, 12, month=10)])
    cycles: dict[datetime, CycleResult] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config = write_config(
            self.root / "config.toml", {"web": ([f"{H2}-3"], "22,80,443,8080")}
        )
        settings, paths = load_settings(self.config, self.root / "data")
        self.network = ReplayScanner(
            settings.scope_obj(),
            {H2: {22: "ssh", 443: "https"}, H3: {22: "ssh"}},
            clock=lambda: self.now[0],
        )
        self.monitor = Monitor(
            settings, paths, origin="daemon", scanner=self.network, clock=lambda: self.now[0]
        )

    def as_(self, actor: Actor, moment: datetime) -> Monitor:
        self.now[0] = moment
        self.monitor.actor = actor
        return self.monitor

    def scan(self, moment: datetime) -> CycleResult:
        result = self.as_(SCANNER, moment).run_cycle(group="web")
        self.cycles[moment] = result
        return result

    def finding(self, host: str, port: int, kind: str = "unapproved_port") -> dict[str, Any]:
        found = [
            f
            for f in self.monitor.findings(include_closed=True)
            if (f.host, f.port, f.kind) == (host, port, kind)
        ]
        assert len(found) == 1, found
        return {"id": found[0].id, "status": found[0].status, "details": found[0].details}

    def report(self, name: str, **kwargs: Any) -> dict[str, Any]:
        out = self.root / f"{name}.json"
        # Generated at the history's clock (never before the period's end).
        self.as_(Actor(user="auditor", host="qsa", origin="cli"), max(self.now[0], END))
        self.monitor.export_report(out, fmt="json", **kwargs)
        return dict(json.loads(out.read_text()))


def build(root: Path) -> PopulationHistory:
    h = PopulationHistory(root)
    h.scan(day(1))
    h.as_(ALICE, day(1, 8)).request(
        h.finding(H2, 22)["id"], justification="Admin SSH from the jump host", owner="ops"
    )
    h.as_(BOB, day(1, 9)).approve(h.finding(H2, 22)["id"])
    for d in range(2, 10):
        h.scan(day(d))
    report = root / "oct25.xml"
    report.write_bytes(nmap_report(day(25, 3, month=10), {H3: {}, H4: {80: "http"}}))
    h.ids["backfill"] = (
        h.as_(Actor(user="carol", host="ops3", origin="cli"), day(9, 12))
        .import_xml(report)
        .scan.scan_id
    )
    baseline = root / "baseline.yaml"
    baseline.write_text(BASELINE)
    h.as_(BOB, day(10, 10)).baseline_import(baseline)
    for d in range(10, 16):
        h.scan(day(d))
    return h


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> PopulationHistory:
    return build(tmp_path_factory.mktemp("population"))


@pytest.fixture(scope="module")
def pack(history: PopulationHistory) -> dict[str, Any]:
    return history.report("pack", start=START, end=END, samples=[SAMPLE])


def by_port(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{r['host']}:{r['port']}/{r['proto']}": r for r in rows}


def test_the_sample_lists_each_open_port_with_the_approval_in_force_then(
    history: PopulationHistory, pack: dict[str, Any]
) -> None:
    (sample,) = pack["population"]["samples"]
    assert sample["at"] == iso(SAMPLE)
    rows = by_port(sample["ports"])
    assert sorted(rows) == [f"{H2}:22/tcp", f"{H2}:443/tcp", f"{H3}:22/tcp", f"{H4}:80/tcp"]
    ssh = rows[f"{H2}:22/tcp"]
    (approval,) = [a for a in history.monitor.approvals_list() if a.port == 22]
    assert ssh["approval"] == "approved" and ssh["approval_id"] == approval.id
    assert ssh["approval_recorded_at"] == iso(day(1, 9))
    assert ssh["approved_by"].startswith("bob")
    # The finding that covered it then: the one the approval decided.
    assert ssh["finding_id"] == history.finding(H2, 22)["id"]
    assert ssh["finding_status"] == "approved"
    assert ssh["open_since"] == iso(day(1)) and ssh["backfilled"] is False
    # The baseline names 2026-10-01, but it was recorded on Nov 10: not approved on Nov 5.
    portal = rows[f"{H2}:443/tcp"]
    assert portal["approval"] == "unapproved" and portal["approval_id"] is None
    assert portal["finding_id"] == history.finding(H2, 443)["id"]
    assert portal["finding_status"] == "new"
    assert rows[f"{H3}:22/tcp"]["finding_status"] == "new"
    # At the end the baseline's approval is in force, recorded when it was imported.
    end = by_port(pack["population"]["at_end"]["ports"])
    assert pack["population"]["at_end"]["at"] == iso(END)
    assert end[f"{H2}:443/tcp"]["approval"] == "approved"
    assert end[f"{H2}:443/tcp"]["approval_recorded_at"] == iso(day(10, 10))
    assert end[f"{H2}:443/tcp"]["approved_by"] == "bob (named in the baseline file)"
    # Its finding was resolved by the first scan after the approval: none covers it now.
    assert history.finding(H2, 443)["status"] == "resolved"
    assert end[f"{H2}:443/tcp"]["finding_id"] is None


def test_backfilled_evidence_says_so_and_never_rewrites_the_present(
    history: PopulationHistory, pack: dict[str, Any]
) -> None:
    rows = by_port(pack["population"]["samples"][0]["ports"])
    web = rows[f"{H4}:80/tcp"]
    assert web["backfilled"] is True and web["scan_id"] == history.ids["backfill"]
    # The report's run finished 20 s after it started (nmap_report).
    assert web["open_since"] == iso(day(25, 3, month=10) + timedelta(seconds=20))
    assert web["approval"] == "unapproved"
    finding = history.finding(H4, 80)
    assert web["finding_id"] == finding["id"] and finding["details"]["backfilled"] is True
    # The Oct 25 report saw .3 with nothing open; the finding the live scans keep for .3:22
    # is not resolved by a report older than them.
    assert history.finding(H3, 22)["status"] == "new"
    assert all(not r["backfilled"] for key, r in rows.items() if not key.startswith(H4))
    section = population_sections(pack)[0]
    sample_table = section.tables[1]
    marks = dict(zip([row[0] for row in sample_table.rows], sample_table.attention, strict=True))
    assert marks[H4] == "UNAPPROVED BACKFILLED"
    assert any("backfilled" in text for text in section.paragraphs)


def test_the_point_in_time_report_agrees_with_detection_and_the_population(
    history: PopulationHistory, pack: dict[str, Any]
) -> None:
    for moment in (day(5), day(10), day(11)):
        cycle = history.cycles[moment]
        report = history.report(f"pit-{moment:%d}", at=cycle.scan.finished_at)
        seen = by_port(report["ports"])
        for key, status in cycle.approval_status.items():
            assert seen[key]["approval"] == status, (moment, key)
    # Nov 10 06:00 came before the baseline was recorded, Nov 11 after it.
    assert history.cycles[day(10)].approval_status[f"{H2}:443/tcp"] == "unapproved"
    assert history.cycles[day(11)].approval_status[f"{H2}:443/tcp"] == "approved"
    report = history.report("pit-sample", at=SAMPLE)
    keys = ("approval", "approval_id", "approval_recorded_at", "finding_id", "backfilled")
    sample = by_port(pack["population"]["samples"][0]["ports"])
    assert {k: {n: r[n] for n in keys} for k, r in by_port(report["ports"]).items()} == {
        k: {n: r[n] for n in keys} for k, r in sample.items()
    }
    assert report["counts"]["backfilled"] == 1


def test_the_series_counts_open_ports_by_approval_over_the_period(pack: dict[str, Any]) -> None:
    series = pack["population"]["series"]
    assert series[0]["at"] == iso(START) and series[-1]["at"] == iso(END)
    # Fewer scans than days? No: one point per day, plus the start and the end.
    assert len(series) == 2 + 14
    last = series[-1]
    at_end = pack["population"]["at_end"]["ports"]
    assert last["open"] == len(at_end) == last["approved"] + last["unapproved"] + last["expired"]
    nov5 = next(p for p in series if p["at"] == iso(SAMPLE))
    assert (nov5["approved"], nov5["unapproved"]) == (1, 3)
    assert (last["approved"], last["unapproved"]) == (2, 2)


def test_series_points_are_per_scan_when_fewer_and_bounded() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC)
    scans = [start + timedelta(days=10, hours=3), start + timedelta(days=20)]
    assert series_times(start, end, scans) == [start, *scans, end]
    long_end = start + timedelta(days=3 * 365)
    points = series_times(start, long_end, [])
    assert len(points) <= SERIES_LIMIT and points[0] == start and points[-1] == long_end
    assert points == sorted(points)


def test_a_baseline_recorded_after_the_scans_does_not_approve_them(tmp_path: Path) -> None:
    """The issue's case: reports imported after a baseline recorded later than their time."""
    h = PopulationHistory(tmp_path)
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text(BASELINE)
    h.as_(BOB, day(20, 12)).baseline_import(baseline)
    report = tmp_path / "nov18.xml"
    report.write_bytes(nmap_report(day(18), {H2: {22: "ssh", 443: "https"}}))
    imported = h.as_(BOB, day(20, 12)).import_xml(report)
    assert not imported.scan.backfill
    # Recorded on Nov 20, the approval did not exist when the report was made on Nov 18.
    assert imported.approval_status[f"{H2}:443/tcp"] == "unapproved"
    finding = h.finding(H2, 443)
    assert finding["status"] == "new" and "backfilled" not in finding["details"]
    h.now[0] = day(20, 13)
    at_19 = h.report("pit", at=day(19))
    rows = by_port(at_19["ports"])
    assert rows[f"{H2}:443/tcp"]["approval"] == "unapproved"
    assert rows[f"{H2}:443/tcp"]["finding_id"] == finding["id"]
    # A live scan after the baseline judges it approved, and the finding is resolved.
    assert h.scan(day(20, 14)).approval_status[f"{H2}:443/tcp"] == "approved"
    assert h.finding(H2, 443)["status"] == "resolved"


def test_a_fingerprint_landing_after_the_approval_is_judged_by_it(tmp_path: Path) -> None:
    """The first scan's -sV still runs when ssh is approved hours later by the clock (a
    pinned clock moves; the job's own clock, begun + seconds run, does not): its record is
    dated when it is written, so the approval is in force for it and raises nothing (it
    made a second unapproved_port finding for the approved port, which the next scan
    resolved)."""
    h = PopulationHistory(tmp_path)
    gate = threading.Event()  # -sV answers only once the approval is recorded

    def hold(kind: str, _address: str, _ports: str) -> None:
        if kind == "fingerprint":
            gate.wait(10)

    h.network.on_call = hold
    try:
        first = h.scan(day(1))
        assert first.fingerprint is not None and first.fingerprint.running()
        ssh = h.finding(H2, 22)["id"]
        h.as_(ALICE, day(1, 8)).request(ssh, justification="Admin SSH", owner="ops")
        h.as_(BOB, day(1, 9)).approve(ssh)
        gate.set()
        outcome = first.fingerprint.wait(10)
        assert outcome is not None and outcome.scan is not None
        assert outcome.scan.finished_at >= day(1, 9) and outcome.findings == []
        assert h.finding(H2, 22)["id"] == ssh and h.finding(H2, 22)["status"] == "approved"
        h.scan(day(2)).settle_fingerprint(10)
        assert h.finding(H2, 22) == {**h.finding(H2, 22), "id": ssh, "status": "approved"}
    finally:
        gate.set()
        h.monitor.close()


def test_report_sample_on_the_command_line(tmp_path: Path) -> None:
    history = build(tmp_path)
    history.monitor.close()
    out = history.root / "cli-pack.json"
    common = ["--config", str(history.config), "--data-dir", str(history.root / "data")]
    code = main(
        [
            "report",
            *common,
            "--from",
            "2026-11-01",
            "--to",
            iso(END),
            "--sample",
            "2026-11-05",
            "--sample",
            "2026-11-12T12:00:00Z",
            "--format",
            "json",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    population = json.loads(out.read_text())["population"]
    assert [s["at"] for s in population["samples"]] == [iso(SAMPLE), "2026-11-12T12:00:00Z"]
    outside = main(
        ["report", *common, "--from", "2026-11-01", "--to", iso(END), "--sample", "2026-10-01"]
        + ["--format", "json", "-o", str(history.root / "refused.json")]
    )
    assert outside != 0 and not (history.root / "refused.json").exists()
