"""Scale benchmark (issue 15's done-when): figures printed side by side in one run, by hand,
ending with a table of figure, measured, target, pass/miss.

    .venv/bin/python bench/scale.py                    # every section, issue 15's sizes
    .venv/bin/python bench/scale.py --quick            # small sizes, a few minutes
    .venv/bin/python bench/scale.py --only detection,digest [--sizes 1000,4000]
                                    [--findings 1000] [--per-finding]

Sections (--only, comma-separated, in this order): slash16, ingest, detection, digest,
console, latency.

- slash16 and latency: see bench/scale_live.py (`portconsole scan 127.0.0.0/16` x 10 ports
  vs raw nmap, --prefix for a smaller range; a daemon's port-opened -> webhook latency at a
  30 s interval, --trials and --interval).
- ingest: bench/store.py's no_change_ingest() at 1,000 and 10,000 hosts x 20 ports in the
  store (--ingest-sizes): a scan that changes nothing; the ratio of the two.
- console: bench/tui.py run as it is with --hosts 10000 --alerts 0 --ingest (--console-hosts):
  first data frame, worst input stalls and peak RSS, read from its output.
- detection: N open ports against N approvals (one per port, a tenth of them retired and
  replaced). Times `detect()` over a scan covering every port, and the per-port approval
  status a cycle reports (`scan --json`) and a console snapshot shows, twice: scanning every
  approval for each port (the way before the approval index) and through one
  `ApprovalIndex` built per cycle or snapshot; detect() and the index are the best of 3 runs.
- digest: a real Monitor store with F open findings, one digest message (`[notify] mode =
  "digest"`) to a local webhook (tests/servers.py's HttpCatcher on 127.0.0.1), then
  `flush_outbox`: the send plus recording the delivery on every finding and in the journal.
  With --per-finding, the same findings again as one message each (`mode = "per_finding"`):
  outbox delivery, whose outcomes were written one whole-store rewrite per message.

Loopback only; nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Table  # noqa: E402
from portconsole.core.domain.approval import Approval, approval_in_force  # noqa: E402
from portconsole.core.domain.approval_index import ApprovalIndex  # noqa: E402
from portconsole.core.domain.detect import ObservedPort, detect  # noqa: E402
from portconsole.core.domain.finding import FindingCandidate  # noqa: E402
from portconsole.core.domain.model import (  # noqa: E402
    HostObservation,
    PortObservation,
    ScanResult,
)
from portconsole.core.monitor import Monitor  # noqa: E402
from portconsole.core.settings import Settings, load_settings, settings_from  # noqa: E402
from tests.servers import HttpCatcher  # noqa: E402

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PORTS_PER_HOST = 20
T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def best_of(runs: int, action: Callable[[], T]) -> tuple[float, T]:
    """The fastest of `runs` timed runs of `action`, with the last run's value."""
    results = [timed(action) for _ in range(runs)]
    return min(seconds for seconds, _ in results), results[-1][1]


# ----- detection -------------------------------------------------------------------------------


def _address(i: int) -> str:
    return f"127.{1 + i // 250 // 250}.{i // 250 % 250}.{1 + i % 250}"


def _approval(number: int, host: str, port: int, retired: bool) -> Approval:
    approved = NOW - timedelta(days=30 + (1 if retired else 0))
    return Approval(
        id=f"A-{number:06d}",
        host=host,
        port=port,
        proto="tcp",
        service="http",
        product_pattern="",
        justification="bench",
        owner="ops",
        requester="alice",
        approver="bob",
        ticket="CHG-1",
        approved_at=approved,
        review_by=NOW + timedelta(days=150),
        mitigation="",
        source="cli",
        status="retired" if retired else "active",
        retired_at=NOW - timedelta(days=30) if retired else None,
    )


