"""A console's first read shows its hosts before the findings are read, and what was open
when it started is still no news once they are."""

from __future__ import annotations

from pathlib import Path

from portconsole.core.monitor import Monitor
from portconsole.tui import app as app_module
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.messages import SnapshotLoaded
from portconsole.tui.widgets import KeyedTable
from tests.tui.conftest import Site, screen_text, settle, wait_for


class FirstReads(PortConsoleApp):
    """The console, noting each snapshot it is given."""

    CSS_PATH = str(Path(app_module.__file__).with_name("portconsole.tcss"))

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.applied: list[tuple[bool, int | None, int, int]] = []
        self.bells = 0

    def bell(self) -> None:
        self.bells += 1
        super().bell()

    def on_snapshot_loaded(self, message: SnapshotLoaded) -> None:
        # Textual runs the console's own handler too (each class's in the MRO): not super().
        snap = message.snapshot
        self.applied.append(
            (snap.partial, snap.overview.open_findings, len(snap.hosts), len(snap.findings))
        )


async def test_the_hosts_come_first_then_the_findings_without_an_alert(
    site: Site, scanned: Monitor
) -> None:
    open_findings = len(scanned.findings())
    hosts = len(scanned.host_rows())
    assert open_findings > 0 and hosts > 0
    app = FirstReads(scanned, schedule=False)
    async with app.run_test(size=(100, 24)) as pilot:
        assert await wait_for(pilot, lambda: len(app.applied) >= 2)
        await settle(pilot)
        first, second = app.applied[:2]
        assert first == (True, None, hosts, 0)  # the hosts, the findings not counted yet
        assert second == (False, open_findings, hosts, open_findings)
        assert f"findings {open_findings}" in screen_text(app)
        # What was open when the console started is no news: no banner, no bell.
        assert app.bells == 0 and app.alerts.unseen_count() == 0
        await pilot.press("2")
        await settle(pilot)
        assert app.screen.query_one("#findings", KeyedTable).row_count == open_findings


async def test_a_partial_snapshot_says_the_findings_are_being_read(
    site: Site, scanned: Monitor
) -> None:
    app = FirstReads(scanned, schedule=False)
    async with app.run_test(size=(100, 24)) as pilot:
        assert await wait_for(pilot, lambda: len(app.applied) >= 2)
        await pilot.press("2")
        await settle(pilot)
        # A partial read applied now (as the first read is): the queue says it is reading.
        app.post_message(SnapshotLoaded(app.read_hosts(app._applied)))
        await settle(pilot)
        text = screen_text(app)
        assert "findings …" in text or "… open" in text
        assert "Reading the findings" in text
        assert app.bells == 0
