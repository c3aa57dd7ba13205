"""Four eyes, reviews and closing with a cause in the console: request (e), approve a pending
request (a), review an overdue approval (v) and close with a cause (x), each through the real
form into the real store and journal, at 80x24."""

from __future__ import annotations

from pathlib import Path

from msgspec.structs import replace

from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.commands import console_commands
from portconsole.tui.screens.approval_forms import ApproveForm, RequestForm, ReviewForm
from portconsole.tui.screens.forms import TextDecision
from portconsole.tui.screens.triage import TriageScreen
from tests.tui.conftest import Site, screen_text, settle, type_text
from tests.tui.test_triage import finding_on, open_triage


async def test_request_with_keys_records_the_requester(site: Site, scanned: Monitor) -> None:
    finding = finding_on(scanned, site.web, site.ports["http"])
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, RequestForm)
        assert str(scanned.actor) in screen_text(app)
        await type_text(pilot, "public web")
        await pilot.press("tab")
        await type_text(pilot, "web team")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen), screen_text(app)
    fresh = site.open_monitor()
    try:
        request = fresh.pending_request(finding.id)
        assert request is not None and request.requester_person == scanned.actor.person
        assert (request.justification, request.owner) == ("public web", "web team")
        event = next(e for e in fresh.audit_events() if e.action == "approval.requested")
        assert event.origin == "tui" and event.resource["request_id"] == request.id
        assert fresh.finding(finding.id).status == "new"  # still waiting for the approver
    finally:
        fresh.close()


async def test_approve_shows_and_uses_the_pending_request(site: Site, scanned: Monitor) -> None:
    finding = finding_on(scanned, site.web, site.ports["http"])
    me = scanned.actor
    scanned.actor = replace(me, user="alice", sudo_user=None)
    scanned.request(finding.id, justification="public web", owner="web team", ticket="CHG-4")
    scanned.actor = me
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, ApproveForm)
        text = screen_text(app)
        assert "R-000001 by alice@" in text and "Why: public web" in text
        assert "Justification*" not in text  # the request's terms, not typed again
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen), screen_text(app)
    fresh = site.open_monitor()
    try:
        approval = next(a for a in fresh.approvals_list() if a.port == site.ports["http"])
        assert approval.four_eyes and approval.requester == "alice"
        assert approval.approver == me.person and approval.ticket == "CHG-4"
        assert fresh.finding(finding.id).status == "approved"
    finally:
        fresh.close()


async def test_approve_without_a_request_is_refused_inline_with_separation_of_duties(
    site: Site, scanned: Monitor
) -> None:
    finding = finding_on(scanned, site.web, site.ports["http"])
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        await pilot.press("a")
        await settle(pilot)
        assert "separation of duties needs one" in screen_text(app)
        await type_text(pilot, "public web")
        await pilot.press("tab")
        await type_text(pilot, "web team")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ApproveForm)  # refused, the form keeps what was typed
        assert "separation of duties" in screen_text(app)
    refused = [e for e in scanned.audit_events() if e.action == "finding.approve.refused"]
    assert len(refused) == 1 and scanned.approvals_list() == []


async def test_close_with_a_cause_takes_it_out_of_the_queue(site: Site, scanned: Monitor) -> None:
    finding = finding_on(scanned, site.legacy, site.ports["telnet"])
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_triage(pilot, app, finding.id)
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, TextDecision)
        await pilot.press("enter")
        await settle(pilot)
        assert "The cause is required" in screen_text(app)
        await type_text(pilot, "decommissioned lab box")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen)
        assert finding.id not in table.keys
    closed = site.open_monitor().finding(finding.id)
    assert closed.status == "closed" and closed.details["cause"] == "decommissioned lab box"


async def test_review_an_overdue_approval_from_its_finding(
    site: Site, monitor: Monitor, tmp_path: Path
) -> None:
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text(
        f"""version: 1
hosts:
  - selector: [{site.web}]
    rules:
      - ports: "22"
        service: ssh
        justification: Bastion access
        owner: platform
        requester: alice
        approver: bob
        approved_at: 2025-01-01
        review_by: 2025-06-01
"""
    )
    monitor.baseline_import(baseline)
    monitor.run_cycle("web")
    expired = next(f for f in monitor.findings() if f.kind == "approval_expired")
    other = finding_on(monitor, site.web, site.ports["http"])
    app = PortConsoleApp(monitor, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_triage(pilot, app, other.id)
        screen = app.screen
        assert screen.check_action("review", ()) is False  # only on an overdue review
        assert table.select_key(expired.id)
        await pilot.pause()
        assert screen.check_action("review", ()) is True
        await pilot.press("v")
        await settle(pilot)
        assert isinstance(app.screen, ReviewForm)
        assert "approval A-000001" in screen_text(app)
        await type_text(pilot, "forever")
        await pilot.press("tab")
        await type_text(pilot, "still the bastion")
        await pilot.press("enter")
        await settle(pilot)
        assert "keep, change or retire" in screen_text(app)  # outcome checked first
        await pilot.press("ctrl+u")  # the outcome field has the focus: clear it
        await type_text(pilot, "keep")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen), screen_text(app)
        assert expired.id not in table.keys
    fresh = site.open_monitor()
    try:
        approval = fresh.approvals_list()[0]
        last = approval.last_review()
        assert last is not None and (last.outcome, last.note) == ("keep", "still the bastion")
        assert fresh.finding(expired.id).status == "resolved"
    finally:
        fresh.close()


async def test_the_palette_offers_a_review_with_the_id_typed(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        command = next(c for c in console_commands(app) if c.name == "Review an approval…")
        command.run()
        await settle(pilot)
        assert isinstance(app.screen, ReviewForm)
        await type_text(pilot, "A-000009")
        await pilot.press("tab")
        await type_text(pilot, "keep")
        await pilot.press("tab")
        await type_text(pilot, "checked")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ReviewForm)
        assert "no approval 'A-000009'" in screen_text(app)
