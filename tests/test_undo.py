"""Undo and bulk decisions through the real Monitor, store and journal (a replayed network)
and the real CLI: revoke a mistaken approval (the finding is back), reopen a flagged or
closed finding, and acknowledge, note or close several findings in one transaction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from portconsole.core.errors import UserError
from portconsole.core.monitor import Monitor
from tests.replay import replay_monitor
from tests.test_cli import run_cli

HOST = "127.0.0.2"
PORTS = "80,8080,8443"
SOD_OFF = "[approval]\nseparation_of_duties = false\n"


def scanned(tmp_path: Path) -> tuple[Monitor, list[str]]:
    """Three unapproved ports on one host: three new findings, ids in port order."""
    monitor, _network = replay_monitor(
        tmp_path, {HOST: {80: "http", 8080: "http", 8443: "https"}}, extra=SOD_OFF
    )
    result = monitor.run_cycle(targets=[HOST], ports=PORTS)
    result.settle_fingerprint()  # the -sV after detection is a transaction of its own
    findings = sorted(
        (f for f in result.findings if f.kind == "unapproved_port"), key=lambda f: f.port or 0
    )
    assert len(findings) == 3
    return monitor, [f.id for f in findings]


def journal_lines(tmp_path: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for segment in sorted((tmp_path / "data" / "journal").glob("*.jsonl")):
        lines += [json.loads(line) for line in segment.read_text().splitlines() if line]
    return lines


def cli_ok(tmp_path: Path, *args: str) -> str:
    done = run_cli(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_revoked_approval_puts_its_finding_back_at_once(tmp_path: Path) -> None:
    monitor, (web, _alt, _tls) = scanned(tmp_path)
    monitor.approve(web, justification="mistake: meant the other host", owner="web")
    approval_id = monitor.finding(web).approval_id
    monitor.close()
    refused = run_cli(tmp_path, "revoke", approval_id, "--reason", "  ")
    assert refused.returncode == 2 and "reason is required" in refused.stderr
    out = cli_ok(tmp_path, "revoke", approval_id, "--reason", "approved the wrong host")
    assert f"{approval_id} revoked ({HOST}:80/tcp); {web} is back in the queue" in out
    again = run_cli(tmp_path, "revoke", approval_id, "--reason", "twice")
    assert again.returncode == 2 and "already retired" in again.stderr

    monitor, _network = replay_monitor(tmp_path, {HOST: {80: "http", 8080: "http"}})
    try:
        finding = monitor.finding(web)
        assert finding.status == "new" and finding.approval_id == ""
        assert finding.timeline[-1].step == "reopened"
        assert "approved the wrong host" in finding.timeline[-1].text
        assert web in {f.id for f in monitor.findings()}
        approval = monitor.approvals_list(include_retired=True)[0]
        assert not approval.active and "approved the wrong host" in approval.retire_reason
        events = {e.action: e for e in monitor.audit_events()}
        assert events["approval.revoked"].details["reason"] == "approved the wrong host"
        reopened = events["finding.reopened"]
        assert reopened.resource["finding_id"] == web and reopened.details["from"] == "approved"
        assert "approval.revoke.refused" in events
        assert monitor.audit_verify().ok and monitor.store_check() == []
        # The next scan sees the same problem: the same finding, not a second one.
        cycle = monitor.run_cycle(targets=[HOST], ports=PORTS)
        assert [f.id for f in cycle.findings if f.port == 80] == []
        assert [f.id for f in monitor.findings() if f.port == 80] == [web]
    finally:
        monitor.close()


def test_revoking_when_the_port_is_not_known_open_leaves_it_to_the_next_scan(
    tmp_path: Path,
) -> None:
    monitor, network = replay_monitor(tmp_path, {HOST: {80: "http"}}, extra=SOD_OFF)
    web = monitor.run_cycle(targets=[HOST], ports="80").findings[0].id
    monitor.approve(web, justification="public web", owner="web")
    network.close_port(HOST, 80)
    monitor.run_cycle(targets=[HOST], ports="80")
    done = monitor.revoke(monitor.finding(web).approval_id, reason="no longer needed")
    assert done.finding is None and monitor.finding(web).status == "approved"
    network.open_port(HOST, 80, "http")
    raised = monitor.run_cycle(targets=[HOST], ports="80").findings
    assert [(f.kind, f.port) for f in raised if f.kind == "unapproved_port"] == [
        ("unapproved_port", 80)
    ]
    monitor.close()


def test_reopen_undoes_a_flag_and_a_close(tmp_path: Path) -> None:
    monitor, (web, alt, tls) = scanned(tmp_path)
    monitor.flag(web, reason="nobody asked for this")
    monitor.close_finding(alt, cause="lab box")
    with pytest.raises(UserError, match="cannot reopen .*: it is new"):
        monitor.reopen(tls, reason="why not")
    monitor.close()
    out = cli_ok(tmp_path, "reopen", web, "--reason", "the owner explained it")
    assert f"{web} reopened" in out
    data = json.loads(cli_ok(tmp_path, "reopen", alt, "--reason", "not a lab box", "--json"))
    assert data["finding"]["status"] == "new" and "cause" not in data["finding"]["details"]
    refused = run_cli(tmp_path, "reopen", tls, "--reason", "looks wrong")
    assert refused.returncode == 2 and "allowed when closed, flagged" in refused.stderr
    monitor, _network = replay_monitor(tmp_path, {HOST: {80: "http", 8080: "http"}})
    try:
        flagged = monitor.finding(web)
        assert (flagged.status, flagged.reason) == ("new", "")
        assert flagged.timeline[-1].text == "the owner explained it"
        reopened = [e for e in monitor.audit_events() if e.action == "finding.reopened"]
        assert [(e.resource["finding_id"], e.details["from"]) for e in reopened] == [
            (web, "flagged"),
            (alt, "closed"),
        ]
        assert monitor.audit_verify().ok and monitor.store_check() == []
    finally:
        monitor.close()


def test_a_closed_finding_raised_again_since_is_not_reopened(tmp_path: Path) -> None:
    monitor, (web, _alt, _tls) = scanned(tmp_path)
    monitor.close_finding(web, cause="lab box")
    newer = [f for f in monitor.run_cycle(targets=[HOST], ports=PORTS).findings if f.port == 80]
    assert len(newer) == 1
    with pytest.raises(UserError, match=f"raised again as {newer[0].id}"):
        monitor.reopen(web, reason="oops")
    monitor.close()


def test_ack_note_and_close_several_ids_in_one_transaction(tmp_path: Path) -> None:
    monitor, (web, alt, tls) = scanned(tmp_path)
    monitor.close()
    out = cli_ok(tmp_path, "ack", web, alt)
    assert out.splitlines() == [f"{web} acknowledged", f"{alt} acknowledged"]
    acks = [e for e in journal_lines(tmp_path) if e["action"] == "finding.ack"]
    assert [e["resource"]["finding_id"] for e in acks] == [web, alt]
    assert acks[0]["tx"] == acks[1]["tx"] == [acks[0]["seq"], 2]  # one transaction, 2 events

    # One of them cannot be acknowledged: nothing is, and the refusal names it.
    refused = run_cli(tmp_path, "ack", tls, web)
    assert refused.returncode == 2 and f"cannot acknowledge {web}" in refused.stderr
    assert "nothing done to the 2" in refused.stderr
    status = {
        f["id"]: f["status"] for f in json.loads(cli_ok(tmp_path, "findings", "--json"))["findings"]
    }
    assert status[tls] == "new"

    out = cli_ok(tmp_path, "note", web, alt, tls, "checked with the web team")
    assert out.splitlines()[-1] == f"note added to {tls}"
    data = json.loads(cli_ok(tmp_path, "close", web, tls, "--cause", "test servers", "--json"))
    assert [f["status"] for f in data["findings"]] == ["closed", "closed"]
    lines = journal_lines(tmp_path)
    notes = [e for e in lines if e["action"] == "finding.note"]
    closes = [e for e in lines if e["action"] == "finding.closed"]
    assert len(notes) == 3 and notes[0]["tx"][1] == 3
    assert [e["resource"]["finding_id"] for e in closes] == [web, tls]
    monitor, _network = replay_monitor(tmp_path, {HOST: {80: "http"}})
    try:
        assert monitor.audit_verify().ok and monitor.store_check() == []
        assert [f.id for f in monitor.findings() if f.port] == [alt]
    finally:
        monitor.close()
