"""Groups in parallel within one nmap budget (issue 15.6), with real nmap on loopback.

The Supervisor drives a real Monitor over a temp data dir and the real Scanner: a slow
group (three hosts x 40 ports at -T2, about 16 s per host, one host per nmap) and a fast
group (one listener, every 10 s, 3 s of gap grace). The fast group must complete cycle after
cycle while the slow one runs, with no gap; and the nmap processes naming the test's
addresses, counted under /proc, never exceed `[scan].max_nmap_processes`, nor one scan its
share of it (the limit less one, while another group runs).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from portconsole.core.adapters import nmap_budget
from portconsole.core.monitor import Monitor
from portconsole.core.services.supervisor import Supervisor
from portconsole.core.settings import load_settings
from tests.fleet import TestFleet

BUDGET = 3
SLOW_PORTS = "40000-40039"


def _nmap_cmdlines() -> list[list[bytes]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"nmap"):
            found.append(cmdline)
    return found


class NmapCounter(threading.Thread):
    """Samples, every 20 ms, how many nmap name the slow and the fast group's addresses."""

    def __init__(self, slow: list[str], fast: list[str]) -> None:
        super().__init__(daemon=True)
        self.slow = {a.encode() for a in slow}
        self.fast = {a.encode() for a in fast}
        self.peak_slow = self.peak_fast = self.peak_total = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.02):
            slow = fast = 0
            for cmdline in _nmap_cmdlines():
                names = set(cmdline)
                slow += bool(names & self.slow)
                fast += bool(names & self.fast)
            self.peak_slow = max(self.peak_slow, slow)
            self.peak_fast = max(self.peak_fast, fast)
            self.peak_total = max(self.peak_total, slow + fast)


def _config(path: Path, slow: list[str], fast: str, port: int) -> Path:
    quoted = ", ".join(f'"{a}"' for a in slow)
    path.write_text(
        f"""scope = ["127.0.0.0/8"]

[scan]
timing = 2
workers = 4
batch_size = 1
max_nmap_processes = {BUDGET}
confirm_probes = 0
fingerprint = "none"

[daemon]
gap_grace_seconds = 3

[groups.slow]
targets = [{quoted}]
ports = "{SLOW_PORTS}"
interval = 600
jitter = 0

[groups.fast]
targets = ["{fast}"]
ports = "{port}"
interval = 10
jitter = 0
"""
    )
    return path


def test_a_slow_group_never_delays_a_fast_one_and_the_nmap_budget_holds(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        slow = [fleet.new_address() for _ in range(3)]
        fast = fleet.new_address()
        port = fleet.listen(fast, "http")
        settings, paths = load_settings(
            _config(tmp_path / "c.toml", slow, fast, port), tmp_path / "data"
        )
        monitor = Monitor(settings, paths, origin="daemon")
        assert nmap_budget.BUDGET.limit == BUDGET
        supervisor = Supervisor(monitor)
        stop = threading.Event()
        done: dict[str, list[tuple[float, float, str]]] = {"slow": [], "fast": []}

        def run_cycle(group: str, cancel: threading.Event) -> None:
            began = time.monotonic()
            outcome = monitor.run_cycle(group=group, cancel=cancel).scan.outcome
            done[group].append((began, time.monotonic(), outcome))

        counter = NmapCounter(slow, [fast])
        counter.start()
        deadline = time.monotonic() + 120
        try:
            while not done["slow"] and time.monotonic() < deadline:
                result = supervisor.step(run_cycle, stop, wait=False)
                assert result.errors == [] and result.gaps == []
                time.sleep(0.25)
        finally:
            stop.set()
            assert supervisor.join(10) == []
            counter.halt.set()
            counter.join()
            gaps = monitor.scheduler.recent_gaps()
            findings = monitor.findings(include_closed=True)
            monitor.close()
        print(
            f"slow run {done['slow'][0][1] - done['slow'][0][0]:.1f} s; fast runs "
            f"{[round(e - b, 2) for b, e, _ in done['fast']]}; nmap peaks: total "
            f"{counter.peak_total}, slow {counter.peak_slow}, fast {counter.peak_fast}"
        )
        assert done["slow"], "the slow group did not finish in 120 s"
        slow_began, slow_ended, slow_outcome = done["slow"][0]
        assert slow_outcome == "success"
        # Three hosts through its share of two slots: two rounds of ~16 s.
        assert slow_ended - slow_began > 25
        during = [run for run in done["fast"] if slow_began <= run[0] and run[1] <= slow_ended]
        assert len(during) >= 2, done
        assert all(outcome == "success" for _, _, outcome in done["fast"])
        starts = [began for began, _, _ in done["fast"]]
        assert all(b - a < 10 + 3 for a, b in zip(starts, starts[1:], strict=False)), starts
        assert gaps == []
        assert [f for f in findings if f.kind == "monitoring_gap"] == []
        # The budget: never more than BUDGET nmap at once; the slow scan wanted three (one
        # host per nmap, four workers) and got its share, two, so the fast one never waited.
        assert counter.peak_total <= BUDGET
        assert counter.peak_slow == BUDGET - 1
        assert counter.peak_fast == 1
