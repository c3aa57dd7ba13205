"""Store benchmark: 1,000 hosts x 20 ports, hourly scans for 12 months.

    .venv/bin/python bench/store.py [--hosts 1000] [--months 12] [--dir DIR]
    .venv/bin/python bench/store.py --no-change     # no-change ingest, 1,000 vs 10,000 hosts

Builds the history with `Store.bulk_ingest` (the same per-scan code as `ingest`, writing the
same files byte for byte -- tests/test_store.py checks that -- with one fsync and one hot
file write at the end instead of one per scan), then measures in a fresh process: open time,
point-in-time latency at the oldest and newest times, ingest of a no-change and of a
1%-change scan with empty vs full history, peak RSS and disk use.

Each scan is a sweep; ports that open are reported fingerprinted (as the scanner's -sV of
new ports would). About 2% of ports change per day (opened or closed).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portconsole.core.adapters.store import Store  # noqa: E402
from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult  # noqa: E402
from portconsole.core.timeutil import add_months  # noqa: E402

START = datetime(2025, 1, 1, tzinfo=UTC)
PORT_POOL = list(range(8000, 8040))
PORTS_PER_HOST = 20
DAILY_CHANGE = 0.02


class Fleet:
    """The synthetic fleet's current open ports, and scans of it."""

    def __init__(self, hosts: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.addresses = [
            f"127.{1 + i // 250 // 250}.{i // 250 % 250}.{1 + i % 250}" for i in range(hosts)
        ]
        self.open: dict[str, dict[int, PortObservation]] = {
            address: {port: self._probed(port) for port in PORT_POOL[:PORTS_PER_HOST]}
            for address in self.addresses
        }
        self.observed = {address: self._host(address) for address in self.addresses}
        self.spec = f"{PORT_POOL[0]}-{PORT_POOL[-1]}"

    def _probed(self, port: int) -> PortObservation:
        return PortObservation(
            port, "tcp", "open", "http", "nginx", f"1.{self.rng.randint(18, 27)}.0"
        )

    def _host(self, address: str) -> HostObservation:
        return HostObservation(address, "up", "", list(self.open[address].values()))

    def change(self, count: int) -> None:
        """Open or close `count` random ports (keeping ~20 open per host)."""
        for _ in range(count):
            address = self.rng.choice(self.addresses)
            ports = self.open[address]
            port = self.rng.choice(PORT_POOL)
            if port in ports and len(ports) > PORTS_PER_HOST // 2:
                del ports[port]
            elif port not in ports:
                ports[port] = self._probed(port)
            # Later sweeps report the port unfingerprinted, as a scanner that sweeps would.
            self.observed[address] = self._host(address)

    def sweep_view(self) -> None:
        """After the scan that found them, new ports are reported by the sweep only."""
        for address, ports in self.open.items():
            for port, obs in ports.items():
                if obs.product:
                    ports[port] = PortObservation(port, "tcp", "open", "http")
            self.observed[address] = self._host(address)

    def scan(self, scan_id: str, at: datetime) -> ScanResult:
        return ScanResult(
            scan_id=scan_id,
            started_at=at - timedelta(seconds=40),
            finished_at=at,
            nmap_version="7.93",
            scan_type="syn",
            privileged=True,
            targets=["127.1.0.0/16"],
            addresses=self.addresses,
            ports=self.spec,
            protocols=["tcp"],
            hosts=[self.observed[a] for a in self.addresses],
            origin="daemon",
        )


def history(fleet: Fleet, months: int) -> Iterator[ScanResult]:
    end = add_months(START, months)
    per_scan = len(fleet.addresses) * PORTS_PER_HOST * DAILY_CHANGE / 24
    at = START
    step = 0
    carry = 0.0
    while at < end:
        if step == 1:
            fleet.sweep_view()
        if step:
            carry += per_scan
            fleet.change(int(carry))
            carry -= int(carry)
        yield fleet.scan(f"{at:%Y%m%dT%H%M%SZ}-{step:05d}", at)
        at += timedelta(hours=1)
        step += 1


def disk_use(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed_ingests(store: Store, fleet: Fleet, start: datetime, changed: int, repeat: int) -> float:
    """Median ms of `repeat` ingests each changing `changed` ports."""
    times = []
    for i in range(repeat):
        fleet.change(changed)
        scan = fleet.scan(f"bench-{changed}-{start:%Y%m%d%H}-{i}", start + timedelta(minutes=i + 1))
        began = time.perf_counter()
        store.ingest(scan)
        times.append((time.perf_counter() - began) * 1000)
        fleet.sweep_view()
    return statistics.median(times)


def journal_replay_rate(folder: Path, transactions: int = 2000) -> tuple[int, float]:
    """Events replayed per ms: transactions of a decision-like size (3 events, 2 documents)."""
    from portconsole.core.adapters.journal import AuditEntry
    from portconsole.core.identity import Actor

    store = Store(folder)
    actor = Actor.current("cli")
    findings = store.hot.table("findings")
    for index in range(transactions):
        with store.lock.hold():
            findings.insert({"id": f"F-{index}", "kind": "unapproved_port", "status": "new",
                             "timeline": [{"step": "detected", "at": "2026-01-01T00:00:00Z"}]})  # fmt: skip
            store.journal.append_many(
                [AuditEntry("finding.ack", actor, resource={"finding_id": f"F-{index}"})] * 3
            )
    began = time.perf_counter()
    store.replay(write=False)
    elapsed = (time.perf_counter() - began) * 1000
    events = transactions * 3
    return events, elapsed / events


def measure(folder: Path, hosts: int, months: int, empty_dir: Path) -> None:
    """Runs in a fresh process so open time and peak RSS are the store's, not the build's."""
    began = time.perf_counter()
    store = Store(folder)
    open_ms = (time.perf_counter() - began) * 1000
    scans_meta = store.last_scan()
    assert scans_meta is not None
    oldest = START + timedelta(minutes=30)
    newest = add_months(START, months) - timedelta(minutes=1)
    results: dict[str, float] = {}
    for label, at in (("oldest", oldest), ("newest", newest)):
        cold = Store(folder)
        began = time.perf_counter()
        point = cold.state_at(at)
        results[f"{label}_cold"] = (time.perf_counter() - began) * 1000
        began = time.perf_counter()
        cold.state_at(at)
        results[f"{label}_warm"] = (time.perf_counter() - began) * 1000
        results[f"{label}_open_ports"] = len(point.open_ports)
    began = time.perf_counter()
    current = store.current_ports()
    current_ms = (time.perf_counter() - began) * 1000

    # Ingest cost, empty vs full history. "Empty": only the fleet's first scan is stored.
    fleet = Fleet(hosts, seed=99)
    empty = Store(empty_dir)
    empty.ingest(fleet.scan("baseline", START))
    fleet.sweep_view()
    full_fleet = Fleet(hosts, seed=99)
    full_fleet.open = {a: dict(p) for a, p in fleet.open.items()}
    full_fleet.observed = dict(fleet.observed)
    # The full store's fleet is whatever its history left; resync it to the stored state.
    stored: dict[str, dict[int, PortObservation]] = {}
    for port in store.current_ports():
        stored.setdefault(port.host, {})[port.port] = PortObservation(
            port.port, "tcp", "open", "http"
        )
    full_fleet.open = {a: stored.get(a, {}) for a in full_fleet.addresses}
    full_fleet.observed = {a: full_fleet._host(a) for a in full_fleet.addresses}
    one_percent = hosts * PORTS_PER_HOST // 100
    repeat = 7
    after_empty = START + timedelta(hours=1)
    after_full = add_months(START, months) + timedelta(hours=1)
    empty_none = timed_ingests(empty, fleet, after_empty, 0, repeat)
    full_none = timed_ingests(store, full_fleet, after_full, 0, repeat)
    empty_one = timed_ingests(empty, fleet, after_empty + timedelta(hours=1), one_percent, repeat)
    full_one = timed_ingests(
        store, full_fleet, after_full + timedelta(hours=1), one_percent, repeat
    )
    # Rebuilding the projections: everything the journal recorded, every history chunk's
    # sha256 checked, current state derived from the newest month.
    began = time.perf_counter()
    store.replay(write=False)
    rebuild_ms = (time.perf_counter() - began) * 1000
    events, per_event_ms = journal_replay_rate(empty_dir.parent / "journal-rate")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"open Store (recovery check, reads hot.json):  {open_ms:8.1f} ms")
    print(f"rebuild projections from the journal:          {rebuild_ms:8.1f} ms "
          f"(a year of history in {len(list((folder / 'scans').glob('*.jsonl')))} segments)")  # fmt: skip
    print(f"replay of decision events: {events} events in {events * per_event_ms:.0f} ms, "
          f"{per_event_ms * 1000:.0f} us each (a year at 200 decisions/day: "
          f"{200 * 365 * per_event_ms / 1000:.1f} s)")  # fmt: skip
    print(f"current_ports() ({len(current)} open):          {current_ms:8.1f} ms")
    for label in ("oldest", "newest"):
        print(
            f"state_at {label:6} ({int(results[label + '_open_ports'])} open): "
            f"cold {results[label + '_cold']:7.1f} ms, warm {results[label + '_warm']:7.1f} ms"
            "   (target <= 300 ms)"
        )
    print(f"ingest no-change:  empty {empty_none:7.1f} ms, full {full_none:7.1f} ms, "
          f"ratio {full_none / empty_none:4.2f}   (target <= 1.2)")  # fmt: skip
    print(f"ingest 1%-change ({one_percent} ports): empty {empty_one:7.1f} ms, full {full_one:7.1f} ms, "
          f"ratio {full_one / empty_one:4.2f}   (target <= 1.2)")  # fmt: skip
    print(f"peak RSS of the measuring process:           {peak:8.1f} MB   (target <= 300 MB)")


# --------------------------------------------------------------------------- no-change ingest

NO_CHANGE_SAMPLE = 10  # hosts in the fixed small scan
NO_CHANGE_REPEAT = 5


def _addresses(hosts: int) -> list[str]:
    return [f"127.{1 + i // 250 // 250}.{i // 250 % 250}.{1 + i % 250}" for i in range(hosts)]


def _steady_scan(addresses: list[str], ports: int, scan_id: str, at: datetime) -> ScanResult:
    """A sweep that finds every host up with the same `ports` open: no change to a store
    built from the same."""
    numbers = PORT_POOL[:ports] if ports <= len(PORT_POOL) else list(range(8000, 8000 + ports))
    return ScanResult(
        scan_id=scan_id,
        started_at=at - timedelta(seconds=40),
        finished_at=at,
        nmap_version="7.93",
        scan_type="syn",
        privileged=True,
        targets=["127.1.0.0/16"],
        addresses=addresses,
        ports=f"{min(numbers)}-{max(numbers)}",
        protocols=["tcp"],
        hosts=[
            HostObservation(
                a, "up", "", [PortObservation(p, "tcp", "open", "http") for p in numbers]
            )
            for a in addresses
        ],
        origin="daemon",
    )


def _no_change_child(folder: Path, hosts: int, ports: int, mode: str) -> dict[str, float]:
    """In a fresh process: open the store and time no-change ingests (median), peak RSS."""
    began = time.perf_counter()
    store = Store(folder)
    opened = time.perf_counter() - began
    addresses = _addresses(hosts)
    scanned = addresses[:NO_CHANGE_SAMPLE] if mode == "sample" else addresses
    at = START + timedelta(hours=2)
    repeat = NO_CHANGE_REPEAT if mode == "sample" else 1
    times = []
    for index in range(repeat + 1):  # the first one warms up (imports, caches): not timed
        scan = _steady_scan(scanned, ports, f"steady-{mode}-{index}", at + timedelta(minutes=index))
        began = time.perf_counter()
        changes = store.ingest(scan)
        elapsed = time.perf_counter() - began
        assert changes == [], changes[:3]
        if index or repeat == 1:
            times.append(elapsed)
    return {"open_seconds": opened, "seconds": statistics.median(times), "peak_rss_mb": peak_mb()}


def peak_mb() -> float:
    """This process's peak RSS in MB. Linux's ru_maxrss survives fork and exec (a child
    would report its parent's peak): VmHWM, the peak of this process's own memory, does not."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def no_change_ingest(hosts_in_store: int, ports_per_host: int = 20) -> dict[str, float]:
    """A no-change ingest into a store of `hosts_in_store` hosts x `ports_per_host` ports.

    Builds the store (two full sweeps through `Store.bulk_ingest`: the second writes the
    month's checkpoint), then, each in a fresh process: a fixed 10-host no-change scan
    through `Store.ingest` (median of 5 after a warm-up; `seconds`, `peak_rss_mb`) and, for
    information, a no-change scan of the whole fleet (`fleet_seconds`, `fleet_peak_rss_mb`).
    """
    with tempfile.TemporaryDirectory(prefix="pc-nochange-") as temp:
        folder = Path(temp) / "data"
        addresses = _addresses(hosts_in_store)
        began = time.perf_counter()
        Store(folder).bulk_ingest(
            _steady_scan(addresses, ports_per_host, f"build-{i}", START + timedelta(hours=i))
            for i in range(2)
        )
        built = time.perf_counter() - began
        result: dict[str, float] = {
            "hosts": hosts_in_store,
            "ports_per_host": ports_per_host,
            "build_seconds": built,
            "projection_mb": disk_use(folder / "hot") / 1e6,
        }
        for mode, prefix in (("sample", ""), ("fleet", "fleet_")):
            run = subprocess.run(
                [sys.executable, __file__, "--no-change-child", str(folder), mode,
                 "--hosts", str(hosts_in_store), "--ports", str(ports_per_host)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            child = json.loads(run.stdout.strip().splitlines()[-1])
            result.update({prefix + key: value for key, value in child.items()})
        return result


def print_no_change(sizes: tuple[int, ...] = (1000, 10000)) -> None:
    """Print no-change ingest figures for each store size and the ratio of the last to the
    first (issue 15: a 10-host no-change ingest at 1,000 vs 10,000 hosts, ratio <= 2)."""
    figures = [no_change_ingest(size) for size in sizes]
    for item in figures:
        print(f"no-change ingest, {int(item['hosts']):>6} hosts x {int(item['ports_per_host'])} ports: "
              f"10-host scan {item['seconds'] * 1000:7.1f} ms (peak RSS {item['peak_rss_mb']:6.1f} MB, "
              f"open {item['open_seconds'] * 1000:6.1f} ms); whole-fleet scan "
              f"{item['fleet_seconds'] * 1000:8.1f} ms (peak RSS {item['fleet_peak_rss_mb']:6.1f} MB); "
              f"projection {item['projection_mb']:5.1f} MB")  # fmt: skip
    first, last = figures[0], figures[-1]
    ratio = last["seconds"] / first["seconds"]
    print(f"ratio {int(last['hosts'])} vs {int(first['hosts'])} hosts: {ratio:4.2f}   (target <= 2); "
          f"RSS ratio {last['peak_rss_mb'] / first['peak_rss_mb']:4.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--ports", type=int, default=PORTS_PER_HOST, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, default=None, help="keep the data dir here")
    parser.add_argument(
        "--no-change",
        action="store_true",
        help="only the no-change ingest at 1,000 vs 10,000 hosts (issue 15)",
    )
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--empty", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-change-child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_change_child:
        folder, mode = args.no_change_child
        print(json.dumps(_no_change_child(Path(folder), args.hosts, args.ports, mode)))
        return
    if args.no_change:
        print_no_change()
        return
    if args.measure:
        measure(args.measure, args.hosts, args.months, args.empty)
        return
    with tempfile.TemporaryDirectory(prefix="pc-bench-") as temp:
        folder = args.dir or Path(temp) / "full"
        fleet = Fleet(args.hosts)
        began = time.perf_counter()
        count = Store(folder).bulk_ingest(history(fleet, args.months))
        build = time.perf_counter() - began
        build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        files = sorted((folder / "scans").glob("*.jsonl"))
        print(f"built {count} scans of {args.hosts} hosts x {PORTS_PER_HOST} ports in {build:.0f} s "
              f"(bulk path; peak RSS {build_peak:.0f} MB)")  # fmt: skip
        print(f"disk: total {disk_use(folder) / 1e6:.1f} MB; projection (hot/) "
              f"{disk_use(folder / 'hot') / 1e6:.1f} MB; {len(files)} segments, "
              f"largest {max(f.stat().st_size for f in files) / 1e6:.1f} MB")  # fmt: skip
        events = sum(1 for _ in Store(folder).events(since=START, until=START + timedelta(days=31)))
        print(f"change events in the first month: {events}")
        subprocess.run(
            [sys.executable, __file__, "--measure", str(folder), "--empty", str(Path(temp) / "empty"),
             "--hosts", str(args.hosts), "--months", str(args.months)],
            check=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
