"""Fixtures for the console tests: a real Monitor on a real data dir over a loopback fleet.

Every test gets its own config file and data dir in tmp_path, and its own listeners (free
ports on fresh 127.88.x.y addresses), so tests never see each other's store or ports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from portconsole.core.monitor import Monitor
from tests.fleet import TestFleet


@dataclass
class Site:
    """A small fleet and the config that scans exactly its ports."""

    fleet: TestFleet
    config: Path
    data_dir: Path
    web: str  # host with ssh + http
    legacy: str  # host with telnet (an insecure service)
    ports: dict[str, int]

    def open_monitor(self, *, readonly: bool = False) -> Monitor:
        return Monitor.open(self.config, self.data_dir, origin="tui", readonly=readonly)


def write_config(
    path: Path,
    hosts: list[str],
    ports: list[int],
    *,
    interval: int = 3600,
    fingerprint: str = "none",
) -> None:
    port_text = ",".join(str(p) for p in sorted(set(ports)))
    targets = ", ".join(f'"{h}"' for h in hosts)
    path.write_text(
        f"""scope = ["127.0.0.0/8"]

[scan]
ports = "{port_text}"
confirm_probes = 0
fingerprint = "{fingerprint}"
workers = 2

[groups.web]
targets = [{targets}]
ports = "{port_text}"
interval = {interval}
jitter = 0

[tui]
refresh_seconds = 0.5
""",
        encoding="utf-8",
    )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with TestFleet() as fleet:
        web = fleet.new_address()
        legacy = fleet.new_address()
        ports = {
            "ssh": fleet.listen(web, "ssh"),
            "http": fleet.listen(web, "http"),
            "telnet": fleet.listen(legacy, "telnet"),
        }
        config = tmp_path / "config.toml"
        write_config(config, [web, legacy], list(ports.values()))
        yield Site(fleet, config, tmp_path / "data", web, legacy, ports)


@pytest.fixture
def monitor(site: Site) -> Iterator[Monitor]:
    opened = site.open_monitor()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def scanned(site: Site, monitor: Monitor) -> Monitor:
    """A monitor whose store holds one real scan of the site (so there are findings)."""
    result = monitor.run_cycle("web")
    assert result.scan.outcome == "success", result.scan.error
    return monitor


def screen_text(app: object) -> str:
    """What the terminal shows right now, as plain text (one line per row)."""
    import io

    from rich.console import Console
    from textual.app import App

    assert isinstance(app, App)
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        record=True,
        color_system="truecolor",
        legacy_windows=False,
        safe_box=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


async def settle(pilot: object, rounds: int = 3) -> None:
    """Let thread workers finish and their messages be handled."""
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    for _ in range(rounds):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def type_text(pilot: object, text: str) -> None:
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await pilot.press(*["space" if ch == " " else ch for ch in text])


async def wait_for(pilot: object, predicate: object, timeout: float = 10.0) -> bool:
    """Poll `predicate()` while the app runs; True once it holds, False at the timeout."""
    import time

    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot) and callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await pilot.pause(0.05)
    return bool(predicate())
