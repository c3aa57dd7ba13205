"""Console benchmark: first frame, input stalls and RSS with a big store.

    .venv/bin/python bench/tui.py [--hosts 1000] [--findings N] [--ingest] [--dir DIR]
    .venv/bin/python bench/tui.py --hosts 10000 --alerts 0 --ingest   # issue 15's size

Builds a store holding N synthetic hosts x 20 open ports (bench/store.py's Fleet, one
sweep, ingested through the Store) and 10 open findings per host (default; one
`ingest_candidates` call, as detection writes them), then runs the real console headless
at 80x24 over a real Monitor and measures, in this process:

- time to first frame (app constructed -> first screen painted) and to the first frame that
  shows the data (the hosts table holds every host);
- the worst event-loop stall during a real scan cycle (nmap against a few loopback
  listeners of our own) and the refresh that follows it, while keys are being pressed. A
  probe task sleeps 5 ms at a time; any lateness is time the console could not answer a key;
- the worst stall while the operator switches to the triage queue (every open finding) and
  back, sorts it (`o`) and filters it (`/`);
- with `--ingest`, all of the above while another process ingests scans of the whole fleet
  into the same store, one after another (each moves the data version: the console re-reads);
- peak RSS of this process while the console runs (the store is built in a child process;
  the timed store read after the console quits is not counted);
- the time from a port opening to the alert on a follower console: a real
  `portconsole daemon` leads (real nmap, the demo's 15 s interval, 1 s jitter and -sV on
  changed ports) over a second 1,000-host store, and the real console follows it under
  Pilot (it asks to lead every second, as a console does, and is refused: the daemon holds
  the lease). A listener opens on a scanned host:port at a random moment of the interval;
  the clock stops when the follower's screen shows that host:port in its alert banner.
  The worst input stall of the follower (it re-reads the 1,000 hosts after every scan)
  is reported too.

Targets: first frame <= 1.5 s, first data frame <= 2 s, worst stall <= 100 ms, RSS <= 500 MB
at 10,000 hosts / 200,000 ports / 100,000 findings (issue 15), port open -> alert on a follower
<= group interval + 10 s (issue 13).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.store import Fleet, peak_mb  # noqa: E402
from portconsole.core.adapters.findings import FindingBook  # noqa: E402
from portconsole.core.adapters.store import Store  # noqa: E402
from portconsole.core.domain.finding import FindingCandidate  # noqa: E402
from portconsole.core.domain.model import ScanResult  # noqa: E402
from portconsole.core.monitor import Monitor  # noqa: E402
from portconsole.core.settings import RetentionSettings  # noqa: E402
from portconsole.core.timeutil import utcnow  # noqa: E402
from portconsole.demo import (  # noqa: E402
    DEMO_INTERVAL_SECONDS,
    DEMO_JITTER_SECONDS,
    DEMO_REFRESH_SECONDS,
    ListenerFleet,
)

LISTENER_HOSTS = [f"127.89.0.{i}" for i in range(2, 6)]
ALERT_HOSTS = [f"127.89.1.{i}" for i in range(2, 6)]  # the follower measurement's network
ALERT_BUDGET_EXTRA = 10.0  # issue 13: port open -> alert within the interval + 10 s
PROBE_SLEEP = 0.005
NO_GC_TUNING = False


def build_store(data_dir: Path, hosts: int, findings: int = 0) -> tuple[int, float]:
    started = time.perf_counter()
    store = Store(data_dir, RetentionSettings())
    fleet = Fleet(hosts)
    scan = fleet.scan("bench-seed", utcnow() - timedelta(hours=1))
    store.ingest(scan)
    ports = sum(len(h.ports) for h in scan.hosts)
    if findings:
        book = FindingBook(store.hot, store.lock)
        book.ingest_candidates(finding_candidates(scan, findings), utcnow() - timedelta(hours=1))
    return ports, time.perf_counter() - started


def build_store_elsewhere(data_dir: Path, hosts: int, findings: int = 0) -> tuple[int, float]:
    """`build_store` in a child process, so that the peak RSS measured here is the
    console's, not the builder's."""
    done = subprocess.run(
        [sys.executable, __file__, "--hosts", str(hosts), "--findings", str(findings)]
        + ["--build-child", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    ports, seconds = done.stdout.split()
    return int(ports), float(seconds)


def finding_candidates(scan: ScanResult, count: int) -> list[FindingCandidate]:
    """`count` unapproved-port findings, spread over the scan's host:ports (2% severe)."""
    pairs = [(h.address, p.port) for h in scan.hosts for p in h.ports]
    return [
        FindingCandidate(
            kind="unapproved_port",
            host=host,
            port=port,
            proto="tcp",
            service="http",
            severity="high" if i % 50 == 0 else "medium",
            scan_id=scan.scan_id,
        )
        for i, (host, port) in enumerate(pairs[:count])
    ]


