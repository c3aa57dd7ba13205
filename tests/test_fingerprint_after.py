"""Fingerprint freshness and escalation: what -sV learns after detection still counts.

The rule (`refingerprint_due`) is checked by simulation over many ages, periods and port
counts; the cycle is checked end to end on the real Monitor and store, scanning through a
ReplayScanner at a pinned clock, with a service swapped behind an approved port. Escalation
(an unapproved port the sweep could not name, that -sV identifies as telnet) is checked on
the real nmap against a real loopback listener that negotiates like Linux telnetd, with
its notifications delivered to a real loopback webhook.
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portconsole.core.adapters.replay import PortKey, ReplayScanner, Service
from portconsole.core.errors import UserError
from portconsole.core.monitor import Monitor
from portconsole.core.services.probe import refingerprint_due
from portconsole.core.settings import load_settings
from tests.fleet import TestFleet, is_listening
from tests.servers import HttpCatcher

T0 = datetime(2026, 10, 1, 6, tzinfo=UTC)
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
SSH = Service("ssh", "OpenSSH", "9.2p1")
WEB = Service("http", "nginx", "1.22.1")
# A web server moved onto the approved ssh port: a sweep still names 22 "ssh" (the table).
SWAPPED = Service("http", "nginx", "1.25.3", table="ssh")


# --------------------------------------------------------------------------- the rule


def simulate(
    ports: int, age: timedelta, period: timedelta, cycles: int, seed: int
) -> tuple[int, timedelta]:
    """Cycles at most `period` apart over ports first fingerprinted together; returns the
    most ports refreshed in one cycle and the oldest fingerprint seen after any cycle."""
    rng = random.Random(seed)
    stamps = {(f"127.0.0.{i % 200 + 2}", 1 + i // 200, "tcp"): T0 for i in range(ports)}
    now, most, oldest = T0, 0, timedelta(0)
    for _ in range(cycles):
        now += period * rng.uniform(0.5, 1.0)
        due = refingerprint_due(stamps, now, age, period)
        most = max(most, len(due))
        for key in due:
            stamps[key] = now
        oldest = max(oldest, max(now - at for at in stamps.values()))
    return most, oldest


@pytest.mark.parametrize(
    ("ports", "hours", "period_minutes"),
    [(8, 1, 10), (10, 24, 15.5), (500, 24, 15.5), (3, 6, 60), (40, 2, 30), (1, 1, 10)],
)
def test_every_fingerprint_is_refreshed_within_the_age_and_never_all_at_once(
    ports: int, hours: float, period_minutes: float
) -> None:
    age, period = timedelta(hours=hours), timedelta(minutes=period_minutes)
    cycles = int(age / period) * 5
    most, oldest = simulate(ports, age, period, cycles, seed=ports)
    assert oldest <= age
    window = max(1, min(int(age / period), ports))
    assert most <= math.ceil(ports / window)
    if ports > 1:
        assert most < ports  # spread: a whole re-fingerprint never lands in one cycle


def test_a_fresh_port_waits_and_a_short_age_means_every_cycle() -> None:
    ports = {("127.0.0.2", p, "tcp"): T0 for p in (22, 80)}
    day, quarter = timedelta(hours=24), timedelta(minutes=15)
    assert refingerprint_due(ports, T0 + timedelta(hours=1), day, quarter) == set()
    assert refingerprint_due(ports, T0 + quarter, timedelta(0), quarter) == set(ports)
    assert refingerprint_due(ports, T0 + quarter, timedelta(minutes=10), quarter) == set(ports)
    # Ad hoc (no period): every port past the age, none before it.
    assert refingerprint_due(ports, T0 + day, day, None) == set()
    assert refingerprint_due(ports, T0 + day + timedelta(seconds=1), day, None) == set(ports)
    assert refingerprint_due({}, T0, day, quarter) == set()


# --------------------------------------------------------------------------- the cycle


class Fleet:
    """A Monitor on a real store whose group `web` covers HOSTS x 22,80, at a pinned clock."""

    def __init__(self, root: Path, refingerprint: str = "") -> None:
        self.now = T0
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.toml"
        config.write_text(
            'scope = ["127.0.0.0/8"]\n\n[scan]\ntiming = 4\nworkers = 2\nconfirm_probes = 1\n\n'
            '[groups.web]\ntargets = ["127.0.0.2-5"]\nports = "22,80"\ninterval = 600\n'
            f"jitter = 0\n{refingerprint}\n"
        )
        settings, paths = load_settings(config, root / "data")
        network: dict[str, dict[PortKey, str | Service]] = {h: {22: SSH, 80: WEB} for h in HOSTS}
        self.replay = ReplayScanner(settings.scope_obj(), network, clock=self.clock)
        self.monitor = Monitor(settings, paths, scanner=self.replay, clock=self.clock)
        self.baseline = root / "baseline.yaml"
        self.baseline.write_text(
            "version: 1\nhosts:\n  - selector: [127.0.0.2]\n    rules:\n"
            '      - ports: "22"\n        proto: tcp\n        service: ssh\n'
            "        justification: Remote administration for the platform team\n"
            "        owner: platform-team\n        requester: alice\n        approver: bob\n"
            "        ticket: CHG-1\n        approved_at: 2026-09-01\n"
            "        review_by: 2027-02-01\n"
        )

    def clock(self) -> datetime:
        return self.now

    def cycle(
        self,
        at: datetime,
        group: str | None = None,
        targets: list[str] | None = None,
        ports: str | None = None,
    ) -> int:
        """Run one cycle at `at`; returns how many ports it fingerprinted (-sV)."""
        self.now = at
        before = len(self.replay.calls)
        result = self.monitor.run_cycle(group=group, targets=targets, ports=ports)
        result.settle_fingerprint()  # -sV runs after detection, in the background
        asked = [c for c in self.replay.calls[before:] if c[0] == "fingerprint"]
        return sum(len(ports.removeprefix("T:").split(",")) for _, _, ports in asked)

    def swapped_found(self) -> bool:
        return any(
            f.kind == "service_changed" and (f.host, f.port) == ("127.0.0.2", 22)
            for f in self.monitor.findings()
        )

    def oldest_fingerprint(self) -> timedelta:
        oldest = timedelta(0)
        for port in self.monitor.store.current_ports():
            assert port.fingerprinted_at is not None
            oldest = max(oldest, self.now - port.fingerprinted_at)
        return oldest


def test_a_swapped_service_is_found_within_the_group_age_spread_over_cycles(
    tmp_path: Path,
) -> None:
    fleet = Fleet(tmp_path, "refingerprint_hours = 1")
    try:
        assert fleet.cycle(T0, group="web") == 8  # new ports: all fingerprinted at once
        added, _ = fleet.monitor.baseline_import(fleet.baseline)
        assert added == 1
        swapped_at = T0 + timedelta(minutes=5)
        fleet.replay.open_port("127.0.0.2", 22, SWAPPED)
        found_at = None
        for step in range(1, 13):  # two hours of cycles, 10 minutes apart
            at = T0 + timedelta(minutes=10 * step)
            # 8 ports, 6 cycles per hour: at most ceil(8 / 6) = 2 re-fingerprints a cycle.
            assert fleet.cycle(at, group="web") <= 2
            assert fleet.oldest_fingerprint() <= timedelta(hours=1)
            if found_at is None and fleet.swapped_found():
                found_at = at
        assert found_at is not None and found_at - swapped_at <= timedelta(hours=1)
        (change,) = [
            e for e in fleet.monitor.store.history("127.0.0.2", 22) if e.kind == "service_changed"
        ]
        assert (change.before or {}).get("product") == "OpenSSH"
        assert (change.after or {}).get("service") == "http"
    finally:
        fleet.monitor.close()


def test_the_default_age_leaves_fingerprints_alone_for_hours(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        assert fleet.cycle(T0, group="web") == 8
        fleet.monitor.baseline_import(fleet.baseline)
        fleet.replay.open_port("127.0.0.2", 22, SWAPPED)
        for step in range(1, 13):
            assert fleet.cycle(T0 + timedelta(minutes=10 * step), group="web") == 0
        assert not fleet.swapped_found()
        # An ad-hoc scan a day later takes every port past the age of its host's group.
        later = T0 + timedelta(hours=24, minutes=1)
        assert fleet.cycle(later, targets=["127.0.0.2"], ports="22,80") == 2
        assert fleet.swapped_found()
    finally:
        fleet.monitor.close()


def test_age_zero_fingerprints_every_cycle_and_the_setting_is_checked(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, "refingerprint_hours = 0")
    try:
        assert fleet.cycle(T0, group="web") == 8
        fleet.monitor.baseline_import(fleet.baseline)
        fleet.replay.open_port("127.0.0.2", 22, SWAPPED)
        assert fleet.cycle(T0 + timedelta(minutes=10), group="web") == 8
        assert fleet.swapped_found()
    finally:
        fleet.monitor.close()
    with pytest.raises(UserError, match="refingerprint_hours"):
        Fleet(tmp_path / "bad", "refingerprint_hours = -1")


# --------------------------------------------------------------------------- escalation


@pytest.mark.nmap
def test_a_port_fingerprinted_as_telnet_escalates_its_finding_once(tmp_path: Path) -> None:
    with TestFleet() as fleet, HttpCatcher() as http:
        host = fleet.new_address()
        assert not is_listening(host, 2323)
        port = fleet.listen(host, "telnet", 2323)  # IAC DO options on connect, like telnetd
        config = tmp_path / "config.toml"
        config.write_text(
            'scope = ["127.0.0.0/8"]\n\n[scan]\ntiming = 4\nworkers = 2\nconfirm_probes = 1\n\n'
            f'[groups.lab]\ntargets = ["{host}"]\nports = "{port}"\ninterval = 10\njitter = 0\n\n'
            f'[notify]\n[[notify.urls]]\nurl = "json://127.0.0.1:{http.port}/hook"\ntimeout = 5\n'
        )
        monitor = Monitor.open(config, tmp_path / "data")

        def finding() -> tuple[str, str, dict]:
            (f,) = [f for f in monitor.findings_book.all() if f.kind == "unapproved_port"]
            return f.id, f.severity, f.details

        try:
            first = monitor.run_cycle(group="lab")
            # The sweep (no -sV) names 2323 by nmap's port table: not insecure, medium.
            fid, severity, details = finding()
            assert severity == "medium" and details["insecure"] is False
            sent = len(monitor.notifier.messages())
            assert sent == len(first.findings) == 1  # its host is the group's: no unknown_host
            assert first.fingerprint is not None
            outcome = first.fingerprint.wait(60)
            assert outcome is not None and outcome.scan is not None, outcome

            fid, severity, details = finding()
            assert severity == "high"  # the insecure_service severity
            assert details["insecure"] is True and details["service"] == "telnet"
            assert details["escalated_from"] == "medium"
            assert [f.id for f in outcome.escalated] == [fid] and outcome.findings == []
            (step,) = [s for s in monitor.findings_book.get(fid).timeline if s.step == "escalated"]
            assert "medium -> high" in step.text and "telnet" in step.text
            assert len(monitor.notifier.messages()) == sent + 1
            # In the fingerprint's own transaction, after its scan.fingerprint event.
            records = list(monitor.audit.records())
            (ingest,) = [r for r in records if r["action"] == "scan.fingerprint"]
            (raised,) = [r for r in records if r["action"] == "finding.escalated"]
            assert raised["tx"] == ingest["tx"] and raised["seq"] > ingest["seq"]
            assert raised["resource"]["finding_id"] == fid
            assert raised["details"]["severity"] == "high" and raised["details"]["from"] == "medium"
            first_seq, count = ingest["tx"]
            (last,) = [r for r in records if r["seq"] == first_seq + count - 1]
            assert fid in json.dumps(last["effects"])  # the escalated finding's document

            # Later cycles see it as it is: no new alert, with or without another -sV.
            again = monitor.run_cycle(group="lab")
            assert again.fingerprint is None  # identified: not asked again before its age
            refreshed = monitor.run_cycle(group="lab", fingerprint="all")
            assert refreshed.fingerprint is not None
            later = refreshed.fingerprint.wait(60)
            assert later is not None and later.scan is not None and later.escalated == []
            assert finding()[1] == "high"
            assert len(monitor.notifier.messages()) == sent + 1
            assert monitor.audit_verify().ok

            monitor.flush_outbox(seconds=10)
            caught = http.wait_for(sent + 1)
            assert len(caught) == sent + 1
            title = caught[-1].json()["title"]
            assert title.startswith("[PortConsole] high unapproved_port") and f":{port}/" in title
        finally:
            monitor.close()
