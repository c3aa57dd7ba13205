"""Triage: every decision goes through the real form into the real store and audit chain."""

from __future__ import annotations

from pathlib import Path

from portconsole.core.adapters.replay import Service
from portconsole.core.domain.finding import Finding
from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.screens.approval_forms import ApproveForm
from portconsole.tui.screens.forms import ConfirmDecision, TextDecision
from portconsole.tui.screens.triage import TriageScreen
from portconsole.tui.widgets import KeyedTable
from tests.tui.conftest import (
    Site,
    open_replay_monitor,
    replay_network,
    screen_text,
    settle,
    type_text,
    write_config,
)


def finding_on(monitor: Monitor, host: str, port: int) -> Finding:
    return next(f for f in monitor.findings() if f.host == host and f.port == port)


async def open_triage(pilot: object, app: PortConsoleApp, finding_id: str) -> KeyedTable:
    await settle(pilot)
    await pilot.press("2")  # type: ignore[attr-defined]
    await settle(pilot)
    assert isinstance(app.screen, TriageScreen)
    table = app.screen.query_one("#findings", KeyedTable)
    assert table.select_key(finding_id)
    await pilot.pause()  # type: ignore[attr-defined]
    return table


async def test_queue_lists_open_findings_worst_first(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        table = app.screen.query_one("#findings", KeyedTable)
        open_ids = {f.id for f in scanned.findings()}
        assert set(table.keys) == open_ids and len(open_ids) == 3
        ranks = {"critical": 0, "high": 1, "medium": 2, "low": 3}
        severities = [ranks[scanned.finding(key).severity] for key in table.keys]
        assert severities == sorted(severities)
        assert "unapproved_port" in screen_text(app)


async def test_a_snapshot_landing_while_triage_opens_waits_for_it(
    site: Site, scanned: Monitor
) -> None:
    """A store read that lands between the `2` key and the triage screen's composition
    (seen under CI load) redraws nothing yet; the screen draws itself when it opens."""
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        switching = app.switch_mode("triage")  # the screen exists, not yet composed
        assert isinstance(app.screen, TriageScreen) and not app.screen.is_mounted
        app.generation += 1  # what a landed snapshot does before it redraws
        app._redraw_current()
        await switching
        await settle(pilot)
        table = app.screen.query_one("#findings", KeyedTable)
        assert set(table.keys) == {f.id for f in scanned.findings()} and table.keys


async def test_approve_with_keys_writes_store_and_audit(site: Site, scanned: Monitor) -> None:
    # Typed terms without a request: allowed only while separation of duties is off (the
    # request path is tests/tui/test_four_eyes.py); the typed requester is kept as text.
    scanned.settings.approval.separation_of_duties = False
    finding = finding_on(scanned, site.web, site.ports["http"])
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_triage(pilot, app, finding.id)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, ApproveForm)
        text = screen_text(app)
        assert str(scanned.actor) in text  # who you are, before you confirm
        assert scanned.default_review_by().isoformat() in text
        await type_text(pilot, "public web")
        await pilot.press("tab")
        await type_text(pilot, "web team")
        await pilot.press("tab")
        await type_text(pilot, "carol")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen), screen_text(app)
        assert finding.id not in table.keys  # it left the queue
    fresh = site.open_monitor()
    try:
        assert fresh.finding(finding.id).status == "approved"
        approval = next(a for a in fresh.approvals_list() if a.port == site.ports["http"])
        assert approval.justification == "public web"
        assert approval.owner == "web team"
        assert approval.requester == "carol"
        assert approval.review_by.date() == fresh.default_review_by()
        actions = [e.action for e in fresh.audit_events()]
        assert "approval.added" in actions and "finding.approved" in actions
        added = next(e for e in fresh.audit_events() if e.action == "approval.added")
        assert added.details["justification"] == "public web"
        assert added.origin == "tui"
        assert fresh.audit_verify().ok
    finally:
        fresh.close()


async def test_approve_needs_a_justification(site: Site, scanned: Monitor) -> None:
    finding = finding_on(scanned, site.web, site.ports["ssh"])
    audit_before = len(scanned.audit_events())
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        await pilot.press("a")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ApproveForm)  # still open, nothing written
        assert "A justification is required" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, TriageScreen)
    fresh = site.open_monitor()
    try:
        assert fresh.finding(finding.id).status == "new"
        assert len(fresh.audit_events()) == audit_before
    finally:
        fresh.close()


