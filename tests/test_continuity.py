"""Continuity, scope and trustworthy figures, on a monitor run through two months.

The history (the real Monitor on a real store, the replayed scanner at a pinned clock):

    Aug 20 03:00  an nmap report of 127.0.0.2-3 is imported (history starts here)
    Aug 31 12:00  the monitor opens with group "cde" (127.0.0.2-3, 22,443, daily)
    Sep 1  06:00  daily scans of cde begin
    Sep 10 09:00  an nmap report of 127.0.0.2 alone is imported (ad hoc: not all of cde)
    Sep 15 00:00  the settings change: group "weekly" (127.0.0.5, port 22, every 7 days)
    Sep 15 06:00  weekly scans begin
    Oct 10-15     no scan of cde (the scanner VM was down): a six-day hole
    Oct 16 09:00  carol closes the gap finding with its root cause
    Oct 31 06:00  last scans; the period asked for is Aug 1 to Nov 1

Aug 1 is before either group existed: nothing before their configuration is a gap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portconsole import cli
from portconsole.core.adapters.replay import PortKey, ReplayScanner, Service
from portconsole.core.errors import UserError
from portconsole.core.identity import Actor
from portconsole.core.monitor import Monitor
from portconsole.core.settings import load_settings
from portconsole.core.timeutil import iso

CDE = """
[groups.cde]
targets = ["127.0.0.2-3"]
ports = "22,443"
interval = 86400
jitter = 0
"""
WEEKLY = """
[groups.weekly]
targets = ["127.0.0.5"]
ports = "22"
interval = 604800
jitter = 0
"""
HEAD = 'scope = ["127.0.0.0/8"]\n\n[scan]\ntiming = 4\nconfirm_probes = 1\n'
START = datetime(2026, 8, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
CONFIGURED = datetime(2026, 8, 31, 12, tzinfo=UTC)
WEEKLY_AT = datetime(2026, 9, 15, tzinfo=UTC)
OUTAGE = (datetime(2026, 10, 10, tzinfo=UTC), datetime(2026, 10, 16, tzinfo=UTC))
CAUSE = "scanner VM down for a hypervisor upgrade"
CAROL = Actor(user="carol", host="ops3", origin="cli")
NETWORK: dict[str, dict[PortKey, str | Service]] = {
    "127.0.0.2": {22: "ssh", 443: "https"},
    "127.0.0.3": {22: "ssh"},
    "127.0.0.5": {22: "ssh"},
}


def day(month: int, d: int, hour: int = 6) -> datetime:
    return datetime(2026, month, d, hour, tzinfo=UTC)


def nmap_report(moment: datetime, hosts: dict[str, dict[int, str]], targets: str) -> bytes:
    """An nmap XML report as `nmap -sS -p 22,443 -oX` writes it, dated `moment`."""
    stamp = int(moment.timestamp())
    body = ""
    for address, ports in hosts.items():
        rows = "".join(
            f'<port protocol="tcp" portid="{port}"><state state="open" reason="syn-ack" '
            f'reason_ttl="64"/><service name="{name}" method="table" conf="3"/></port>'
            for port, name in sorted(ports.items())
        )
        body += (
            f'<host starttime="{stamp}" endtime="{stamp}"><status state="up" reason="echo-reply" '
            f'reason_ttl="64"/><address addr="{address}" addrtype="ipv4"/><hostnames/>'
            f"<ports>{rows}</ports></host>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n'
        f'<nmaprun scanner="nmap" args="nmap -sS -p 22,443 -oX - {targets}" start="{stamp}" '
        'version="7.93" xmloutputversion="1.05"><scaninfo type="syn" protocol="tcp" '
        f'services="22,443"/>{body}<runstats><finished time="{stamp + 20}" exit="success"/>'
        f'<hosts up="{len(hosts)}" down="0" total="{len(hosts)}"/></runstats></nmaprun>\n'
    ).encode()


@dataclass
class Run:
    root: Path
    now: list[datetime] = field(default_factory=lambda: [day(8, 20, 4)])
    ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config = self.root / "config.toml"
        self.config.write_text(HEAD)  # no group yet
        self.open()

    def clock(self) -> datetime:
        return self.now[0]

    def open(self) -> None:
        settings, self.paths = load_settings(self.config, self.root / "data")
        self.scanner = ReplayScanner(settings.scope_obj(), NETWORK, clock=self.clock)
        self.monitor = Monitor(
            settings, self.paths, origin="daemon", scanner=self.scanner, clock=self.clock
        )

    def at(self, moment: datetime) -> Monitor:
        self.now[0] = moment
        return self.monitor

    def import_report(self, name: str, moment: datetime, hosts: list[str], targets: str) -> str:
        path = self.root / name
        open_ports = {h: {int(str(p)): str(n) for p, n in NETWORK[h].items()} for h in hosts}
        path.write_bytes(nmap_report(moment, open_ports, targets))
        return self.monitor.import_xml(path).scan.scan_id

    def export(self, out: Path, fmt: str, now: datetime | None = None, **kwargs: Any) -> Path:
        from portconsole.core.services.report import export_report, manifest_path

        m = self.monitor
        written = export_report(
            store=m.store, findings=m.findings_book, approvals=m.approvals, audit=m.audit,
            settings=m.settings, actor=CAROL, out=out, fmt=fmt, now=now or day(11, 30, 12),
            **kwargs,
        )  # fmt: skip
        assert manifest_path(out if fmt == "csv" else written[0], fmt) in written
        return out


def build(root: Path) -> Run:
    run = Run(root)
    run.ids["backfill"] = run.import_report(
        "aug20.xml", day(8, 20, 3), ["127.0.0.2", "127.0.0.3"], "127.0.0.2-3"
    )
    run.config.write_text(HEAD + CDE)
    run.at(CONFIGURED)
    run.open()  # settings.changed, with group cde's definition
    moment = day(9, 1)
    while moment <= day(10, 31):
        if moment.date() == day(9, 10).date():
            run.at(day(9, 10, 9))
            run.ids["ad_hoc"] = run.import_report(
                "sep10.xml", day(9, 10, 8), ["127.0.0.2"], "127.0.0.2"
            )
        if moment.date() == WEEKLY_AT.date():
            run.config.write_text(HEAD + CDE + WEEKLY)
            run.at(WEEKLY_AT)
            run.open()  # settings.changed: group weekly configured
        if moment >= day(9, 15) and (moment - day(9, 15)).days % 7 == 0:
            # Each cycle's background -sV lands before the clock moves on (it is dated
            # when written: left running, it would cover hosts days later, in the outage).
            run.at(moment).run_cycle(group="weekly").settle_fingerprint(30)
        if not (OUTAGE[0] <= moment < OUTAGE[1]):
            run.at(moment).run_cycle(group="cde").settle_fingerprint(30)
        if moment.date() == OUTAGE[1].date():
            gap = [f for f in run.monitor.findings() if f.kind == "monitoring_gap"]
            assert gap, "the outage raised a monitoring-gap finding"
            run.ids["gap"] = gap[-1].id
            run.at(day(10, 16, 9))
            run.monitor.actor = CAROL
            run.monitor.close_finding(gap[-1].id, cause=CAUSE)
        moment += timedelta(days=1)
    run.at(day(11, 30, 12))
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return build(tmp_path_factory.mktemp("continuity"))


@pytest.fixture(scope="module")
def pack(run: Run, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = run.export(tmp_path_factory.mktemp("pack") / "pack.json", "json", start=START, end=END)
    return dict(json.loads(out.read_bytes()))


def ledger_of(pack: dict[str, Any], group: str) -> dict[str, Any]:
    (found,) = [g for g in pack["continuity"]["groups"] if g["group"] == group]
    return dict(found)


# --------------------------------------------------------------------------- scope


def test_every_report_opens_with_scope_and_parameters(run: Run, pack: dict[str, Any]) -> None:
    scope = pack["scope"]
    assert list(pack)[0] == "scope"
    assert scope["scope"] == ["127.0.0.0/8"]
    groups = {g["name"]: g for g in scope["groups"]}
    assert groups["cde"]["targets"] == ["127.0.0.2-3"] and groups["cde"]["ports"] == "22,443"
    assert groups["cde"]["protocols"] == ["tcp"] and groups["cde"]["fingerprint"] == "changed"
    assert groups["weekly"]["interval_seconds"] == 604800
    assert groups["weekly"]["window_seconds"] == 604800 + 120
    # History starts at the first scan on record (the import), not the first of a month.
    assert scope["history_starts"] == "2026-08-20T03:00:20Z"
    assert scope["period"] == {"from": iso(START), "to": iso(END)}
    assert scope["generator"]["name"] == "portconsole" and scope["generator"]["version"]
    assert set(scope["clock"]) == {"source", "ntp_synchronized"}
    assert scope["generated_at"] == "2026-11-30T12:00:00Z"
    assert any("does NOT replace vulnerability scanning" in text for text in scope["limits"])
    assert any("11.3" in text for text in scope["out_of_scope"])
    assert "six years" in scope["retention"]["journal"]
    # Every settings event of the period, with what changed.
    changes = scope["settings_changes"]
    assert [c["at"] for c in changes] == [iso(day(8, 20, 4)), iso(CONFIGURED), iso(WEEKLY_AT)]
    assert [c["changes"] for c in changes] == [
        ["settings recorded (no target group)"],
        ["group cde configured"],
        ["group weekly configured"],
    ]
    assert changes[0]["previous_sha256"] is None
    assert changes[2]["previous_sha256"] == changes[1]["sha256"]
    assert scope["settings_sha256"] == changes[2]["sha256"]
    # The settings event itself carries the definitions.
    events = [e for e in run.monitor.audit_events() if e.action.startswith("settings.")]
    assert [[g["name"] for g in e.details["groups"]] for e in events] == [
        [], ["cde"], ["cde", "weekly"]
    ]  # fmt: skip


def test_scope_is_the_first_section_of_both_kinds_of_report(run: Run, tmp_path: Path) -> None:
    pack = run.export(tmp_path / "pack.md", "md", start=START, end=END).read_text("utf-8")
    pit = run.export(tmp_path / "pit.md", "md", at=day(10, 1, 12)).read_text("utf-8")
    for text in (pack, pit):
        # First after the pack's one-page verdict (a summary of the sections below) and the
        # renderer's "About this report" header (format, figures hash).
        headings = [line for line in text.splitlines() if line.startswith("## ")]
        sections = [h for h in headings if h not in ("## About this report", "## Verdict")]
        assert sections[0] == "## Scope and parameters", headings[:3]
        assert "127.0.0.2-3" in text and "Settings changes in the period" in text


def test_a_time_before_history_starts_says_so(run: Run, tmp_path: Path) -> None:
    out = run.export(tmp_path / "early.json", "json", at=day(8, 10))
    report = json.loads(out.read_bytes())
    assert report["history_starts"] == "2026-08-20T03:00:20Z"
    assert report["history_complete"] is False
    assert any("before history starts" in text for text in report["scope"]["limits"])
    md = run.export(tmp_path / "early.md", "md", at=day(8, 10)).read_text("utf-8")
    assert "Everything was covered" not in md and "before history starts" in md


def test_the_cli_says_a_time_is_before_history(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["--config", str(run.config), "--data-dir", str(run.paths.data_dir), "report",
         "--at", "2026-08-10", "--format", "md", "-o", str(tmp_path / "early.md")]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "note: 2026-08-10T00:00:00Z is before history starts (2026-08-20T03:00:20Z" in err


def test_a_period_ending_in_the_future_is_refused(run: Run, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="in the future"):
        run.export(tmp_path / "x.json", "json", start=START, end=day(12, 5))


# --------------------------------------------------------------------------- continuity


def test_the_ledger_starts_when_each_group_was_configured(pack: dict[str, Any]) -> None:
    cde, weekly = ledger_of(pack, "cde"), ledger_of(pack, "weekly")
    assert cde["configured_at"] == iso(CONFIGURED) and cde["from"] == iso(CONFIGURED)
    assert "first settings event" in cde["configured_basis"]
    assert weekly["configured_at"] == iso(WEEKLY_AT) and weekly["from"] == iso(WEEKLY_AT)
    # A weekly group is covered by weekly scans: its window follows its interval.
    assert weekly["window_seconds"] == 604800 + 120
    assert weekly["gaps"] == 0 and [e["kind"] for e in weekly["entries"]] == ["covered"]
    assert weekly["covered_seconds"] == (END - WEEKLY_AT).total_seconds()
    # August (before either group) is no gap, and nothing reads LONGER THAN ALLOWED for it.
    rows = {g["group"]: g for g in pack["cadence"]["groups"]}
    assert rows["weekly"]["exceeded"] is False
    assert rows["weekly"]["longest_without_success_seconds"] == 7 * 86400
    assert cde["entries"][0] == {
        "kind": "covered", "start": iso(CONFIGURED), "end": "2026-10-10T06:00:00Z",
        "seconds": (day(10, 10) - CONFIGURED).total_seconds(), "cause": "",
        "finding_id": None, "closed_cause": "", "scans": 39,
    }  # fmt: skip


def test_a_six_day_hole_is_a_flagged_gap_counted_in_the_headline(
    run: Run, pack: dict[str, Any]
) -> None:
    cde = ledger_of(pack, "cde")
    gaps = [e for e in cde["entries"] if e["kind"] == "gap"]
    assert len(gaps) == 1
    (gap,) = gaps
    assert (gap["start"], gap["end"]) == ("2026-10-10T06:00:00Z", "2026-10-16T06:00:00Z")
    assert gap["seconds"] == 6 * 86400
    assert gap["cause"].startswith("late")
    assert gap["finding_id"] == run.ids["gap"]
    assert gap["closed_cause"] == CAUSE
    assert cde["gap_seconds"] == 6 * 86400
    assert cde["covered_seconds"] + cde["gap_seconds"] == (END - CONFIGURED).total_seconds()
    assert pack["counts"]["gaps"] == pack["continuity"]["gaps"] == 1
    assert pack["counts"]["gap_seconds"] == 6 * 86400
    closed = [c for c in pack["compliance"] if c["control"] == "12.10"]
    assert "1 gaps closed with a root cause" in closed[0]["figures"]


def test_the_gap_is_flagged_in_every_format(run: Run, tmp_path: Path) -> None:
    html = run.export(tmp_path / "pack.html", "html", start=START, end=END).read_text("utf-8")
    assert '<td class="flag">GAP</td>' in html and CAUSE in html
    folder = run.export(tmp_path / "csv", "csv", start=START, end=END)
    ledger = (folder / "continuity.csv").read_text("utf-8")
    assert "2026-10-10T06:00:00Z" in ledger and CAUSE in ledger and "GAP" in ledger


def test_imported_scans_are_attached_to_their_group_or_listed_ad_hoc(
    run: Run, pack: dict[str, Any]
) -> None:
    ids = run.ids
    assert pack["continuity"]["ad_hoc_scans"] == [ids["ad_hoc"]]
    assert pack["counts"]["ad_hoc_scans"] == 1
    # The Aug 20 import covered all of cde, but before cde existed: no ledger effect, no gap.
    assert ledger_of(pack, "cde")["entries"][0]["start"] == iso(CONFIGURED)


def test_a_date_before_monitoring_began_is_not_everything_covered(run: Run, tmp_path: Path) -> None:
    out = run.export(tmp_path / "aug.json", "json", start=START, end=day(8, 25))
    early = json.loads(out.read_bytes())
    assert [(g["group"], g["from"]) for g in early["continuity"]["groups"]] == [
        ("cde", None), ("weekly", None)
    ]  # fmt: skip
    assert early["counts"]["gaps"] == 0


def test_the_point_in_time_window_follows_the_group(run: Run, tmp_path: Path) -> None:
    # Five days after the weekly scan of Sep 29: covered by a weekly group's window.
    out = run.export(tmp_path / "pit.json", "json", at=day(10, 4, 6))
    report = json.loads(out.read_bytes())
    assert report["parameters"]["group_coverage_window_seconds"] == {
        "cde": 86520.0,
        "weekly": 604920.0,
    }
    uncovered = {(u["host"], u["port"]) for u in report["uncovered"]}
    assert ("127.0.0.5", None) not in uncovered and ("127.0.0.5", 22) not in uncovered
    # In the outage, a day-old cde scan is no longer covering.
    out = run.export(tmp_path / "outage.json", "json", at=day(10, 13, 6))
    hosts = {u["host"] for u in json.loads(out.read_bytes())["uncovered"]}
    assert {"127.0.0.2", "127.0.0.3"} <= hosts and "127.0.0.5" not in hosts


# --------------------------------------------------------------------------- figures


def test_exports_never_change_the_figures(run: Run, tmp_path: Path) -> None:
    sums = set()
    for fmt, name in (
        ("html", "a.html"),
        ("json", "a.json"),
        ("html", "b.html"),
        ("json", "b.json"),
    ):
        run.export(tmp_path / name, fmt, start=START, end=END)
        manifest = json.loads((tmp_path / f"{name}.manifest.json").read_bytes())
        sums.add(manifest["figures_sha256"])
    assert len(sums) == 1


def test_a_period_ending_now_gives_the_same_figures_twice(run: Run, tmp_path: Path) -> None:
    now = day(11, 30, 12)
    first = json.loads(run.export(tmp_path / "1.json", "json", now=now, start=START).read_bytes())
    second = json.loads(run.export(tmp_path / "2.json", "json", now=now, start=START).read_bytes())
    # The first export is a journal event inside the second's period: it is not a figure.
    assert any(e.action == "export" and e.at == now for e in run.monitor.audit_events())
    assert "export" not in second["audit"]["by_action"]
    assert first["counts"]["audit_events"] == second["counts"]["audit_events"]
    assert first["figures_sha256"] == second["figures_sha256"]


def test_compliance_maps_logging_retention_and_incident_response(pack: dict[str, Any]) -> None:
    controls = {(c["framework"].split()[0], c["control"]): c for c in pack["compliance"]}
    for key in (("PCI", "10.3"), ("PCI", "10.5.1"), ("PCI", "12.10"), ("ISO/IEC", "A.8.15"),
                ("HIPAA", "164.316(b)(2)")):  # fmt: skip
        assert key in controls, key
    hipaa = controls[("HIPAA", "164.316(b)(2)")]
    assert "six years" in hipaa["shows"] and "never deletes the journal" in hipaa["shows"]
    assert "2026-08-20T03:00:20Z" in controls[("PCI", "10.5.1")]["figures"]


def test_ledger_rules_on_plain_values() -> None:
    """The pure ledger: a removed group stops; an unrecorded hole at the end is still open."""
    from portconsole.core.domain.ledger import UNRECORDED_CAUSE, group_ledger

    window = timedelta(hours=25)
    scans = [day(9, d) for d in range(1, 6)]  # Sep 1-5 06:00, then nothing
    row = group_ledger(
        "g", configured_at=day(9, 1, 0), removed_at=None, basis="test", interval=86400,
        window=window, successes=scans, gaps=[], start=day(8, 1), end=day(9, 10),
    )  # fmt: skip
    assert [(e["kind"], e["start"], e["end"]) for e in row["entries"]] == [
        ("covered", iso(day(9, 1, 0)), iso(day(9, 6, 7))),
        ("gap", iso(day(9, 6, 7)), iso(day(9, 10))),
    ]
    assert row["entries"][1]["cause"] == UNRECORDED_CAUSE + " (still open at the period's end)"
    removed = group_ledger(
        "g", configured_at=day(9, 1, 0), removed_at=day(9, 5, 12), basis="test",
        interval=86400, window=window, successes=scans, gaps=[], start=day(8, 1),
        end=day(9, 10),
    )  # fmt: skip
    assert removed["to"] == iso(day(9, 5, 12)) and removed["gaps"] == 0
