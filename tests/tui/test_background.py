"""Background work: scan now with live progress, scheduled scans while leading, pause and
resume, quitting mid-scan, and no redraw under an open dialog."""

from __future__ import annotations

import os
import time
from pathlib import Path

from textual.message import Message

from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.messages import ScanProgress
from portconsole.tui.screens.approval_forms import ApproveForm
from portconsole.tui.screens.forms import ConfirmScreen
from portconsole.tui.screens.overview import OverviewScreen
from portconsole.tui.screens.triage import TriageScreen
from portconsole.tui.widgets import KeyedTable
from tests.fleet import TestFleet
from tests.tui.conftest import Site, screen_text, settle, wait_for, write_config


def nmap_children() -> list[int]:
    """nmap processes started by this test process (directly or through a helper)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if name == "nmap" and ppid == me:
            found.append(int(entry.name))
    return found


async def test_scan_now_shows_progress_and_lands(site: Site, monitor: Monitor) -> None:
    seen: list[Message] = []
    app = PortConsoleApp(monitor, schedule=False)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#hosts", KeyedTable)
        assert table.row_count == 0
        await pilot.press("s")
        assert await wait_for(pilot, lambda: table.row_count == 2, timeout=20)
        assert await wait_for(pilot, lambda: app.scan is None, timeout=20)
        assert any(isinstance(m, ScanProgress) for m in seen)
        assert any(n.message.startswith("Scan all success") for n in app._notifications)
        assert "unapproved 3" in screen_text(app)


async def test_scheduled_scan_runs_while_leading(site: Site, monitor: Monitor) -> None:
    app = PortConsoleApp(monitor, schedule=True)
    async with app.run_test(size=(80, 24)) as pilot:
        # The group was never scanned, so it is due at once; this console takes the lead.
        assert await wait_for(pilot, lambda: app.leading, timeout=10)
        assert await wait_for(
            pilot, lambda: bool(app.snapshot and app.snapshot.overview.last_scan), timeout=20
        )
        await settle(pilot)
        assert "● leading" in screen_text(app)
        # A second console on the same data dir sees who leads.
        other_monitor = site.open_monitor()
        other = PortConsoleApp(other_monitor, schedule=True)
        async with other.run_test(size=(80, 24)) as other_pilot:
            await settle(other_pilot)
            assert await wait_for(other_pilot, lambda: other.snapshot is not None, timeout=5)
            assert not other.leading
            assert "leads" in screen_text(other) and "● leading" not in screen_text(other)
        other_monitor.close()


async def test_a_port_opened_between_scheduled_scans_is_marked(
    site: Site, monitor: Monitor
) -> None:
    app = PortConsoleApp(monitor, schedule=True)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#hosts", KeyedTable)
        # The first scheduled scan: the legacy host with its one port.
        assert await wait_for(pilot, lambda: site.legacy in table.keys, timeout=10)
        assert await wait_for(pilot, lambda: app.scan is None, timeout=10)
        assert table.get_row(site.legacy)[3].plain == "1"
        sweeps = [c for c in site.network.calls if c[0] == "scan"]
        site.network.open_port(site.legacy, site.ports["ssh"], "ssh")
        # The next scheduled scan is an hour away: ask for it as another process would
        # (the schedule file), rather than wait for it.
        other = site.open_monitor()
        try:
            assert other.scheduler.scan_now("web") == ["web"]
        finally:
            other.close()
        assert await wait_for(pilot, lambda: table.get_row(site.legacy)[3].plain == "2", 10)
        await settle(pilot)
        row = table.get_row(site.legacy)
        assert row[0].plain == "!" and row[4].plain == "2"
        assert len([c for c in site.network.calls if c[0] == "scan"]) == 2 * len(sweeps)
        assert any(n.message.startswith("Scan web success") for n in app._notifications)


async def test_pause_and_resume_are_recorded(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert str(scanned.actor) in screen_text(app)
        await pilot.press("y")
        assert await wait_for(pilot, lambda: bool(app.snapshot and app.snapshot.overview.paused))
        await settle(pilot)
        assert "PAUSED" in screen_text(app)
        assert site.open_monitor().paused
        await pilot.press("p")  # now bound to resume
        assert await wait_for(
            pilot, lambda: bool(app.snapshot and not app.snapshot.overview.paused)
        )
    fresh = site.open_monitor()
    actions = [e.action for e in fresh.audit_events()]
    assert "monitoring.paused" in actions and "monitoring.resumed" in actions
    assert not fresh.paused


async def test_no_redraw_under_an_open_dialog(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        overview = app.screen
        assert isinstance(overview, OverviewScreen)
        await pilot.press("2")
        await settle(pilot)
        triage = app.screen
        assert isinstance(triage, TriageScreen)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, ApproveForm)
        shown = triage.generation_shown
        site.network.close_port(site.web, site.ports["http"])
        other = site.open_monitor()
        other.run_cycle("web")
        other.close()
        generation = app.generation
        assert await wait_for(pilot, lambda: app.generation > generation, timeout=8)
        assert triage.generation_shown == shown  # new data arrived, the queue was not redrawn
        await pilot.press("escape")
        await pilot.pause()
        assert triage.generation_shown == app.generation  # caught up once the dialog closed


async def test_quit_during_a_scan_exits_fast_with_no_nmap_left(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        # Bare listeners that never answer a probe keep -sV busy for many seconds.
        ports = [fleet.listen(host, "tcp") for _ in range(4)]
        config = tmp_path / "config.toml"
        write_config(config, [host], ports, fingerprint="all")
        monitor = Monitor.open(config, tmp_path / "data", origin="tui")
        app = PortConsoleApp(monitor, schedule=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("s")
            # Detection is over at once; -sV runs after it, in the background (a quit
            # cancels it too).
            assert await wait_for(
                pilot,
                lambda: (
                    bool(nmap_children())
                    and any(e.action == "scan.end" for e in monitor.audit_events())
                ),
                timeout=20,
            )
            assert await wait_for(pilot, lambda: bool(nmap_children()), timeout=5)
            started = time.monotonic()
            await pilot.press("q")
        elapsed = time.monotonic() - started
        # The scan thread kills nmap when it sees the cancel; allow it the same second.
        deadline = time.monotonic() + 1.0
        while nmap_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        gone_after = time.monotonic() - started
        print(f"exit {elapsed:.2f}s, nmap gone after {gone_after:.2f}s")
        monitor.close()
        assert elapsed < 1.0, f"quit took {elapsed:.2f}s"
        assert nmap_children() == [], f"nmap still running {gone_after:.2f}s after quit"
