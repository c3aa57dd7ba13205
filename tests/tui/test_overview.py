"""Overview: the hosts table, its unapproved marker, and live keyed updates."""

from __future__ import annotations

import re

from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.screens.host import HostScreen
from portconsole.tui.screens.overview import OverviewScreen
from portconsole.tui.widgets import KeyedTable
from tests.tui.conftest import Site, screen_text, settle, wait_for


async def test_hosts_table_marks_unapproved_rows(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, OverviewScreen)
        table = app.screen.query_one("#hosts", KeyedTable)
        assert table.keys == [site.web, site.legacy]
        row = table.get_row(site.web)
        assert row[0].plain == "!"  # readable without colour
        assert row[3].plain == "2" and row[4].plain == "2"
        # ...and by the theme's colour.
        assert app.alert_style().split()[-1] in str(row[1].style)
        # The rows are in the table; under load the next frame may lag, so wait for it.
        marked = re.compile(rf"^ !\s+{re.escape(site.web)}\s", re.MULTILINE)
        found = await wait_for(pilot, lambda: marked.search(screen_text(app)) is not None)
        assert found, screen_text(app)
        assert "hosts 2 · ports 3 · ! unapproved 3" in screen_text(app)


async def test_other_consoles_writes_show_up_by_keyed_diff(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#hosts", KeyedTable)
        table.select_key(site.legacy)
        before_legacy = table.get_row(site.legacy)
        # Another console (its own Monitor on the same data dir) scans after a port closed.
        site.network.close_port(site.web, site.ports["http"])
        other = site.open_monitor()
        try:
            other.run_cycle("web")
        finally:
            other.close()
        assert await wait_for(pilot, lambda: table.get_row(site.web)[3].plain == "1", timeout=8)
        assert table.keys == [site.web, site.legacy]
        assert table.selected_key == site.legacy  # the cursor stayed on its row
        assert table.get_row(site.legacy)[3] is before_legacy[3]  # unchanged cells untouched


async def test_filter_and_escape(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#hosts", KeyedTable)
        await pilot.press("slash", *site.legacy[-3:])
        await pilot.pause()
        assert table.keys == [site.legacy]
        await pilot.press("enter")  # keep the filter, back to the table
        assert table.has_focus and table.keys == [site.legacy]
        await pilot.press("escape")
        await pilot.pause()
        assert table.keys == [site.web, site.legacy]


async def test_enter_opens_host_and_escape_returns(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("j", "k", "enter")
        await settle(pilot)
        assert isinstance(app.screen, HostScreen) and app.screen.address == site.web
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)


async def test_header_shows_monitoring_status(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        top = screen_text(app).splitlines()[0]
        assert "Overview" in top and "no scan leader" in top and "success" in top
