"""Scale benchmark (issue 15): figures printed side by side in one run, by hand.

    .venv/bin/python bench/scale.py [--only detection,digest] [--sizes 1000,4000]
                                    [--findings 1000] [--per-finding]

Sections:

- detection: N open ports against N approvals (one per port, a tenth of them retired and
  replaced). Times `detect()` over a scan covering every port, and the per-port approval
  status a cycle reports (`scan --json`) and a console snapshot shows, twice: scanning every
  approval for each port (the way before the approval index) and through one
  `ApprovalIndex` built per cycle or snapshot.
- digest: a real Monitor store with F open findings, one digest message (`[notify] mode =
  "digest"`) to a local webhook (tests/servers.py's HttpCatcher on 127.0.0.1), then
  `flush_outbox`: the send plus recording the delivery on every finding and in the journal.
  With --per-finding, the same findings again as one message each (`mode = "per_finding"`):
  outbox delivery, whose outcomes were written one whole-store rewrite per message.

Loopback only; nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
from portconsole.core.settings import Settings, load_settings  # noqa: E402
from tests.servers import HttpCatcher  # noqa: E402

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PORTS_PER_HOST = 20
T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


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


def bench_detection(sizes: list[int]) -> None:
    print("detection: N open ports x N approvals (seconds)")
    print(f"{'N':>6} {'detect()':>9} {'status, every approval/port':>28} {'status, index':>14}")
    settings = Settings.model_validate({"scope": ["127.0.0.0/8"]})
    for size in sizes:
        _detection_row(size, settings)


def _detection_row(size: int, settings: Settings) -> None:
    scan, approvals = _fleet(size)
    ports = [_view(host.address, p) for host in scan.hosts for p in host.ports]
    detect_s, candidates = timed(
        lambda: detect(scan, ports, [], ApprovalIndex(approvals), settings, NOW)
    )
    assert candidates == [], candidates  # every port approved: nothing to raise
    indexed_s, approved = timed(lambda: _statuses_indexed(scan, approvals))
    assert approved == len(ports)
    before = "(skipped)"
    if size <= 4000:  # quadratic: 16,000 x 16,000 would take minutes
        before_s, found = timed(lambda: _statuses_scanning_all(scan, approvals))
        assert found == len(ports)
        before = f"{before_s:.3f}"
    print(f"{len(ports):>6} {detect_s:>9.3f} {before:>28} {indexed_s:>14.3f}")


def _view(address: str, p: PortObservation) -> ObservedPort:
    return ObservedPort(address, p.port, p.proto, p.service, p.product, p.version)


# ----- digest ----------------------------------------------------------------------------------


def bench_digest(count: int, mode: str = "digest") -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="detection,digest")
    parser.add_argument("--sizes", default="1000,4000")
    parser.add_argument("--findings", type=int, default=1000)
    parser.add_argument(
        "--per-finding", action="store_true", help="also flush one message per finding"
    )
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    if "detection" in chosen:
        bench_detection([int(s) for s in args.sizes.split(",")])
    if "digest" in chosen:
        bench_digest(args.findings)
        if args.per_finding:
            bench_digest(args.findings, mode="per_finding")


if __name__ == "__main__":
    main()
