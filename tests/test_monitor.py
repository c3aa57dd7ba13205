"""Scan cycles end to end through the Monitor: the real store, detection, findings and audit.

The cycles scan a ReplayScanner (tests/replay.py): only nmap's answers are replayed, so a
test opens a port, closes it between the sweep and the confirm, or lets an approved port
vanish, with no listener and no wait for nmap. `test_the_first_story_on_real_nmap` tells
the first story again on the real nmap and real listeners, to prove the cycle on the live
adapter too.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from msgspec.structs import replace

from portconsole.core.adapters.replay import ReplayScanner
from portconsole.core.domain.model import Progress
from portconsole.core.domain.targets import Scope
from portconsole.core.errors import PermissionRefused, UserError
from portconsole.core.monitor import Monitor
from portconsole.core.timeutil import utcnow
from tests.conftest import write_config
from tests.fleet import TestFleet
from tests.replay import replay_monitor

HOST = "127.0.0.2"


def _monitor(tmp_path: Path, **kwargs: object) -> Monitor:
    return Monitor.open(tmp_path / "config.toml", tmp_path / "data", **kwargs)  # type: ignore[arg-type]


def request_as(monitor: Monitor, person: str, finding_id: str, **terms: str) -> None:
    """Record an approval request as another OS user (the requester of four eyes)."""
    me = monitor.actor
    monitor.actor = replace(me, user=person, sudo_user=None)
    try:
        monitor.request(finding_id, **terms)  # type: ignore[arg-type]
    finally:
        monitor.actor = me


def _ports(*ports: int) -> str:
    return ",".join(str(p) for p in sorted(ports))


def _approve_baseline(
    tmp_path: Path, host: str, port: int, service: str, *, approved: str, review: str
) -> Path:
    path = tmp_path / "baseline.yaml"
    path.write_text(
        f"""version: 1
hosts:
  - selector: [{host}]
    rules:
      - ports: "{port}"
        proto: tcp
        service: {service}
        justification: Remote administration for the platform team
        owner: platform-team
        requester: alice
        approver: bob
        ticket: CHG-1
        approved_at: {approved}
        review_by: {review}