async def test_flag_with_a_reason(site: Site, scanned: Monitor) -> None:
    finding = finding_on(scanned, site.legacy, site.ports["telnet"])
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        await pilot.press("f")
        await settle(pilot)
        assert isinstance(app.screen, TextDecision)
        assert str(scanned.actor) in screen_text(app)
        await pilot.press("enter")
        await settle(pilot)
        assert "A reason is required" in screen_text(app)
        await type_text(pilot, "no owner")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen)
    fresh = site.open_monitor()
    try:
        flagged = fresh.finding(finding.id)
        assert flagged.status == "flagged"
        assert flagged.reason == "no owner"
        event = next(e for e in fresh.audit_events() if e.action == "finding.flagged")
        assert event.details["reason"] == "no owner"
        assert fresh.audit_verify().ok
    finally:
        fresh.close()


async def test_ack_asks_enter_or_esc_and_typed_text_does_not_answer(
    site: Site, scanned: Monitor
) -> None:
    finding = finding_on(scanned, site.web, site.ports["ssh"])
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDecision)
        # A sentence typed at the dialog neither answers it nor runs as hotkeys (`a`, `e`).
        await type_text(pilot, "not yet, approve it")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDecision)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, TriageScreen)
        assert scanned.finding(finding.id).status == "new"
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen)
    assert site.open_monitor().finding(finding.id).status == "acknowledged"


async def test_note_is_added_to_the_timeline(site: Site, scanned: Monitor) -> None:
    finding = finding_on(scanned, site.web, site.ports["ssh"])
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        await pilot.press("n")
        await settle(pilot)
        await type_text(pilot, "asked web")
        await pilot.press("enter")
        await settle(pilot)
        assert "asked web" in screen_text(app)  # the detail pane's timeline
    noted = site.open_monitor().finding(finding.id)
    assert any(e.step == "noted" and e.text == "asked web" for e in noted.timeline)


async def test_readonly_disables_every_decision(site: Site, scanned: Monitor) -> None:
    finding = finding_on(scanned, site.web, site.ports["ssh"])
    readonly = site.open_monitor(readonly=True)
    app = PortConsoleApp(readonly, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        screen = app.screen
        for action in ("approve", "flag", "ack", "note", "rescan"):
            assert screen.check_action(action, ()) is None, action
        assert app.check_action("scan_now", ()) is None
        await pilot.press("a", "f", "c", "n", "s")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen)
        assert "[read-only]" in screen_text(app)
    assert site.open_monitor().finding(finding.id).status == "new"


async def test_insecure_service_needs_a_mitigation(tmp_path: Path) -> None:
    host, port = "127.0.0.4", 2323
    config = tmp_path / "config.toml"
    # A telnetd off its usual port: the sweep names 2323 "3d-nfsd" from nmap's table, and
    # only -sV on the new port names it telnet, so the finding names the insecure service.
    write_config(config, [host], [port], fingerprint="changed")
    telnetd = Service("telnet", "Linux telnetd", table="3d-nfsd")
    network = replay_network(config, {host: {port: telnetd}})
    monitor = open_replay_monitor(config, tmp_path / "data", network)
    monitor.settings.approval.separation_of_duties = False  # typed terms, no request
    monitor.run_cycle("web").settle_fingerprint()  # -sV runs after detection
    assert [kind for kind, *_ in network.calls] == ["scan", "fingerprint"]
    finding = finding_on(monitor, host, port)
    assert finding.service == "telnet" and monitor.is_insecure(finding.service)
    app = PortConsoleApp(monitor, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        await pilot.press("a")
        await settle(pilot)
        assert "Mitigation*" in screen_text(app)
        await type_text(pilot, "badges")
        await pilot.press("tab")
        await type_text(pilot, "fm")
        await pilot.press("tab")
        await type_text(pilot, "dave")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ApproveForm)
        assert "describe the mitigation" in screen_text(app)
        await type_text(pilot, "vlan 9")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen)
    monitor.close()
    fresh = Monitor.open(config, tmp_path / "data")
    approval = next(a for a in fresh.approvals_list() if a.port == port)
    assert approval.mitigation == "vlan 9"
    fresh.close()
