"""Benchmark: `portconsole scan` against one raw nmap run, on a 40-host loopback fleet.

    .venv/bin/python bench/scan.py [--runs 5] [--hosts 40] [--listeners 285]

Starts listeners on 127.0.0.2-41 (285 in all, bare TCP accept) on ports inside one
9,999-port range, then times, median of N runs each, interleaved:

* raw:  nmap -n -T4 -sS -p RANGE -oX - 127.0.0.2-41   (-sT when not root)
* cli:  portconsole scan 127.0.0.2-41 --ports RANGE --json   (one data dir: the first,
        untimed run ingests 285 new ports into an empty store -- printed separately --
        and the timed runs are the steady state a monitor lives in)
* lib:  Scanner.scan(...) in this process (the scanner alone, without the CLI's start-up,
        store and audit)

Both sides are port sweeps: no -sV (PortConsole's config sets fingerprint = "none" and
confirm_probes = 0), because version detection costs ~10x a sweep and would swamp the
comparison. The ratio is cli / raw; the target is <= 1.0 (a pool of per-host nmap
processes beats one big run here).

Scope: the sweep range is chosen so that no listener of any other process (on 0.0.0.0,
::, or the fleet's addresses) falls inside it, so the scans reach only our own listeners
and closed ports. Everything is loopback.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from portconsole.core.adapters.scanner import Scanner  # noqa: E402
from portconsole.core.domain.targets import Scope, parse_ports  # noqa: E402
from portconsole.core.errors import UserError  # noqa: E402
from portconsole.core.settings import ScanSettings  # noqa: E402
from portconsole.demo import ListenerFleet  # noqa: E402

RANGE_SIZE = 9999


def foreign_listening_ports() -> set[int]:
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


def pick_range(taken: set[int]) -> tuple[int, int]:
    for start in range(20000, 60000 - RANGE_SIZE, 1000):
        end = start + RANGE_SIZE - 1
        if not any(start <= p <= end for p in taken):
            return start, end
    raise SystemExit("no 9,999-port range free of other listeners between 20000 and 60000")


def start_fleet(
    hosts: list[str], listeners: int, low: int, high: int, seed: int
) -> tuple[ListenerFleet, int]:
    rng = random.Random(seed)
    fleet = ListenerFleet().start()
    placed = 0
    per_host = [
        listeners // len(hosts) + (1 if i < listeners % len(hosts) else 0)
        for i in range(len(hosts))
    ]
    for host, count in zip(hosts, per_host, strict=True):
        used: set[int] = set()
        while len(used) < count:
            port = rng.randint(low, high)
            if port in used:
                continue
            try:
                fleet.add(host, port, "tcp")
            except UserError:
                continue  # taken by a test running beside us: pick another
            used.add(port)
            placed += 1
    return fleet, placed


def timed(fn: object) -> tuple[float, int]:
    started = time.perf_counter()
    found = fn()  # type: ignore[operator]
    return time.perf_counter() - started, int(found)


def raw_nmap(nmap: str, scan_flag: str, spec: str, target: str) -> int:
    out = subprocess.run(
        [nmap, "-n", "-T4", scan_flag, "-p", spec, "-oX", "-", target],
        capture_output=True,
        check=True,
    ).stdout
    root = ElementTree.fromstring(out)
    return sum(1 for s in root.iter("state") if s.get("state") == "open")


def cli_scan(exe: str, config: Path, spec: str, target: str, data: Path) -> int:
    import json

    proc = subprocess.run(
        [exe, "scan", target, "--ports", spec, "--json", "--config", str(config)]
        + ["--data-dir", str(data)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"portconsole scan failed ({proc.returncode}): {proc.stderr.strip()[:300]}"
        )
    doc = json.loads(proc.stdout)
    return sum(1 for h in doc["hosts"] for p in h["ports"] if p.get("state", "open") == "open")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=40)
    parser.add_argument("--listeners", type=int, default=285)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    nmap = shutil.which("nmap") or "/usr/bin/nmap"
    privileged = os.geteuid() == 0
    scan_flag = "-sS" if privileged else "-sT"
    hosts = [f"127.0.0.{i}" for i in range(2, 2 + args.hosts)]
    target = f"127.0.0.2-{1 + args.hosts}"
    low, high = pick_range(foreign_listening_ports())
    spec = f"{low}-{high}"

    fleet, placed = start_fleet(hosts, args.listeners, low, high, args.seed)
    try:
        # Nothing but our fleet may listen inside the range (checked after binding too).
        ours = {p for _, p, _ in fleet.listeners()}
        stray = {p for p in foreign_listening_ports() - ours if low <= p <= high}
        if stray:
            raise SystemExit(f"other listeners appeared in {spec}: {sorted(stray)[:5]}; rerun")

        exe = ROOT / ".venv" / "bin" / "portconsole"
        config_dir = Path(tempfile.mkdtemp(prefix="pc-bench-cfg-"))
        config = config_dir / "config.toml"
        data_dir = config_dir / "data"
        first_scan = 0.0
        config.write_text(
            'scope = ["127.0.0.0/8"]\n[scan]\nfingerprint = "none"\nconfirm_probes = 0\n'
            "timing = 4\nworkers = 4\nbatch_size = 0\n",
            encoding="utf-8",
        )
        use_cli = exe.exists()
        if use_cli:
            try:
                # The first scan into an empty store, untimed in the median: warm-up and
                # a check that the CLI works.
                first_started = time.perf_counter()
                cli_scan(str(exe), config, spec, target, data_dir)
                first_scan = time.perf_counter() - first_started
            except (RuntimeError, ValueError, KeyError) as error:
                print(f"note: {error}; timing the library Scanner.scan instead of the CLI")
                use_cli = False
        else:
            print("note: .venv/bin/portconsole not installed; timing Scanner.scan instead")

        scanner = Scanner(ScanSettings(timing=4, workers=4, batch_size=0), Scope(["127.0.0.0/8"]))
        ports = parse_ports(spec)

        def lib() -> int:
            return scanner.scan(hosts, ports, fingerprint="none").open_port_count()

        raw_nmap(nmap, scan_flag, spec, target)  # warm the page cache for both sides
        lib()
        times: dict[str, list[float]] = {"raw": [], "cli": [], "lib": []}
        found: dict[str, set[int]] = {"raw": set(), "cli": set(), "lib": set()}
        for _ in range(args.runs):
            for name, fn in (
                ("raw", lambda: raw_nmap(nmap, scan_flag, spec, target)),
                (
                    "cli",
                    (lambda: cli_scan(str(exe), config, spec, target, data_dir))
                    if use_cli
                    else lib,
                ),
                ("lib", lib),
            ):
                seconds, count = timed(fn)
                times[name].append(seconds)
                found[name].add(count)
        shutil.rmtree(config_dir, ignore_errors=True)
    finally:
        fleet.stop()

    med = {k: statistics.median(v) for k, v in times.items()}
    cli_label = "portconsole scan (CLI)" if use_cli else "Scanner.scan (library; CLI unavailable)"
    print(
        f"fleet: {len(hosts)} hosts ({target}), {placed} listeners, ports {spec} "
        f"({RANGE_SIZE} ports), {'SYN (-sS)' if privileged else 'connect (-sT)'} scan, no -sV"
    )
    print(
        f"open ports found: raw {sorted(found['raw'])}, cli {sorted(found['cli'])}, "
        f"lib {sorted(found['lib'])} (expected {placed})"
    )
    print(f"median of {args.runs}:")
    print(
        f"  raw nmap -n -T4 {scan_flag} (one run)        {med['raw']:6.2f} s   "
        f"runs {' '.join(f'{t:.2f}' for t in times['raw'])}"
    )
    print(
        f"  {cli_label:<38} {med['cli']:6.2f} s   runs {' '.join(f'{t:.2f}' for t in times['cli'])}"
    )
    print(
        f"  Scanner.scan (library, 4 workers)      {med['lib']:6.2f} s   "
        f"runs {' '.join(f'{t:.2f}' for t in times['lib'])}"
    )
    if use_cli:
        print(f"  (first portconsole scan into an empty store: {first_scan:.2f} s)")
    print(f"ratio portconsole/raw: {med['cli'] / med['raw']:.2f}  (target <= 1.0)")
    print(f"ratio library/raw:     {med['lib'] / med['raw']:.2f}")


if __name__ == "__main__":
    main()
