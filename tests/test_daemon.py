"""`portconsole daemon` as real processes: signals, one leader, take-over, gaps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.fleet import TestFleet

pytestmark = pytest.mark.nmap


def _env(tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")} | {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "PYTHONUNBUFFERED": "1",
    }


def _start(tmp_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "portconsole.cli",
            "--config",
            str(tmp_path / "config.toml"),
            "--data-dir",
            str(tmp_path / "data"),
            "daemon",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=_env(tmp_path),
    )


def _config(tmp_path: Path, host: str, port: int, extra: str = "") -> None:
    """One group "web" every 10 s (the least allowed), no -sV: these tests are about the
    daemon, and -sV on an HTTP listener costs nmap's 6 s wait for a banner."""
    write_config(tmp_path / "config.toml", {"web": ([host], str(port))}, extra=extra)
    config = (tmp_path / "config.toml").read_text()
    config = config.replace("interval = 60", "interval = 10")
    config = config.replace("[scan]\n", '[scan]\nfingerprint = "none"\n')
    (tmp_path / "config.toml").write_text(config)


def _wait_for(log: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def _nmap_on(address: str) -> list[int]:
    """nmap processes whose command line names `address` (ours, not other suites')."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"nmap") and address.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _audit(tmp_path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "portconsole.cli",
            "--config",
            str(tmp_path / "config.toml"),
            "--data-dir",
            str(tmp_path / "data"),
            "audit",
            "show",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        check=True,
    )
    return list(json.loads(result.stdout)["events"])


def test_sigterm_during_a_scan_exits_within_two_seconds(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        port = fleet.listen(host, "http")
        # -T0 makes nmap wait minutes between probes: the scan is surely running at SIGTERM.
        write_config(tmp_path / "config.toml", {"slow": ([host], str(port))})
        config = (tmp_path / "config.toml").read_text().replace("timing = 4", "timing = 0")
        (tmp_path / "config.toml").write_text(config)
        log = tmp_path / "daemon.log"
        daemon = _start(tmp_path, log)
        try:
            assert _wait_for(log, "scan slow: starting", 30), log.read_text()
            deadline = time.monotonic() + 10
            while not _nmap_on(host) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _nmap_on(host), "nmap did not start"
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
            elapsed = time.monotonic() - started
        finally:
            if daemon.poll() is None:
                daemon.kill()
        assert elapsed < 2.0, f"daemon took {elapsed:.2f}s to stop"
        assert daemon.returncode == 0
        time.sleep(0.2)
        assert _nmap_on(host) == []
        assert "daemon stopped" in log.read_text()


def test_two_daemons_one_leader_and_takeover(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        port = fleet.listen(host, "http")
        _config(tmp_path, host, port)
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        daemons = [_start(tmp_path, log) for log in logs]
        try:
            assert all(_wait_for(log, "daemon started", 30) for log in logs)
            # Both have tried to lead once each has logged its state: exactly one won.
            assert all(_wait_for(log, "lead", 10) for log in logs), [
                log.read_text() for log in logs
            ]
            leading = [
                i for i, log in enumerate(logs) if "leading scheduled scans" in log.read_text()
            ]
            assert len(leading) == 1, [log.read_text() for log in logs]
            leader, follower = leading[0], 1 - leading[0]
            assert "following" in logs[follower].read_text()
            # Scans never overlap: starts and ends alternate in the audit chain.
            assert _wait_for(logs[leader], "scan web: success", 60)
            time.sleep(2)  # the follower keeps following while the leader lives (1 s ticks)
            assert "leading scheduled scans" not in logs[follower].read_text()
            daemons[leader].kill()
            daemons[leader].wait(timeout=5)
            killed_at = time.monotonic()
            assert _wait_for(logs[follower], "leading scheduled scans", 12), logs[
                follower
            ].read_text()
            assert time.monotonic() - killed_at <= 11
        finally:
            for daemon in daemons:
                if daemon.poll() is None:
                    daemon.send_signal(signal.SIGTERM)
            for daemon in daemons:
                try:
                    daemon.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    daemon.kill()
        open_scans = 0
        for event in _audit(tmp_path):
            if event["action"] == "scan.start":
                open_scans += 1
                assert open_scans == 1, "two scans ran at once"
            elif event["action"] == "scan.end":
                open_scans = max(0, open_scans - 1)


def test_daemon_stopped_longer_than_interval_leaves_a_gap(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        port = fleet.listen(host, "http")
        _config(tmp_path, host, port, extra="[daemon]\ngap_grace_seconds = 0\n")
        first_log = tmp_path / "first.log"
        daemon = _start(tmp_path, first_log)
        try:
            assert _wait_for(first_log, "scan web: success", 60), first_log.read_text()
            scanned_at = time.monotonic()  # the scan finished before it was logged
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
        # Stay down past the 10 s interval (no jitter, no grace): the next scan is missed.
        time.sleep(max(0.0, scanned_at + 11.5 - time.monotonic()))
        second_log = tmp_path / "second.log"
        daemon = _start(tmp_path, second_log)
        try:
            assert _wait_for(second_log, "monitoring gap web: late", 60), second_log.read_text()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
    events = _audit(tmp_path)
    assert any(e["action"] == "monitoring.gap" for e in events)
    raised = [e for e in events if e["action"] == "finding.raised"]
    assert any(e["details"]["kind"] == "monitoring_gap" for e in raised)  # type: ignore[index]
