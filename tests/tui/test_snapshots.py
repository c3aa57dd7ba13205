"""Snapshot tests at 80x24: overview, host detail, triage queue, approve form.

The data is fixed: an nmap XML report (tests/data/nmap_loopback.xml, May 2026) imported
through the same path as a scan, a fixed operator identity, and a frozen clock, so the
pictures do not depend on the machine, the day, or free ports.
Update them with `pytest tests/tui/test_snapshots.py --snapshot-update` and review the SVGs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from portconsole.core.identity import Actor
from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.widgets import KeyedTable

REPORT = Path(__file__).resolve().parents[1] / "data" / "nmap_loopback.xml"
FROZEN = datetime(2026, 5, 28, 9, 30, tzinfo=UTC)


@pytest.fixture
def fixed_monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Monitor]:
    # Review dates and approval expiry are computed from "now": freeze it.
    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n', encoding="utf-8")
    monitor = Monitor.open(config, tmp_path / "data", origin="tui", clock=lambda: FROZEN)
    monitor.actor = Actor(user="alice", host="ops-1", origin="tui", ssh_client="127.0.5.3")
    monitor.import_xml(REPORT)
    yield monitor
    monitor.close()


def make_app(monitor: Monitor) -> PortConsoleApp:
    return PortConsoleApp(monitor, schedule=False, clock=lambda: FROZEN, theme="portconsole-dark")


async def settled(pilot: Pilot[Any]) -> None:
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


def test_overview_snapshot(snap_compare: Any, fixed_monitor: Monitor) -> None:
    assert snap_compare(make_app(fixed_monitor), run_before=settled)


def test_host_detail_snapshot(snap_compare: Any, fixed_monitor: Monitor) -> None:
    async def open_host(pilot: Pilot[Any]) -> None:
        await settled(pilot)
        await pilot.press("enter")
        await settled(pilot)

    assert snap_compare(make_app(fixed_monitor), run_before=open_host)


def test_triage_snapshot(snap_compare: Any, fixed_monitor: Monitor) -> None:
    async def open_triage(pilot: Pilot[Any]) -> None:
        await settled(pilot)
        await pilot.press("2")
        await settled(pilot)

    assert snap_compare(make_app(fixed_monitor), run_before=open_triage)


def test_approve_form_snapshot(snap_compare: Any, fixed_monitor: Monitor) -> None:
    async def open_form(pilot: Pilot[Any]) -> None:
        await settled(pilot)
        await pilot.press("2")
        await settled(pilot)
        table = pilot.app.screen.query_one("#findings", KeyedTable)
        assert table.row_count > 0
        await pilot.press("a")
        await settled(pilot)

    assert snap_compare(make_app(fixed_monitor), run_before=open_form)