def _fleet(size: int) -> tuple[ScanResult, list[Approval]]:
    hosts = max(1, size // PORTS_PER_HOST)
    observed: list[HostObservation] = []
    approvals: list[Approval] = []
    for h in range(hosts):
        address = _address(h)
        ports = [
            PortObservation(8000 + p, "tcp", "open", "http", "nginx", "1.25.0")
            for p in range(PORTS_PER_HOST)
        ]
        observed.append(HostObservation(address, "up", ports=ports))
        for p in ports:
            if len(approvals) % 10 == 0:  # a retired record, replaced by the active one
                approvals.append(_approval(len(approvals) + 1, address, p.port, retired=True))
            approvals.append(_approval(len(approvals) + 1, address, p.port, retired=False))
    scan = ScanResult(
        scan_id="bench",
        started_at=NOW - timedelta(seconds=30),
        finished_at=NOW,
        nmap_version="7.94",
        scan_type="syn",
        privileged=True,
        targets=[h.address for h in observed],
        addresses=[h.address for h in observed],
        ports=f"8000-{8000 + PORTS_PER_HOST - 1}",
        protocols=["tcp"],
        hosts=observed,
    )
    return scan, approvals


def _statuses_scanning_all(scan: ScanResult, approvals: list[Approval]) -> int:
    """Every approval looked at for every port: the cost before the index."""
    found = 0
    for host in scan.hosts:
        for p in host.ports:
            if approval_in_force(approvals, host.address, p.port, p.proto, NOW) is not None:
                found += 1
    return found


def _statuses_indexed(scan: ScanResult, approvals: list[Approval]) -> int:
    index = ApprovalIndex(approvals)
    return sum(
        1
        for host in scan.hosts
        for p in host.ports
        if index.status(host.address, p.port, p.proto, NOW) == "approved"
    )


def bench_detection(sizes: list[int], table: Table) -> None:
    print("detection: N open ports x N approvals (seconds)")
    print(f"{'N':>6} {'detect()':>9} {'status, every approval/port':>28} {'status, index':>14}")
    settings = settings_from({"scope": ["127.0.0.0/8"]})
    took = {size: _detection_row(size, settings) for size in sizes}
    for size, seconds in took.items():
        table.note(f"detection {size:,} x {size:,}: detect() + index", f"{seconds:.3f} s")
    if len(took) > 1:
        small, big = min(took), max(took)
        growth = took[big] / took[small]
        # Linear: the time grows as N does; quadratic would be (big / small) ** 2.
        table.add(f"detection growth {small:,} -> {big:,} (linear: {big / small:g})", growth,
                  1.5 * big / small, "x")  # fmt: skip


def _detection_row(size: int, settings: Settings) -> float:
    scan, approvals = _fleet(size)
    ports = [_view(host.address, p) for host in scan.hosts for p in host.ports]
    # The best of three runs: one run of a few milliseconds moves with whatever else the
    # machine does (one-shot growth figures ranged 3.9x-6x for the same code).
    detect_s, candidates = best_of(
        3, lambda: detect(scan, ports, [], ApprovalIndex(approvals), settings, NOW)
    )
    assert candidates == [], candidates  # every port approved: nothing to raise
    indexed_s, approved = best_of(3, lambda: _statuses_indexed(scan, approvals))
    assert approved == len(ports)
    before = "(skipped)"
    if size <= 4000:  # quadratic: 16,000 x 16,000 would take minutes
        before_s, found = timed(lambda: _statuses_scanning_all(scan, approvals))
        assert found == len(ports)
        before = f"{before_s:.3f}"
    print(f"{len(ports):>6} {detect_s:>9.3f} {before:>28} {indexed_s:>14.3f}")
    return detect_s + indexed_s


def _view(address: str, p: PortObservation) -> ObservedPort:
    return ObservedPort(address, p.port, p.proto, p.service, p.product, p.version)


# ----- digest ----------------------------------------------------------------------------------


def bench_digest(count: int, mode: str = "digest") -> float:
    what = "one digest" if mode == "digest" else "one message each"
    print(f"{mode}: {what} for {count} findings to a local webhook, flushed")
    with tempfile.TemporaryDirectory(prefix="portconsole-scale-") as tmp, HttpCatcher() as http:
        root = Path(tmp)
        config = root / "config.toml"
        config.write_text(
            f'scope = ["127.0.0.0/8"]\n\n[notify]\nmode = "{mode}"\nrate_limit_per_minute = {count + 1}\n'
            "\n[[notify.urls]]\n"
            f'url = "json://127.0.0.1:{http.port}/hook"\ntimeout = 30\n'
        )
        settings, paths = load_settings(config, root / "data")
        monitor = Monitor(settings, paths)
        candidates = [
            FindingCandidate(
                kind="unapproved_port",
                host=_address(i // PORTS_PER_HOST),
                port=8000 + i % PORTS_PER_HOST,
                proto="tcp",
                service="http",
                severity="medium",
                scan_id="bench",
                details={"service": "http", "product": "nginx", "version": "1.25.0"},
            )
            for i in range(count)
        ]
        raise_s, new = timed(lambda: monitor.findings_book.raise_candidates(candidates))
        enqueue_s, queued = timed(lambda: monitor.notifier.enqueue(new, "bench"))
        flush_s, results = timed(lambda: monitor.flush_outbox(seconds=3600))
        caught = http.wait_for(len(queued), timeout=10)
        recorded = sum(1 for f in monitor.findings_book.all() if f.notifications)
        hot = sum(p.stat().st_size for p in (root / "data").rglob("*.json"))
        print(f"  findings raised      {raise_s:8.2f} s  ({len(new)})")
        print(f"  enqueued             {enqueue_s:8.2f} s  ({len(queued)} messages)")
        print(
            f"  flush                {flush_s:8.2f} s  ({len(results)} sent, "
            f"{len(caught)} received, delivery on {recorded} findings)"
        )
        print(f"  json files after     {hot / 1e6:8.1f} MB")
        return flush_s if len(caught) >= len(queued) else float("inf")


# ----- no-change ingest (bench/store.py) and the console (bench/tui.py) ---------------------


def bench_ingest(sizes: list[int], table: Table) -> None:
    """bench/store.py's no_change_ingest: a fixed 10-host no-change scan into a store of N
    hosts (`seconds`), and a no-change scan of the whole fleet (`fleet_seconds`)."""
    from bench.store import no_change_ingest

    results = {size: no_change_ingest(size) for size in sizes}
    for size, r in results.items():
        print(
            f"ingest: no change, {size:>6,} hosts x {int(r['ports_per_host'])} ports in the "
            f"store: 10-host scan {r['seconds'] * 1000:7.1f} ms ({r['peak_rss_mb']:.0f} MB); "
            f"whole-fleet scan {r['fleet_seconds'] * 1000:8.1f} ms "
            f"({r['fleet_peak_rss_mb']:.0f} MB)"
        )
    small, big = min(results), max(results)
    ratio = results[big]["seconds"] / results[small]["seconds"]
    fleet = results[big]["fleet_seconds"] / results[small]["fleet_seconds"]
    print(
        f"  ratio {big:,} / {small:,} hosts: 10-host scan {ratio:.2f} (target <= 2); "
        f"whole-fleet scan {fleet:.2f} (the scan itself is {big // small}x bigger)"
    )
    table.add(f"no-change ingest, 10 hosts, store {big:,} / {small:,}", ratio, 2.0, "x")
    table.note(
        f"no-change ingest, whole fleet {big:,} hosts",
        f"{results[big]['fleet_seconds']:.2f} s, {results[big]['fleet_peak_rss_mb']:.0f} MB",
    )


CONSOLE_FIGURES = {
    "first data frame": (r"first data frame:\s*([\d.]+) s", 2.0, " s"),
    "worst stall (scan cycle)": (r"worst input stall during a scan cycle:\s*([\d.]+) ms", 100, " ms"),
    "worst stall (triage)": (r"worst stall switching, sorting and filtering:\s*([\d.]+) ms", 100, " ms"),
    "peak RSS": (r"peak RSS:\s*([\d.]+) MB", 500, " MB"),
}  # fmt: skip


def bench_console(hosts: int, table: Table) -> None:
    """bench/tui.py, run as it is, in its own process (its RSS is its own)."""
    argv = [sys.executable, str(ROOT / "bench" / "tui.py"), "--hosts", str(hosts)]
    argv += ["--alerts", "0", "--ingest"]
    print(f"console: {' '.join(argv[1:])}")
    with tempfile.TemporaryDirectory(prefix="pc-bench-console-") as work:
        proc = subprocess.run([*argv, "--dir", work], capture_output=True, text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        print(f"  {line}")
    if proc.returncode != 0:
        print(f"  bench/tui.py failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    for figure, (pattern, limit, unit) in CONSOLE_FIGURES.items():
        match = re.search(pattern, proc.stdout)
        name = f"console {hosts:,} hosts: {figure}"
        if match:
            table.add(name, float(match.group(1)), limit, unit, ".1f" if unit == " s" else ".0f")
        else:
            table.note(name, "not printed")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--prefix", type=int, default=16, help="slash16: 127.0.0.0/PREFIX")
    parser.add_argument("--listener-hosts", type=int, default=200)
    parser.add_argument("--ingest-sizes", default="1000,10000")
    parser.add_argument("--sizes", default="1000,4000", help="detection: ports = approvals")
    parser.add_argument("--findings", type=int, default=1000)
    parser.add_argument(
        "--per-finding", action="store_true", help="also flush one message per finding"
    )
    parser.add_argument("--console-hosts", type=int, default=10000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--interval", type=int, default=30, help="latency: the group interval")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # each figure as it comes
    if args.quick:
        args.prefix, args.listener_hosts, args.ingest_sizes = 22, 20, "100,1000"
        args.sizes, args.findings, args.console_hosts = "500,1000", 200, 300
        args.trials, args.interval = 2, 10
    from bench.scale_live import bench_latency, bench_slash16

    table = Table()
    runners: dict[str, Callable[[], object]] = {
        "slash16": lambda: bench_slash16(args.prefix, args.listener_hosts, table),
        "ingest": lambda: bench_ingest([int(s) for s in args.ingest_sizes.split(",")], table),
        "detection": lambda: bench_detection([int(s) for s in args.sizes.split(",")], table),
        "digest": lambda: _digest_row(args, table),
        "console": lambda: bench_console(args.console_hosts, table),
        "latency": lambda: bench_latency(args.trials, args.interval, table),
    }
    for name in args.only.split(","):
        try:
            runners[name]()
        except (RuntimeError, ValueError, KeyError, OSError) as error:
            print(f"{name}: FAILED: {error}")
            table.note(name, "failed")
    table.print()


def _digest_row(args: argparse.Namespace, table: Table) -> None:
    flush_s = bench_digest(args.findings)
    # "in seconds, not minutes": read as at most 10 s.
    table.add(f"digest of {args.findings:,} findings flushed", flush_s, 10, " s", ".2f")
    if args.per_finding:
        bench_digest(args.findings, mode="per_finding")


SECTIONS = ("slash16", "ingest", "detection", "digest", "console", "latency")


if __name__ == "__main__":
    main()
