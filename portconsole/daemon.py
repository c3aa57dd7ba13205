"""`portconsole daemon`: scheduled scan cycles until SIGTERM or Ctrl-C.

Only the scan leader scans; a daemon that is not the leader waits and takes over when the
leader dies (its flock is released by the kernel). One line per event goes to stderr, so
systemd's journal holds a readable log.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from portconsole.core.domain.model import location
from portconsole.core.errors import UserError
from portconsole.core.services.supervisor import Supervisor
from portconsole.core.textsafe import terminal_safe
from portconsole.core.timeutil import iso, utcnow


def log(message: str) -> None:
    print(
        f"{iso(utcnow().replace(microsecond=0))} {terminal_safe(message, 500)}",
        file=sys.stderr,
        flush=True,
    )


def run_daemon(monitor: Any, stop: threading.Event | None = None) -> int:
    """Run until `stop` is set (by SIGTERM/SIGINT when run from the CLI). Returns an exit code."""
    stop = stop or threading.Event()
    cancel = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log(f"received {signal.Signals(signum).name}: stopping")
        stop.set()
        cancel.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    if monitor.readonly:
        log("a read-only daemon could never scan: start it without --readonly")
        return 2
    if not monitor.settings.groups:
        log("no target groups configured ([groups.NAME] in the config): nothing to schedule")
        return 2
    monitor.audit.append(
        "daemon.start", actor=monitor.actor, details={"groups": sorted(monitor.settings.groups)}
    )
    log(
        f"daemon started: groups {', '.join(sorted(monitor.settings.groups))}; data dir {monitor.paths.data_dir}"
    )
    monitor.start_delivery(interval=5.0)
    last_state: str | None = None

    def is_leader() -> bool:
        nonlocal last_state
        leading = monitor.try_lead()
        if leading:
            state = "leading"
            message = f"leading scheduled scans as pid {os.getpid()}"
        else:
            current = monitor.leader.current()
            who = (
                f"pid {current.pid} ({current.user}@{current.host}, {current.origin})"
                if current
                else "another process"
            )
            state = f"following {who}"
            message = f"following: the scan leader is {who}"
        if state != last_state:
            log(message)
            last_state = state
        return leading and not monitor.paused

    def run_cycle(group: str) -> None:
        log(f"scan {group}: starting")
        try:
            result = monitor.run_cycle(group=group, cancel=cancel)
        except UserError as error:
            log(f"scan {group}: failed: {error}")
            return
        scan = result.scan
        log(
            f"scan {group}: {scan.outcome}, {len(scan.hosts)} hosts, {scan.open_port_count()} open ports, "
            f"{len(result.changes)} changes, {len(result.findings)} new findings ({scan.scan_id})"
        )
        for finding in result.findings:
            where = location(finding.host, finding.port, finding.proto)
            log(f"finding {finding.id} {finding.severity} {finding.kind} {where}")
        for gap in result.gaps:
            log(f"monitoring gap {gap.group}: {gap.reason} from {iso(gap.start)} to {iso(gap.end)}")

    supervisor = Supervisor(monitor)

    def step() -> None:
        is_leader()  # logs a change of leadership once
        result = supervisor.step(run_cycle, cancel)
        for finding in result.gaps:
            log(f"finding {finding.id} {finding.severity} {finding.kind} {finding.host}")
        if result.anchor:
            log(f"anchor published: {result.anchor['seq']}:{result.anchor['hash']}")
        for error in result.errors:
            log(f"supervisor: {error}")

    try:
        while not stop.is_set():
            step()
            stop.wait(1.0)
    finally:
        cancel.set()
        monitor.audit.append("daemon.stop", actor=monitor.actor)
        monitor.close()
        log("daemon stopped")
    return 0
