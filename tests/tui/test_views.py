"""History, audit log, help, command palette, themes in the running app, untrusted text."""

from __future__ import annotations

from textual.command import CommandPalette

from portconsole.core.domain.model import port_key
from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.screens.audit import AuditScreen
from portconsole.tui.screens.audit_event import AuditEventScreen
from portconsole.tui.screens.help import HelpScreen
from portconsole.tui.screens.history import HistoryScreen
from portconsole.tui.screens.host import HostScreen
from portconsole.tui.themes import load_ui_prefs, prefs_dir
from portconsole.tui.widgets import KeyedTable
from tests.tui.conftest import Site, screen_text, settle, type_text, wait_for


async def test_history_as_of_and_timeline(site: Site, scanned: Monitor) -> None:
    first_scan = scanned.overview().last_scan
    assert first_scan is not None
    site.network.close_port(site.web, site.ports["http"])
    scanned.run_cycle("web")
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        table = screen.query_one("#asof-ports", KeyedTable)
        gone = port_key(site.web, site.ports["http"], "tcp")
        assert gone not in table.keys and len(table.keys) == 2  # now
        # As of the first scan, the closed port was still open.
        await pilot.press("a")
        await type_text(pilot, str(first_scan["finished_at"]))
        await pilot.press("enter")
        await settle(pilot)
        assert gone in table.keys and len(table.keys) == 3
        assert table.select_key(gone)
        await pilot.press("enter")
        await settle(pilot)
        timeline = screen.query_one("#timeline", KeyedTable)
        assert timeline.row_count == 2  # opened, then closed
        text = screen_text(app)
        assert "port_closed" in text and "port_opened" in text


async def test_history_rejects_a_bad_time(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3", "a")
        await type_text(pilot, "the day before")
        await pilot.press("enter")
        await settle(pilot)
        # The message lists what is understood.
        assert any("bad time" in n.message and "1h ago" in n.message for n in app._notifications)


async def test_a_bad_time_with_markup_characters_does_not_crash(
    site: Site, scanned: Monitor
) -> None:
    # The error quotes what was typed; "[/x]" once reached Rich markup and killed the app.
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3", "a")
        await pilot.press("[", "slash", "x", "]", "b", "a", "d")
        await pilot.press("enter")
        await settle(pilot)
        assert app.is_running
        [note] = [n for n in app._notifications if "[/x]bad" in str(n.message)]
        # A toast whose markup is on parses the message when drawn, and raises.
        assert note.markup is False


async def test_audit_log_shows_events_and_verification(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        assert isinstance(app.screen, AuditScreen)
        table = app.screen.query_one("#audit", KeyedTable)
        count = len(scanned.audit_events())
        assert table.row_count == count and table.keys[0] == str(count)  # newest first
        assert f"chain verified: {count} events" in screen_text(app)
        await pilot.press("v")
        await settle(pilot)
        assert "chain verified" in screen_text(app)
        # Enter shows the whole selected event (the pane below holds two lines).
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, AuditEventScreen)
        assert f"Audit event #{count}" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        # A new event appears on the next refresh; without one, nothing is re-read.
        scanned.pause()
        app.request_refresh()
        await settle(pilot)
        assert await wait_for(pilot, lambda: table.keys and table.keys[0] == str(count + 1))


async def test_help_lists_the_keys_of_the_screen(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for words in ("Approve", "Flag", "Ack", "Note", "Rescan", "Filter", "Quit"):
            assert words in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_palette_jumps_to_a_host_and_switches_theme(site: Site, scanned: Monitor) -> None:
    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await type_text(pilot, site.legacy)
        assert await wait_for(pilot, lambda: "Jump to host" in screen_text(app), timeout=5)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, HostScreen) and app.screen.address == site.legacy
        await pilot.press("ctrl+p")
        await pilot.pause()
        await type_text(pilot, "light")
        assert await wait_for(
            pilot, lambda: "Switch theme: portconsole-light" in screen_text(app), timeout=5
        )
        await pilot.press("enter")
        await settle(pilot)
        assert app.theme == "portconsole-light"
    assert load_ui_prefs(prefs_dir())["theme"] == "portconsole-light"  # the config dir
    # The next console starts with the remembered theme.
    again = PortConsoleApp(site.open_monitor(), schedule=False, environ={})
    assert again.theme == "portconsole-light"


async def test_no_color_uses_the_mono_theme_and_keeps_the_marker(
    site: Site, scanned: Monitor
) -> None:
    app = PortConsoleApp(scanned, schedule=False, environ={"NO_COLOR": "1"})
    assert app.theme == "portconsole-mono"
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.screen.query_one("#hosts", KeyedTable).get_row(site.web)[0].plain == "!"


async def test_broken_theme_file_is_reported_once(
    site: Site, scanned: Monitor, monkeypatch: object
) -> None:
    from msgspec.structs import replace

    themes = site.data_dir.parent / "user-themes"
    themes.mkdir()
    (themes / "broken.toml").write_text('name = "broken"\nprimary = "nope"\ncolour = 1\n')
    scanned.paths = replace(scanned.paths, themes_dirs=(themes, *scanned.paths.themes_dirs))
    app = PortConsoleApp(scanned, schedule=False, environ={})
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        reports = [n for n in app._notifications if "broken.toml" in n.message]
        assert len(reports) == 1
        assert app.theme == "portconsole-dark"


async def test_hostile_text_is_never_markup(site: Site, scanned: Monitor) -> None:
    from portconsole.tui.safe import safe_text

    # Host rows and palette entries are built from store text with safe_text / Content(),
    # so a hostname like this renders literally.
    hostile = "[bold red]pwn[/] \x1b[31mred"
    cell = safe_text(hostile)
    assert cell.spans == [] and "\x1b" not in cell.plain and "[bold red]pwn[/]" in cell.plain
    from portconsole.tui.commands import highlight

    app = PortConsoleApp(scanned, schedule=False)
    async with app.run_test(size=(80, 24)):
        from textual.fuzzy import Matcher

        content = highlight(Matcher("pwn"), "[bold]pwn[/bold]")
        assert content.plain == "[bold]pwn[/bold]"
