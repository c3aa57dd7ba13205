"""Console benchmark: first frame and input stalls with 1,000 hosts and 20,000 ports stored.

    .venv/bin/python bench/tui.py [--hosts 1000] [--dir DIR]

Builds a store holding 1,000 synthetic hosts x 20 open ports (bench/store.py's Fleet, one
sweep, ingested through the Store), then runs the real console headless at 80x24 over a
real Monitor and measures, in this process:

- time to first frame (app constructed -> first screen painted) and to the first frame that
  shows the data (the hosts table holds every host);
- the worst event-loop stall during a real scan cycle (nmap against a few loopback
  listeners of our own) and the refresh that follows it, while keys are being pressed. A
  probe task sleeps 5 ms at a time; any lateness is time the console could not answer a key;
- peak RSS.

Targets: first frame <= 1.5 s, worst stall <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.store import Fleet  # noqa: E402
from portconsole.core.adapters.store import Store  # noqa: E402
from portconsole.core.monitor import Monitor  # noqa: E402
from portconsole.core.settings import RetentionSettings  # noqa: E402
from portconsole.core.timeutil import utcnow  # noqa: E402
from portconsole.demo import ListenerFleet  # noqa: E402

LISTENER_HOSTS = [f"127.89.0.{i}" for i in range(2, 6)]
PROBE_SLEEP = 0.005
NO_GC_TUNING = False


def build_store(data_dir: Path, hosts: int) -> tuple[int, float]:
    started = time.perf_counter()
    store = Store(data_dir, RetentionSettings())
    fleet = Fleet(hosts)
    scan = fleet.scan("bench-seed", utcnow() - timedelta(hours=1))
    store.ingest(scan)
    ports = sum(len(h.ports) for h in scan.hosts)
    return ports, time.perf_counter() - started


def write_config(path: Path, ports: list[int]) -> None:
    targets = ", ".join(f'"{h}"' for h in LISTENER_HOSTS)
    port_text = ",".join(str(p) for p in sorted(set(ports)))
    path.write_text(
        f"""scope = ["127.0.0.0/8"]
[scan]
ports = "{port_text}"
confirm_probes = 0
fingerprint = "none"
[groups.bench]
targets = [{targets}]
ports = "{port_text}"
interval = 3600
[tui]
refresh_seconds = 1.0
""",
        encoding="utf-8",
    )


async def measure(monitor: Monitor, hosts: int) -> dict[str, float]:
    from portconsole.tui.app import PortConsoleApp, tune_gc
    from portconsole.tui.widgets import KeyedTable

    if not NO_GC_TUNING:
        tune_gc()  # as run_console does

    results: dict[str, float] = {}
    started = time.perf_counter()
    app = PortConsoleApp(monitor, schedule=False)
    first_frame: list[float] = []

    def on_frame() -> None:
        if not first_frame:
            first_frame.append(time.perf_counter() - started)

    async with app.run_test(size=(80, 24)) as pilot:
        app.call_after_refresh(on_frame)
        table = app.screen.query_one("#hosts", KeyedTable)
        while table.row_count < hosts:
            await asyncio.sleep(0.01)
        await pilot.pause()
        results["first_frame_s"] = first_frame[0] if first_frame else float("nan")
        results["first_data_frame_s"] = time.perf_counter() - started

        lags: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(PROBE_SLEEP)
                lags.append(time.perf_counter() - before - PROBE_SLEEP)

        probe_task = asyncio.create_task(probe())
        generation = app.generation
        cycle_started = time.perf_counter()
        app.start_scan("bench")
        keys = 0
        # Keys while the cycle runs, then until the refreshed data has been drawn.
        while app.scan is None and time.perf_counter() - cycle_started < 5:
            await asyncio.sleep(0.01)
        while app.scan is not None or app.generation <= generation:
            await pilot.press("j" if keys % 2 == 0 else "k")
            keys += 1
            if time.perf_counter() - cycle_started > 120:
                break
        for _ in range(5):
            await pilot.press("j")
        await pilot.pause(0.3)
        stop.set()
        await probe_task
        results["cycle_s"] = time.perf_counter() - cycle_started
        results["keys_pressed"] = float(keys)
        results["worst_stall_ms"] = max(lags) * 1000
        results["p99_stall_ms"] = sorted(lags)[int(len(lags) * 0.99)] * 1000
        notes = [n.message for n in app._notifications]
        results["scan_ok"] = float(any("success" in n for n in notes))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    parser.add_argument("--no-gc-tuning", action="store_true", help="measure without tune_gc()")
    args = parser.parse_args()
    global NO_GC_TUNING
    NO_GC_TUNING = args.no_gc_tuning
    work = args.dir or Path(tempfile.mkdtemp(prefix="pc-bench-tui-"))
    data_dir = work / "data"
    ports, seconds = build_store(data_dir, args.hosts)
    print(f"store: {args.hosts} hosts, {ports} open ports, built in {seconds:.1f}s ({data_dir})")
    fleet = ListenerFleet()
    fleet.start()
    try:
        listener_ports = [fleet.add(host, 0, "http") for host in LISTENER_HOSTS]
        config = work / "config.toml"
        write_config(config, listener_ports)
        monitor = Monitor.open(config, data_dir, origin="tui")
        try:
            results = asyncio.run(measure(monitor, args.hosts + len(LISTENER_HOSTS) * 0))
        finally:
            monitor.close()
    finally:
        fleet.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first, stall = results["first_frame_s"], results["worst_stall_ms"]
    print(
        f"time to first frame:      {first:.2f} s  (target <= 1.5 s) {'OK' if first <= 1.5 else 'MISSED'}"
    )
    print(f"time to first data frame: {results['first_data_frame_s']:.2f} s")
    print(
        f"worst input stall during a scan cycle: {stall:.0f} ms  (target <= 100 ms) "
        f"{'OK' if stall <= 100 else 'MISSED'}; p99 {results['p99_stall_ms']:.0f} ms; "
        f"{int(results['keys_pressed'])} keys over {results['cycle_s']:.1f} s; "
        f"scan {'succeeded' if results['scan_ok'] else 'did not report success'}"
    )
    print(f"peak RSS: {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
