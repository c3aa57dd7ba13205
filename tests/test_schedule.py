"""Scheduler due times, persistence, scan-now, monitoring gaps and the run loop."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portconsole.core.adapters.storage import DataLock
from portconsole.core.domain.schedule import Gap
from portconsole.core.errors import NotFoundError
from portconsole.core.services.schedule import Scheduler
from portconsole.core.services.supervisor import run_loop
from portconsole.core.settings import GroupSettings

T0 = datetime(2026, 5, 27, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def groups(**timings: tuple[int, int]) -> dict[str, GroupSettings]:
    return {
        name: GroupSettings(targets=["127.0.0.2"], interval=interval, jitter=jitter)
        for name, (interval, jitter) in timings.items()
    }


def make(
    tmp_path: Path, clock: Clock, seed: int = 7, grace: float = 120, **timings: tuple[int, int]
) -> Scheduler:
    return Scheduler(
        groups(**(timings or {"web": (900, 30)})),
        tmp_path / "schedule.json",
        now_fn=clock,
        rng=random.Random(seed),
        grace=grace,
        lock=DataLock(tmp_path / "store.lock"),
    )


def run(s: Scheduler, group: str, clock: Clock, seconds: float = 60, **finish: int) -> None:
    s.mark_started(group, clock.now)
    clock.advance(seconds)
    s.mark_finished(
        group,
        clock.now,
        "success",
        finish.get("planned", 3),
        finish.get("covered", finish.get("planned", 3)),
    )


def test_new_groups_are_due_at_once_then_after_interval_plus_jitter(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(900, 30), db=(600, 0))
    assert s.due(T0) == ["db", "web"]
    s.mark_started("web", T0)
    s.mark_finished("web", T0 + timedelta(seconds=60), "success", 3, 3)
    assert s.due(T0 + timedelta(seconds=61)) == ["db"]
    expected_jitter = random.Random(7).uniform(0, 30)
    due_at = T0 + timedelta(seconds=900 + expected_jitter)
    assert s.group_status("web").next_due == due_at
    assert "web" not in s.due(due_at - timedelta(microseconds=1))
    assert "web" in s.due(due_at)
    s.mark_started("db", T0)
    nxt = s.next_due()
    assert nxt == ("db", T0 + timedelta(seconds=600))  # zero jitter: exactly the interval


def test_jitter_stays_within_bounds_and_varies(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(900, 30))
    offsets = []
    for _ in range(40):
        start = clock.now
        run(s, "web", clock)
        offset = (s.group_status("web").next_due - start).total_seconds()
        offsets.append(offset)
        clock.now = s.group_status("web").next_due
    assert all(900 <= value <= 930 for value in offsets)
    assert max(offsets) - min(offsets) > 10  # jitter is really drawn, not fixed
    assert s.find_gaps(clock.now) == []  # every run started on time


def test_scan_now_forces_a_group_and_works_across_processes(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(900, 0), db=(900, 0))
    run(s, "web", clock)
    run(s, "db", clock)
    assert s.due(clock.now) == []
    # Another process (another Scheduler on the same file) asks; the leader sees it.
    console = make(tmp_path, clock, web=(900, 0), db=(900, 0))
    assert console.scan_now("db") == ["db"]
    assert s.due(clock.now) == ["db"]
    assert s.next_due() == ("db", clock.now)
    run(s, "db", clock)
    assert s.due(clock.now) == []
    assert sorted(s.scan_now()) == ["db", "web"]
    assert sorted(s.due(clock.now)) == ["db", "web"]
    with pytest.raises(NotFoundError, match="known groups are db, web"):
        s.scan_now("nope")


def test_state_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(900, 30))
    run(s, "web", clock)
    status = s.group_status("web")
    restarted = make(tmp_path, clock, seed=99, web=(900, 30))
    again = restarted.group_status("web")
    assert again == status
    assert again.last_started == T0 and again.last_outcome == "success"
    assert restarted.due(clock.now) == []
    assert restarted.due(status.next_due) == ["web"]


def test_shorter_interval_in_config_applies_without_waiting(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(3600, 0))
    run(s, "web", clock)
    shorter = make(tmp_path, clock, web=(600, 0))
    assert shorter.group_status("web").next_due == T0 + timedelta(seconds=600)


def test_a_daemon_stopped_longer_than_its_interval_records_a_late_gap(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(900, 30))
    run(s, "web", clock)
    due_at = s.group_status("web").next_due
    # The daemon is down for three hours, then starts again.
    clock.now = T0 + timedelta(hours=3)
    restarted = make(tmp_path, clock, web=(900, 30))
    # Detected on start: reported once as ongoing...
    first = restarted.find_gaps(clock.now)
    assert len(first) == 1
    ongoing = first[0]
    assert (ongoing.reason, ongoing.ongoing, ongoing.start, ongoing.end) == (
        "late",
        True,
        due_at,
        clock.now,
    )
    assert restarted.find_gaps(clock.now + timedelta(seconds=5)) == []
    # ...then once closed when the scan finally runs, under the same id.
    assert restarted.due(clock.now) == ["web"]
    ran_at = clock.advance(2)
    restarted.mark_started("web", ran_at)
    closed = restarted.find_gaps(ran_at)
    assert len(closed) == 1
    assert (closed[0].reason, closed[0].ongoing, closed[0].start, closed[0].end) == (
        "late",
        False,
        due_at,
        ran_at,
    )
    assert closed[0].id == ongoing.id
    assert closed[0].seconds == pytest.approx((ran_at - due_at).total_seconds())
    assert closed[0].details["interval"] == 900
    assert restarted.find_gaps(ran_at) == []
    assert [g.id for g in restarted.recent_gaps()] == [ongoing.id, ongoing.id]


def test_late_gap_without_the_ongoing_report(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(900, 30))
    run(s, "web", clock)
    due_at = s.group_status("web").next_due
    s.mark_started("web", T0 + timedelta(seconds=900 + 30 + 121))
    [gap] = s.find_gaps()
    assert gap.reason == "late" and gap.start == due_at and not gap.ongoing


def test_within_grace_is_not_late(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(900, 30))
    run(s, "web", clock)
    deadline = T0 + timedelta(seconds=900 + 30 + 120)
    assert s.overdue(deadline) == []
    assert s.find_gaps(deadline) == []
    s.mark_started("web", deadline)
    assert s.find_gaps(deadline) == []
    assert len(s.overdue(deadline + timedelta(seconds=900 + 30 + 121))) == 0  # running


def test_overdue_is_a_peek_that_records_nothing(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(900, 0))
    run(s, "web", clock)
    late = T0 + timedelta(hours=1)
    assert [g.reason for g in s.overdue(late)] == ["late"]
    assert [g.reason for g in s.overdue(late)] == ["late"]
    assert [g.ongoing for g in s.find_gaps(late)] == [True]


def test_a_partial_scan_records_a_partial_gap(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock, web=(900, 30))
    s.mark_started("web", T0)
    s.mark_finished("web", T0 + timedelta(seconds=40), "success", 10, 7)
    [gap] = s.find_gaps(T0 + timedelta(seconds=41))
    assert (gap.group, gap.reason, gap.start, gap.end) == (
        "web",
        "partial",
        T0,
        T0 + timedelta(seconds=40),
    )
    assert gap.details["hosts_planned"] == 10 and gap.details["hosts_covered"] == 7
    assert s.find_gaps(T0 + timedelta(seconds=42)) == []


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_failed_or_cancelled_runs_record_a_failed_gap(tmp_path: Path, outcome: str) -> None:
    clock = Clock()
    s = make(tmp_path, clock)
    s.mark_started("web", T0)
    s.mark_finished("web", T0 + timedelta(seconds=5), outcome, 3, 0, error="nmap exited 1")
    [gap] = s.find_gaps(T0 + timedelta(seconds=6))
    assert gap.reason == "failed" and gap.details["outcome"] == outcome
    assert gap.details["error"] == "nmap exited 1"


DIES_MID_RUN = """
import sys
from datetime import datetime
from pathlib import Path
from portconsole.core.services.schedule import Scheduler
from portconsole.core.settings import GroupSettings
group = GroupSettings(targets=["127.0.0.2"], interval=900, jitter=0)
s = Scheduler({"web": group}, Path(sys.argv[1]) / "schedule.json")
s.mark_started("web", datetime.fromisoformat(sys.argv[2]))
"""


def test_a_run_whose_process_died_is_a_failed_gap(tmp_path: Path) -> None:
    clock = Clock()
    subprocess.run([sys.executable, "-c", DIES_MID_RUN, str(tmp_path), T0.isoformat()], check=True)
    restarted = make(tmp_path, clock, web=(900, 0))
    assert restarted.group_status("web").running_since == T0
    clock.now = T0 + timedelta(seconds=900)
    restarted.mark_started("web", clock.now)
    [gap] = restarted.find_gaps(clock.now)
    assert (gap.reason, gap.start, gap.end) == ("failed", T0, clock.now)
    assert gap.details["outcome"] == "interrupted"


def test_a_run_overlapping_a_live_one_is_not_a_gap(tmp_path: Path) -> None:
    """A console's manual scan of a group while the (live) leader scans it."""
    clock = Clock()
    leader = make(tmp_path, clock, web=(900, 0))
    console = make(tmp_path, clock, web=(900, 0))
    leader.mark_started("web", T0)
    console.mark_started("web", T0 + timedelta(seconds=5))
    console.mark_finished("web", T0 + timedelta(seconds=20), "success", 1, 1)
    leader.mark_finished("web", T0 + timedelta(seconds=30), "success", 1, 1)
    assert leader.find_gaps(T0 + timedelta(seconds=30)) == []


