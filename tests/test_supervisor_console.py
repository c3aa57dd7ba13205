"""The console leads scheduled scans in parallel, and quitting stops every running group.

A real console (Textual Pilot) on a real Monitor over a temp data dir, with two groups whose
nmap runs at -T0 (minutes between probes): both must be running at once, under this test
process, and `q` must end the console within a second and leave no nmap behind, as a single
scan's quit does (tests/tui/test_background.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from tests.fleet import TestFleet
from tests.tui.conftest import settle, wait_for
from tests.tui.test_background import nmap_children

pytestmark = pytest.mark.nmap


def _config(path: Path, hosts: list[str], ports: list[int]) -> Path:
    tables = "".join(
        f'\n[groups.g{i}]\ntargets = ["{host}"]\nports = "{port}"\ninterval = 600\njitter = 0\n'
        for i, (host, port) in enumerate(zip(hosts, ports, strict=True))
    )
    path.write_text(
        'scope = ["127.0.0.0/8"]\n\n[scan]\ntiming = 0\nconfirm_probes = 0\n'
        f'fingerprint = "none"\n{tables}'
    )
    return path


async def test_the_console_scans_groups_in_parallel_and_quit_stops_them_all(
    tmp_path: Path,
) -> None:
    with TestFleet() as fleet:
        hosts = [fleet.new_address() for _ in range(2)]
        ports = [fleet.listen(host, "http") for host in hosts]
        monitor = Monitor.open(_config(tmp_path / "c.toml", hosts, ports), tmp_path / "data")
        app = PortConsoleApp(monitor, schedule=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            # Both groups were never scanned: due at once, and started side by side.
            assert await wait_for(pilot, lambda: len(nmap_children()) == 2, timeout=20)
            assert sorted(app.supervisor.running()) == ["g0", "g1"]
            assert app.scan is not None
            started = time.monotonic()
            await pilot.press("q")
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 1.0
        while nmap_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.supervisor.running() == []
        monitor.close()
        assert elapsed < 1.0, f"quit took {elapsed:.2f}s"
        assert nmap_children() == []
        # Both runs were handed back to the next leader: due at once, and no gap.
        assert sorted(monitor.scheduler.due()) == ["g0", "g1"]
        assert monitor.scheduler.find_gaps() == []
