"""A real `portconsole daemon` over a temp data dir, for the benchmarks: start it, read its
journal (scan.start, scan.end and finding.raised events, with the times they were
recorded), and stop it with its peak RSS.

The cycle of a group is timed from its `scan.start` event to its `scan.end` event, both by
`recorded_at` (when the daemon wrote them), so the sweep, the confirm re-probe, any -sV the
cycle waits for, ingest and detection are all inside. Loopback only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import CLI, cli_env

Event = dict[str, Any]


def when(event: Event, key: str = "recorded_at") -> float:
    """An event's time (Unix seconds)."""
    return datetime.fromisoformat(str(event[key]).replace("Z", "+00:00")).timestamp()


@dataclass(slots=True)
class Cycle:
    group: str
    started: float  # scan.start recorded
    ended: float  # scan.end recorded
    sweep_seconds: float  # scan.end's `at` (the scan's own finish) minus scan.start's
    details: dict[str, Any]

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class DaemonRun:
    """`python -m portconsole.cli --config C --data-dir D daemon`, logging to work/daemon.log."""

    def __init__(self, work: Path, config: Path) -> None:
        self.work = work
        self.data_dir = work / "data"
        self.config = config
        self.log_path = work / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_mb = float("nan")  # the daemon and every nmap it ran (wait4)
        self.hwm_mb = float("nan")  # the daemon's own VmHWM, read just before it stops

    def __enter__(self) -> DaemonRun:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [CLI[0], "-m", "portconsole.cli", "--config", str(self.config)]
            + ["--data-dir", str(self.data_dir), "daemon"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
        log.close()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self.hwm_mb = _vm_hwm_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                self.peak_mb = usage.ru_maxrss / 1024
                return
            time.sleep(0.1)
        proc.kill()
        _, _, usage = os.wait4(proc.pid, 0)
        self.peak_mb = usage.ru_maxrss / 1024

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def events(self) -> list[Event]:
        """Every journal event so far (a half-written last line is skipped)."""
        found: list[Event] = []
        for segment in sorted((self.data_dir / "journal").glob("*.jsonl")):
            for line in segment.read_text(errors="replace").splitlines():
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def cycles(self) -> list[Cycle]:
        """Finished cycles, in order (a scan.start paired with the next scan.end of its group)."""
        open_starts: dict[str, Event] = {}
        done: list[Cycle] = []
        for event in self.events():
            action = event.get("action")
            group = str((event.get("details") or {}).get("group", ""))
            if action == "scan.start":
                open_starts[group] = event
            elif action == "scan.end" and group in open_starts:
                start = open_starts.pop(group)
                done.append(
                    Cycle(
                        group,
                        when(start),
                        when(event),
                        when(event, "at") - when(start, "at"),
                        dict(event.get("details") or {}),
                    )
                )
        return done

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> bool:
        """Poll until predicate() holds; False after `timeout` s. Raises if the daemon died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if not self.alive():
                raise RuntimeError(f"the daemon exited waiting for {what}:\n{self.log_tail()}")
            time.sleep(0.2)
        return predicate()


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def group_config(
    path: Path,
    targets: list[str],
    ports: str,
    *,
    interval: int,
    jitter: int = 0,
    webhook: str | None = None,
    extra: str = "",
) -> None:
    """A config with one group `bench` and the product's scan defaults (confirmation on,
    fingerprinting of changed ports on), optionally a webhook target per finding."""
    text = (
        'scope = ["127.0.0.0/8"]\n'
        f"{extra}"
        "[groups.bench]\n"
        f"targets = [{', '.join(json.dumps(t) for t in targets)}]\n"
        f'ports = "{ports}"\ninterval = {interval}\njitter = {jitter}\n'
    )
    if webhook:
        text += f'\n[notify]\nmode = "per_finding"\n\n[[notify.urls]]\nurl = "{webhook}"\ntimeout = 10\n'
    path.write_text(text, encoding="utf-8")
