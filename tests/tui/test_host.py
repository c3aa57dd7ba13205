"""Host detail: ports keyed host:port/proto, approval state, history, rescan."""

from __future__ import annotations

from portconsole.core.domain.model import port_key
from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.screens.host import HostScreen
from portconsole.tui.widgets import KeyedTable
from tests.tui.conftest import Site, screen_text, settle, wait_for


async def test_host_detail_shows_ports_and_history(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_host(site.web)
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, HostScreen)
        ports = screen.query_one("#ports", KeyedTable)
        expected = sorted([site.ports["ssh"], site.ports["http"]])
        assert ports.keys == [port_key(site.web, p, "tcp") for p in expected]
        row = ports.get_row(port_key(site.web, site.ports["ssh"], "tcp"))
        assert row[0].plain == "!" and row[5].plain == "unapproved"
        history = screen.query_one("#history", KeyedTable)
        assert history.row_count == 3  # host up, two ports opened
        text = screen_text(app)
        assert f"{site.web} · web · up · 2 open · 2 unapproved" in text
        assert "port_opened" in text
        # Enter on a port narrows the history to that port's timeline.
        await pilot.press("enter")
        await pilot.pause()
        assert history.row_count == 1
        assert f"{expected[0]}/tcp" in screen_text(app)


async def test_rescan_host_now_runs_a_real_cycle(site: Site, scanned: Monitor) -> None:
    before = scanned.overview().last_scan
    assert before is not None
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_host(site.legacy)
        await settle(pilot)
        await pilot.press("r")
        assert await wait_for(pilot, lambda: app.scan is not None or bool(app._notifications), 5)
        assert await wait_for(pilot, lambda: app.scan is None, 20)
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert any(m.startswith(f"Scan {site.legacy} success") for m in messages), messages
    fresh = site.open_monitor()
    try:
        last = fresh.overview().last_scan
        assert last is not None and last["scan_id"] != before["scan_id"]
        assert last["targets"] == [site.legacy]
    finally:
        fresh.close()
