"""What the scan and scale benchmarks share: processes timed with their peak RSS, a pool of
raw nmap processes doing a product's sweep, free loopback ports, and a pass/miss table.

Peak RSS comes from `os.wait4` on each process we start: Linux reports the largest
resident set of the process and of every descendant it waited for (the CLI's nmap runs
included), so no wrapper process is needed. Loopback only.
"""

from __future__ import annotations

import compileall
import functools
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(ROOT / ".venv" / "bin" / "python"), "-m", "portconsole"]
# The scanner's own retry count (adapters/scanner.py MAX_RETRIES), so raw nmap does the same.
RAW_RETRIES = "3"


@dataclass(slots=True)
class Run:
    """One finished process: wall time, peak RSS (MB, itself and its waited descendants)."""

    seconds: float
    peak_mb: float
    returncode: int
    stdout: bytes
    stderr: bytes


def run_measured(argv: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """Run argv to completion; its output goes through temp files so that `os.wait4`
    (not Popen.wait) reaps it and hands back its rusage."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(seconds, usage.ru_maxrss / 1024, proc.returncode, out.read(), err.read())


@functools.cache
def compile_product() -> None:
    """Byte-compile the product once: with PYTHONDONTWRITEBYTECODE set (or a fresh clone)
    each timed run would compile every module it imports again (tens of ms a command),
    which an installed package never does."""
    compileall.compile_dir(ROOT / "portconsole", quiet=1)


def cli_env() -> dict[str, str]:
    """The environment for the product's CLI and daemon: no PORTCONSOLE_* of the caller."""
    compile_product()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")}
    env["NO_COLOR"] = "1"
    return env


def nmap_path() -> str:
    return shutil.which("nmap") or "/usr/bin/nmap"


def privileged() -> bool:
    return os.geteuid() == 0


def scan_flag() -> str:
    return "-sS" if privileged() else "-sT"


def open_ports_in_xml(xml: bytes) -> int:
    root = ElementTree.fromstring(xml)
    return sum(1 for s in root.iter("state") if s.get("state") == "open")


@dataclass(slots=True)
class PoolRun:
    seconds: float
    peak_mb: float
    open_ports: int
    processes: int


def raw_pool(
    batches: Sequence[Sequence[str]], ports: str, workers: int, extra: Sequence[str] = ()
) -> PoolRun:
    """Raw nmap sweeps, one process per host batch, `workers` at a time (the product's
    parallelism): nmap -n -Pn -T4 --max-retries 3 -sS/-sT -p PORTS -oX - HOSTS."""
    base = [nmap_path(), "-n", "-Pn", "-T4", "--max-retries", RAW_RETRIES, scan_flag(), *extra]

    def one(batch: Sequence[str]) -> Run:
        run = run_measured([*base, "-p", ports, "-oX", "-", "--", *batch])
        if run.returncode != 0:
            raise RuntimeError(f"raw nmap failed: {run.stderr.decode(errors='replace')[:300]}")
        return run

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        runs = list(pool.map(one, batches))
    seconds = time.perf_counter() - started
    return PoolRun(
        seconds,
        max(r.peak_mb for r in runs),
        sum(open_ports_in_xml(r.stdout) for r in runs),
        len(runs),
    )


def product_batches(hosts: Sequence[str], ports: int, workers: int) -> list[list[str]]:
    """The host batches the product's scanner makes at these settings for a sweep of
    `ports` ports per host (its own rule)."""
    from portconsole.core.adapters.scanner import Scanner
    from portconsole.core.domain.targets import Scope
    from portconsole.core.settings import ScanSettings

    scanner = Scanner(ScanSettings(workers=workers), Scope(["127.0.0.0/8"]))
    size = scanner.batch_size_for(len(hosts), ports)
    return [list(hosts[i : i + size]) for i in range(0, len(hosts), size)]


# ----- ports and listeners ----------------------------------------------------------------


def listening_ports() -> set[int]:
    """Ports any socket is listening on (any address), from /proc/net/tcp{,6}."""
    ports: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def free_ports(count: int, start: int, step: int = 7) -> list[int]:
    """`count` ports from `start` upwards, `step` apart, that nothing listens on. Kept below
    the ephemeral range (32768+) so that other processes' port-0 sockets never land on them."""
    taken = listening_ports()
    chosen: list[int] = []
    port = start
    while len(chosen) < count:
        if port >= 32768:
            raise SystemExit(f"no {count} free ports between {start} and 32767")
        if port not in taken:
            chosen.append(port)
        port += step
    return chosen


def port_list(ports: Iterable[int]) -> str:
    return ",".join(str(p) for p in sorted(ports))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def peak_rss_self_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----- the final table ----------------------------------------------------------------------


@dataclass(slots=True)
class Table:
    """Figure, measured, target, pass/miss: one row per figure a done-when names."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(
        self, figure: str, value: float, limit: float, unit: str = "", fmt: str = ".2f"
    ) -> None:
        verdict = "pass" if value <= limit else "MISS"
        if value != value:  # NaN: not measured
            verdict = "n/a"
        self.rows.append((figure, f"{value:{fmt}}{unit}", f"<= {limit:g}{unit}", verdict))

    def note(self, figure: str, text: str) -> None:
        self.rows.append((figure, text, "", "-"))

    def print(self) -> None:
        if not self.rows:
            return
        widths = [max(len(r[i]) for r in [("figure", "measured", "target", "")] + self.rows)
                  for i in range(4)]  # fmt: skip
        print()
        for row in [("figure", "measured", "target", "pass/miss"), *self.rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
