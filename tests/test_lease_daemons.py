"""The leadership lease with real `portconsole daemon` processes on one data dir.

A short lease (3 s), a 10 s interval and 1 s of grace, real nmap on a loopback listener:
SIGSTOP the leader (a follower takes over within lease + a tick, and the scan that became
late is a monitoring gap), SIGCONT it (it steps down without scanning), kill -9 the new
leader (take-over), quit cleanly (hand-over, no gap), and a daemon with another config
never leads and says why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fleet import TestFleet
from tests.test_daemon import _audit, _config, _env, _wait_for

pytestmark = pytest.mark.nmap

LEASE = 3.0
EXTRA = f"[daemon]\nlease_seconds = {LEASE}\ngap_grace_seconds = 1\n"


def start(
    tmp_path: Path, name: str, config: str = "config.toml"
) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "portconsole.cli", "--config", str(tmp_path / config),
         "--data-dir", str(tmp_path / "data"), "daemon"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=_env(tmp_path),
    )  # fmt: skip
    return proc, log


def count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text) if log.exists() else 0


def test_stop_continue_kill_and_quit(tmp_path: Path) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with TestFleet() as fleet:
            host = fleet.new_address()
            port = fleet.listen(host, "http")
            _config(tmp_path, host, port, extra=EXTRA)
            a, a_log = start(tmp_path, "a")
            procs.append(a)
            assert _wait_for(a_log, "scan web: success", 60), a_log.read_text()
            scanned = time.monotonic()  # the run started a moment before this
            b, b_log = start(tmp_path, "b")
            procs.append(b)
            assert _wait_for(b_log, "following: the scan leader is", 30), b_log.read_text()
            assert "pid " + str(a.pid) in b_log.read_text()

            # Another config on the same data dir: follows, says why, never leads.
            (tmp_path / "other.toml").write_text(
                (tmp_path / "config.toml").read_text().replace(str(port), str(port + 1))
            )
            d, d_log = start(tmp_path, "d", "other.toml")
            procs.append(d)
            assert _wait_for(d_log, "following: settings differ from the data dir's", 30)

            # Stop the leader 0.5 s before its next run is due (10 s, 1 s grace: the 1 s
            # tick never makes a run late). It renewed at most 1 s before: with a 3 s lease
            # no one can start the run until 1.5 s past due, so it is late, a gap.
            time.sleep(max(0.0, scanned + 9.5 - time.monotonic()))
            os.kill(a.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            assert _wait_for(b_log, "leading scheduled scans", LEASE + 3), b_log.read_text()
            took = time.monotonic() - stopped
            assert took <= LEASE + 2.2, took  # lease + at most two 1 s ticks
            assert _wait_for(b_log, "monitoring gap web: late", 30), b_log.read_text()
            scans_by_a = count(a_log, "scan web: starting")

            # Continued: a steps down at once, without scanning.
            os.kill(a.pid, signal.SIGCONT)
            assert _wait_for(a_log, "following: the scan leader is", 5), a_log.read_text()
            assert f"pid {b.pid}" in a_log.read_text().rsplit("following", 1)[1]
            time.sleep(1.5)
            assert count(a_log, "scan web: starting") == scans_by_a  # no scan once continued

            # kill -9 the new leader: a takes over (same host, pid gone: at its next tick).
            assert _wait_for(b_log, "scan web: success", 30)
            b.kill()
            b.wait(timeout=10)
            killed = time.monotonic()
            leads_before = count(a_log, "leading scheduled scans")
            deadline = killed + LEASE + 3
            while count(a_log, "leading scheduled scans") == leads_before:
                assert time.monotonic() < deadline, a_log.read_text()
                time.sleep(0.1)

            # A clean quit hands over: c takes over at its next tick, and no gap follows.
            c, c_log = start(tmp_path, "c")
            procs.append(c)
            assert _wait_for(c_log, "following: the scan leader is", 30)
            scans = count(a_log, "scan web: success")
            deadline = time.monotonic() + 30
            while count(a_log, "scan web: success") == scans:  # a leads: wait for a run
                assert time.monotonic() < deadline, a_log.read_text()
                time.sleep(0.1)
            quit_at = time.monotonic()
            a.send_signal(signal.SIGTERM)
            a.wait(timeout=10)
            assert _wait_for(c_log, "leading scheduled scans", 3), c_log.read_text()
            assert time.monotonic() - quit_at < 2.5
            assert _wait_for(c_log, "scan web: success", 20), c_log.read_text()
            assert count(d_log, "leading scheduled scans") == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    events = _audit(tmp_path)
    names = [e["action"] for e in events]
    assert "leader.takeover" in names  # after the stop (and after kill -9)
    assert "leader.stepped_down" in names  # a, continued
    handover = min(i for i, n in enumerate(names) if n == "leader.handover")  # a's quit
    gaps = [i for i, n in enumerate(names) if n == "monitoring.gap"]
    assert gaps and any(events[i]["details"]["reason"] == "late" for i in gaps)  # type: ignore[index]
    # The hand-over on a's quit left no gap: c's first scan was within the interval.
    assert not [i for i in gaps if i > handover], [events[i] for i in gaps]
    assert "settings.changed" not in names  # d never rewrote the settings