def ingest_forever(data_dir: Path, hosts: int) -> None:
    """Another process: ingest sweeps of the whole fleet (1% of ports changing) until killed."""
    store = Store(data_dir, RetentionSettings())
    fleet = Fleet(hosts, seed=5)
    round_ = 0
    while True:
        round_ += 1
        fleet.change(max(1, hosts // 5))
        store.ingest(fleet.scan(f"bench-ingest-{round_}", utcnow()))


def write_config(
    path: Path,
    ports: list[int],
    *,
    hosts: list[str] = LISTENER_HOSTS,
    interval: int = 3600,
    jitter: int = 0,
    fingerprint: str = "none",
    refresh: float = 1.0,
) -> None:
    targets = ", ".join(f'"{h}"' for h in hosts)
    port_text = ",".join(str(p) for p in sorted(set(ports)))
    path.write_text(
        f"""scope = ["127.0.0.0/8"]
[scan]
ports = "{port_text}"
confirm_probes = 0
fingerprint = "{fingerprint}"
[groups.bench]
targets = [{targets}]
ports = "{port_text}"
interval = {interval}
jitter = {jitter}
[tui]
refresh_seconds = {refresh}
""",
        encoding="utf-8",
    )


async def measure(monitor: Monitor, hosts: int, findings: int) -> dict[str, float]:
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
        # The first frame drawn with the hosts in it. (Not `pilot.pause()`: it waits until
        # the process's CPU is idle, up to 1 s, and the console reads the findings then.)
        drawn = asyncio.Event()
        app.call_after_refresh(drawn.set)
        await drawn.wait()
        results["first_data_frame_s"] = time.perf_counter() - started
        first_host = table.keys[0]
        if first_host not in screen_text(app):
            raise SystemExit(f"the first data frame does not show the first host {first_host}")
        await pilot.pause()
        results["first_frame_s"] = first_frame[0] if first_frame else float("nan")

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
        notes: set[str] = set()  # every toast seen (one may time out before the end)
        while app.scan is not None or app.generation <= generation:
            await pilot.press("j" if keys % 2 == 0 else "k")
            keys += 1
            notes.update(str(n.message) for n in app._notifications)
            if time.perf_counter() - cycle_started > 120:
                break
        for _ in range(5):
            await pilot.press("j")
        await pilot.pause(0.3)
        results["cycle_s"] = time.perf_counter() - cycle_started
        results["keys_pressed"] = float(keys)
        results["worst_stall_ms"] = max(lags) * 1000
        results["p99_stall_ms"] = sorted(lags)[int(len(lags) * 0.99)] * 1000
        notes.update(str(n.message) for n in app._notifications)
        results["scan_ok"] = float(any("success" in n for n in notes))
        if not results["scan_ok"]:
            print(f"the scan's notifications: {notes!r}")
        # The triage queue: every open finding, sorted and filtered by the operator.
        lags.clear()
        triage_started = time.perf_counter()
        await pilot.press("2")
        findings_table = app.screen.query_one("#findings", KeyedTable)
        while findings_table.row_count < findings and time.perf_counter() - triage_started < 120:
            await asyncio.sleep(0.01)
        results["triage_s"] = time.perf_counter() - triage_started
        for key in ("j", "j", "o", "j", "O", "o", "o", "o", "o", "o", "o"):
            await pilot.press(key)
        await pilot.press("slash", "1", "2", "7", ".", "1", "enter", "j", "escape")
        await pilot.press("1", "j", "G", "g")
        await pilot.pause(0.3)
        stop.set()
        await probe_task
        results["triage_stall_ms"] = max(lags, default=0) * 1000
    return results


def screen_text(app: object) -> str:
    """What the terminal shows right now, as plain text (as tests/tui/conftest.py reads it)."""
    from rich.console import Console
    from textual.app import App

    assert isinstance(app, App)
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True)
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


def banner_shows(app: object, target: str) -> bool:
    """The alert banner (its line starts with ▲) names `target`."""
    return any(
        line.lstrip().startswith("▲") and target in line and "! to view" in line
        for line in screen_text(app).splitlines()
    )


async def follow(
    config: Path, data_dir: Path, hosts: int, openings: list[tuple[str, int]], fleet: ListenerFleet
) -> dict[str, object]:
    """The real console following the daemon; open each of `openings` and time its banner."""
    from portconsole.tui.app import PortConsoleApp
    from portconsole.tui.widgets import KeyedTable

    monitor = Monitor.open(config, data_dir, origin="tui")
    app = PortConsoleApp(monitor, schedule=True)
    rng = random.Random(13)
    took: list[float] = []
    lags: list[float] = []
    keyed: list[float] = []  # lateness while a key of ours switched views (! then 1)
    in_keys = False
    stop = asyncio.Event()
    try:
        async with app.run_test(size=(80, 24)) as pilot:

            async def until(predicate: object, timeout: float, what: str) -> None:
                assert callable(predicate)
                deadline = time.perf_counter() + timeout
                while not predicate():
                    if time.perf_counter() > deadline:
                        raise SystemExit(f"timed out waiting for {what}:\n{screen_text(app)}")
                    await asyncio.sleep(0.05)

            async def probe() -> None:
                while not stop.is_set():
                    before = time.perf_counter()
                    await asyncio.sleep(PROBE_SLEEP)
                    lag = time.perf_counter() - before - PROBE_SLEEP
                    (keyed if in_keys else lags).append(lag)

            # The daemon's first round: the listeners' ports are findings, alerted on as
            # they appear. Wait for all of them, then mark them seen (`!`, back to `1`).
            table = app.screen.query_one("#hosts", KeyedTable)
            await until(lambda: table.row_count >= hosts, 30, "the hosts table")

            def first_round_seen() -> bool:
                snapshot = app.snapshot
                if snapshot is None:
                    return False
                found = {f.host for f in snapshot.findings if f.is_open and f.host in ALERT_HOSTS}
                return len(found) == len(ALERT_HOSTS) and app.alerts.has_baseline

            await until(first_round_seen, 60, "the daemon's first round on the follower")
            if app.alerts.unseen_count():
                await pilot.press("exclamation_mark")
                await until(lambda: not app.alerts.unseen_count(), 10, "alerts seen")
                await pilot.press("1")
            await pilot.pause(0.5)
            probe_task = asyncio.create_task(probe())
            for address, port in openings:
                # A random moment of the interval: the scan that finds it may be 0-15 s away.
                await asyncio.sleep(rng.uniform(0, DEMO_INTERVAL_SECONDS))
                fleet.add(address, port, "http")
                opened = time.perf_counter()
                target = f"{address}:{port}/tcp"
                await until(
                    lambda t=target: banner_shows(app, t),
                    DEMO_INTERVAL_SECONDS + 60,
                    f"the banner for {target}",
                )
                took.append(time.perf_counter() - opened)
                print(f"  {target} opened -> banner on the follower in {took[-1]:.1f} s")
                in_keys = True
                await pilot.press("exclamation_mark")
                await until(lambda: not app.alerts.unseen_count(), 10, "alerts seen")
                await pilot.press("1")
                await pilot.pause(1.0)
                in_keys = False
            stop.set()
            await probe_task
            leading = app.leading
    finally:
        monitor.close()
    return {"took": took, "lags": lags, "keyed": keyed, "follower_led": leading}


def measure_alerts(work: Path, hosts: int, rounds: int, fleet: ListenerFleet) -> dict[str, object]:
    """Build a second store, start a daemon on it, and time alerts on a follower."""
    data_dir = work / "alert-data"
    ports, seconds = build_store_elsewhere(data_dir, hosts)
    print(f"follower store: {hosts} hosts, {ports} open ports, built in {seconds:.1f}s")
    # One listener per host on a port of its own; every host is scanned on all four
    # ports, so the other twelve host:port pairs are there to open one at a time.
    listener_ports = [fleet.add(host, 0, "http") for host in ALERT_HOSTS]
    pairs = [
        (host, port)
        for port in listener_ports
        for host in ALERT_HOSTS
        if (host, port) not in zip(ALERT_HOSTS, listener_ports, strict=True)
    ]
    random.Random(7).shuffle(pairs)
    config = work / "alert-config.toml"
    write_config(
        config,
        listener_ports,
        hosts=ALERT_HOSTS,
        interval=DEMO_INTERVAL_SECONDS,
        jitter=DEMO_JITTER_SECONDS,
        fingerprint="changed",
        refresh=DEMO_REFRESH_SECONDS,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")}
    log_path = work / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "portconsole.cli", "--config", str(config)]
            + ["--data-dir", str(data_dir), "daemon"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            time.sleep(1.0)  # the daemon takes the lease before the console asks for it
            results = asyncio.run(follow(config, data_dir, hosts, pairs[:rounds], fleet))
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    results["daemon_log"] = log_path
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    parser.add_argument(
        "--findings", type=int, default=None, help="open findings (default: 10 per host)"
    )
    parser.add_argument(
        "--ingest", action="store_true", help="another process ingests while measuring"
    )
    parser.add_argument("--ingest-child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--build-child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--no-gc-tuning", action="store_true", help="measure without tune_gc()")
    parser.add_argument(
        "--alerts", type=int, default=6, help="ports to open for the follower alert (0: skip)"
    )
    args = parser.parse_args()
    global NO_GC_TUNING
    NO_GC_TUNING = args.no_gc_tuning
    if args.ingest_child:
        ingest_forever(Path(args.ingest_child), args.hosts)
        return
    if args.build_child:
        ports, seconds = build_store(Path(args.build_child), args.hosts, args.findings or 0)
        print(ports, seconds)
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="pc-bench-tui-"))
    data_dir = work / "data"
    findings = args.hosts * 10 if args.findings is None else args.findings
    ports, seconds = build_store_elsewhere(data_dir, args.hosts, findings)
    print(
        f"store: {args.hosts} hosts, {ports} open ports, {findings} open findings, "
        f"built in {seconds:.1f}s ({data_dir})"
    )
    fleet = ListenerFleet()
    fleet.start()
    ingester = None
    try:
        if args.ingest:
            ingester = subprocess.Popen(
                [sys.executable, __file__, "--hosts", str(args.hosts)]
                + ["--ingest-child", str(data_dir)]
            )
        listener_ports = [fleet.add(host, 0, "http") for host in LISTENER_HOSTS]
        config = work / "config.toml"
        write_config(config, listener_ports)
        monitor = Monitor.open(config, data_dir, origin="tui")
        try:
            results = asyncio.run(measure(monitor, args.hosts, findings))
        finally:
            monitor.close()
        # The console's peak, before this process reads the store again below (VmHWM:
        # ru_maxrss would be bench/scale.py's own peak, inherited across fork and exec).
        console_rss_mb = peak_mb()
        # What the first data frame waits for: one store read (the console's worker makes
        # the same call), timed on its own with a fresh Monitor after the console quit.
        monitor = Monitor.open(config, data_dir, origin="tui")
        try:
            read_started = time.perf_counter()
            monitor.snapshot()
            store_read = time.perf_counter() - read_started
        finally:
            monitor.close()
        alerts = measure_alerts(work, args.hosts, args.alerts, fleet) if args.alerts else None
    finally:
        fleet.stop()
        if ingester is not None:
            ingester.kill()
            ingester.wait()
    rss_mb = console_rss_mb
    first, stall = results["first_frame_s"], results["worst_stall_ms"]
    print(
        f"time to first frame:      {first:.2f} s  (target <= 1.5 s) {'OK' if first <= 1.5 else 'MISSED'}"
    )
    data_frame = results["first_data_frame_s"]
    print(
        f"time to first data frame: {data_frame:.2f} s  (target <= 2 s) "
        f"{'OK' if data_frame <= 2 else 'MISSED'}; one store read (Monitor.snapshot) alone "
        f"takes {store_read:.2f} s"
    )
    print(
        f"worst input stall during a scan cycle: {stall:.0f} ms  (target <= 100 ms) "
        f"{'OK' if stall <= 100 else 'MISSED'}; p99 {results['p99_stall_ms']:.0f} ms; "
        f"{int(results['keys_pressed'])} keys over {results['cycle_s']:.1f} s; "
        f"scan {'succeeded' if results['scan_ok'] else 'did not report success'}"
    )
    triage = results["triage_stall_ms"]
    print(
        f"triage queue ({findings} findings) shown in {results['triage_s']:.2f} s; worst stall "
        f"switching, sorting and filtering: {triage:.0f} ms "
        f"{'OK' if triage <= 100 else 'MISSED'}{' (while another process ingests)' if args.ingest else ''}"
    )
    if alerts is not None:
        took = alerts["took"]
        lags = alerts["lags"]
        assert isinstance(took, list) and isinstance(lags, list)
        budget = DEMO_INTERVAL_SECONDS + ALERT_BUDGET_EXTRA
        worst = max(took)
        print(
            f"port open -> alert on a follower: worst {worst:.1f} s, median "
            f"{statistics.median(took):.1f} s, best {min(took):.1f} s over {len(took)} ports "
            f"(target <= interval {DEMO_INTERVAL_SECONDS} s + {ALERT_BUDGET_EXTRA:.0f} s = "
            f"{budget:.0f} s; worst at {worst / budget:.0%} of it) "
            f"{'OK' if worst <= budget else 'MISSED'}"
        )
        keyed = alerts["keyed"]
        assert isinstance(keyed, list)
        follower_stall = max(lags) * 1000
        print(
            f"worst input stall on the follower while the daemon scans: {follower_stall:.0f} ms "
            f"(target <= 100 ms) {'OK' if follower_stall <= 100 else 'MISSED'}; "
            f"p99 {sorted(lags)[int(len(lags) * 0.99)] * 1000:.0f} ms; "
            f"while `!` and `1` switch views: worst {max(keyed, default=0) * 1000:.0f} ms; "
            f"the follower {'LED (wrong)' if alerts['follower_led'] else 'never led'}; "
            f"daemon log {alerts['daemon_log']}"
        )
    print(f"peak RSS: {rss_mb:.0f} MB  (target <= 500 MB) {'OK' if rss_mb <= 500 else 'MISSED'}")


if __name__ == "__main__":
    main()
