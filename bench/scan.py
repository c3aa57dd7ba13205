"""Benchmark: PortConsole's scans against raw nmap doing the same work, on loopback fleets.

    .venv/bin/python bench/scan.py                      # every section, issue 15's sizes
    .venv/bin/python bench/scan.py --only realistic,daemon --runs 3
    .venv/bin/python bench/scan.py --quick              # small sizes, about a minute

Sections (--only, comma-separated; default all):

* realistic: 40 hosts (127.61.0.2-41) x 30 ports spread below 32768, listeners (nginx, ssh,
  redis, postgres, mysql banners) on some of them, the product's defaults (confirmation
  re-probe, -sV of changed ports, 4 workers). `portconsole scan` (the CLI, a fresh process
  each run, one data dir) against a pool of raw nmap processes doing the same work: the
  product's host batches, `workers` at a time, nmap -n -Pn -T4 --max-retries 3 -sS (-sT when
  not root), same ports. The first scan into an empty store (every listener new: confirm
  and -sV) is compared with raw sweep + re-probe + -sV of the open ports; the steady scans
  (nothing changes) with the raw sweep. Target steady CLI / raw <= 2x. Peak RSS of each.
  A repeated scan starts its first sweeps before it has loaded, from the plan its last run
  kept (cli_prelaunch, in the CLI's cache folder under the work dir); the same steady scan
  with no plan kept is printed beside it, and the floor under both: the interpreter starting,
  and starting and importing the modules a steady scan loads, with no work done.
* daemon: the same fleet as one group of a real `portconsole daemon` (interval 10 s, no
  jitter); each cycle timed from its scan.start to its scan.end journal event, against the
  raw pool run between cycles. Target steady cycle / raw <= 1.3x. Peak RSS of the daemon.
* silent: a first cycle over 40 hosts (127.62.0.2-41) where some listeners accept and never
  answer (-sV stalls on them): time from the cycle's start to the last finding raised for
  a listener, against the raw sweep of the same fleet. Target <= 2x the sweep.
* sweep: the older comparison, kept: 9,999 ports per host, 285 bare listeners, one raw nmap
  run vs the CLI vs Scanner.scan in process, with fingerprinting and confirmation off.

Ports are chosen so that no listener of any other process (any address) is among them.
Everything is loopback; the machine may be shared, so figures are indicative.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.daemon_run import DaemonRun, group_config, when  # noqa: E402
from bench.harness import (  # noqa: E402
    CLI,
    PoolRun,
    Table,
    cli_env,
    free_ports,
    listening_ports,
    median,
    nmap_path,
    open_ports_in_xml,
    port_list,
    privileged,
    product_batches,
    raw_pool,
    run_measured,
    scan_flag,
)
from portconsole.core.adapters.scanner import Scanner  # noqa: E402
from portconsole.core.domain.targets import Scope, parse_ports  # noqa: E402
from portconsole.core.errors import UserError  # noqa: E402
from portconsole.core.settings import ScanSettings  # noqa: E402
from portconsole.demo import ListenerFleet  # noqa: E402

RANGE_SIZE = 9999
ANSWERING = ("http", "ssh", "redis", "postgresql", "mysql")
WORKERS = 4  # the product's default [scan] workers


class Fleet:
    """Loopback hosts, a port list, and listeners on some host:ports."""

    def __init__(self, net: str, hosts: int, ports: list[int]) -> None:
        self.hosts = [f"{net}.{i}" for i in range(2, 2 + hosts)]
        self.target = f"{net}.2-{1 + hosts}"
        self.ports = ports
        self.spec = port_list(ports)
        self.listeners = ListenerFleet().start()
        self.opened: dict[str, list[int]] = {}

    def place(self, count: int, kinds: tuple[str, ...], rng: random.Random) -> int:
        placed = 0
        tries = 0
        while placed < count and tries < count * 20:
            tries += 1
            host, port = rng.choice(self.hosts), rng.choice(self.ports)
            if port in self.opened.get(host, []):
                continue
            try:
                self.listeners.add(host, port, kinds[placed % len(kinds)])
            except UserError:
                continue  # taken by someone beside us: pick another
            self.opened.setdefault(host, []).append(port)
            placed += 1
        return placed

    @property
    def open_count(self) -> int:
        return sum(len(p) for p in self.opened.values())

    def stop(self) -> None:
        self.listeners.stop()


def cli_scan(
    config: Path, data: Path, fleet: Fleet, cache: Path | None = None
) -> tuple[float, float, int, dict[str, int]]:
    """One `portconsole scan --json`: seconds, peak MB, open ports, findings by kind.

    `cache`: the user's cache folder, where a scan keeps the sweeps its next run starts
    first (cli_prelaunch); a path that cannot be a folder keeps none."""
    env = cli_env()
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)
    run = run_measured(
        [*CLI, "scan", fleet.target, "--ports", fleet.spec, "--json", "--config", str(config)]
        + ["--data-dir", str(data)],
        env=env,
    )
    if run.returncode not in (0, 3):  # 3: partial; still a result
        raise RuntimeError(f"portconsole scan failed ({run.returncode}): {run.stderr[-400:]!r}")
    doc = json.loads(run.stdout)
    found = sum(1 for h in doc["hosts"] for p in h["ports"] if p.get("state", "open") == "open")
    kinds: dict[str, int] = {}
    for finding in doc.get("findings", []):
        kinds[finding["kind"]] = kinds.get(finding["kind"], 0) + 1
    return run.seconds, run.peak_mb, found, kinds


def modules_loaded(config: Path, data: Path, fleet: Fleet, cache: Path) -> list[str]:
    """The modules one steady `portconsole scan` loads, in the order it loads them (read
    from `python -X importtime`): what the CLI's loading floor below imports."""
    run = run_measured(
        [CLI[0], "-X", "importtime", *CLI[1:], "scan", fleet.target, "--ports", fleet.spec]
        + ["--json", "--config", str(config), "--data-dir", str(data)],
        env={**cli_env(), "XDG_CACHE_HOME": str(cache)},
    )
    names = re.findall(rb"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", run.stderr, re.M)
    return [name.decode() for name in names]


