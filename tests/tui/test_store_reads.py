"""The console reads the store one snapshot at a time: a new read starts only once the UI
thread has taken the last one and freed the one it replaced (at 100,000 findings each
snapshot is ~330 MB; reading on at once held three or four)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from portconsole.core.monitor import Monitor
from portconsole.tui import app as app_module
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.messages import FleetSnapshot
from tests.tui.conftest import Site, settle, wait_for


class CountingReads(PortConsoleApp):
    """The console, noting each full read that began while an earlier snapshot was still
    waiting for the UI thread or being freed."""

    CSS_PATH = str(Path(app_module.__file__).with_name("portconsole.tcss"))

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reads: list[int] = []
        self.overlaps: list[int] = []

    def read_snapshot(self, request: int) -> FleetSnapshot:
        if self.reads and (self._handled < self.reads[-1] or self._releasing > 0):
            self.overlaps.append(request)
        self.reads.append(request)
        return super().read_snapshot(request)


async def test_a_read_starts_only_when_the_last_snapshot_is_taken_and_freed(
    site: Site, scanned: Monitor
) -> None:
    app = CountingReads(scanned, schedule=False)
    async with app.run_test(size=(100, 24)) as pilot:
        assert await wait_for(pilot, lambda: app._handled >= 1)
        # Ask again and again while reads run: each running read goes round once more.
        for _ in range(12):
            app.request_refresh()
            await asyncio.sleep(0.01)
        assert await wait_for(pilot, lambda: len(app.reads) >= 4 and not app._reading)
        await settle(pilot)
        assert app.overlaps == []
        assert app._handled == app.reads[-1] and app._releasing == 0
