"""Alerts that reach every console: the tracker on real findings, and a follower console.

One Monitor scans (the leader's part, over a ReplayScanner); the console under Pilot
only reads the same data dir, as a follower does. A port opened between its snapshots
must raise the banner, the unseen counter, the bell and the row's "new" mark.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from portconsole.core.monitor import Monitor
from portconsole.tui import app as app_module
from portconsole.tui.alerts import (
    NEW_MARK,
    Alert,
    AlertTracker,
    banner_text,
    rings_bell,
)
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.screens.forms import ConfirmScreen
from portconsole.tui.screens.triage import TriageScreen
from portconsole.tui.themes import load_ui_prefs, prefs_dir, remember_theme
from portconsole.tui.widgets import KeyedTable
from tests.tui.conftest import Site, screen_text, settle, wait_for


class RecordingApp(PortConsoleApp):
    """The console, with the terminal bell counted (a headless run has no terminal)."""

    # A subclass's CSS path is read relative to its own module: point at the console's.
    CSS_PATH = str(Path(app_module.__file__).with_name("portconsole.tcss"))

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.bells = 0

    def bell(self) -> None:
        self.bells += 1
        super().bell()


def scan(site: Site) -> None:
    """One cycle by another process's Monitor: the leader's scan, as a follower sees it."""
    leader = site.open_monitor()
    try:
        result = leader.run_cycle("web")
        assert result.scan.outcome == "success", result.scan.error
    finally:
        leader.close()


# ----- the tracker, on findings a real cycle raised --------------------------------------


def test_baseline_is_quiet_then_new_findings_alert(site: Site, scanned: Monitor) -> None:
    tracker = AlertTracker()
    assert tracker.observe(scanned.findings()) == []  # what was open at start is not news
    assert tracker.unseen_count() == 0
    site.network.open_port(site.legacy, site.ports["ssh"], "ssh")  # 22: a high port
    site.network.open_port(site.legacy, site.ports["http"], "http")  # 80: medium
    scanned.run_cycle("web")
    raised = tracker.observe(scanned.findings())
    assert [(a.port, a.severity, a.reopened) for a in raised] == [
        (22, "high", False),
        (80, "medium", False),
    ]
    assert tracker.unseen_count() == 2 and tracker.unseen_hosts() == {site.legacy}
    # The next snapshot with nothing new raises nothing and keeps the unseen.
    assert tracker.observe(scanned.findings()) == []
    assert tracker.unseen_count() == 2
    text = banner_text(tracker.unseen(), raised[0].since)
    assert text.startswith(f"2 new findings · HIGH {site.legacy}:22/tcp ssh · 0s ago")
    assert tracker.mark_seen([raised[1].finding_id]) == 1
    assert banner_text(tracker.unseen(), raised[0].since).startswith("NEW · HIGH")
    assert tracker.mark_seen() == 1 and tracker.unseen() == []


def test_a_long_banner_keeps_the_key_that_opens_the_alerts() -> None:
    since = datetime(2026, 12, 1, 11, 29, tzinfo=UTC)
    alert = Alert(
        "F-000004",
        "service_changed",
        "medium",
        "127.77.0.50",
        10022,
        "tcp",
        "unknown",
        False,
        since,
    )
    full = banner_text([alert, alert, alert, alert], since + timedelta(seconds=9))
    assert full == (
        "4 new findings · MEDIUM 127.77.0.50:10022/tcp unknown (service_changed) · 9s ago"
        " · ! to view"
    )
    # 80 columns (78 inside the banner's frame): the details give way, the key stays.
    cut = banner_text([alert] * 4, since + timedelta(seconds=9), 78)
    assert cut == "4 new findings · MEDIUM 127.77.0.50:10022/tcp unknown (s… · 9s ago · ! to view"
    assert len(cut) == 78
    assert banner_text([alert] * 4, since, 66).endswith("10022/tcp · 0s ago · ! to view")
    assert banner_text([alert] * 4, since, 60).endswith("10022/tcp · ! to view")
    narrow = banner_text([alert] * 4, since, 30)
    assert len(narrow) == 30 and narrow.endswith("… · ! to view")
    assert banner_text([alert] * 4, since, 200) == banner_text([alert] * 4, since)


def test_reopened_findings_alert_again_even_between_two_snapshots(
    site: Site, scanned: Monitor
) -> None:
    tracker = AlertTracker()
    tracker.observe(scanned.findings())
    telnet = next(f for f in scanned.findings() if f.port == site.ports["telnet"])
    site.network.close_port(site.legacy, site.ports["telnet"])
    scanned.run_cycle("web")
    assert tracker.observe(scanned.findings()) == []  # resolved: gone, nothing to alert
    site.network.open_port(site.legacy, site.ports["telnet"], "telnet")
    scanned.run_cycle("web")
    (again,) = tracker.observe(scanned.findings())
    assert again.finding_id == telnet.id and again.reopened
    assert banner_text([again], again.since).startswith("REOPENED · HIGH")
    tracker.mark_seen()
    # Closed and opened again between two snapshots: the same id, one more reopening.
    site.network.close_port(site.legacy, site.ports["telnet"])
    scanned.run_cycle("web")
    site.network.open_port(site.legacy, site.ports["telnet"], "telnet")
    scanned.run_cycle("web")
    (flap,) = tracker.observe(scanned.findings())
    assert flap.finding_id == telnet.id and flap.reopened


def test_an_unseen_alert_leaves_when_its_finding_leaves_the_queue(
    site: Site, scanned: Monitor
) -> None:
    tracker = AlertTracker()
    tracker.observe(scanned.findings())
    site.network.open_port(site.legacy, site.ports["ssh"], "ssh")
    scanned.run_cycle("web")
    assert len(tracker.observe(scanned.findings())) == 1
    site.network.close_port(site.legacy, site.ports["ssh"])
    scanned.run_cycle("web")
    tracker.observe(scanned.findings())
    assert tracker.unseen_count() == 0


def test_bell_threshold() -> None:
    from datetime import UTC, datetime

    from portconsole.tui.alerts import Alert

    def alert(severity: str) -> Alert:
        moment = datetime(2026, 5, 1, tzinfo=UTC)
        return Alert("F-1", "unapproved_port", severity, "h", 1, "tcp", "", False, moment)

    assert rings_bell([alert("high")], "high") and rings_bell([alert("critical")], "high")
    assert not rings_bell([alert("medium")], "high")
    assert rings_bell([alert("low")], "low")
    assert not rings_bell([alert("critical")], "off")


def test_the_alert_logic_does_not_need_textual() -> None:
    code = "import sys, portconsole.tui.alerts; sys.exit('textual' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ----- a follower console ----------------------------------------------------------------


async def test_a_follower_shows_banner_counter_bell_and_new_row(
    site: Site, scanned: Monitor
) -> None:
    app = RecordingApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert not app.leading
        assert "unseen" not in screen_text(app) and "! to view" not in screen_text(app)
        site.network.open_port(site.legacy, site.ports["ssh"], "ssh")
        site.network.open_port(site.legacy, site.ports["http"], "http")
        scan(site)
        # The poll notices the data version move within refresh_seconds (0.5 s here).
        assert await wait_for(pilot, lambda: "! to view" in screen_text(app), timeout=5)
        text = screen_text(app)
        assert f"▲ 2 new findings · HIGH {site.legacy}:22/tcp ssh" in text
        assert "▲ 2 unseen" in text
        assert app.bells == 1
        # The severity decides the banner's style.
        banner = app.screen.query_one("#status-alert")
        assert banner.has_class("-alert-high") and not banner.has_class("-alert-medium")
        # The banner stays until seen: later snapshots keep it.
        app.request_refresh()
        await settle(pilot)
        assert "▲ 2 unseen" in screen_text(app) and app.bells == 1
        # In the triage queue (view 2) the two rows are marked new until seen.
        await pilot.press("2")
        await settle(pilot)
        table = app.screen.query_one("#findings", KeyedTable)
        marked = [k for k in table.keys if table.get_row(k)[5].plain.startswith(NEW_MARK)]
        assert len(marked) == 2
        await pilot.press("1")
        await settle(pilot)
        # `!` jumps to them in triage, on the most severe, and marks them seen.
        await pilot.press("exclamation_mark")
        await settle(pilot)
        assert isinstance(app.screen, TriageScreen)
        table = app.screen.query_one("#findings", KeyedTable)
        selected = app.snapshot.finding(table.selected_key) if app.snapshot else None
        assert selected is not None and selected.port == site.ports["ssh"]
        assert not any(table.get_row(k)[5].plain.startswith(NEW_MARK) for k in table.keys)
        text = screen_text(app)
        assert "unseen" not in text and "! to view" not in text


async def test_medium_alone_does_not_ring_and_bell_can_be_off(site: Site, scanned: Monitor) -> None:
    app = RecordingApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        site.network.open_port(site.legacy, site.ports["http"], "http")  # medium
        scan(site)
        # The header and the banner may be drawn in different frames under load.
        assert await wait_for(
            pilot,
            lambda: "▲ 1 unseen" in screen_text(app) and "NEW · MEDIUM" in screen_text(app),
            timeout=5,
        )
        assert app.bells == 0
        assert app.screen.query_one("#status-alert").has_class("-alert-medium")
    site.config.write_text(
        site.config.read_text().replace("[tui]\n", '[tui]\nbell = "off"\n'), encoding="utf-8"
    )
    quiet_monitor = site.open_monitor()
    quiet = RecordingApp(quiet_monitor, schedule=False)
    try:
        async with quiet.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            site.network.open_port(site.legacy, site.ports["ssh"], "ssh")  # high
            scan(site)
            assert await wait_for(pilot, lambda: "HIGH" in screen_text(quiet), timeout=5)
            assert quiet.bells == 0
    finally:
        quiet_monitor.close()


# ----- Ctrl-C and preferences ------------------------------------------------------------


async def test_ctrl_c_quits_and_asks_first_when_leading(site: Site, monitor: Monitor) -> None:
    follower = PortConsoleApp(monitor, schedule=False)
    async with follower.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert follower.return_code == 0 and follower._exit
    leading = PortConsoleApp(site.open_monitor(), schedule=True)
    try:
        async with leading.run_test(size=(80, 24)) as pilot:
            assert await wait_for(pilot, lambda: leading.leading, timeout=10)
            await pilot.press("ctrl+c")
            await pilot.pause()
            assert isinstance(leading.screen, ConfirmScreen)
            assert "leads the scheduled scans" in screen_text(leading)
            await pilot.press("n")
            await pilot.pause()
            assert not isinstance(leading.screen, ConfirmScreen) and not leading._exit
            await pilot.press("ctrl+c")
            await pilot.pause()
            await pilot.press("ctrl+c")  # a second Ctrl-C does not ask again
            await pilot.pause()
            assert leading._exit
    finally:
        leading.monitor.close()


async def test_theme_is_remembered_in_the_config_dir_and_moved_once(
    site: Site, scanned: Monitor, tmp_path: Path
) -> None:
    # An earlier version kept it in the data dir: it is carried over once.
    remember_theme(site.data_dir, "portconsole-light")
    app = PortConsoleApp(scanned, schedule=False, environ={})
    assert app.theme == "portconsole-light"
    assert prefs_dir().is_relative_to(tmp_path / "xdg-config")
    assert load_ui_prefs(prefs_dir()) == {"theme": "portconsole-light"}
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.switch_theme("portconsole-high-contrast")
        await settle(pilot)
    assert load_ui_prefs(prefs_dir())["theme"] == "portconsole-high-contrast"
    assert load_ui_prefs(site.data_dir)["theme"] == "portconsole-light"  # not written there
    # Wiping the data dir (as `make demo` does) keeps the choice.
    (site.data_dir / "ui.json").unlink()
    again = PortConsoleApp(site.open_monitor(), schedule=False, environ={})
    try:
        assert again.theme == "portconsole-high-contrast"
    finally:
        again.monitor.close()


def test_an_escalated_finding_alerts_again_as_escalated() -> None:
    # The sweep raised it as an unknown service; -sV later named telnet and the book
    # escalated it (fingerprint_after): every console is told again, at the new severity.
    from datetime import UTC, datetime, timedelta

    from portconsole.core.domain.finding import Finding, TimelineEntry

    found = datetime(2026, 5, 1, tzinfo=UTC)
    finding = Finding(
        "F-000001", "unapproved_port", "medium", "127.0.0.5", 2323, "tcp", "unknown", "new",
        found, found, "s-1",
    )  # fmt: skip
    finding.timeline = [TimelineEntry("detected", found, "portconsole", "scan s-1")]
    tracker = AlertTracker()
    tracker.observe([])
    (first,) = tracker.observe([finding])
    assert (first.severity, first.escalated, first.reopened) == ("medium", False, False)
    tracker.mark_seen()
    assert tracker.observe([finding]) == []
    later = found + timedelta(seconds=40)
    worse = finding.copy()
    worse.severity, worse.service = "high", "telnet"
    worse.timeline.append(TimelineEntry("escalated", later, "portconsole", "medium -> high"))
    (again,) = tracker.observe([worse])
    assert (again.severity, again.escalated, again.reopened) == ("high", True, False)
    assert again.since == later and rings_bell([again], "high")
    assert banner_text([again], later).startswith("ESCALATED · HIGH 127.0.0.5:2323/tcp telnet")
    assert tracker.observe([worse]) == []  # told once