def loading_floor(modules: list[str]) -> tuple[list[str], list[str]]:
    """Two commands: the interpreter starting and doing nothing, and the interpreter starting
    and importing `modules` (then doing nothing). Together the floor under any CLI built
    from these modules on this machine, before it does any work."""
    script = (
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        pass  # the scan tried it too, and had none (another platform's module)\n"
    )
    return [CLI[0], "-c", "pass"], [CLI[0], "-c", script]


def raw_sweep(fleet: Fleet) -> PoolRun:
    return raw_pool(product_batches(fleet.hosts, len(fleet.ports), WORKERS), fleet.spec, WORKERS)


def raw_first_cycle(fleet: Fleet) -> tuple[float, float, float]:
    """The work of a first cycle, done by raw nmap: the sweep, then per host with open ports
    a re-probe of them and a -sV of them, `workers` processes at a time. Returns seconds to
    the findings (sweep + re-probe), seconds of the -sV, and the peak RSS in MB."""
    sweep = raw_sweep(fleet)
    seconds, peak = sweep.seconds, sweep.peak_mb
    detection = 0.0
    for extra in ((), ("-sV",)):

        def one(host: str, extra: tuple[str, ...] = extra) -> PoolRun:
            return raw_pool([[host]], port_list(fleet.opened[host]), 1, extra)

        started = time.perf_counter()
        with ThreadPoolExecutor(WORKERS) as pool:
            runs = list(pool.map(one, fleet.opened))
        seconds += time.perf_counter() - started
        peak = max([peak] + [r.peak_mb for r in runs])
        detection = detection or seconds  # after the re-probe: what the findings need
    return detection, seconds - detection, peak


def write_defaults_config(path: Path) -> None:
    path.write_text('scope = ["127.0.0.0/8"]\n', encoding="utf-8")  # the product's defaults


# ----- sections -------------------------------------------------------------------------


