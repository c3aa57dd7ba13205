"""The scan-leader lease (adapters/leader.py) with real files and real processes.

The lease replaced an flock held for life: the kernel dropped that lock when its holder
died, but a stopped (SIGSTOP) or hung holder kept it forever, so these tests now check
lapse, take-over and stepping down, with an injected monotonic clock where time matters.
"""

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
CAROL = Actor(user="carol", host="console3", origin="cli")

# A child that tries to lead once a start file appears, reports, and holds its result.
CONTENDER = """
import sys, time
from pathlib import Path
from portconsole.core.identity import Actor
from portconsole.core.adapters.leader import LeaderElection
data, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
election = LeaderElection(data, Actor(user=name, host="h", origin="daemon"), 30)
while not go.exists():
    time.sleep(0.001)
print("LEAD" if election.try_acquire() else "FOLLOW", flush=True)
sys.stdin.read()  # hold until the test closes stdin
"""

# A child that leads with a short lease, renews in the background and says when it lost.
LEADER = """
import socket, sys, time
from pathlib import Path
from portconsole.core.identity import Actor
from portconsole.core.adapters.leader import LeaderElection
actor = Actor(user="alice", host=socket.gethostname(), origin="daemon")
election = LeaderElection(Path(sys.argv[1]), actor, float(sys.argv[2]))
assert election.try_acquire()
election.start_heartbeat()
print("READY", flush=True)
while election.try_acquire():
    time.sleep(0.05)
print("LOST", election.lost.who() if election.lost else None, flush=True)
time.sleep(120)
"""


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


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
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)


def test_one_process_leads_and_describes_itself(tmp_path: Path) -> None:
    first = LeaderElection(tmp_path, BOB, 15, fingerprint="f" * 64, tty="pts/7")
    second = LeaderElection(tmp_path, CAROL, 15)
    assert first.current() is None
    assert first.try_acquire() and first.is_leader
    assert first.try_acquire()  # idempotent while leading
    # The lease names one holder: a second object, even in this process, follows.
    assert not second.try_acquire() and not second.is_leader
    info = second.current()
    assert info is not None
    assert (info.pid, info.user, info.host, info.origin) == (os.getpid(), "bob", "console2", "tui")
    assert info.alive and not info.stale and not info.is_self and info.term == 1
    assert info.who() == f"bob@console2 pid {os.getpid()} tty pts/7"
    assert info.fingerprint == "f" * 64 and "(tui) since" in info.describe()
    own = first.current()
    assert own is not None and own.is_self
    record = json.loads((tmp_path / "leader.json").read_text())
    assert {"holder", "expires_at", "renewed_at", "tty", "fingerprint"} <= set(record)
    assert first.release()
    assert not first.is_leader
    assert second.current() is None  # released: nobody leads
    assert json.loads((tmp_path / "leader.json").read_text())["released_at"]
    assert second.try_acquire()  # a released lease is free at once
    assert second.current() is not None and second.current().term == 2  # type: ignore[union-attr]
    second.release()
    assert not first.release()  # idempotent


def test_a_lease_that_is_not_renewed_lapses_and_the_old_leader_steps_down(
    tmp_path: Path,
) -> None:
    leader_clock, follower_clock = Mono(), Mono()
    leader = LeaderElection(tmp_path, BOB, 10, monotonic=leader_clock)
    follower = LeaderElection(tmp_path, CAROL, 10, monotonic=follower_clock)
    assert leader.try_acquire()
    assert not follower.try_acquire()  # first sight of the lease starts the follower's clock
    follower_clock.t += 9.9
    assert not follower.try_acquire()
    # The leader is stopped: no renewals. Its own trust ends 10 s after its last renewal.
    leader_clock.t += 10
    assert not leader.is_leader and leader.holds
    follower_clock.t += 0.1
    assert follower.try_acquire() and follower.is_leader
    assert follower.took_over is not None and follower.took_over["user"] == "bob"
    # Continued: the old leader must renew before acting, finds the lease taken, steps down.
    assert not leader.try_acquire()
    assert not leader.holds and leader.lost is not None and leader.lost.user == "carol"
    # It does not take it back while the new leader renews.
    leader_clock.t += 100
    assert not leader.try_acquire()


