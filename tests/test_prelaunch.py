"""`portconsole scan` starts its first sweeps early from the plan its last run kept.

Real parts: the CLI as a process (`python -m portconsole`, the command's own entry), the
real nmap behind a wrapper that logs each start, loopback listeners, the plan files in
the test's own cache folder. What must hold: the early run is the scan's own run (never
doubled), and a plan that does not fit (config changed, other sweeps, a file others may
write) never becomes a result, nor, when it is not this user's, a run at all.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portconsole.core.adapters import nmap_spawn
from tests.conftest import write_config
from tests.fleet import TestFleet, logging_nmap

pytestmark = [
    pytest.mark.nmap,
    pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed"),
]

SLEEP = shutil.which("sleep") or "/bin/sleep"
HEAD = shutil.which("head") or "/usr/bin/head"


class Setup:
    """A config, a data dir and an nmap wrapper on PATH that logs every start."""

    def __init__(self, tmp_path: Path, hosts: list[str], ports: list[int]) -> None:
        self.tmp = tmp_path
        self.config = write_config(tmp_path / "config.toml")
        # Only the sweep runs: no -sV, no confirm re-probe.
        text = self.config.read_text().replace("[scan]\n", '[scan]\nfingerprint = "none"\n')
        self.config.write_text(text.replace("confirm_probes = 1", "confirm_probes = 0"))
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "nmap-started.log"
        logging_nmap(self.bin, self.log)
        self.hosts = hosts
        self.ports = ",".join(str(p) for p in ports)

    def scan(self) -> tuple[set[tuple[str, int]], str]:
        """One `portconsole scan` of the hosts: the open (host, port) pairs and stderr."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")}
        env["PATH"] = f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "portconsole",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.tmp / "data"),
                "scan",
                *self.hosts,
                "--ports",
                self.ports,
                "--json",
                "--no-progress",
                "--log-level",
                "debug",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        found = {
            (host["address"], port["port"])
            for host in json.loads(result.stdout)["hosts"]
            for port in host["ports"]
            if port["state"] == "open"
        }
        return found, result.stderr

    def sweeps(self) -> list[str]:
        """The sweeps nmap was started for so far (their argument lines)."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line for line in lines if "-oX - --" in line]

    def plan(self) -> Path:
        plans = list((Path(os.environ["XDG_CACHE_HOME"]) / "portconsole/scan-plans").iterdir())
        assert len(plans) == 1, plans
        return plans[0]


@pytest.fixture
def fleet() -> TestFleet:
    with TestFleet() as running:
        yield running


def make_setup(tmp_path: Path, fleet: TestFleet) -> tuple[Setup, set[tuple[str, int]]]:
    hosts = [fleet.new_address(), fleet.new_address()]
    opened = {(h, fleet.listen(h, "http")) for h in hosts}
    return Setup(tmp_path, hosts, sorted(p for _, p in opened)), opened


def test_the_next_identical_scan_starts_its_sweep_early_and_runs_it_once(
    tmp_path: Path, fleet: TestFleet
) -> None:
    setup, opened = make_setup(tmp_path, fleet)
    first, log = setup.scan()
    assert first == opened
    assert "started early" not in log  # no plan yet
    plan = setup.plan()
    assert stat.S_IMODE(plan.stat().st_mode) == 0o600
    assert stat.S_IMODE(plan.parent.stat().st_mode) == 0o700
    swept = len(setup.sweeps())  # one sweep per host batch

    second, log = setup.scan()

    assert second == opened
    assert "started early: " in log and "running: " not in log
    assert len(setup.sweeps()) == 2 * swept  # the early runs were the scan's, not extra


def test_a_changed_config_starts_nothing_early(tmp_path: Path, fleet: TestFleet) -> None:
    setup, opened = make_setup(tmp_path, fleet)
    setup.scan()
    swept = len(setup.sweeps())
    setup.config.write_text(setup.config.read_text() + "# edited\n")

    found, log = setup.scan()

    assert found == opened
    assert "started early" not in log and "running: " in log
    assert len(setup.sweeps()) == 2 * swept


def _plan_for_another_host(setup: Setup, other: str) -> Path:
    """The plan, rewritten to sweep `other` instead of the scan's hosts."""
    plan = setup.plan()
    content = json.loads(plan.read_text())
    content["commands"] = [
        [*command[: command.index("--") + 1], other] for command in content["commands"]
    ]
    plan.write_text(json.dumps(content))
    return plan