def realistic(args: argparse.Namespace, table: Table, work: Path) -> None:
    rng = random.Random(args.seed)
    fleet = Fleet("127.61.0", args.hosts, free_ports(args.ports, 21000))
    try:
        fleet.place(args.listeners, ANSWERING, rng)
        config = work / "realistic.toml"
        write_defaults_config(config)
        data = work / "realistic-data"
        raw_sweep(fleet)  # warm the page cache
        raw_detect_s, raw_sv_s, first_raw_mb = raw_first_cycle(fleet)
        first_raw_s = raw_detect_s + raw_sv_s
        # The CLI's own cache (its plans: the sweeps a scan starts first), and for
        # comparison a cache that cannot exist (a file), so that no plan is kept.
        cache, no_cache = work / "cache", work / "no-cache"
        no_cache.write_text("")
        first_s, first_mb, first_found, kinds = cli_scan(config, data, fleet, cache)
        # Printed on its own: work the first scan left (if any) lands here, not in steady.
        second_s = cli_scan(config, data, fleet, cache)[0]
        modules = modules_loaded(config, data, fleet, cache)
        start_cmd, load_cmd = loading_floor(modules)
        cli_s: list[float] = []
        cold_s: list[float] = []
        raw_s: list[float] = []
        start_s: list[float] = []
        load_s: list[float] = []
        cli_mb = raw_mb = 0.0
        found: set[int] = set()
        # Raw nmap cut into 1, 2 and 4 runs as well: is the product's cut the fastest?
        by_runs: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for _ in range(args.runs):
            for runs, times in by_runs.items():
                size = -(-len(fleet.hosts) // runs)
                cut = [fleet.hosts[i : i + size] for i in range(0, len(fleet.hosts), size)]
                times.append(raw_pool(cut, fleet.spec, WORKERS).seconds)
            raw = raw_sweep(fleet)
            raw_s.append(raw.seconds)
            raw_mb = max(raw_mb, raw.peak_mb)
            found.add(raw.open_ports)
            seconds, mb, count, _ = cli_scan(config, data, fleet, cache)
            cli_s.append(seconds)
            cli_mb = max(cli_mb, mb)
            found.add(count)
            cold_s.append(cli_scan(config, data, fleet, no_cache)[0])
            start_s.append(run_measured(start_cmd, env=cli_env()).seconds)
            load_s.append(run_measured(load_cmd, env=cli_env()).seconds)
    finally:
        fleet.stop()
    batches = len(product_batches(fleet.hosts, len(fleet.ports), WORKERS))
    print(
        f"realistic: {len(fleet.hosts)} hosts ({fleet.target}) x {len(fleet.ports)} ports, "
        f"{fleet.open_count} listeners; defaults on; raw pool: the product's {batches} nmap "
        f"run{'s' if batches != 1 else ''}, {WORKERS} at a time, -n -Pn -T4 {scan_flag()}"
    )
    fastest = min(median(times) for times in by_runs.values())
    print(
        "  raw nmap over the same hosts cut into "
        + ", ".join(
            f"{runs} run{'s' if runs > 1 else ''} {median(t):.2f} s" for runs, t in by_runs.items()
        )
        + f" (medians); the CLI steady / the fastest: {median(cli_s) / fastest:4.2f}"
    )
    print(
        f"  open ports found (raw and CLI, steady): {sorted(found)} (expected {fleet.open_count})"
    )
    print(
        f"  first scan, empty store: CLI {first_s:6.2f} s {first_mb:5.0f} MB   raw sweep+re-probe"
        f"+-sV {first_raw_s:6.2f} s {first_raw_mb:5.0f} MB   ratio {first_s / first_raw_s:4.2f}"
        f"   ({first_found} open, findings {kinds})"
    )
    ratio = median(cli_s) / median(raw_s)
    print(f"  second scan: CLI {second_s:6.2f} s")
    print(
        f"  steady, median of {args.runs}: CLI {median(cli_s):6.2f} s {cli_mb:5.0f} MB   "
        f"raw pool {median(raw_s):6.2f} s {raw_mb:5.0f} MB   ratio {ratio:4.2f}  (target <= 2)"
    )
    print(
        f"    CLI runs {' '.join(f'{t:.2f}' for t in cli_s)}; raw {' '.join(f'{t:.2f}' for t in raw_s)}"
    )
    print(
        f"  steady without the kept plan (nmap starts after loading): CLI {median(cold_s):6.2f} s"
        f"   ratio {median(cold_s) / median(raw_s):4.2f}"
        f"   ({' '.join(f'{t:.2f}' for t in cold_s)})"
    )
    floor = median(load_s)
    print(
        f"  the floor under it, median of {args.runs}: the interpreter starts in "
        f"{median(start_s):.2f} s; starting and importing the {len(modules)} "
        f"modules the steady scan loads (nothing run) {floor:.2f} s, {floor / median(raw_s):4.2f}"
        " x the raw pool"
    )
    size = f"{len(fleet.hosts)}x{len(fleet.ports)}"
    table.add(f"scan {size}: CLI steady / raw pool", ratio, 2.0, "x")
    table.note(
        f"scan {size}: interpreter + its modules / raw pool",
        f"{floor / median(raw_s):.2f}x (the CLI's floor before any work)",
    )
    table.add(f"scan {size}: CLI first scan / raw same work", first_s / first_raw_s, 2.0, "x")
    table.note(f"scan {size}: peak RSS CLI / raw nmap", f"{cli_mb:.0f} MB / {raw_mb:.0f} MB")


def daemon(args: argparse.Namespace, table: Table, work: Path) -> None:
    rng = random.Random(args.seed + 1)
    fleet = Fleet("127.61.0", args.hosts, free_ports(args.ports, 21000))
    run_dir = work / "daemon"
    run_dir.mkdir()
    raw_s: list[float] = []
    try:
        fleet.place(args.listeners, ANSWERING, rng)
        config = run_dir / "config.toml"
        group_config(config, [fleet.target], fleet.spec, interval=10)
        raw_detect_s, raw_sv_s, _ = raw_first_cycle(fleet)
        stuck = 0.0  # a cycle that never ended: how long it had run when we gave up
        with DaemonRun(run_dir, config) as run:
            for seen in range(1, args.runs + 2):

                def done(n: int = seen) -> bool:
                    return len(run.cycles()) >= n

                if not run.wait(done, args.cycle_timeout, f"cycle {seen}"):
                    starts = [e for e in run.events() if e.get("action") == "scan.start"]
                    stuck = time.time() - when(starts[-1]) if starts else args.cycle_timeout
                    print(f"daemon: cycle {seen} had run {stuck:.0f} s without ending; log:")
                    print("    " + run.log_tail(6).replace("\n", "\n    "))
                    break
                if seen > 1:
                    raw_s.append(raw_sweep(fleet).seconds)  # between two cycles
            cycles = run.cycles()
            fingerprinted = [e for e in run.events() if e.get("action") == "scan.fingerprint"]
        if not raw_s:
            raw_s.append(raw_sweep(fleet).seconds)
    finally:
        fleet.stop()
    if not cycles:
        raise RuntimeError("the daemon finished no cycle")
    steady = [c.seconds for c in cycles[1:]] + ([stuck] if stuck else [])
    ratio = median(steady) / median(raw_s)
    first = cycles[0]
    print(
        f"daemon: group over the same {len(fleet.hosts)} x {len(fleet.ports)} fleet, interval "
        f"10 s, defaults on; cycle = scan.start -> scan.end in the journal"
    )
    print(
        f"  first cycle {first.seconds:6.2f} s (sweep {first.sweep_seconds:.2f} s; "
        f"{first.details.get('open_ports')} open) vs raw sweep + re-probe {raw_detect_s:.2f} s"
    )
    if fingerprinted:
        print(
            f"  its -sV (scan.fingerprint) done {when(fingerprinted[0]) - first.started:.2f} s "
            f"after the cycle's start; raw -sV of the same ports {raw_sv_s:.2f} s"
        )
    print(
        f"  steady cycles {' '.join(f'{s:.2f}' for s in steady)}{' (the last never ended)' if stuck else ''}; median {median(steady):.2f} s "
        f"vs raw pool median {median(raw_s):.2f} s: ratio {ratio:4.2f}  (target <= 1.3)"
    )
    print(
        f"  peak RSS: daemon VmHWM {run.hwm_mb:.0f} MB, daemon and its nmap runs {run.peak_mb:.0f} MB"
    )
    table.add("daemon: steady cycle / raw pool", ratio, 1.3, "x")
    table.note("daemon: peak RSS", f"{run.hwm_mb:.0f} MB")


def silent(args: argparse.Namespace, table: Table, work: Path) -> None:
    rng = random.Random(args.seed + 2)
    fleet = Fleet("127.62.0", args.hosts, free_ports(args.ports, 23000))
    run_dir = work / "silent"
    run_dir.mkdir()
    try:
        fleet.place(args.listeners, ANSWERING, rng)
        silent_count = fleet.place(args.silent, ("tcp",), rng)
        sweeps = [raw_sweep(fleet).seconds for _ in range(3)]
        sweep = median(sweeps)
        # A run costs this much even for one port of one host: what a finding would wait
        # for again if its confirmation were an nmap re-probe (scan.confirm_connect off).
        host, port = next((h, p) for h, ports in fleet.opened.items() for p in ports)
        one_run = median(raw_pool([[host]], str(port), 1).seconds for _ in range(3))
        config = run_dir / "config.toml"
        group_config(config, [fleet.target], fleet.spec, interval=3600)
        wanted = {(h, p) for h, ports in fleet.opened.items() for p in ports}
        with DaemonRun(run_dir, config) as run:

            def raised() -> list[dict[str, object]]:
                return [
                    e
                    for e in run.events()
                    if e.get("action") == "finding.raised"
                    and (
                        (e.get("resource") or {}).get("host"),
                        (e.get("resource") or {}).get("port"),
                    )
                    in wanted
                ]

            complete = run.wait(
                lambda: len(raised()) >= len(wanted), args.silent_timeout, "findings"
            )
            found = raised()
            starts = [e for e in run.events() if e.get("action") == "scan.start"]
            run.wait(lambda: bool(run.cycles()), 5, "scan.end")
            cycles = run.cycles()
            # The -sV that follows (silent ports stall it, within its budget): reported only.
            run.wait(
                lambda: _fingerprinted(run) is not None, args.silent_wait_sv, "scan.fingerprint"
            )
            sv_done = _fingerprinted(run)
    finally:
        fleet.stop()
    if not starts:
        raise RuntimeError("the daemon never started a cycle")
    began = when(starts[0])
    took = max((when(e) for e in found), default=float("nan")) - began
    if not complete:
        took = float(args.silent_timeout)
    ratio = took / sweep
    # The cycle's own sweep: scan.start's time to the scan's own finish (scan.end's `at`).
    own = cycles[0].sweep_seconds if cycles else float("nan")
    end = f"{cycles[0].seconds:.1f} s" if cycles else f"not within {args.silent_timeout:.0f} s"
    print(
        f"silent: first cycle over {len(fleet.hosts)} hosts x {len(fleet.ports)} ports, "
        f"{fleet.open_count - silent_count} answering + {silent_count} silent listeners"
    )
    print(
        f"  findings for {len(found)}/{len(wanted)} listeners "
        f"{'' if complete else 'NOT all '}within {took:.1f} s of the cycle's start; the cycle "
        f"ended in {end}; its own sweep {own:.2f} s (ratio {took / own:.1f}); raw pool sweep "
        f"{sweep:.2f} s (ratio {ratio:.1f})  (target <= 2); one raw nmap run of one port "
        f"takes {one_run:.2f} s here, which a new TCP port confirmed by a connect does not "
        f"wait for again"
    )
    if sv_done:
        print(
            f"  its -sV ({sv_done.get('outcome')}) recorded {when(sv_done) - began:.1f} s after "
            f"the cycle's start; identified {(sv_done.get('details') or {}).get('identified')}"
        )
    else:
        print(f"  its -sV had not ended {args.silent_wait_sv:.0f} s after the findings")
    table.add("silent: first findings / the cycle's sweep", took / own, 2.0, "x", ".1f")
    table.add("silent: first findings / raw pool sweep", ratio, 2.0, "x", ".1f")


def _fingerprinted(run: DaemonRun) -> dict[str, Any] | None:
    done = [e for e in run.events() if e.get("action") == "scan.fingerprint"]
    return done[0] if done else None


def sweep(args: argparse.Namespace, table: Table, work: Path) -> None:
    """The older 9,999-port comparison (no -sV, no confirmation), one raw run vs the CLI."""
    taken = listening_ports()
    low = next(
        (s for s in range(20000, 60000 - RANGE_SIZE, 1000)
         if not any(s <= p < s + RANGE_SIZE for p in taken)), None,
    )  # fmt: skip
    if low is None:
        raise SystemExit("no 9,999-port range free of other listeners between 20000 and 60000")
    fleet = Fleet("127.0.0", args.hosts, list(range(low, low + RANGE_SIZE)))
    fleet.spec = f"{low}-{low + RANGE_SIZE - 1}"
    config = work / "sweep.toml"
    config.write_text(
        'scope = ["127.0.0.0/8"]\n[scan]\nfingerprint = "none"\nconfirm_probes = 0\n'
        "timing = 4\nworkers = 4\nbatch_size = 0\n",
        encoding="utf-8",
    )
    raw_argv = [nmap_path(), "-n", "-T4", scan_flag(), "-p", fleet.spec, "-oX", "-", fleet.target]
    try:
        placed = fleet.place(args.sweep_listeners, ("tcp",), random.Random(args.seed))
        first_s = cli_scan(config, work / "sweep-data", fleet)[0]  # into an empty store
        scanner = Scanner(ScanSettings(timing=4, workers=4, batch_size=0), Scope(["127.0.0.0/8"]))
        ports = parse_ports(fleet.spec)
        raw_s: list[float] = []
        cli_s: list[float] = []
        lib_s: list[float] = []
        found: set[int] = set()
        for _ in range(args.runs):
            raw = run_measured(raw_argv)
            raw_s.append(raw.seconds)
            found.add(open_ports_in_xml(raw.stdout))
            seconds, _, count, _ = cli_scan(config, work / "sweep-data", fleet)
            cli_s.append(seconds)
            found.add(count)
            started = time.perf_counter()
            found.add(scanner.scan(fleet.hosts, ports, fingerprint="none").open_port_count())
            lib_s.append(time.perf_counter() - started)  # the scanner alone, in process
    finally:
        fleet.stop()
    ratio = median(cli_s) / median(raw_s)
    print(
        f"sweep: {len(fleet.hosts)} hosts x {RANGE_SIZE} ports ({fleet.spec}), {placed} bare "
        f"listeners, no -sV, no confirmation; open found {sorted(found)}"
    )
    print(
        f"  median of {args.runs}: one raw nmap {median(raw_s):.2f} s, CLI {median(cli_s):.2f} s, "
        f"ratio {ratio:.2f}  (target <= 1.0); Scanner.scan in process {median(lib_s):.2f} s "
        f"(ratio {median(lib_s) / median(raw_s):.2f}); first CLI scan into an empty store "
        f"{first_s:.2f} s"
    )
    table.add("sweep: CLI / one raw nmap (9,999 ports)", ratio, 1.0, "x")


SECTIONS = {"realistic": realistic, "daemon": daemon, "silent": silent, "sweep": sweep}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--quick", action="store_true", help="small sizes (~1 minute)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=40)
    parser.add_argument("--ports", type=int, default=30)
    parser.add_argument("--listeners", type=int, default=60, help="answering listeners")
    parser.add_argument("--silent", type=int, default=4, help="silent listeners (silent section)")
    parser.add_argument("--silent-timeout", type=float, default=400.0)
    parser.add_argument("--silent-wait-sv", type=float, default=240.0, help="silent section")
    parser.add_argument("--cycle-timeout", type=float, default=300.0, help="daemon section")
    parser.add_argument("--sweep-listeners", type=int, default=285)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # each figure as it comes
    if args.quick:
        args.runs, args.hosts, args.listeners, args.sweep_listeners = 2, 10, 15, 40
        args.silent, args.silent_timeout, args.silent_wait_sv = 2, 60.0, 60.0
        if args.only == ",".join(SECTIONS):
            args.only = "realistic,daemon,silent"
    if not shutil.which("nmap"):
        raise SystemExit("nmap is not installed")
    print(f"nmap {nmap_path()}, {'root: SYN scans' if privileged() else 'not root: connect scans'}")
    table = Table()
    work = Path(tempfile.mkdtemp(prefix="pc-bench-scan-"))
    try:
        for name in args.only.split(","):
            try:
                SECTIONS[name](args, table, work)
            except (RuntimeError, ValueError, KeyError) as error:
                print(f"{name}: FAILED: {error}")
                table.note(name, "failed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table.print()


if __name__ == "__main__":
    main()
