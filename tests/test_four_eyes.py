"""Real four eyes, reviews and closing with a cause: requests, approvals, reviews and closed
findings through the real Monitor, store and journal (a replayed network), the real CLI as
two people (sudo users behind root), and the SSH key fingerprint from a real key file."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
from msgspec.structs import replace

from portconsole.core.domain.evidence_register import approval_row, review_rows
from portconsole.core.errors import PermissionRefused, UserError
from portconsole.core.identity import Actor, parse_ssh_user_auth
from portconsole.core.monitor import Monitor
from tests.replay import replay_monitor
from tests.test_cli import run_cli

HOST = "127.0.0.2"
SOD_OFF = "[approval]\nseparation_of_duties = false\n"


def acting_as(monitor: Monitor, person: str) -> None:
    """The Monitor's identity becomes another OS user (as another login would give)."""
    monitor.actor = replace(monitor.actor, user=person, sudo_user=None)


def scanned(tmp_path: Path, extra: str = "") -> tuple[Monitor, str]:
    monitor, _network = replay_monitor(tmp_path, {HOST: {80: "http"}}, extra=extra)
    result = monitor.run_cycle(targets=[HOST], ports="80")
    # Its -sV lands in the background; landing after a test's decision (a close) it is a
    # later look at the still-open port, raising the finding the next cycle should raise.
    result.settle_fingerprint(10)
    finding = next(f for f in result.findings if f.kind == "unapproved_port")
    return monitor, finding.id


def actions(monitor: Monitor) -> list[str]:
    return [e.action for e in monitor.audit_events()]


# ----- identity: the SSH key behind the session -------------------------------------------


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
def test_ssh_key_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path, key_type: str) -> None:
    key = tmp_path / f"id_{key_type}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(key)], check=True, timeout=60
    )
    expected = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    kind, blob = key.with_suffix(".pub").read_text().split()[:2]
    auth = tmp_path / "auth-info"
    # sshd writes one line per method; the public key is the one to record.
    auth.write_text(f"keyboard-interactive\npublickey {kind} {blob}\n")
    env = {"SSH_USER_AUTH": str(auth), "SSH_CONNECTION": "127.0.0.9 50000 127.0.0.1 22"}
    actor = Actor.current("cli", env)
    assert expected.startswith("SHA256:") and actor.ssh_key == expected
    assert f"key {expected}" in str(actor)
    assert Actor.from_json(actor.to_json()).ssh_key == expected