def test_a_plan_for_other_sweeps_is_killed_and_the_scan_runs_its_own(
    tmp_path: Path, fleet: TestFleet
) -> None:
    setup, opened = make_setup(tmp_path, fleet)
    setup.scan()
    other = fleet.new_address()
    fleet.listen(other, "http")
    _plan_for_another_host(setup, other)

    found, log = setup.scan()

    assert found == opened  # the other host's early run never became a result
    assert "started early" not in log and "running: " in log
    assert any(line.endswith(f"-- {other}") for line in setup.sweeps())  # it was started
    # ... and the scan's own run kept the plan for next time.
    assert other not in setup.plan().read_text()


def test_a_plan_others_may_write_is_never_run(tmp_path: Path, fleet: TestFleet) -> None:
    setup, opened = make_setup(tmp_path, fleet)
    setup.scan()
    other = fleet.new_address()
    plan = _plan_for_another_host(setup, other)
    plan.chmod(0o666)

    found, log = setup.scan()

    assert found == opened
    assert "started early" not in log
    assert not any(other in line for line in setup.sweeps())


def test_a_plan_for_a_host_name_target_is_not_kept(tmp_path: Path, fleet: TestFleet) -> None:
    setup, _opened = make_setup(tmp_path, fleet)
    setup.hosts = ["localhost"]
    setup.scan()
    plans = Path(os.environ["XDG_CACHE_HOME"]) / "portconsole/scan-plans"
    assert not plans.exists() or not list(plans.iterdir())


# ----- the registry of early runs, with real processes ----------------------------------


def test_an_early_run_is_claimed_once_by_its_exact_arguments() -> None:
    args = [SLEEP, "30"]
    assert nmap_spawn.prelaunch([args]) == 1
    try:
        assert nmap_spawn.launched_at(args) is not None
        assert nmap_spawn.claim([SLEEP, "31"]) is None
        proc = nmap_spawn.claim(args)
        assert proc is not None and proc.poll() is None
        assert nmap_spawn.claim(args) is None  # taken
        nmap_spawn.kill_group(proc)
    finally:
        nmap_spawn.discard()


def test_an_early_run_is_not_stopped_by_output_nobody_reads_yet() -> None:
    """Until the scan takes it over, nobody reads an early run's output. A sweep of a few
    hundred hosts writes more XML than a pipe holds by default (64 KiB): the run must not
    stop there, and the scan must then read every byte."""
    size = 512 * 1024
    args = [HEAD, "-c", str(size), "/dev/zero"]
    assert nmap_spawn.prelaunch([args]) == 1
    try:
        proc = nmap_spawn._early[tuple(args)].proc
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.returncode == 0  # ended with all of it written, nobody reading
        assert nmap_spawn.claim(args) is proc
        assert proc.stdout is not None and len(proc.stdout.read()) == size
    finally:
        nmap_spawn.discard()


def test_early_runs_not_kept_are_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    kept, dropped, stale = [SLEEP, "30"], [SLEEP, "29"], [SLEEP, "28"]
    nmap_spawn.prelaunch([kept, dropped, stale])
    procs = {tuple(a): nmap_spawn._early[tuple(a)].proc for a in (kept, dropped, stale)}
    try:
        nmap_spawn.discard(keep=[kept, stale])
        assert procs[tuple(dropped)].poll() is not None  # killed and reaped
        monkeypatch.setattr(nmap_spawn, "MAX_AGE_SECONDS", 0.0)
        time.sleep(0.01)
        assert nmap_spawn.claim(stale) is None  # too old to be the scan's run: killed
        assert procs[tuple(stale)].poll() is not None
    finally:
        nmap_spawn.discard()
    assert procs[tuple(kept)].poll() is not None
