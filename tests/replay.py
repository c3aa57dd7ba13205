"""A Monitor on a real store in a temporary dir, scanning through a ReplayScanner (no nmap).

Typical use::

    from tests.replay import replay_monitor

    def test_something(tmp_path: Path) -> None:
        monitor, network = replay_monitor(tmp_path, {"127.0.0.2": {22: "ssh"}})
        monitor.run_cycle(targets=["127.0.0.2"], ports="22,80")
        network.open_port("127.0.0.2", 80, "http")       # opens before the next cycle
        second = monitor.run_cycle(targets=["127.0.0.2"], ports="22,80")

Everything but nmap is real: settings from a config file, the store, detection, audit.
The replay answers sweeps, confirm probes and -sV from the mapping it was given, through
the same XML reader as a live scan (see portconsole/core/adapters/replay.py).
"""

from __future__ import annotations

from pathlib import Path

from portconsole.core.adapters.replay import Network, ReplayScanner
from portconsole.core.monitor import Monitor
from portconsole.core.settings import load_settings
from tests.conftest import write_config


def replay_monitor(
    tmp_path: Path,
    network: Network | None = None,
    *,
    groups: dict[str, tuple[list[str], str]] | None = None,
    extra: str = "",
    privileged: bool = True,
    origin: str = "cli",
) -> tuple[Monitor, ReplayScanner]:
    """A Monitor whose scanner is a replay of `network` ({address: {port: service}})."""
    config = write_config(tmp_path / "config.toml", groups, extra)
    settings, paths = load_settings(config, tmp_path / "data")
    replay = ReplayScanner(settings.scope_obj(), network, privileged=privileged)
    return Monitor(settings, paths, origin=origin, scanner=replay), replay
