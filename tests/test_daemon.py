"""`portconsole daemon` as real processes: signals, one leader, take-over, gaps, reloads,
logs (levels, JSON, journald, masking) and systemd's notify socket."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portconsole import logs
from portconsole.core.settings import settings_from
from tests.conftest import write_config
from tests.fleet import TestFleet

pytestmark = pytest.mark.nmap


def _env(tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")} | {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "PYTHONUNBUFFERED": "1",
    }


def _start(
    tmp_path: Path, log: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The daemon with `options` before the command (e.g. --log-level debug), stderr to `log`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "portconsole.cli",
            "--config",
            str(tmp_path / "config.toml"),
            "--data-dir",
            str(tmp_path / "data"),
            *options,
            "daemon",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=_env(tmp_path) | (env or {}),
    )


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=10)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


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


def _wait_for_state(log: Path, timeout: float) -> bool:
    """Whether the daemon logged that it leads or follows within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "leading scheduled scans" in text or "following" in text:
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


def test_groups_scan_in_parallel_and_sigterm_stops_them_all_within_two_seconds(
    tmp_path: Path,
) -> None:
    with TestFleet() as fleet:
        hosts = [fleet.new_address() for _ in range(2)]
        ports = [fleet.listen(host, "http") for host in hosts]
        # Two groups at -T0: each nmap waits minutes, so both run at once or not at all.
        groups = {f"g{i}": ([hosts[i]], str(ports[i])) for i in range(2)}
        write_config(tmp_path / "config.toml", groups)
        config = (tmp_path / "config.toml").read_text().replace("timing = 4", "timing = 0")
        (tmp_path / "config.toml").write_text(config)
        log = tmp_path / "daemon.log"
        daemon = _start(tmp_path, log)
        try:
            deadline = time.monotonic() + 30
            while not all(_nmap_on(h) for h in hosts) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert all(_nmap_on(h) for h in hosts), log.read_text()
            text = log.read_text()
            assert "scan g0: starting" in text and "scan g1: starting" in text
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
        assert [_nmap_on(h) for h in hosts] == [[], []]
        # Both runs were handed back to the next leader: no gap, no failed run.
        assert "monitoring gap" not in log.read_text()