"""
    )
    return path


def _first_port_story(monitor: Monitor, host: str, ssh: int, web: int, closed: int) -> None:
    """Two open ports, one closed: two findings once, none again, approval silences one."""
    spec = _ports(ssh, web, closed)

    first = monitor.run_cycle(targets=[host], ports=spec)
    opened = {(c.kind, c.port) for c in first.changes}
    assert opened == {("host_up", None), ("port_opened", ssh), ("port_opened", web)}
    unapproved = [f.port for f in first.findings if f.kind == "unapproved_port"]
    assert len(unapproved) == 2 and set(unapproved) == {ssh, web}
    assert first.approval_status[f"{host}:{ssh}/tcp"] == "unapproved"

    # The same ports again: no new finding, no duplicate.
    again = monitor.run_cycle(targets=[host], ports=spec)
    assert again.findings == []
    assert len([f for f in monitor.findings() if f.kind == "unapproved_port"]) == 2

    finding = next(f for f in monitor.findings() if f.port == ssh)
    # Four eyes: carol records the request, the monitor's own user approves it.
    request_as(
        monitor,
        "carol",
        finding.id,
        justification="Bastion access for on-call",
        owner="platform-team",
    )
    monitor.approve(finding.id)
    assert finding.id not in {f.id for f in monitor.findings()}
    after = monitor.run_cycle(targets=[host], ports=spec)
    assert after.findings == []
    assert after.approval_status[f"{host}:{ssh}/tcp"] == "approved"
    assert all(f.port != ssh for f in monitor.findings())

    actions = [e.action for e in monitor.audit_events()]
    assert "approval.added" in actions and "finding.approved" in actions
    assert monitor.audit_verify().ok


def test_new_port_raises_exactly_one_finding_and_approval_silences_it(tmp_path: Path) -> None:
    monitor, _network = replay_monitor(tmp_path, {HOST: {22: "ssh", 80: "http"}})
    _first_port_story(monitor, HOST, 22, 80, 443)


@pytest.mark.nmap
def test_the_first_story_on_real_nmap(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        ssh = fleet.listen(host, "ssh")
        # MySQL greets first, so -sV names it at once (an HTTP server costs nmap's 6 s
        # wait for a banner; tests/test_scanner.py proves -sV on HTTP).
        db = fleet.listen(host, "mysql")
        closed = fleet.closed_port(host)
        write_config(tmp_path / "config.toml")
        _first_port_story(_monitor(tmp_path), host, ssh, db, closed)


def test_port_gone_at_reprobe_raises_nothing(tmp_path: Path) -> None:
    monitor, network = replay_monitor(tmp_path, {HOST: {80: "http"}})
    monitor.run_cycle(targets=[HOST], ports="80")
    baseline_findings = {f.id for f in monitor.findings()}

    network.open_port(HOST, 8080)

    def close_before_confirm(progress: Progress) -> None:
        # The sweep saw the port; it closes before the re-probe, like a flapping service.
        if progress.phase == "confirm":
            network.close_port(HOST, 8080)

    result = monitor.run_cycle(targets=[HOST], ports="80,8080", progress=close_before_confirm)
    assert ("probe", HOST, "T:8080") in network.calls  # the re-probe asked, and saw it closed
    assert f"{HOST}:8080/tcp" in result.unconfirmed
    assert result.findings == []
    assert {f.id for f in monitor.findings()} == baseline_findings
    assert all(c.port != 8080 for c in result.changes)


def test_expired_approval_comes_back_as_a_finding(tmp_path: Path) -> None:
    monitor, _network = replay_monitor(tmp_path, {HOST: {22: "ssh"}})
    past = utcnow() - timedelta(days=60)
    approved = (past - timedelta(days=100)).date().isoformat()
    review = past.date().isoformat()
    added, _ = monitor.baseline_import(
        _approve_baseline(tmp_path, HOST, 22, "ssh", approved=approved, review=review)
    )
    assert added == 1
    result = monitor.run_cycle(targets=[HOST], ports="22")
    assert result.approval_status[f"{HOST}:22/tcp"] == "expired"
    kinds = {(f.kind, f.port) for f in result.findings}
    assert ("approval_expired", 22) in kinds
    assert ("unapproved_port", 22) not in kinds


def test_vanished_approved_port_is_a_finding_after_confirmation(tmp_path: Path) -> None:
    monitor, network = replay_monitor(tmp_path, {HOST: {22: "ssh", 80: "http"}})
    today = utcnow().date().isoformat()
    review = (utcnow() + timedelta(days=90)).date().isoformat()
    monitor.baseline_import(
        _approve_baseline(tmp_path, HOST, 22, "ssh", approved=today, review=review)
    )
    monitor.run_cycle(targets=[HOST], ports="22,80")
    network.close_port(HOST, 22)
    result = monitor.run_cycle(targets=[HOST], ports="22,80")
    assert ("port_closed", 22) in {(c.kind, c.port) for c in result.changes}
    assert ("approved_port_gone", 22) in {(f.kind, f.port) for f in result.findings}


def test_readonly_refuses_every_write(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml")
    monitor = _monitor(tmp_path, readonly=True)
    with pytest.raises(PermissionRefused):
        monitor.run_cycle(targets=["127.0.0.1"], ports="1")
    with pytest.raises(PermissionRefused):
        monitor.pause()
    with pytest.raises(UserError):
        monitor.ack("F-000001")


def test_empty_justification_is_refused(tmp_path: Path) -> None:
    monitor, _network = replay_monitor(tmp_path, {HOST: {80: "http"}})
    result = monitor.run_cycle(targets=[HOST], ports="80")
    finding = result.findings[0]
    with pytest.raises(UserError, match="justification"):
        monitor.approve(finding.id, justification="   ", owner="x", requester="carol")
    with pytest.raises(UserError):
        monitor.flag(finding.id, reason="")
    flagged = monitor.flag(finding.id, reason="Nobody asked for this port")
    assert flagged.status == "flagged"


def test_a_scan_cycle_notifies_once_and_a_black_hole_does_not_stall_it(tmp_path: Path) -> None:
    import json
    import time

    from tests.servers import HttpCatcher

    with HttpCatcher() as good, HttpCatcher() as hole:
        hole.black_hole()
        monitor, _network = replay_monitor(
            tmp_path,
            {HOST: {80: "http"}},
            extra=(
                "[notify]\nurls = [\n"
                f'  {{ url = "json://127.0.0.1:{good.port}/", timeout = 1.0 }},\n'
                f'  {{ url = "json://127.0.0.1:{hole.port}/", timeout = 1.0 }},\n'
                "]\nbackoff_seconds = 60.0\n"
            ),
        )
        result = monitor.run_cycle(targets=[HOST], ports="80")
        new = {f.id for f in result.findings}
        assert new  # unapproved_port and unknown_host
        started = time.monotonic()
        monitor.deliver(seconds=5)
        # The silent target costs its own timeout (1 s) plus slack, never the 4 s default.
        assert time.monotonic() - started < 3.0
        received = [json.loads(r.json()["message"]) for r in good.wait_for(len(new))]
        sent_ids = {f["finding_id"] for doc in received for f in doc["findings"]}
        assert sent_ids == new
        assert len(received) == len(new)  # one message per finding, none twice
        # A second cycle that changes nothing sends nothing more.
        monitor.run_cycle(targets=[HOST], ports="80")
        monitor.deliver(seconds=2)
        assert len(good.accepted) == len(new)
        status = monitor.notifier.status()
        assert status["counts"]["pending"] >= 1  # the black hole's messages wait, not lost


def test_a_refused_approval_changes_no_approval(tmp_path: Path) -> None:
    monitor, _network = replay_monitor(tmp_path, {HOST: {80: "http"}})
    result = monitor.run_cycle(targets=[HOST], ports="80")
    finding = next(f for f in result.findings if f.kind == "unapproved_port")
    request_as(monitor, "carol", finding.id, justification="Web tier", owner="web")
    monitor.approve(finding.id)
    before = [(a.id, a.status) for a in monitor.approvals_list(include_retired=True)]
    with pytest.raises(UserError, match="only open findings"):
        monitor.approve(finding.id, justification="Again", owner="web", requester="carol")
    after = [(a.id, a.status) for a in monitor.approvals_list(include_retired=True)]
    assert after == before


def test_a_failed_scheduled_run_becomes_a_monitoring_gap_finding(tmp_path: Path) -> None:
    # UDP needs root; an unprivileged scanner makes every run of this group fail.
    config = write_config(tmp_path / "config.toml", {"dns": (["127.0.0.1"], "53")})
    config.write_text(config.read_text().replace('ports = "53"\n', 'ports = "53"\nudp = true\n'))
    unprivileged = ReplayScanner(
        Scope(["127.0.0.0/8"]), {"127.0.0.1": {"53/udp": "domain"}}, privileged=False
    )
    monitor = _monitor(tmp_path, scanner=unprivileged)
    with pytest.raises(UserError, match="UDP scanning needs root"):
        monitor.run_cycle(group="dns")
    gaps = [f for f in monitor.findings() if f.kind == "monitoring_gap"]
    assert [g.host for g in gaps] == ["dns"]
    actions = [e.action for e in monitor.audit_events()]
    assert "monitoring.gap" in actions


def test_a_host_that_answers_nothing_resolves_no_port_finding(tmp_path: Path) -> None:
    import re

    base = (Path(__file__).parent / "data" / "nmap_loopback.xml").read_text()
    web_block = re.compile(r"<host [^>]*>(?:(?!</host>).)*?127\.0\.0\.2.*?</host>", re.S)

    def later(text: str, days: int) -> str:
        shift = 86400 * days
        for stamp in ("1779876000", "1779876014"):
            text = text.replace(stamp, str(int(stamp) + shift))
        return text

    down = web_block.sub(
        '<host starttime="1779876000" endtime="1779876003"><status state="down" '
        'reason="no-response" reason_ttl="0"/><address addr="127.0.0.2" addrtype="ipv4"/>'
        "<hostnames></hostnames></host>",
        base,
    )
    closed_22 = base.replace(
        '<port protocol="tcp" portid="22"><state state="open"',
        '<port protocol="tcp" portid="22"><state state="closed"',
        1,
    )
    write_config(tmp_path / "config.toml")
    monitor = _monitor(tmp_path)
    for name, text in (("1.xml", base), ("2.xml", later(down, 1)), ("3.xml", later(closed_22, 2))):
        (tmp_path / name).write_text(text)

    monitor.import_xml(tmp_path / "1.xml")
    ssh = next(f for f in monitor.findings() if (f.host, f.port) == ("127.0.0.2", 22))
    # The host answered nothing: that proves no port closed, so the finding stays open.
    monitor.import_xml(tmp_path / "2.xml")
    assert monitor.finding(ssh.id).status == "new"
    # The host answers and port 22 is closed: now the condition is verified gone.
    monitor.import_xml(tmp_path / "3.xml")
    assert monitor.finding(ssh.id).status == "resolved"
