"""`portconsole daemon`: scheduled scan cycles until SIGTERM or Ctrl-C; SIGHUP reloads settings.

Only the scan leader scans; a daemon that is not the leader waits and takes over when the
leader's lease lapses: it stopped renewing it (stopped, hung or dead; see
core/adapters/leader.py). Every event is a log record of the
`portconsole.daemon` logger (portconsole/logs.py: journald priorities under systemd).

Under systemd (`Type=notify`, portconsole/sd_notify.py) the daemon says READY=1 once it is
scheduling, pings WATCHDOG=1 while its main loop moves, and STOPPING=1 on its way out.

Groups are scanned in parallel, each run in a thread of its own (services/supervisor.py),
within the process's budget of nmap processes (`[scan].max_nmap_processes`).

SIGHUP re-reads the config file and the environment once the runs in flight end (no run
starts meanwhile). Valid
settings replace the old ones (audited `settings.reloaded`; the data dir stays, a move needs a
restart; the lease is handed over and taken again, so the new settings are the data dir's);
invalid ones are refused with the reason (audited `settings.reloaded`, outcome
`failure`) and the daemon keeps running with the old ones.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from portconsole import logs
from portconsole.core.domain.model import location
from portconsole.core.errors import ConfigError, UserError
from portconsole.core.secrets import config_secrets, mask_text
from portconsole.core.services.supervisor import Supervisor
from portconsole.core.settings import load_settings
from portconsole.core.timeutil import iso
from portconsole.sd_notify import Heartbeat, Watchdog, notify, watchdog_interval

log = logging.getLogger(__name__)

# The main loop may go this long without a step or a scan's progress before the watchdog
# stops pinging: two nmap batch timeouts (each batch is killed at one) and a margin.
STALL_MARGIN_SECONDS = 60.0


# How long a stopping daemon waits for its groups' runs (each stops within a 0.1 s poll).
STOP_WAIT_SECONDS = 5.0


def _stall_limit(monitor: Any) -> float:
    return 2 * float(monitor.settings.scan.batch_timeout) + STALL_MARGIN_SECONDS


def reload_settings(monitor: Any) -> Any:
    """The monitor to go on with: a new one on the re-read settings, or `monitor` if refused."""
    from portconsole.core.monitor import Monitor

    paths = monitor.paths
    config = paths.config_file if paths.config_exists else None
    try:
        settings, new_paths = load_settings(config, paths.data_dir)
        if not settings.groups:
            raise ConfigError("no target groups configured ([groups.NAME]): nothing to schedule")
    except UserError as error:
        return _refused(monitor, error)
    # The lease goes with the old settings: the new ones are recorded (`settings.changed`)
    # only while no live leader runs others, then this process leads again on its next step.
    monitor.stop_delivery()
    monitor.hand_over()
    try:
        fresh = Monitor(
            settings,
            new_paths,
            origin=monitor.origin,
            scanner=monitor._scanner,  # a test's replay scanner stays; None means nmap
            clock=monitor.clock,
        )
    except UserError as error:
        monitor.start_delivery(interval=5.0)
        return _refused(monitor, error)
    logs.apply_settings(settings)
    fresh.audit.append(
        "settings.reloaded",
        actor=fresh.actor,
        details={"config": str(paths.config_file), "groups": sorted(settings.groups)},
    )
    fresh.start_delivery(interval=5.0)
    for warning in fresh.warnings:
        log.warning("%s", warning)
    log.info(
        "settings reloaded from %s: groups %s",
        paths.config_file,
        ", ".join(sorted(settings.groups)),
    )
    return fresh


def _refused(monitor: Any, error: UserError) -> Any:
    reason = mask_text(str(error), config_secrets(monitor.settings))
    log.error("settings not reloaded, still running with the old ones: %s", reason)
    monitor.audit.append(
        "settings.reloaded",
        actor=monitor.actor,
        outcome="failure",
        details={"config": str(monitor.paths.config_file), "reason": reason},
    )
    return monitor


def run_daemon(
    monitor: Any, stop: threading.Event | None = None, metrics: tuple[str, int] | None = None
) -> int:
    """Run until `stop` is set (by SIGTERM/SIGINT when run from the CLI). Returns an exit code.

    `metrics` (ADDR, PORT): serve Prometheus metrics there while running (cli_ops.py)."""
    stop = stop or threading.Event()
    cancel = threading.Event()
    reload_wanted = threading.Event()
    wake = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()
        cancel.set()
        wake.set()

    def on_hangup(_signum: int, _frame: object) -> None:
        log.info("received SIGHUP: reloading the settings")
        reload_wanted.set()
        wake.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_hangup)

    if monitor.readonly:
        log.error("a read-only daemon could never scan: start it without --readonly")
        return 2
    if not monitor.settings.groups:
        log.error("no target groups configured ([groups.NAME] in the config): nothing to schedule")
        return 2
    from portconsole.cli_ops import start_metrics

    # Before anything is recorded: a metrics port in use stops the start. The lambda reads
    # `monitor` at each scrape, so a SIGHUP reload is scraped too.
    stop_metrics = start_metrics(lambda: monitor, metrics)
    monitor.audit.append(
        "daemon.start", actor=monitor.actor, details={"groups": sorted(monitor.settings.groups)}
    )
    log.info(
        "daemon started: groups %s; data dir %s",
        ", ".join(sorted(monitor.settings.groups)),
        monitor.paths.data_dir,
    )
    monitor.start_delivery(interval=5.0)
    last_state: str | None = None
    heartbeat = Heartbeat(_stall_limit(monitor))

    def is_leader() -> bool:
        nonlocal last_state
        leading = bool(monitor.try_lead())
        if leading:
            state = "leading"
            message = f"leading scheduled scans as pid {os.getpid()}"
        elif monitor.follow_reason:  # may not lead: other settings than the data dir's
            state = f"following: {monitor.follow_reason}"
            message = f"{state}; this daemon's is {monitor.settings_sha256[:8]}"
        else:
            current = monitor.leader.current()
            who = f"{current.who()} ({current.origin})" if current else "another process"
            state = f"following {who}"
            message = f"following: the scan leader is {who}"
        if state != last_state:
            log.info("%s", message)
            notify(f"STATUS={message}")
            last_state = state
        return leading and not monitor.paused

    def run_cycle(group: str, run_cancel: threading.Event) -> None:
        # One group's run, in a thread of its own: groups run in parallel (supervisor.py).
        log.info("scan %s: starting", group)
        try:
            result = monitor.run_cycle(group=group, cancel=run_cancel, progress=heartbeat.beat)
        except UserError as error:
            log.error("scan %s: failed: %s", group, error)
            return
        scan = result.scan
        log.info(
            "scan %s: %s, %d hosts, %d open ports, %d changes, %d new findings (%s)",
            group,
            scan.outcome,
            len(scan.hosts),
            scan.open_port_count(),
            len(result.changes),
            len(result.findings),
            scan.scan_id,
        )
        for finding in result.findings:
            where = location(finding.host, finding.port, finding.proto)
            log.warning("finding %s %s %s %s", finding.id, finding.severity, finding.kind, where)
        for gap in result.gaps:
            log.warning(
                "monitoring gap %s: %s from %s to %s",
                gap.group,
                gap.reason,
                iso(gap.start),
                iso(gap.end),
            )

    supervisor = Supervisor(monitor)

    def step() -> None:
        is_leader()  # logs a change of leadership once
        result = supervisor.step(run_cycle, cancel, wait=False)
        for finding in result.gaps:
            log.warning(
                "finding %s %s %s %s", finding.id, finding.severity, finding.kind, finding.host
            )
        if result.anchor:
            log.info("anchor published: %s:%s", result.anchor["seq"], result.anchor["hash"])
        for error in result.errors:
            log.error("supervisor: %s", error)

    every = watchdog_interval()
    watchdog = Watchdog(every, heartbeat.alive) if every else None
    if watchdog:
        watchdog.start()
    notify("READY=1", f"STATUS=scheduling groups {', '.join(sorted(monitor.settings.groups))}")
    try:
        while not stop.is_set():
            if reload_wanted.is_set() and supervisor.running():
                # The runs in flight end on the old settings; none starts meanwhile, and
                # the lease is renewed so that nobody else starts scanning.
                heartbeat.beat()
                is_leader()
                wake.wait(1.0)
                wake.clear()
                continue
            if reload_wanted.is_set():
                reload_wanted.clear()
                notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
                monitor = reload_settings(monitor)
                supervisor = Supervisor(monitor)
                heartbeat.limit = _stall_limit(monitor)
                notify("READY=1")
            heartbeat.beat()
            step()
            wake.wait(1.0)
            wake.clear()
    finally:
        notify("STOPPING=1")
        if watchdog:
            watchdog.stop()
        cancel.set()
        # Every group's run notices the cancel within a poll; wait for them before closing.
        still = supervisor.join(STOP_WAIT_SECONDS)
        if still:
            log.error("runs of %s did not stop in time: handed back", ", ".join(still))
        stop_metrics()
        monitor.audit.append("daemon.stop", actor=monitor.actor)
        monitor.close()
        log.info("daemon stopped")
    return 0