def test_a_malformed_or_hostile_auth_info_gives_no_key(tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, blob = Path(f"{key}.pub").read_text().split()[:2]

    def fingerprint_of(text: str | bytes) -> str | None:
        path = tmp_path / "auth"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return parse_ssh_user_auth({"SSH_USER_AUTH": str(path)})

    assert fingerprint_of(f"publickey {kind} {blob}\n")  # the control: a good line works
    assert fingerprint_of(f"publickey ssh-rsa {blob}\n") is None  # type is not the blob's
    assert fingerprint_of(f"publickey {kind} {blob[:-6]}!!!!\n") is None  # not base64
    assert fingerprint_of(f"password {kind} {blob}\n") is None
    assert fingerprint_of(b"publickey " + b"A" * 70_000) is None  # oversized file
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert parse_ssh_user_auth({"SSH_USER_AUTH": str(fifo)}) is None  # never blocks
    assert parse_ssh_user_auth({"SSH_USER_AUTH": str(tmp_path)}) is None  # a directory
    assert parse_ssh_user_auth({"SSH_USER_AUTH": str(tmp_path / "missing")}) is None
    assert Actor.current("cli", {}).ssh_key is None


# ----- requests and approvals --------------------------------------------------------------


def test_a_request_by_one_person_approved_by_another_is_four_eyes(tmp_path: Path) -> None:
    monitor, finding_id = scanned(tmp_path)
    acting_as(monitor, "alice")
    request = monitor.request(
        finding_id,
        justification="Public web tier",
        owner="web team",
        ticket="CHG-7",
        on_behalf_of="the web team lead",
    )
    assert request.id == "R-000001" and request.requester_person == "alice"
    assert monitor.requests_list() == [request]
    with pytest.raises(UserError, match="already has a pending request R-000001"):
        monitor.request(finding_id, justification="Again", owner="web team")
    acting_as(monitor, "bob")
    with pytest.raises(UserError, match="approve it as requested"):
        monitor.approve(finding_id, justification="Something else")
    finding = monitor.approve("R-000001")
    assert finding.status == "approved"
    approval = monitor.approvals_list()[0]
    assert (approval.requester, approval.approver) == ("alice", "bob")
    assert approval.request_id == "R-000001" and approval.on_behalf_of == "the web team lead"
    assert approval.requested_by.startswith("alice@") and approval.created_by.startswith("bob@")
    assert approval.four_eyes and "alice" in approval.four_eyes_basis
    assert (approval.justification, approval.ticket) == ("Public web tier", "CHG-7")
    assert monitor.requests_list() == []
    assert monitor.requests_list(include_done=True)[0].approval_id == approval.id
    events = {e.action: e for e in monitor.audit_events()}
    assert events["approval.requested"].actor["user"] == "alice"
    added = events["approval.added"]
    assert added.actor["user"] == "bob"
    assert added.details["request_id"] == "R-000001" and added.details["four_eyes"] is True
    assert monitor.audit_verify().ok
    assert monitor.store_check() == []  # the requests table is replayed from the journal
    row = approval_row(approval, monitor.clock(), monitor.settings)
    assert row["four_eyes"] is True and row["requested_by"] == approval.requested_by
    assert row["approved_by"] == approval.created_by and row["last_review"] is None


def test_separation_of_duties_refuses_an_approval_without_a_distinct_requester(
    tmp_path: Path,
) -> None:
    monitor, finding_id = scanned(tmp_path)  # separation of duties on: the default
    acting_as(monitor, "alice")
    # A requester typed by the approver is not four eyes.
    with pytest.raises(PermissionRefused, match="separation of duties: no request"):
        monitor.approve(finding_id, justification="web", owner="web", requester="carol")
    monitor.request(finding_id, justification="Public web tier", owner="web team")
    with pytest.raises(PermissionRefused, match="requested and approved by the same person"):
        monitor.approve(finding_id)
    refused = [e for e in monitor.audit_events() if e.action == "finding.approve.refused"]
    assert len(refused) == 2 and all(e.outcome == "failure" for e in refused)
    assert "same person (alice)" in refused[1].details["reason"]
    assert monitor.approvals_list() == [] and monitor.finding(finding_id).status == "new"
    # sudo: root acting for alice is alice.
    monitor.actor = replace(monitor.actor, user="root", sudo_user="alice")
    with pytest.raises(PermissionRefused):
        monitor.approve(finding_id)
    acting_as(monitor, "bob")
    assert monitor.approve(finding_id).status == "approved"  # the pending request is used


def test_with_separation_of_duties_off_the_old_approval_works_without_four_eyes(
    tmp_path: Path,
) -> None:
    monitor, finding_id = scanned(tmp_path, SOD_OFF)
    monitor.approve(finding_id, justification="Web tier", owner="web", requester="carol")
    approval = monitor.approvals_list()[0]
    assert approval.requester == "carol" and not approval.four_eyes
    assert "carol was named by the approver (not counted)" in approval.four_eyes_basis
    added = next(e for e in monitor.audit_events() if e.action == "approval.added")
    assert added.details["four_eyes"] is False and added.details["request_id"] is None


# ----- reviews -----------------------------------------------------------------------------


def expired_approval(tmp_path: Path) -> tuple[Monitor, str]:
    """An approval whose review date passed, and the approval_expired finding a scan raised."""
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text(
        f"""version: 1
hosts:
  - selector: [{HOST}]
    rules:
      - ports: "80"
        service: http
        justification: Public web tier
        owner: web team
        requester: alice
        approver: bob
        approved_at: 2025-01-01
        review_by: 2025-06-01
"""
    )
    monitor, _network = replay_monitor(tmp_path, {HOST: {80: "http"}})
    monitor.baseline_import(baseline)
    result = monitor.run_cycle(targets=[HOST], ports="80")
    result.settle_fingerprint(10)  # as in scanned(): its -sV must not land after a review
    expired = next(f for f in result.findings if f.kind == "approval_expired")
    return monitor, expired.id


def test_a_keep_review_moves_the_review_date_and_resolves_the_expired_finding(
    tmp_path: Path,
) -> None:
    monitor, finding_id = expired_approval(tmp_path)
    approval_id = monitor.finding(finding_id).details["approval_id"]
    before = monitor.approvals_list()[0].review_by
    with pytest.raises(UserError, match="needs a note"):
        monitor.review(approval_id, outcome="keep", note=" tbd ")
    with pytest.raises(UserError, match="more than 6 months"):
        monitor.review(approval_id, outcome="keep", note="ok", next_review=date(2099, 1, 1))
    acting_as(monitor, "carol")
    reviewed = monitor.review(approval_id, outcome="keep", note="still the public web tier")
    now = monitor.clock()
    assert reviewed.review_by > now + timedelta(days=150) and reviewed.active
    review = reviewed.reviews[-1]
    assert (review.outcome, review.reviewer_person) == ("keep", "carol")
    assert review.previous_review_by == before
    # Point in time: before the review the approval was overdue, after it is not.
    assert reviewed.is_expired(now - timedelta(seconds=1)) and not reviewed.is_expired(now)
    finding = monitor.finding(finding_id)
    assert finding.status == "resolved" and finding.timeline[-1].step == "remediated"
    again = monitor.run_cycle(targets=[HOST], ports="80")
    assert again.findings == []  # nothing re-raised
    assert monitor.finding(finding_id).status == "resolved"
    event = next(e for e in monitor.audit_events() if e.action == "approval.reviewed")
    assert event.details["outcome"] == "keep" and event.actor["user"] == "carol"
    assert event.details["next_review_by"] == reviewed.reviews[-1].to_json()["next_review_by"]
    assert "finding.resolved" in actions(monitor) and monitor.store_check() == []
    row = approval_row(reviewed, now, monitor.settings)
    assert row["last_review"]["outcome"] == "keep" and row["review"] == "ok"
    assert row["four_eyes"] is False and "baseline" in row["four_eyes_basis"]
    # Recorded already overdue (review date 2025-06-01), reviewed later: overdue in a
    # period holding its recording, not in one after the review.
    recorded = reviewed.created_at
    assert recorded is not None
    done, overdue = review_rows([reviewed], recorded - timedelta(days=1), now)
    assert [d["outcome"] for d in done] == ["keep"] and overdue == [approval_id]
    done, overdue = review_rows([reviewed], now + timedelta(seconds=1), now + timedelta(days=9))
    assert done == [] and overdue == []
    done, overdue = review_rows([reviewed], now, reviewed.review_by + timedelta(days=1))
    assert overdue == [approval_id]  # the next review date passes unreviewed


def test_a_retire_review_retires_the_approval_and_the_port_is_unapproved_again(
    tmp_path: Path,
) -> None:
    monitor, finding_id = expired_approval(tmp_path)
    approval_id = monitor.finding(finding_id).details["approval_id"]
    with pytest.raises(UserError, match="sets no next review date"):
        monitor.review(approval_id, outcome="retire", note="gone", next_review=date.today())
    with pytest.raises(UserError, match="keep, change, retire"):
        monitor.review(approval_id, outcome="maybe", note="hm")
    retired = monitor.review(approval_id, outcome="retire", note="web tier moved to the CDN")
    assert not retired.active and retired.retire_reason.endswith("moved to the CDN")
    with pytest.raises(UserError, match="retired"):
        monitor.review(approval_id, outcome="keep", note="again")
    assert {"approval.reviewed", "approval.retired"} <= set(actions(monitor))
    again = monitor.run_cycle(targets=[HOST], ports="80")
    assert [f.kind for f in again.findings if f.port == 80] == ["unapproved_port"]


def test_a_change_review_keeps_the_approval_in_force(tmp_path: Path) -> None:
    monitor, finding_id = expired_approval(tmp_path)
    approval_id = monitor.finding(finding_id).details["approval_id"]
    changed = monitor.review(approval_id, outcome="change", note="move to 443 (CHG-9)")
    assert changed.active and changed.reviews[-1].outcome == "change"
    assert not changed.is_expired(monitor.clock())


# ----- closing with a cause ----------------------------------------------------------------


def test_close_with_a_cause_is_final_and_journaled(tmp_path: Path) -> None:
    monitor, finding_id = scanned(tmp_path)
    with pytest.raises(UserError, match="a cause is required"):
        monitor.close_finding(finding_id, cause="  ")
    closed = monitor.close_finding(finding_id, cause="lab web server, switched off")
    assert closed.status == "closed" and closed.details["cause"] == "lab web server, switched off"
    assert closed.timeline[-1].step == "closed" and not closed.is_open
    assert finding_id not in {f.id for f in monitor.findings()}
    with pytest.raises(UserError, match="cannot close"):
        monitor.close_finding(finding_id, cause="twice")
    event = next(e for e in monitor.audit_events() if e.action == "finding.closed")
    assert event.details["cause"] == "lab web server, switched off"
    assert monitor.audit_verify().ok and monitor.store_check() == []
    # The same problem seen again is a new finding, not the closed one reopened.
    again = monitor.run_cycle(targets=[HOST], ports="80")
    fresh = [f for f in again.findings if f.kind == "unapproved_port"]
    assert len(fresh) == 1 and fresh[0].id != finding_id
    assert monitor.finding(finding_id).status == "closed"


# ----- the CLI, as two people ------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="two people need sudo users behind root")
def test_the_cli_records_a_request_and_an_approval_by_two_people(tmp_path: Path) -> None:
    monitor, finding_id = scanned(tmp_path)
    monitor.close()

    def as_person(person: str, *args: str) -> subprocess.CompletedProcess[str]:
        os.environ["SUDO_USER"] = person
        try:
            return run_cli(tmp_path, *args)
        finally:
            del os.environ["SUDO_USER"]

    made = as_person(
        "alice", "request", finding_id, "--justification", "Public web", "--owner", "web"
    )
    assert made.returncode == 0, made.stderr
    assert "R-000001 requested by root(sudo:alice)@" in made.stdout
    self_approved = as_person("alice", "approve", "R-000001")
    assert self_approved.returncode == 2 and "same person (alice)" in self_approved.stderr
    approved = as_person("bob", "approve", finding_id)
    assert approved.returncode == 0, approved.stderr
    assert "four eyes met" in approved.stdout
    listing = run_cli(tmp_path, "approvals")
    assert "alice" in listing.stdout and " yes " in listing.stdout and "never" in listing.stdout
    reviewed = as_person("carol", "review", "A-000001", "--outcome", "keep", "--note", "fine")
    assert reviewed.returncode == 0 and "by root(sudo:carol)@" in reviewed.stdout
    data = json.loads(run_cli(tmp_path, "approvals", "--json").stdout)["approvals"][0]
    assert data["four_eyes"] is True and data["reviews"][0]["reviewer_person"] == "carol"
    assert "A-000001" in run_cli(tmp_path, "requests", "--all").stdout
    bad = run_cli(tmp_path, "review", "A-000001", "--outcome", "keep", "--note", "")
    assert bad.returncode == 2 and "note" in bad.stderr
    still_open = json.loads(run_cli(tmp_path, "findings", "--json").stdout)["findings"]
    other = still_open[0]["id"]
    closed = run_cli(tmp_path, "close", other, "--cause", "lab host, expected")
    assert closed.returncode == 0 and f"{other} closed: lab host, expected" in closed.stdout
    everything = json.loads(run_cli(tmp_path, "findings", "--all", "--json").stdout)
    assert next(f for f in everything["findings"] if f["id"] == other)["status"] == "closed"
