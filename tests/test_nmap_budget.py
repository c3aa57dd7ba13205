"""The process-wide nmap budget (adapters/nmap_budget.py) with real child processes.

`run_process` (adapters/nmap_process.py) takes a slot of the budget around each process it
starts, so these tests start real `sleep` processes through it, each with an argument no
other test uses, and count them under /proc.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portconsole.core.adapters import nmap_budget
from portconsole.core.adapters.nmap_process import ProcessResult, run_process


@pytest.fixture
def budget() -> Iterator[nmap_budget.NmapBudget]:
    before = nmap_budget.BUDGET.limit
    yield nmap_budget.BUDGET
    nmap_budget.BUDGET.set_limit(before)


def _sleeping(mark: str) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        count += cmdline[:2] == [b"/bin/sleep", mark.encode()]
    return count


def _start(mark: str, cancel: threading.Event, results: list[ProcessResult]) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: results.append(run_process(["/bin/sleep", mark], cancel, 30))
    )
    thread.start()
    return thread


def _peak(mark: str, seconds: float) -> int:
    peak, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, _sleeping(mark))
        time.sleep(0.02)
    return peak


def test_one_scan_keeps_a_slot_free_and_another_scan_gets_it_at_once(
    budget: nmap_budget.NmapBudget,
) -> None:
    nmap_budget.configure(3)
    slow, fast = threading.Event(), threading.Event()
    results: list[ProcessResult] = []
    # One scan asks for four processes: it gets its share, the limit less one.
    slow_threads = [_start("2.0301", slow, results) for _ in range(4)]
    assert _peak("2.0301", 0.6) == 2 and budget.in_use == 2 and budget.waiting == 2
    # Another scan's process starts at once, in the slot the first one may not take.
    began = time.monotonic()
    fast_thread = _start("0.3302", fast, results)
    assert _peak("0.3302", 0.3) == 1
    fast_thread.join(timeout=5)
    assert time.monotonic() - began < 1.5
    assert _sleeping("2.0301") == 2 and budget.in_use == 2
    # A cancel reaches the waiters too: nothing more starts, nothing is left.
    slow.set()
    for thread in slow_threads:
        thread.join(timeout=5)
    assert _sleeping("2.0301") == 0 and budget.in_use == 0 and budget.waiting == 0
    assert sum(r.cancelled for r in results) == 4
    assert [r.returncode for r in results if not r.cancelled] == [0]


def test_the_limit_holds_over_many_scans_and_every_process_runs(
    budget: nmap_budget.NmapBudget,
) -> None:
    nmap_budget.configure(3)
    budget.reset_peak()
    results: list[ProcessResult] = []
    threads = [_start("0.4403", threading.Event(), results) for _ in range(8)]
    assert _peak("0.4403", 0.8) == 3
    for thread in threads:
        thread.join(timeout=10)
    assert budget.peak == 3 and budget.in_use == 0
    assert [r.returncode for r in results] == [0] * 8


def test_the_automatic_limit_leaves_room_beside_one_scans_workers() -> None:
    assert nmap_budget.automatic_limit(workers=4) >= 5
    assert nmap_budget.automatic_limit(workers=1) >= nmap_budget.MIN_AUTOMATIC
    with pytest.raises(ValueError):
        nmap_budget.NmapBudget(0)