def test_two_daemons_one_leader_and_takeover(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        port = fleet.listen(host, "http")
        _config(tmp_path, host, port)
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        daemons = [_start(tmp_path, log) for log in logs]
        try:
            assert all(_wait_for(log, "daemon started", 30) for log in logs)
            # Both have tried to lead once each has logged its state: exactly one won. (The
            # state messages, not a bare word: the log names the data dir, whose path holds
            # this test's name.)
            assert all(_wait_for_state(log, 10) for log in logs), [log.read_text() for log in logs]
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


# A notification URL whose password must never reach a log (loopback, port 9: nothing
# listens, so a delivery fails without leaving this machine).
PASSWORD = "Xq7sEcr3tPassw0rd"
NOTIFY_URL = f"json://alerts:{PASSWORD}@127.0.0.1:9/hook"


def test_sighup_reloads_valid_settings_and_refuses_invalid_ones(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        port = fleet.listen(host, "http")
        _config(tmp_path, host, port)
        config = tmp_path / "config.toml"
        log = tmp_path / "daemon.log"
        daemon = _start(tmp_path, log)
        try:
            assert _wait_for(log, "scan web: success", 60), log.read_text()
            # A second group: valid, so the daemon takes it and schedules it.
            good = config.read_text() + (
                f'\n[groups.api]\ntargets = ["{host}"]\nports = "{port}"\n'
                "interval = 10\njitter = 0\n"
            )
            config.write_text(good)
            daemon.send_signal(signal.SIGHUP)
            assert _wait_for(log, "settings reloaded from", 15), log.read_text()
            assert _wait_for(log, "scan api: success", 60), log.read_text()
            # An unknown key: refused with the reason, the daemon keeps the settings it has.
            config.write_text("no_such_key = 1\n" + good)
            daemon.send_signal(signal.SIGHUP)
            assert _wait_for(log, "settings not reloaded", 15), log.read_text()
            time.sleep(1.5)
            assert daemon.poll() is None, log.read_text()
            assert "no_such_key: unknown key" in log.read_text()
            config.write_text(good)
        finally:
            _stop(daemon)
        assert daemon.returncode == 0, log.read_text()
    events = _audit(tmp_path)
    actions = [e["action"] for e in events]
    reloads = [e for e in events if e["action"] == "settings.reloaded"]
    assert [e["outcome"] for e in reloads] == ["success", "failure"]
    assert reloads[0]["details"]["groups"] == ["api", "web"]  # type: ignore[index]
    assert "no_such_key" in reloads[1]["details"]["reason"]  # type: ignore[index]
    # The new settings became the data dir's, before the reload was reported.
    assert actions.index("settings.changed") < actions.index("settings.reloaded")
    # Still running after the refusal: SIGTERM stopped it, audited.
    assert actions.index("daemon.stop") > len(actions) - 1 - actions[::-1].index(
        "settings.reloaded"
    )


def test_debug_json_logs_show_each_nmap_command_and_never_a_secret(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        port = fleet.listen(host, "http")
        _config(tmp_path, host, port, extra=f'[notify]\nurls = ["{NOTIFY_URL}"]\n')
        (tmp_path / "config.toml").chmod(0o600)
        log = tmp_path / "daemon.log"
        daemon = _start(tmp_path, log, "--log-level", "debug", "--log-format", "json")
        try:
            assert _wait_for(log, "scan web: success", 60), log.read_text()
        finally:
            _stop(daemon)
    text = log.read_text()
    records = [json.loads(line) for line in text.splitlines()]  # every line is one object
    assert {"time", "level", "logger", "message", "pid"} <= set(records[0])
    commands = [r for r in records if r["message"].startswith("running: ")]
    assert commands, text
    assert all(r["level"] == "debug" for r in commands)
    sweep = commands[0]["message"]
    assert "nmap" in sweep and f"-- {host}" in sweep and str(port) in sweep
    assert PASSWORD not in text
    assert any(r["message"] == "daemon stopped" for r in records)


def test_every_log_record_has_secrets_masked(capsys: pytest.CaptureFixture[str]) -> None:
    """The handler's filter masks the settings' secrets in messages, arguments and tracebacks."""
    settings = settings_from({"notify": {"urls": [NOTIFY_URL]}})
    logs.configure("debug", "json")
    logs.apply_settings(settings)
    try:
        try:
            raise ConnectionError(f"refused by {NOTIFY_URL}")
        except ConnectionError:
            logging.getLogger("portconsole.test").exception(
                "delivery failed, password %s", PASSWORD
            )
        logging.getLogger("portconsole.test").debug(
            "posting to %s", "https://h.example/?hmac=Zz9Zz9Zz9Zz9"
        )
        logging.getLogger("portconsole.test").debug("not shown at info: %s", "after")
        err = capsys.readouterr().err
    finally:
        logs.configure()
        logs.mask_secrets((), replace=True)
    first, second, third = (json.loads(line) for line in err.splitlines())
    assert PASSWORD not in err
    assert first["message"] == "delivery failed, password ****"
    assert "ConnectionError" in first["exception"] and "****" in first["exception"]
    assert "Zz9Zz9Zz9Zz9" not in second["message"]
    assert third["level"] == "debug"


def test_systemd_notify_socket_and_journald_lines(tmp_path: Path) -> None:
    """READY=1 once scheduling, WATCHDOG=1 every WATCHDOG_USEC/2, STOPPING=1 on SIGTERM; with
    JOURNAL_STREAM naming stderr, `<N>` priorities and no timestamps."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "notify"))
    receiver.settimeout(0.2)
    messages: list[str] = []

    def receive_until(wanted: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                messages.extend(receiver.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass
            if messages.count(wanted) >= (2 if wanted == "WATCHDOG=1" else 1):
                return True
        return False

    with TestFleet() as fleet, receiver:
        host = fleet.new_address()
        port = fleet.listen(host, "http")
        _config(tmp_path, host, port)
        log = tmp_path / "daemon.log"
        log.touch()
        stat = log.stat()
        env = {
            "NOTIFY_SOCKET": str(tmp_path / "notify"),
            "WATCHDOG_USEC": "400000",
            "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",
        }
        daemon = _start(tmp_path, log, env=env)
        try:
            assert receive_until("READY=1", 30), messages
            assert receive_until("WATCHDOG=1", 5), messages  # two pings, 0.2 s apart
            assert _wait_for(log, "scan web: success", 60), log.read_text()
            daemon.send_signal(signal.SIGTERM)
            assert receive_until("STOPPING=1", 10), messages
        finally:
            _stop(daemon)
    assert daemon.returncode == 0
    assert messages.index("READY=1") < messages.index("WATCHDOG=1") < messages.index("STOPPING=1")
    assert any(m.startswith("STATUS=") for m in messages)
    lines = log.read_text().splitlines()
    assert lines and all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert "<6>INFO daemon: daemon started: groups web" in "\n".join(lines)
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\dT", line) for line in lines)