def test_queued_gaps_survive_a_restart_and_are_returned_once(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, clock)
    s.mark_started("web", T0)
    s.mark_finished("web", T0, "partial", 3, 2)
    restarted = make(tmp_path, clock)
    assert [g.reason for g in restarted.find_gaps(T0)] == ["partial"]
    assert s.find_gaps(T0) == []  # the other instance sees it was recorded


def test_gap_json_round_trip() -> None:
    gap = Gap("web", T0, T0 + timedelta(minutes=5), "late", True, {"due": "x"})
    assert Gap.from_json(gap.to_json()) == gap
    assert gap.id.startswith("gap-") and gap.to_json()["id"] == gap.id


def test_bad_outcome_is_refused(tmp_path: Path) -> None:
    s = make(tmp_path, Clock())
    with pytest.raises(ValueError):
        s.mark_finished("web", T0, "meh", 1, 1)


def test_runs_of_two_groups_marking_at_once_never_deadlock(tmp_path: Path) -> None:
    # A cycle's ingest holds the data lock and marks its run finished while another
    # group's run marks its start: both take the data lock and the scheduler's mutex.
    lock = DataLock(tmp_path / "store.lock")
    s = Scheduler(groups(a=(900, 0), b=(900, 0)), tmp_path / "schedule.json", lock=lock)
    s.mark_started("a")
    holding = threading.Event()
    finished: list[str] = []

    def ingest_a() -> None:
        with lock.hold():
            holding.set()
            time.sleep(0.3)  # b's mark_started is waiting by now
            s.mark_finished("a", None, "success", 1, 1)
        finished.append("a")

    def start_b() -> None:
        holding.wait()
        time.sleep(0.1)
        s.mark_started("b")
        finished.append("b")

    threads = [threading.Thread(target=f, daemon=True) for f in (ingest_a, start_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(finished) == ["a", "b"], "the two runs deadlocked"


# -- run_loop --------------------------------------------------------------------------


def test_run_loop_runs_groups_in_parallel_never_one_group_twice_and_stops_promptly(
    tmp_path: Path,
) -> None:
    s = Scheduler(groups(a=(900, 0), b=(900, 0)), tmp_path / "schedule.json")
    stop = threading.Event()
    mutex = threading.Lock()
    running: set[str] = set()
    together: list[set[str]] = []
    ran: list[str] = []
    overlaps: list[str] = []

    def cycle(group: str, cancel: threading.Event) -> None:
        with mutex:
            if group in running:
                overlaps.append(group)
                return
            running.add(group)
            together.append(set(running))
        try:
            s.mark_started(group)
            cancel.wait(0.3)  # both groups are due at once: they overlap in here
            with mutex:
                ran.append(group)
            s.mark_finished(group, None, "success", 1, 1)
        finally:
            with mutex:
                running.discard(group)

    thread = threading.Thread(target=run_loop, args=(s, cycle, stop, lambda: True, 0.05))
    thread.start()
    deadline = time.monotonic() + 10
    while len(ran) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(ran) == ["a", "b"] and overlaps == []
    assert {"a", "b"} in together  # in parallel, not one after the other
    s.scan_now("a")
    while len(ran) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran[2] == "a" and overlaps == []
    # A stop cancels a run in flight and the loop waits for it.
    s.scan_now("b")
    while "b" not in running and time.monotonic() < deadline:
        time.sleep(0.01)
    stopped = time.monotonic()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and running == set()
    assert time.monotonic() - stopped < 1.0
    assert s.find_gaps() == []


def test_a_run_past_its_groups_timeout_is_cancelled_and_a_gap_of_that_group_only(
    tmp_path: Path,
) -> None:
    settings = {
        "slow": GroupSettings(targets=["127.0.0.2"], interval=900, jitter=0, timeout=10),
        "fast": GroupSettings(targets=["127.0.0.3"], interval=900, jitter=0),
    }
    s = Scheduler(settings, tmp_path / "schedule.json", grace=5)
    assert s.cycle_timeout("slow") == 10 and s.cycle_timeout("fast") == 905
    stop = threading.Event()
    seen: dict[str, float] = {}

    def cycle(group: str, cancel: threading.Event) -> None:
        s.mark_started(group)
        began = time.monotonic()
        outcome = "cancelled" if cancel.wait(30 if group == "slow" else 0.05) else "success"
        seen[group] = time.monotonic() - began
        s.mark_finished(group, None, outcome, 1, 1 if outcome == "success" else 0)

    # The timeout setting's floor is 10 s; the test shortens the run's bound through the
    # scheduler it reads it from.
    s.cycle_timeout = lambda group: 0.5 if group == "slow" else 900.0  # type: ignore[method-assign]
    thread = threading.Thread(target=run_loop, args=(s, cycle, stop, lambda: True, 0.05))
    thread.start()
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert 0.4 < seen["slow"] < 2.0 and seen["fast"] < 0.5
    gaps = s.find_gaps()
    assert [(g.group, g.reason, g.details["outcome"]) for g in gaps] == [
        ("slow", "failed", "cancelled")
    ]


def test_run_loop_only_runs_while_leading(tmp_path: Path) -> None:
    s = Scheduler(groups(a=(900, 0)), tmp_path / "schedule.json")
    stop = threading.Event()
    leading = threading.Event()
    ran: list[str] = []
    ticks: list[int] = []

    def cycle(group: str, cancel: threading.Event) -> None:
        s.mark_started(group)
        ran.append(group)
        s.mark_finished(group, None, "success", 1, 1)

    thread = threading.Thread(
        target=run_loop,
        args=(s, cycle, stop, leading.is_set, 0.02),
        kwargs={"on_tick": lambda: ticks.append(1)},
    )
    thread.start()
    while len(ticks) < 5:
        time.sleep(0.01)
    assert ran == []
    leading.set()
    deadline = time.monotonic() + 10
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert ran == ["a"]


def test_run_loop_records_a_crashing_or_unmarked_cycle_as_failed(tmp_path: Path) -> None:
    s = Scheduler(groups(crash=(900, 0), lazy=(900, 0)), tmp_path / "schedule.json")
    stop = threading.Event()
    calls: list[str] = []

    def cycle(group: str, cancel: threading.Event) -> None:
        calls.append(group)
        if group == "crash":
            s.mark_started(group)
            raise RuntimeError("store exploded")
        # "lazy" returns without marking anything

    thread = threading.Thread(target=run_loop, args=(s, cycle, stop, lambda: True, 0.02))
    thread.start()
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # a tight retry loop would call them again and again
    stop.set()
    thread.join(timeout=5)
    assert sorted(calls) == ["crash", "lazy"]
    gaps = {g.group: g for g in s.find_gaps()}
    assert gaps["crash"].reason == "failed"
    assert "store exploded" in gaps["crash"].details["error"]
    assert gaps["lazy"].reason == "failed"
    assert s.group_status("crash").running_since is None
