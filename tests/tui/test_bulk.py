"""Safe at speed, undo and bulk in the console: keys that arrive together (a paste, one SSH
packet) land in order in the focused field and never run as hotkeys; only the decisions a
finding's state allows are offered, and the others say why; marked rows are acknowledged
or closed at once; a flag is undone, a mistaken approval revoked; an export asks before it
overwrites. Real store and journal, the real forms, Textual's Pilot."""

from __future__ import annotations

from pathlib import Path

from textual import events

from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.screens.approval_forms import ApproveForm
from portconsole.tui.screens.export import ExportForm
from portconsole.tui.screens.forms import ConfirmDecision, ConfirmScreen, TextDecision
from portconsole.tui.screens.triage import TriageScreen
from portconsole.tui.screens.undo_forms import RevokeForm
from portconsole.tui.widgets import KeyedTable
from tests.tui.conftest import Site, screen_text, settle, type_text, wait_for
from tests.tui.test_triage import finding_on, open_triage

NAMES = {"\t": "tab", " ": "space", "\r": "enter", ",": "comma", "-": "minus"}


def burst(app: PortConsoleApp, text: str) -> None:
    """Post every key of `text` at once, as a terminal driver does with one packet."""
    for char in text:
        app.post_message(events.Key(NAMES.get(char, char), char))


def field(app: PortConsoleApp, field_id: str) -> str:
    from textual.widgets import Input

    return app.screen.query_one(f"#{field_id}", Input).value


async def test_a_pasted_key_sequence_fills_the_approve_form_in_order(
    site: Site, scanned: Monitor
) -> None:
    scanned.settings.approval.separation_of_duties = False
    finding = finding_on(scanned, site.web, site.ports["http"])
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        # `a` and the terms in one packet: the form opens, the text lands field by field.
        burst(app, "apublic web\tweb team\tcarol")
        await settle(pilot)
        assert isinstance(app.screen, ApproveForm), screen_text(app)
        assert (field(app, "justification"), field(app, "owner"), field(app, "requester")) == (
            "public web",
            "web team",
            "carol",
        )
        burst(app, "\r")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen), screen_text(app)
    fresh = site.open_monitor()
    try:
        approval = fresh.approvals_list()[0]
        assert (approval.justification, approval.owner) == ("public web", "web team")
    finally:
        fresh.close()


async def test_text_typed_with_the_ack_key_neither_answers_nor_runs_hotkeys(
    site: Site, scanned: Monitor
) -> None:
    finding = finding_on(scanned, site.web, site.ports["ssh"])
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        burst(app, "cnot now, approve")  # `n` was "no", `a` opened the approve form
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDecision), screen_text(app)
        assert len(app.screen_stack) == 2
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen)
    assert site.open_monitor().finding(finding.id).status == "new"


async def test_views_switched_in_one_burst_end_on_the_last(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for _ in range(5):
            burst(app, "2341")
            await settle(pilot)
            assert app.current_mode == "overview"
            burst(app, "1432")
            await settle(pilot)
            assert app.current_mode == "triage"


async def test_a_refused_decision_is_not_offered_and_says_why(site: Site, scanned: Monitor) -> None:
    finding = finding_on(scanned, site.legacy, site.ports["telnet"])
    scanned.flag(finding.id, reason="nobody asked for telnet")
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_triage(pilot, app, finding.id)
        screen = app.screen
        assert isinstance(screen, TriageScreen)
        assert screen.check_action("ack", ()) is False  # flagged: not offered
        assert screen.check_action("flag", ()) is False
        assert screen.check_action("reopen", ()) is True
        assert " Ack " not in screen_text(app).splitlines()[-1]
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen)  # no dialog
        notices = [n.message for n in app._notifications]
        assert any(f"cannot acknowledge {finding.id}: it is flagged" in m for m in notices)
        # Undo the flag: `u`, a reason, and the finding is new again.
        await pilot.press("u")
        await settle(pilot)
        assert isinstance(app.screen, TextDecision)
        await type_text(pilot, "owner explained it")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen), screen_text(app)
    fresh = site.open_monitor()
    try:
        assert fresh.finding(finding.id).status == "new"
        event = [e for e in fresh.audit_events() if e.action == "finding.reopened"][-1]
        assert event.details["reason"] == "owner explained it"
    finally:
        fresh.close()


async def test_marked_rows_are_acknowledged_then_closed_at_once(
    site: Site, scanned: Monitor
) -> None:
    ids = sorted(f.id for f in scanned.findings())
    assert len(ids) == 3
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_triage(pilot, app, ids[0])
        await pilot.press("space")
        assert table.select_key(ids[1])
        await pilot.pause()
        await pilot.press("space")
        await settle(pilot)
        assert "2 marked" in screen_text(app)
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDecision)
        assert "Acknowledge these 2 findings?" in screen_text(app)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen), screen_text(app)
        assert [scanned.finding(i).status for i in ids] == ["acknowledged", "acknowledged", "new"]
        # Marks are cleared by a decision; mark all three and close them with one cause.
        for key in ids:
            assert table.select_key(key)
            await pilot.pause()
            await pilot.press("space")
        await settle(pilot)
        await pilot.press("c")  # one is acknowledged already: ack is not offered for all
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen)
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, TextDecision)
        await type_text(pilot, "lab site")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen), screen_text(app)
        assert app.screen.query_one("#findings", KeyedTable).keys == []
    fresh = site.open_monitor()
    try:
        closed = [e for e in fresh.audit_events() if e.action == "finding.closed"]
        assert sorted(e.resource["finding_id"] for e in closed) == ids
    finally:
        fresh.close()


async def test_a_mistaken_approval_is_revoked_and_the_finding_is_back(
    site: Site, scanned: Monitor
) -> None:
    scanned.settings.approval.separation_of_duties = False
    finding = finding_on(scanned, site.web, site.ports["http"])
    scanned.approve(finding.id, justification="wrong host", owner="web")
    approval_id = scanned.finding(finding.id).approval_id
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        table = app.screen.query_one("#findings", KeyedTable)
        assert finding.id not in table.keys
        app.push_screen(RevokeForm())
        await settle(pilot)
        burst(app, f"{approval_id}\tapproved the wrong host\r")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen), screen_text(app)
        assert await wait_for(pilot, lambda: finding.id in table.keys)
    assert scanned.finding(finding.id).status == "new"


async def test_an_export_asks_before_overwriting(
    site: Site, scanned: Monitor, tmp_path: Path
) -> None:
    target = tmp_path / "report.json"
    target.write_text("keep me", encoding="utf-8")
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.push_screen(ExportForm())
        await settle(pilot)
        await pilot.press("ctrl+u")
        await type_text(pilot, str(target))
        await pilot.press("tab", "ctrl+u")
        await type_text(pilot, "json")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "exists. Overwrite it?" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, ExportForm)
        assert "Not overwritten" in screen_text(app)
        assert target.read_text(encoding="utf-8") == "keep me"
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot, rounds=6)
        assert not isinstance(app.screen, ExportForm), screen_text(app)
    assert target.read_text(encoding="utf-8").startswith("{")
