"""See everything: a finding whole, an audit event whole, the whole journal paged and
searched, and tables sorted, at 80x24."""

from __future__ import annotations

import io
import time

from rich.console import Console
from textual.containers import VerticalScroll

from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.screens.audit import AuditScreen
from portconsole.tui.screens.audit_event import AuditEventScreen
from portconsole.tui.screens.finding import FindingScreen
from portconsole.tui.screens.help import HelpScreen, bindings_table
from portconsole.tui.screens.host import HostScreen
from portconsole.tui.screens.triage import TriageScreen
from portconsole.tui.widgets import KeyedTable
from portconsole.tui.widgets.table import natural_key
from tests.tui.conftest import Site, screen_text, settle, type_text, wait_for


def first_finding(monitor: Monitor, host: str) -> str:
    return next(f.id for f in monitor.findings() if f.host == host and f.port == 22)


async def test_a_finding_opens_whole_scrolls_and_copies(site: Site, scanned: Monitor) -> None:
    finding_id = first_finding(scanned, site.web)
    for number in range(40):
        scanned.note(finding_id, f"note number {number:02d}")
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        triage = app.screen
        assert isinstance(triage, TriageScreen)
        assert triage.query_one("#findings", KeyedTable).select_key(finding_id)
        await pilot.press("enter")
        await settle(pilot)
        view = app.screen
        assert isinstance(view, FindingScreen) and view.finding is not None
        whole = view.document()
        assert whole is not None
        # The whole timeline: the detection and all 40 notes (the pane showed two steps).
        assert "Timeline (41 steps" in whole.plain
        assert "note number 00" in whole.plain and "note number 39" in whole.plain
        assert "Notifications (0 delivery attempts)" in whole.plain
        assert "Journal (41 events about it)" in whole.plain  # raised + 40 notes
        assert "note number 39" not in screen_text(app)  # below the fold at 80x24
        scroller = view.query_one("#document-scroll", VerticalScroll)
        assert scroller.max_scroll_y > 20
        await pilot.press("end")
        await settle(pilot)
        assert scroller.scroll_y == scroller.max_scroll_y
        assert "note number 39" in screen_text(app)
        await pilot.press("y")
        await pilot.pause()
        copied = app.clipboard
        assert "note number 00" in copied and "note number 39" in copied
        assert copied.startswith(f"Finding {finding_id}")
        assert any(n.title == "Copied" and finding_id in n.message for n in app._notifications)
        # `h` opens the host, esc comes back to the finding, then to the queue.
        await pilot.press("h")
        await settle(pilot)
        assert isinstance(app.screen, HostScreen) and app.screen.address == site.web
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is view
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is triage
        # `h` on the queue still opens the host.
        await pilot.press("h")
        await settle(pilot)
        assert isinstance(app.screen, HostScreen)


async def test_the_audit_log_pages_through_and_searches_the_whole_journal(
    site: Site, scanned: Monitor
) -> None:
    finding_id = first_finding(scanned, site.web)
    started = time.monotonic()
    with scanned.store.lock.hold():  # one transaction: 1,500 events in one write
        for number in range(1500):
            scanned.note(finding_id, f"needle-{number:04d}" if number == 7 else f"bulk {number}")
    built = time.monotonic() - started
    assert built < 60, built
    total = int(scanned.audit_tip().partition(":")[0])
    assert total > 1500
    old_seq = next(e.seq for e in scanned.audit_events() if e.details.get("text") == "needle-0007")
    assert total - old_seq >= 1000  # older than the newest 1,000
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        table = screen.query_one("#audit", KeyedTable)
        assert table.keys[0] == str(total) and table.row_count < total  # one page first
        # Going down pages older events in, to the very first one.
        for _ in range(10):
            await pilot.press("G")
            await settle(pilot)
            if table.row_count == total:
                break
        assert table.row_count == total and table.keys[-1] == "1"
        # Search reads the whole journal, not only what is loaded.
        await pilot.press("g", "slash")
        await type_text(pilot, "needle-0007")
        assert await wait_for(pilot, lambda: table.keys == [str(old_seq)])
        assert f"1 of {total} match" in screen_text(app)
        await pilot.press("enter")  # back to the table, the search kept
        await pilot.press("enter")  # open the event whole
        await settle(pilot)
        view = app.screen
        assert isinstance(view, AuditEventScreen)
        assert f"Audit event #{old_seq}" in screen_text(app)
        await pilot.press("y")
        await pilot.pause()
        assert '"needle-0007"' in app.clipboard and '"prev_hash"' in app.clipboard
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("escape")  # clears the search: the pages come back
        await settle(pilot)
        assert table.keys[0] == str(total) and table.row_count == total


def test_cells_sort_by_meaning() -> None:
    assert natural_key("127.0.0.9") < natural_key("127.0.0.10")
    assert natural_key("40s") < natural_key("5h") < natural_key("3d")
    assert natural_key("22/tcp") < natural_key("443/tcp")


async def test_sorting_changes_the_row_order(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#hosts", KeyedTable)
        assert table.keys == [site.web, site.legacy]
        await pilot.press("o", "o")  # the mark column, then the address
        await pilot.pause()
        assert table.sort_column == 1 and table.keys == [site.web, site.legacy]
        await pilot.press("O")  # reversed
        await pilot.pause()
        assert table.keys == [site.legacy, site.web]
        assert "Address ▼" in screen_text(app)
        # The order holds across refreshes, and the cursor follows its row.
        app.request_refresh()
        await settle(pilot)
        assert table.keys == [site.legacy, site.web]
        # Triage: by severity, worst last when reversed.
        await pilot.press("2")
        await settle(pilot)
        findings = app.screen.query_one("#findings", KeyedTable)
        await pilot.press("o", "O")
        await pilot.pause()
        severities = [findings.get_row(key)[0].plain.strip("! ") for key in findings.keys]
        assert severities == ["med", "high", "high"]


async def test_empty_tables_say_what_to_do_and_the_footer_fits(
    site: Site, monitor: Monitor
) -> None:
    app = PortConsoleApp(monitor, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "No hosts yet: s scans now" in screen_text(app)
        await pilot.press("2")
        await settle(pilot)
        text = screen_text(app)
        assert "No open findings: new ones appear here after each scan" in text
        # The footer keeps `? Help` at 80 columns; every key is under it, by context.
        assert "? Help" in text.splitlines()[-1]
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "This view" in screen_text(app) and "1h ago" in screen_text(app)
        table = Console(width=76, file=io.StringIO(), record=True)
        table.print(bindings_table(app.screen.under))
        keys = table.export_text()
        for words in ("Tables", "Sort by next column", "Reverse the sort", "Everywhere"):
            assert words in keys
        assert keys.index("This view") < keys.index("Tables") < keys.index("Everywhere")
