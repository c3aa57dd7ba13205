"""The header says when service detection (-sV) is still identifying ports.

A cycle detects from its sweep and leaves -sV running in the background
(services/fingerprint_after.py); until its result is written the header says
"identifying N ports". The Monitor, store and cycle are the real ones; the replayed
network holds -sV back until the test lets it answer.
"""

from __future__ import annotations

import threading
from pathlib import Path

from portconsole.core.monitor import Monitor
from portconsole.tui.app import PortConsoleApp
from portconsole.tui.screens.approval_forms import ApproveForm
from tests.tui.conftest import (
    open_replay_monitor,
    replay_network,
    screen_text,
    settle,
    wait_for,
    write_config,
)

HOST = "127.0.0.2"


def held_sv_monitor(tmp_path: Path) -> tuple[Monitor, threading.Event]:
    """A console's Monitor over ssh (22) and telnet (23) on HOST whose -sV answers only once
    the returned gate is set."""
    config = tmp_path / "config.toml"
    write_config(config, [HOST], [22, 23], fingerprint="changed")
    network = replay_network(config, {HOST: {22: "ssh", 23: "telnet"}})
    gate = threading.Event()

    def hold(kind: str, _address: str, _ports: str) -> None:
        if kind == "fingerprint":
            gate.wait(20)

    network.on_call = hold
    return open_replay_monitor(config, tmp_path / "data", network), gate


async def test_the_header_counts_ports_being_identified_until_their_result_lands(
    tmp_path: Path,
) -> None:
    monitor, gate = held_sv_monitor(tmp_path)
    app = PortConsoleApp(monitor, schedule=False)
    try:
        async with app.run_test(size=(100, 24)) as pilot:
            await settle(pilot)
            assert "identifying" not in screen_text(app)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.scan is None, timeout=20)
            assert await wait_for(
                pilot, lambda: "◌ identifying 2 ports" in screen_text(app), timeout=20
            )
            assert monitor.fingerprints_pending() == 2
            gate.set()
            # The fingerprint's transaction moves the store: the console re-reads it.
            assert await wait_for(pilot, lambda: "identifying" not in screen_text(app), timeout=20)
            assert monitor.fingerprints_pending() == 0
            assert all(p.fingerprinted_at for p in monitor.store.current_ports())
    finally:
        gate.set()
        monitor.close()


async def test_the_approve_form_says_when_the_service_is_still_nmaps_guess(
    tmp_path: Path,
) -> None:
    monitor, gate = held_sv_monitor(tmp_path)
    app = PortConsoleApp(monitor, schedule=False)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: "◌ identifying 2 ports" in screen_text(app), 20)
            await pilot.press("2")
            await settle(pilot)
            await pilot.press("a")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ApproveForm))
            guess = "ssh is a guess from the port number; the approval takes what -sV names."
            assert await wait_for(pilot, lambda: guess in screen_text(app))
            await pilot.press("escape")
            gate.set()
            assert await wait_for(pilot, lambda: "identifying" not in screen_text(app), 20)
            # Named by -sV now: the form says nothing of a guess.
            await pilot.press("a")
            assert await wait_for(pilot, lambda: "No request recorded" in screen_text(app))
            assert "is a guess" not in screen_text(app)
    finally:
        gate.set()
        monitor.close()
