"""Fixtures for the console tests: a real Monitor on a real data dir over a replayed network.

Every test gets its own config file, data dir and network. The network is a ReplayScanner
(portconsole/core/adapters/replay.py): the scan cycle, store, detection and audit are the
real ones, only nmap's answers are replayed, so a test can open or close a port between
two scans without a listener, and no test depends on free ports or on nmap's timing.
Every Monitor a test opens on the site (a second console, a fresh read-back) shares the
same network, as consoles on one machine share the real one. Tests that need the real
nmap (quitting kills it) start their own TestFleet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from portconsole.core.adapters.replay import Network, ReplayScanner
from portconsole.core.monitor import Monitor
from portconsole.core.settings import load_settings


def open_replay_monitor(
    config: Path, data_dir: Path, network: ReplayScanner, *, readonly: bool = False
) -> Monitor:
    """A console's Monitor on `data_dir`, scanning `network`."""
    return Monitor.open(config, data_dir, origin="tui", readonly=readonly, scanner=network)


def replay_network(config: Path, network: Network) -> ReplayScanner:
    """A replay of `network` behind the scope of `config`."""
    settings, _paths = load_settings(config, None)
    return ReplayScanner(settings.scope_obj(), network)


@dataclass
class Site:
    """A small network and the config that scans exactly its ports."""

    network: ReplayScanner
    config: Path
    data_dir: Path
    web: str  # host with ssh + http
    legacy: str  # host with telnet (an insecure service)
    ports: dict[str, int]

    def open_monitor(self, *, readonly: bool = False) -> Monitor:
        return open_replay_monitor(self.config, self.data_dir, self.network, readonly=readonly)


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
def site(tmp_path: Path) -> Site:
    web, legacy = "127.0.0.2", "127.0.0.3"
    ports = {"ssh": 22, "http": 80, "telnet": 23}
    config = tmp_path / "config.toml"
    write_config(config, [web, legacy], list(ports.values()))
    network = replay_network(
        config,
        {
            web: {ports["ssh"]: "ssh", ports["http"]: "http"},
            legacy: {ports["telnet"]: "telnet"},
        },
    )
    return Site(network, config, tmp_path / "data", web, legacy, ports)


@pytest.fixture
def monitor(site: Site) -> Iterator[Monitor]:
    opened = site.open_monitor()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def scanned(site: Site, monitor: Monitor) -> Monitor:
    """A monitor whose store holds one scan of the site (so there are findings)."""
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
