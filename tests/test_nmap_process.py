"""nmap dies with its parent: a scanner killed with SIGKILL leaves no nmap behind.

A child Python process starts a real scan that cannot finish on its own (-T0 waits
minutes between probes) of a listener this test opened, and is killed with SIGKILL, which
runs no cleanup at all. The kernel must then kill its nmap (PR_SET_PDEATHSIG). The control
case proves the check can fail: an nmap started the same way without it survives.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portconsole.core.adapters.nmap_process import ProcessResult, run_process
from portconsole.core.adapters.nmap_spawn import _setpriv
from tests.fleet import TestFleet

pytestmark = [
    pytest.mark.nmap,
    pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux"),
]

ROOT = Path(__file__).resolve().parents[1]

_SCAN_FOREVER = """
import sys
from portconsole.core.adapters.scanner import Scanner
from portconsole.core.settings import ScanSettings
from portconsole.core.domain.targets import PortSpec, Scope
host, port = sys.argv[1], int(sys.argv[2])
Scanner(ScanSettings(timing=0, batch_timeout=600), Scope(["127.0.0.0/8"])).scan(
    [host], PortSpec.of([port]), fingerprint="none"
)
"""

# The same nmap, started as before but without the parent-death signal.
_NMAP_WITHOUT_PDEATHSIG = """
import subprocess, sys, time
subprocess.Popen(
    ["nmap", "-n", "-Pn", "-T0", "-sT", "-p", sys.argv[2], "-oX", "-", "--", sys.argv[1]],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
)
time.sleep(600)
"""


def nmap_children(marker: str) -> dict[int, int]:
    """{pid: ppid} of live nmap processes whose arguments mention `marker`."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if argv and argv[0].endswith(b"nmap") and any(marker.encode() in a for a in argv):
            ppid = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("PPid:"))
            found[int(entry.name)] = ppid
    return found


def start_and_kill(code: str, host: str, port: int) -> tuple[int, float]:
    """Run `code` in a child until its nmap runs, SIGKILL the child; (nmap pid, gone after s).

    The returned time is how long the nmap outlived its parent (inf: still there at 2 s).
    """
    child = subprocess.Popen(
        [sys.executable, "-c", code, host, str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        mine: list[int] = []
        while not mine and time.monotonic() < deadline:
            mine = [pid for pid, ppid in nmap_children(host).items() if ppid == child.pid]
            time.sleep(0.05)
        assert mine, f"nmap never started under the child: {child.stderr}"
        child.kill()  # SIGKILL: no atexit, no finally, no signal handler
        child.wait()
        killed = time.monotonic()
        while time.monotonic() - killed < 2.0:
            if not nmap_children(host):
                return mine[0], time.monotonic() - killed
            time.sleep(0.02)
        return mine[0], float("inf")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# Where util-linux's setpriv is missing, a preexec_fn asks for the signal instead.
_SCAN_FOREVER_WITHOUT_SETPRIV = (
    "from portconsole.core.adapters import nmap_spawn\n"
    "nmap_spawn._setpriv = lambda: ''\n" + _SCAN_FOREVER
)


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(
            _SCAN_FOREVER,
            id="setpriv",
            marks=pytest.mark.skipif(not _setpriv(), reason="util-linux setpriv is missing"),
        ),
        pytest.param(_SCAN_FOREVER_WITHOUT_SETPRIV, id="preexec"),
    ],
)
def test_nmap_dies_when_the_scanner_is_killed(code: str) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        port = fleet.listen(host, "tcp")
        _pid, outlived = start_and_kill(code, host, port)
        assert outlived < 2.0, "nmap was still running 2 s after its parent was killed"
        assert nmap_children(host) == {}


def test_control_nmap_without_pdeathsig_survives_its_parent() -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        port = fleet.listen(host, "tcp")
        pid, outlived = start_and_kill(_NMAP_WITHOUT_PDEATHSIG, host, port)
        try:
            assert outlived == float("inf")  # the check above can fail
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_run_process_reports_cancel_and_timeout_and_leaves_nothing() -> None:
    class Now:
        def is_set(self) -> bool:
            return True

    assert run_process(["/bin/sleep", "30"], Now(), 5) == ProcessResult(None, cancelled=True)
    started = time.monotonic()
    timed_out = run_process(["/bin/sleep", "30"], None, 0.3)
    assert timed_out.timed_out and time.monotonic() - started < 1.5
    done = run_process(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], None, 5)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    with pytest.raises(FileNotFoundError):
        run_process(["/nonexistent/nmap"], None, 1)
    with pytest.raises(PermissionError):
        run_process([str(ROOT / "README.md")], None, 1)  # a file, not a program
