"""Benchmark: a site scan through Celery and Redis against the same scan run locally, and
the time from a port opening at a site to its finding at the central.

    .venv/bin/python bench/sites.py              # 40 hosts, 5 runs each, 3 latency samples
    .venv/bin/python bench/sites.py --runs 3 --samples 1

Set-up (all loopback): a redis-server on a free port, one `portconsole worker --site bench`
process, a fleet of 40 hosts (127.64.0.2-41) with listeners on 3 of 10 ports each.

* overhead: `Scanner.scan` of the 40 hosts x 10 ports in this process, against
  `SiteScanner.scan` of the same (the signed job to the site's queue, the worker's scan,
  the signed result with its compressed XML back, verified and parsed here). Medians of
  `--runs`. Target site / local <= 1.2.
* latency: the central daemon over a temporary data dir, the group every 10 s (no
  jitter); a port opens at a random moment of the cycle and the time until its
  `unapproved_port` finding is in the central's findings is measured. Target <= interval
  + 10 s.

Ports are chosen so that no other process's listener is among them. Figures are
indicative: the machine may be shared.
"""

from __future__ import annotations

import argparse
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from portconsole.core.adapters.scanner import Scanner  # noqa: E402
from portconsole.core.adapters.site_celery import site_app  # noqa: E402
from portconsole.core.adapters.site_scanner import SiteScanner  # noqa: E402
from portconsole.core.adapters.site_seen import SeenJobs  # noqa: E402
from portconsole.core.domain.targets import parse_ports  # noqa: E402
from portconsole.core.monitor import Monitor  # noqa: E402
from portconsole.core.settings import load_settings  # noqa: E402
from portconsole.daemon import run_daemon  # noqa: E402
from portconsole.demo import ListenerFleet  # noqa: E402

HOSTS = [f"127.64.0.{i}" for i in range(2, 42)]
INTERVAL = 10


def listening(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quiet_ports(count: int) -> list[int]:
    """Ports below 32768 that nothing answers on (other listeners on 0.0.0.0 answer here)."""
    chosen: list[int] = []
    rng = random.Random(64)
    while len(chosen) < count:
        port = rng.randrange(20000, 32000)
        if port not in chosen and not listening(HOSTS[0], port):
            chosen.append(port)
    return sorted(chosen)


def write_config(tmp: Path, redis_port: int, ports: list[int]) -> Path:
    key = tmp / "bench.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    targets = ", ".join(f'"{h}"' for h in HOSTS)
    config = tmp / "config.toml"
    config.write_text(
        f"""scope = ["127.0.0.0/8"]

[scan]
timing = 4
workers = 4
confirm_probes = 1
fingerprint = "none"

[sites.bench]
broker = "redis://127.0.0.1:{redis_port}/0"
key_file = "{key}"
scope = ["127.64.0.0/24"]

[groups.bench]
targets = [{targets}]
ports = "{",".join(str(p) for p in ports)}"
interval = {INTERVAL}
jitter = 0
site = "bench"
"""
    )
    return config


def wait_ready(config: Path) -> None:
    settings, _ = load_settings(config)
    app = site_app("bench", settings.sites["bench"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if app.control.inspect(timeout=0.5).ping():
            return
    raise SystemExit("the site worker did not start")


def overhead(config: Path, tmp: Path, ports: list[int], runs: int) -> None:
    settings, _ = load_settings(config)
    spec = parse_ports(",".join(str(p) for p in ports))
    local = Scanner(settings.scan, settings.scope_obj())
    site = SiteScanner(
        "bench", settings, SeenJobs(tmp / "seen.jsonl"), lambda _e: None, lambda _g, _a: 120.0
    )
    times: dict[str, list[float]] = {"local": [], "site": []}
    opened: dict[str, int] = {}
    for _ in range(runs):
        for name, scanner in (("local", local), ("site", site)):
            started = time.perf_counter()
            result = scanner.scan(HOSTS, spec, fingerprint="none", known=HOSTS, group="bench")
            times[name].append(time.perf_counter() - started)
            assert result.outcome == "success", result.error
            opened[name] = result.open_port_count()
    assert opened["local"] == opened["site"], opened
    local_s, site_s = statistics.median(times["local"]), statistics.median(times["site"])
    print(f"overhead: 40 hosts x {len(ports)} ports, {opened['site']} open, median of {runs}")
    print(f"  local Scanner.scan      {local_s:6.3f} s")
    print(f"  site through the broker {site_s:6.3f} s")
    verdict = "ok" if site_s / local_s <= 1.2 else "over target"
    print(f"  ratio site / local      {site_s / local_s:6.2f}x (target <= 1.2x: {verdict})")


def latency(config: Path, tmp: Path, fleet: ListenerFleet, free: list[int], samples: int) -> None:
    settings, paths = load_settings(config, tmp / "central")
    monitor = Monitor(settings, paths, origin="daemon")
    stop = threading.Event()
    daemon = threading.Thread(target=run_daemon, args=(monitor, stop), daemon=True)
    daemon.start()
    figures: list[float] = []
    try:
        while not [e for e in monitor.audit_events() if e.action == "scan.end"]:
            time.sleep(0.2)
        rng = random.Random(7)
        for port in free[:samples]:
            time.sleep(rng.uniform(0, INTERVAL))
            fleet.add(HOSTS[0], port, "tcp")
            opened = time.monotonic()
            while not any(
                f.kind == "unapproved_port" and f.host == HOSTS[0] and f.port == port
                for f in monitor.findings_book.all()
            ):
                if time.monotonic() - opened > 3 * INTERVAL + 30:
                    raise SystemExit(f"no finding for port {port} after {3 * INTERVAL + 30} s")
                time.sleep(0.1)
            figures.append(time.monotonic() - opened)
    finally:
        stop.set()
        daemon.join(timeout=30)
        monitor.close()
    worst = max(figures)
    verdict = "ok" if worst <= INTERVAL + 10 else "over target"
    print(f"latency: port opened at the site -> finding at the central, interval {INTERVAL} s")
    print("  samples " + ", ".join(f"{s:.1f} s" for s in figures))
    print(f"  worst {worst:.1f} s (target <= interval + 10 s = {INTERVAL + 10} s: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="pc-bench-sites-"))
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    fleet = ListenerFleet()
    worker: subprocess.Popen[bytes] | None = None
    try:
        ports = quiet_ports(10)
        fleet.start()
        for index, host in enumerate(HOSTS):
            for port in ports[index % 7 : index % 7 + 3]:
                fleet.add(host, port, "tcp")
        config = write_config(tmp, redis_port, ports)
        worker = subprocess.Popen(
            [sys.executable, "-m", "portconsole", "worker", "--site", "bench", "--config",
             str(config)],
            cwd=ROOT,
            stdout=(tmp / "worker.out").open("wb"),  # Celery's banner: not a figure
            stderr=(tmp / "worker.log").open("wb"),
        )  # fmt: skip
        wait_ready(config)
        overhead(config, tmp, ports, args.runs)
        free = [p for p in ports if not listening(HOSTS[0], p)]
        if args.samples:
            latency(config, tmp, fleet, free, args.samples)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=15)
        fleet.stop()
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
