"""Scan-leader election with real flocks held by real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portconsole.core.adapters.leader import LeaderElection
from portconsole.core.identity import Actor

BOB = Actor(user="bob", host="console2", origin="tui")

# A child that tries to lead once a start file appears, reports, and holds its result.
CONTENDER = """
import sys, time
from pathlib import Path
from portconsole.core.identity import Actor
from portconsole.core.adapters.leader import LeaderElection
data, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
election = LeaderElection(data, Actor(user=name, host="h", origin="daemon"), stale_after=30)
while not go.exists():
    time.sleep(0.001)
print("LEAD" if election.try_acquire() else "FOLLOW", flush=True)
sys.stdin.read()  # hold until the test closes stdin
"""

# A child that leads, optionally starts a long-lived grandchild, and waits to be killed.
LEADER = """
import subprocess, sys, time
from pathlib import Path
from portconsole.core.identity import Actor
from portconsole.core.adapters.leader import LeaderElection
election = LeaderElection(Path(sys.argv[1]), Actor(user="alice", host="h", origin="daemon"), 30)
assert election.try_acquire()
if len(sys.argv) > 2:
    child = subprocess.Popen(["sleep", "60"], close_fds=False)
    print(child.pid, flush=True)
print("READY", flush=True)
time.sleep(120)
"""


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_one_process_leads_and_describes_itself(tmp_path: Path) -> None:
    first = LeaderElection(tmp_path, BOB, stale_after=30)
    second = LeaderElection(tmp_path, Actor(user="carol", host="h", origin="cli"), stale_after=30)
    assert first.current() is None
    assert first.try_acquire() and first.is_leader
    assert first.try_acquire()  # idempotent while leading
    # flock belongs to the open file description: a second object never also leads.
    assert not second.try_acquire() and not second.is_leader
    info = second.current()
    assert info is not None
    assert (info.pid, info.user, info.host, info.origin) == (os.getpid(), "bob", "console2", "tui")
    assert info.alive and not info.stale and not info.is_self
    assert "pid" in info.describe() and "bob@console2 (tui)" in info.describe()
    own = first.current()
    assert own is not None and own.is_self
    first.release()
    assert not first.is_leader
    assert second.current() is None  # released: nobody leads
    assert json.loads((tmp_path / "leader.json").read_text())["released_at"]
    assert second.try_acquire()
    second.release()
    first.release()  # idempotent


def test_stale_heartbeat_is_shown(tmp_path: Path) -> None:
    clock = [datetime(2026, 5, 1, tzinfo=UTC)]
    leader = LeaderElection(tmp_path, BOB, stale_after=30, now_fn=lambda: clock[0])
    watcher = LeaderElection(tmp_path, BOB, stale_after=30, now_fn=lambda: clock[0])
    assert leader.try_acquire()
    clock[0] += timedelta(seconds=31)
    info = watcher.current()
    assert info is not None and info.alive and info.stale
    assert "not responding" in info.describe()
    leader.heartbeat()
    info = watcher.current()
    assert info is not None and not info.stale
    assert info.heartbeat == clock[0] and info.since == clock[0] - timedelta(seconds=31)
    leader.release()


def test_background_heartbeat_refreshes(tmp_path: Path) -> None:
    leader = LeaderElection(tmp_path, BOB, stale_after=30)
    assert leader.try_acquire()
    first = json.loads((tmp_path / "leader.json").read_text())["heartbeat"]
    leader.start_heartbeat(0.02)
    deadline = time.monotonic() + 5
    while json.loads((tmp_path / "leader.json").read_text())["heartbeat"] == first:
        assert time.monotonic() < deadline, "heartbeat never refreshed"
        time.sleep(0.01)
    leader.release()


@pytest.mark.parametrize("round_", range(3))
def test_processes_started_together_never_both_lead(
    tmp_path: Path, procs: list[subprocess.Popen[str]], round_: int
) -> None:
    go = tmp_path / "go"
    for index in range(4):
        procs.append(spawn(CONTENDER, str(tmp_path), str(go), f"p{index}"))
    time.sleep(0.3)  # let them all reach the start line
    go.touch()
    answers = []
    for proc in procs:
        assert proc.stdout is not None
        answers.append(proc.stdout.readline().strip())
    assert sorted(answers) == ["FOLLOW", "FOLLOW", "FOLLOW", "LEAD"]
    winner = procs[answers.index("LEAD")]
    info = LeaderElection(tmp_path, BOB, stale_after=30).current()
    assert info is not None and info.pid == winner.pid
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()


def test_killing_the_leader_lets_a_follower_take_over_at_the_next_try(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    leader = spawn(LEADER, str(tmp_path))
    procs.append(leader)
    assert leader.stdout is not None and leader.stdout.readline().strip() == "READY"
    follower = LeaderElection(tmp_path, BOB, stale_after=30)
    assert not follower.try_acquire()
    info = follower.current()
    assert info is not None and info.pid == leader.pid and info.user == "alice"

    os.kill(leader.pid, signal.SIGKILL)
    leader.wait(timeout=10)
    # The kernel dropped the lock with the process: nobody leads, and the very next
    # periodic try (one interval) takes over.
    assert follower.current() is None
    assert follower.try_acquire()
    info = follower.current()
    assert info is not None and info.pid == os.getpid() and info.is_self
    follower.release()


def test_a_leaders_child_process_does_not_keep_the_lock(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    """nmap children outlive a killed leader; they must not hold its lock."""
    leader = spawn(LEADER, str(tmp_path), "with-child")
    procs.append(leader)
    assert leader.stdout is not None
    grandchild = int(leader.stdout.readline())
    try:
        assert leader.stdout.readline().strip() == "READY"
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait(timeout=10)
        os.kill(grandchild, 0)  # still running
        follower = LeaderElection(tmp_path, BOB, stale_after=30)
        assert follower.try_acquire()
        follower.release()
    finally:
        os.kill(grandchild, signal.SIGKILL)
