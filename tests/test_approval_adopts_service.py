"""An approval made before -sV named its port adopts what -sV names, once.

A sweep names an open port by nmap's port table (8081 -> `blackice-icecap`); -sV runs
after detection, in the background. An operator who approves the finding in between gets
an approval of that guess. Its port's first identification must replace the guess (an
`approval.service_adopted` event in the fingerprint's transaction), not raise
`service_changed` on the port just approved; a later identification of something else
still does. Approvals of identified ports and baseline approvals are held to as stated.

The first test runs the real nmap against a real loopback HTTP listener; the others replay
nmap's XML (ReplayScanner) and hold the background -sV at a gate until the approval is in.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from portconsole.core.adapters.replay import ReplayScanner, Service
from portconsole.core.domain.approval import PORT_TABLE, Approval
from portconsole.core.domain.finding import Finding
from portconsole.core.monitor import Monitor
from tests.fleet import TestFleet, is_listening
from tests.replay import replay_monitor
from tests.test_cli import run_cli

HOST = "127.0.0.2"
SOD_OFF = "[approval]\nseparation_of_duties = false\n"
# Served on 8081, which nmap's port table calls blackice-icecap; -sV says http.
WEB = Service("http", "nginx", "1.22.1", table="blackice-icecap")
# A telnetd on 2323, which the port table calls 3d-nfsd.
TELNET = Service("telnet", "Linux telnetd", table="3d-nfsd")
SSH = Service("ssh", "OpenSSH", "9.2p1", table="blackice-icecap")
ADOPTED = "approval.service_adopted"


def unapproved(monitor: Monitor, port: int) -> Finding:
    (finding,) = [
        f for f in monitor.findings_book.all() if f.kind == "unapproved_port" and f.port == port
    ]
    return finding


def approval_of(monitor: Monitor, port: int) -> Approval:
    (approval,) = [a for a in monitor.approvals_list() if a.port == port]
    return approval


def kinds_on(monitor: Monitor, port: int) -> list[str]:
    return sorted(f.kind for f in monitor.findings_book.all() if f.port == port and f.is_open)


def records(monitor: Monitor, action: str) -> list[dict[str, Any]]:
    return [r for r in monitor.audit.records() if r["action"] == action]


def approve(monitor: Monitor, finding: Finding) -> Approval:
    monitor.approve(finding.id, justification="Admin console for the web team", owner="web")
    assert finding.port is not None
    return approval_of(monitor, finding.port)


def gated(replay: ReplayScanner) -> threading.Event:
    """Hold every -sV the replay is asked until the returned event is set (an approval
    made meanwhile lands between the sweep's detection and the fingerprint's)."""
    gate = threading.Event()

    def hold(kind: str, _address: str, _ports: str) -> None:
        if kind == "fingerprint":
            assert gate.wait(30), "the test never opened the gate"

    replay.on_call = hold
    return gate


@pytest.mark.nmap
def test_an_approval_before_sv_adopts_what_real_nmap_names(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        assert not is_listening(host, 8081)
        port = fleet.listen(host, "http", 8081)
        config = tmp_path / "config.toml"
        config.write_text(
            'scope = ["127.0.0.0/8"]\n\n[scan]\ntiming = 4\nworkers = 2\nconfirm_probes = 1\n\n'
            f'[groups.lab]\ntargets = ["{host}"]\nports = "{port}"\ninterval = 30\njitter = 0\n\n'
            + SOD_OFF
        )
        monitor = Monitor.open(config, tmp_path / "data")
        try:
            result = monitor.run_cycle(group="lab")
            finding = unapproved(monitor, port)
            guessed = finding.service
            assert guessed and guessed != "http"  # the port table's name, not -sV's
            approval = approve(monitor, finding)  # before the -sV has landed
            # Had -sV landed first, the approval would expect http and prove nothing here.
            assert (approval.service, approval.service_basis) == (guessed, PORT_TABLE)
            (added,) = records(monitor, "approval.added")
            assert added["details"]["service_basis"] == PORT_TABLE

            result.settle_fingerprint(90)
            assert result.fingerprinted is not None and result.fingerprinted.scan is not None
            assert "service_changed" not in kinds_on(monitor, port)
            approval = approval_of(monitor, port)
            assert (approval.service, approval.service_basis) == ("http", "")
            assert approval.product_pattern == ""  # the product does not become a pattern
            (event,) = records(monitor, ADOPTED)
            assert event["details"] == {
                "approval_id": approval.id,
                "guessed": guessed,
                "identified": "http",
                "product_pattern": "",
                "scan_id": result.fingerprinted.scan.scan_id,
            }
            (ingest,) = records(monitor, "scan.fingerprint")
            assert event["tx"] == ingest["tx"]  # the fingerprint's own transaction
            assert monitor.audit_verify().ok and monitor.store_check() == []
            # The journal is the record: a rebuild from it gives the adopted approval.
            monitor.store_rebuild()
            assert approval_of(monitor, port).service == "http"

            # A later -sV that names something else is a change behind the approval.
            fleet.close(host, port)
            assert fleet.listen(host, "ssh", port) == port
            again = monitor.run_cycle(group="lab", fingerprint="all")
            again.settle_fingerprint(90)
            (changed,) = [
                f
                for f in monitor.findings_book.all()
                if f.kind == "service_changed" and f.port == port
            ]
            assert changed.service == "ssh" and changed.details["expected_service"] == "http"
            assert approval_of(monitor, port).service == "http"
            assert len(records(monitor, ADOPTED)) == 1
            assert monitor.audit_verify().ok
        finally:
            monitor.close()

    verified = run_cli(tmp_path, "audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout
    shown = run_cli(tmp_path, "audit", "show")
    assert shown.returncode == 0, shown.stderr
    (line,) = [row for row in shown.stdout.splitlines() if ADOPTED in row]
    assert f"approval_id={approval.id} host={host} port={port} proto=tcp" in line


def test_an_adopted_service_is_judged_like_a_stated_one_from_then_on(tmp_path: Path) -> None:
    monitor, replay = replay_monitor(tmp_path, {HOST: {8081: WEB, 2323: TELNET}}, extra=SOD_OFF)
    try:
        gate = gated(replay)
        result = monitor.run_cycle(targets=[HOST], ports="2323,8081")
        web = approve(monitor, unapproved(monitor, 8081))
        telnet = approve(monitor, unapproved(monitor, 2323))
        assert (web.service, web.service_basis) == ("blackice-icecap", PORT_TABLE)
        assert (telnet.service, telnet.service_basis) == ("3d-nfsd", PORT_TABLE)
        listed = run_cli(tmp_path, "approvals")
        assert listed.returncode == 0, listed.stderr
        assert "blackice-icecap (guess, awaiting -sV)" in listed.stdout
        gate.set()
        result.settle_fingerprint(30)

        assert approval_of(monitor, 8081).service == "http"
        assert kinds_on(monitor, 8081) == []
        assert "awaiting -sV" not in run_cli(tmp_path, "approvals").stdout
        # Adopted telnet is still an insecure service: approved without a mitigation.
        assert approval_of(monitor, 2323).service == "telnet"
        assert kinds_on(monitor, 2323) == ["insecure_service"]
        adopted = {r["resource"]["port"]: r["details"] for r in records(monitor, ADOPTED)}
        assert adopted[8081]["guessed"] == "blackice-icecap"
        assert adopted[2323]["identified"] == "telnet"

        # The next identification is judged against the adopted service, never adopted.
        replay.open_port(HOST, 8081, SSH)
        monitor.run_cycle(targets=[HOST], ports="2323,8081", fingerprint="all").settle_fingerprint(
            30
        )
        assert kinds_on(monitor, 8081) == ["service_changed"]
        assert approval_of(monitor, 8081).service == "http"
        assert len(records(monitor, ADOPTED)) == 2
        assert monitor.audit_verify().ok and monitor.store_check() == []
    finally:
        monitor.close()


def test_approvals_of_identified_ports_and_baseline_rules_adopt_nothing(tmp_path: Path) -> None:
    monitor, replay = replay_monitor(tmp_path, {HOST: {8081: WEB, 22: SSH}}, extra=SOD_OFF)
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text(
        f"version: 1\nhosts:\n  - selector: [{HOST}]\n    rules:\n"
        '      - ports: "22"\n        proto: tcp\n        service: blackice-icecap\n'
        "        justification: Remote administration for the platform team\n"
        "        owner: platform-team\n        requester: alice\n        approver: bob\n"
        "        ticket: CHG-1\n        approved_at: 2026-09-01\n"
        "        review_by: 2027-02-01\n"
    )
    try:
        monitor.baseline_import(baseline)
        # Port 22's first -sV names ssh: the baseline rule said otherwise, and is held to it.
        monitor.run_cycle(targets=[HOST], ports="22,8081").settle_fingerprint(30)
        assert approval_of(monitor, 22).service == "blackice-icecap"
        assert kinds_on(monitor, 22) == ["service_changed"]

        # 8081 was identified before it was approved: the approval expects -sV's name.
        web = approve(monitor, unapproved(monitor, 8081))
        assert (web.service, web.service_basis) == ("http", "")
        replay.open_port(HOST, 8081, Service("mysql", "MySQL", "8.0.36", table="blackice-icecap"))
        monitor.run_cycle(targets=[HOST], ports="22,8081", fingerprint="all").settle_fingerprint(30)
        assert kinds_on(monitor, 8081) == ["service_changed"]
        assert approval_of(monitor, 8081).service == "http"
        assert records(monitor, ADOPTED) == []
        assert monitor.audit_verify().ok
    finally:
        monitor.close()


def test_a_record_without_a_service_basis_reads_as_stated() -> None:
    stated = Approval.from_json(
        {
            "id": "A-000001",
            "host": HOST,
            "port": 8081,
            "proto": "tcp",
            "service": "http",
            "product_pattern": "",
            "justification": "web",
            "owner": "web",
            "requester": "",
            "approver": "bob",
            "ticket": "",
            "approved_at": "2026-10-01T06:00:00Z",
            "review_by": "2027-01-01T00:00:00Z",
            "mitigation": "",
            "source": "cli",
        }
    )
    assert stated.service_basis == "" and not stated.awaits_identification
    assert "service_basis" not in stated.to_json()  # stored as before
    guessed = Approval.from_json({**stated.to_json(), "service_basis": PORT_TABLE})
    assert guessed.awaits_identification and guessed.to_json()["service_basis"] == PORT_TABLE