def test_renewals_keep_the_lease_and_a_wall_clock_step_changes_nothing(tmp_path: Path) -> None:
    wall = [datetime(2026, 5, 1, tzinfo=UTC)]
    leader_clock, follower_clock = Mono(), Mono()
    leader = LeaderElection(tmp_path, BOB, 10, monotonic=leader_clock, now_fn=lambda: wall[0])
    follower = LeaderElection(tmp_path, CAROL, 10, monotonic=follower_clock, now_fn=lambda: wall[0])
    assert leader.try_acquire()
    for _ in range(5):  # 5 x 4 s: longer than a lease, but renewed every third of one
        assert not follower.try_acquire()
        leader_clock.t += 4
        follower_clock.t += 4
        assert leader.try_acquire()
    assert not follower.try_acquire()
    # The wall clock jumps a day ahead: the lease *looks* expired, and is shown so...
    wall[0] += timedelta(days=1)
    info = follower.current()
    assert info is not None and info.stale and info.alive
    assert "not renewing" in info.describe()
    # ...but nobody takes over before it went unrenewed for a lease on a monotonic clock.
    assert not follower.try_acquire()
    follower_clock.t += 3
    assert not follower.try_acquire()


def test_background_renewal(tmp_path: Path) -> None:
    leader = LeaderElection(tmp_path, BOB, 1.5)
    assert leader.try_acquire()
    leader.start_heartbeat(0.02)
    deadline = time.monotonic() + 5
    while json.loads((tmp_path / "leader.json").read_text())["renewals"] < 3:
        assert time.monotonic() < deadline, "the lease was never renewed"
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
    info = LeaderElection(tmp_path, BOB, 30).current()
    assert info is not None and info.pid == winner.pid
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()


def test_killing_the_leader_frees_the_lease_at_once_on_its_host(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    leader = spawn(LEADER, str(tmp_path), "30")
    procs.append(leader)
    assert leader.stdout is not None and leader.stdout.readline().strip() == "READY"
    here = Actor(user="bob", host=Actor.current("tui").host, origin="tui")
    follower = LeaderElection(tmp_path, here, 30)
    assert not follower.try_acquire()
    info = follower.current()
    assert info is not None and info.pid == leader.pid and info.user == "alice"
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait(timeout=10)
    # Same host, pid gone: no need to wait out the 30 s lease.
    assert follower.try_acquire()
    follower.release()


def test_a_stopped_leader_is_replaced_after_the_lease_and_steps_down_when_continued(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    lease = 1.5
    leader = spawn(LEADER, str(tmp_path), str(lease))
    procs.append(leader)
    assert leader.stdout is not None and leader.stdout.readline().strip() == "READY"
    here = Actor(user="bob", host=Actor.current("tui").host, origin="tui")
    follower = LeaderElection(tmp_path, here, lease, tty="pts/9")
    assert not follower.try_acquire()
    os.kill(leader.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    while not follower.try_acquire():
        assert time.monotonic() - stopped < lease + 2, "the stopped leader was never replaced"
        time.sleep(0.05)
    took = time.monotonic() - stopped
    assert lease - 0.6 <= took <= lease + 0.7, took  # up to one renewal period early
    follower.start_heartbeat()
    os.kill(leader.pid, signal.SIGCONT)
    # Its renewal finds the lease taken: it steps down and names who leads now.
    assert leader.stdout.readline().strip() == f"LOST bob@{here.host} pid {os.getpid()} tty pts/9"
    info = follower.current()
    assert info is not None and info.is_self and info.term == 2
    follower.release()
