"""Every console on a data dir says "identifying N ports" while any process's -sV runs.

A cycle leaves -sV running in the background (services/fingerprint_after.py); the process
running it marks the job in `<data_dir>/fingerprinting/` (adapters/fingerprint_marks.py)
and every other Monitor on the data dir (a follower console of a leading daemon) counts
it. Two real Monitors share one config and data dir here; the scanner is a replay whose
-sV is held at a gate until the test lets it answer (or its job is cancelled). Marks of
dead processes and marks past their deadline are written by hand, as a crash leaves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from portconsole.core.adapters.fingerprint_marks import FOLDER_NAME, FingerprintMarks
from portconsole.core.adapters.replay import Network, ReplayScanner
from portconsole.core.adapters.scanning import ScanCancelled
from portconsole.core.monitor import CycleResult, Monitor
from portconsole.core.services.fingerprint_after import FingerprintJob
from portconsole.core.timeutil import iso, utcnow
from portconsole.tui.app import PortConsoleApp
from tests.replay import replay_monitor
from tests.tui.conftest import (
    open_replay_monitor,
    replay_network,
    screen_text,
    settle,
    wait_for,
    write_config,
)

HOST = "127.0.0.2"
NETWORK: Network = {HOST: {22: "ssh", 23: "telnet", 8080: "http"}}
PORTS = "22,23,8080"


def hold_sv(replay: ReplayScanner, jobs: list[FingerprintJob]) -> threading.Event:
    """Hold every -sV the replay is asked until the returned event is set, or until a job
    of `jobs` is cancelled (the replay then answers as a killed nmap: ScanCancelled)."""
    gate = threading.Event()

    def hold(kind: str, address: str, _ports: str) -> None:
        if kind != "fingerprint":
            return
        deadline = time.monotonic() + 30
        while not gate.wait(0.05):
            if any(job.cancel.is_set() for job in jobs):
                raise ScanCancelled(f"service detection on {address} cancelled")
            assert time.monotonic() < deadline, "the test never opened the gate"

    replay.on_call = hold
    return gate


def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def marks_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / FOLDER_NAME


def mark_files(tmp_path: Path) -> list[Path]:
    folder = marks_dir(tmp_path)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_mark(tmp_path: Path, name: str, **fields: Any) -> Path:
    """A mark as another process would have written it (by hand: a crash leaves these)."""
    now = utcnow()
    record = {
        "job_id": name,
        "owner": f"owner-{name}",
        "pid": os.getpid(),
        "host": "elsewhere",
        "label": "",
        "ports": 1,
        "started": iso(now - timedelta(seconds=10)),
        "deadline": iso(now + timedelta(minutes=10)),
        **fields,
    }
    folder = marks_dir(tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record))
    return path


def open_follower(tmp_path: Path, *, readonly: bool = False) -> Monitor:
    return Monitor.open(
        tmp_path / "config.toml", tmp_path / "data", origin="tui", readonly=readonly
    )


@contextlib.contextmanager
def held_sv(tmp_path: Path) -> Iterator[tuple[Monitor, Monitor, CycleResult, threading.Event]]:
    """A leader whose cycle's -sV (3 ports) is held until the gate opens, and a follower
    on the same data dir that already counts it; both closed at the end."""
    leader, replay = replay_monitor(tmp_path, NETWORK)
    follower = open_follower(tmp_path)
    jobs: list[FingerprintJob] = []
    gate = hold_sv(replay, jobs)
    try:
        result = leader.run_cycle(targets=[HOST], ports=PORTS)
        assert result.fingerprint is not None
        jobs.append(result.fingerprint)
        assert eventually(lambda: follower.overview().identifying == 3)
        yield leader, follower, result, gate
    finally:
        gate.set()
        follower.close()
        leader.close()


def test_a_follower_counts_the_ports_another_monitors_sv_is_identifying(tmp_path: Path) -> None:
    with held_sv(tmp_path) as (leader, follower, result, gate):
        assert result.fingerprint is not None
        assert follower.fingerprints_pending() == 3
        # Its own job is counted once: in memory, never again from its own mark.
        assert leader.overview().identifying == 3
        (path,) = mark_files(tmp_path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(marks_dir(tmp_path).stat().st_mode) == 0o700
        mark = json.loads(path.read_text())
        assert mark["job_id"] == result.fingerprint.id == path.stem
        assert (mark["pid"], mark["host"], mark["ports"]) == (os.getpid(), leader.actor.host, 3)
        assert mark["deadline"] > mark["started"]
        held = follower.data_version()

        gate.set()
        result.settle_fingerprint(30)
        assert result.fingerprinted is not None and result.fingerprinted.scan is not None
        assert follower.overview().identifying == 0
        assert leader.fingerprints_pending() == 0
        assert mark_files(tmp_path) == []
        assert follower.data_version() != held
        assert all(p.fingerprinted_at for p in follower.store.current_ports())


def test_closing_the_monitor_cancels_its_sv_and_takes_its_mark_down(tmp_path: Path) -> None:
    with held_sv(tmp_path) as (leader, follower, result, _gate):
        assert result.fingerprint is not None
        leader.close()  # cancels the job: nmap killed, nothing written
        outcome = result.fingerprint.wait(10)
        assert outcome is not None and outcome.cancelled
        assert mark_files(tmp_path) == []
        assert follower.overview().identifying == 0
        assert not [r for r in follower.audit.records() if r["action"] == "scan.fingerprint"]


def test_marks_of_dead_processes_and_past_their_deadline_are_ignored_and_removed(
    tmp_path: Path,
) -> None:
    leader, _replay = replay_monitor(tmp_path, NETWORK)
    leader.close()
    follower = open_follower(tmp_path)
    host = follower.actor.host
    try:
        quiet = follower.data_version()
        now = utcnow()
        dead = write_mark(tmp_path, "dead", pid=dead_pid(), host=host, ports=5)
        late = write_mark(
            tmp_path,
            "late",
            host=host,
            ports=7,
            started=iso(now - timedelta(hours=1)),
            deadline=iso(now - timedelta(seconds=1)),
        )
        alive = write_mark(tmp_path, "alive", host=host, ports=2)
        # A pid on another host cannot be checked: its deadline alone decides.
        remote = write_mark(tmp_path, "remote", pid=dead_pid(), host="db-2", ports=3)
        damaged = marks_dir(tmp_path) / "damaged.json"
        damaged.write_text("{not json")
        temp = marks_dir(tmp_path) / ".alive.json.x1.tmp"  # an atomic write in flight
        temp.write_text(alive.read_text())

        readonly = open_follower(tmp_path, readonly=True)
        try:
            assert readonly.overview().identifying == 5
            assert dead.exists() and late.exists()  # a read-only console writes nothing
        finally:
            readonly.close()

        # The console's poll sees marks come (the store did not move).
        marked = follower.data_version()
        assert marked != quiet
        assert follower.overview().identifying == 5
        assert not dead.exists() and not late.exists()
        assert follower.data_version() != marked
        assert alive.exists() and remote.exists() and damaged.exists()
    finally:
        follower.close()


def test_the_marks_version_moves_when_a_mark_comes_or_goes(tmp_path: Path) -> None:
    marks = FingerprintMarks(tmp_path / "data", "ops-1")
    other = FingerprintMarks(tmp_path / "data", "ops-1")
    assert marks.version() == "none" and other.others() == []
    mark = marks.add("job1", "web", 4, 60.0)
    assert mark is not None and mark.deadline - mark.started == timedelta(seconds=60)
    first = other.version()
    assert first != "none"
    assert [(m.job_id, m.ports, m.label) for m in other.others()] == [("job1", 4, "web")]
    assert marks.others() == []  # its own marks are not another's
    time.sleep(0.01)  # a coarse file system clock would otherwise hide the change
    marks.remove("job1")
    assert other.version() != first and other.others() == []


async def test_a_follower_console_header_says_identifying_while_another_monitor_runs_sv(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    write_config(config, [HOST], [22, 23], fingerprint="changed")
    network = replay_network(config, {HOST: {22: "ssh", 23: "telnet"}})
    jobs: list[FingerprintJob] = []
    gate = hold_sv(network, jobs)
    leader = open_replay_monitor(config, tmp_path / "data", network)
    follower = open_replay_monitor(config, tmp_path / "data", network)
    app = PortConsoleApp(follower, schedule=False)
    try:
        async with app.run_test(size=(100, 24)) as pilot:
            await settle(pilot)
            assert "identifying" not in screen_text(app)
            result = await asyncio.to_thread(leader.run_cycle, group="web")
            assert result.fingerprint is not None
            jobs.append(result.fingerprint)
            assert await wait_for(
                pilot, lambda: "◌ identifying 2 ports" in screen_text(app), timeout=20
            )
            gate.set()
            await asyncio.to_thread(result.settle_fingerprint, 30)
            assert await wait_for(pilot, lambda: "identifying" not in screen_text(app), timeout=20)
    finally:
        gate.set()
        follower.close()
        leader.close()
