"""`kill -9` at random moments of scans, imports and approvals, and a full disk.

A forked child runs the monitor's own operations in a loop and prints each one after it
returned (acknowledged). The parent kills it at a random moment, reopens the data dir as a
writer would, and checks that every acknowledged operation is there, the journal verifies,
the projections equal a replay, and no decision or change exists without its event.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult
from portconsole.core.errors import UserError
from portconsole.core.monitor import Monitor
from portconsole.core.timeutil import utcnow

HOSTS = [f"127.0.0.{i}" for i in range(2, 6)]
CONFIG = 'scope = ["127.0.0.0/8"]\n[approval]\nseparation_of_duties = false\n'


def nmap_xml(scan_id: str, at: int, ports: dict[str, list[int]]) -> str:
    hosts = "".join(
        f'<host starttime="{at}" endtime="{at}"><status state="up" reason="syn-ack"/>'
        f'<address addr="{address}" addrtype="ipv4"/><ports>'
        + "".join(
            f'<port protocol="tcp" portid="{p}"><state state="open" reason="syn-ack"/>'
            f'<service name="http" method="table" conf="3"/></port>'
            for p in numbers
        )
        + "</ports></host>"
        for address, numbers in ports.items()
    )
    return (
        '<?xml version="1.0"?><nmaprun scanner="nmap" args="nmap -sT -p 8000-8009 '
        + " ".join(ports)
        + f'" start="{at - 5}" version="7.93" xmloutputversion="1.05">'
        '<scaninfo type="connect" protocol="tcp" numservices="10" services="8000-8009"/>'
        f'{hosts}<runstats><finished time="{at}" summary="{scan_id}"/>'
        f'<hosts up="{len(ports)}" down="0" total="{len(ports)}"/></runstats></nmaprun>'
    )


def random_ports(rng: random.Random) -> dict[str, list[int]]:
    return {h: [p for p in range(8000, 8010) if rng.random() < 0.4] for h in HOSTS}


def child(data: Path, config: Path, run: str, seed: int) -> None:
    rng = random.Random(seed)
    monitor = Monitor.open(config, data)
    print("ready", flush=True)
    step = 0
    while True:
        kind = step % 3
        ports = random_ports(rng)
        if kind == 0:
            now = utcnow()
            scan = ScanResult(
                f"{run}-s{step}",
                now - timedelta(seconds=2),
                now,
                "7.93",
                "connect",
                False,
                HOSTS,
                HOSTS,
                "8000-8009",
                ["tcp"],
                [
                    HostObservation(
                        h, "up", "", [PortObservation(p, "tcp", "open", "http") for p in ps]
                    )
                    for h, ps in ports.items()
                ],
                raw_xml=[b"<nmaprun/>" * 50],
            )
            monitor._ingest_and_detect(scan, "", len(HOSTS))
            print(f"scan {scan.scan_id}", flush=True)
        elif kind == 1:
            path = data.parent / "reports" / f"{run}-{step}.xml"
            path.parent.mkdir(exist_ok=True)
            at = int(utcnow().timestamp()) - 1
            path.write_text(nmap_xml(f"{run}-i{step}", at, ports))
            result = monitor.import_xml(path)
            print(f"import {result.scan.scan_id}", flush=True)
        else:
            candidates = [f for f in monitor.findings() if f.port is not None]
            if candidates:
                finding = rng.choice(candidates)
                try:
                    monitor.approve(finding.id, justification=f"ticket {run}-{step}", owner="ops")
                except UserError:
                    pass
                else:
                    print(f"approve {finding.id}", flush=True)
        step += 1


def fork_child(data: Path, config: Path, run: str, seed: int) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # never returns into pytest
        try:
            os.close(read_fd)
            os.dup2(write_fd, 1)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            child(data, config, run, seed)
        finally:
            os._exit(1)
    os.close(write_fd)
    return pid, read_fd


def run_and_kill(data: Path, config: Path, run: str, rng: random.Random) -> list[str]:
    pid, read_fd = fork_child(data, config, run, rng.randrange(1 << 30))
    received = b""
    deadline: float | None = None
    import time

    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], timeout if timeout is not None else 20)
        if not ready:
            break
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        received += chunk
        if deadline is None and b"ready\n" in received:
            deadline = time.monotonic() + rng.uniform(0.0, 0.25)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(read_fd, 65536):
        received += chunk
    os.close(read_fd)
    lines = received.decode().split("\n")
    assert lines[0] == "ready", received[:300]
    return [line for line in lines[1:-1] if line]


def check_consistent(monitor: Monitor, acknowledged: list[str]) -> None:
    result = monitor.audit_verify()
    assert result.ok, result.problems
    stored = {s["scan_id"] for s in monitor.store.scans()}
    for line in acknowledged:
        kind, ident = line.split(" ", 1)
        if kind in ("scan", "import"):
            assert ident in stored, f"acknowledged {line} lost"
    events = monitor.audit_events()
    approved = {e.resource.get("finding_id") for e in events if e.action == "finding.approved"}
    for line in acknowledged:
        kind, ident = line.split(" ", 1)
        if kind == "approve":
            assert ident in approved, f"acknowledged {line} has no event"
    # No decision in a projection without its event.
    added = {e.resource.get("approval_id") for e in events if e.action == "approval.added"}
    for approval in monitor.approvals_list(include_retired=True):
        assert approval.id in added, f"approval {approval.id} without its event"
    scans_with_event = {e.resource.get("scan_id") for e in events if e.action == "scan.end"}
    assert stored <= scans_with_event, stored - scans_with_event


def test_kill_9_at_random_points_of_scan_import_and_approve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    Monitor.open(config, data).close()
    rng = random.Random(11)
    acknowledged: list[str] = []
    for run in range(100):
        acknowledged += run_and_kill(data, config, f"r{run}", rng)
        monitor = Monitor.open(config, data)  # a writer: cuts torn tails, repairs the head
        if run % 10 == 9:
            check_consistent(monitor, acknowledged)  # everything (its cost grows with history)
        else:
            result = monitor.audit.verify()
            assert result.ok, result.problems
            stored = {s["scan_id"] for s in monitor.store.scans()}
            lost = [
                a for a in acknowledged if a.split()[0] != "approve" and a.split()[1] not in stored
            ]
            assert not lost, lost
        monitor.close()
    kinds = {line.split()[0] for line in acknowledged}
    assert kinds == {"scan", "import", "approve"}, kinds
    assert len(acknowledged) > 100


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk but `leave` bytes (in 4 KiB blocks: a tmpfs counts whole pages)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        except OSError:
            pass
    stat = os.statvfs(disk)
    with filler.open("r+b") as handle:
        size = handle.seek(0, 2)
        handle.truncate(max(0, size - leave - stat.f_bavail * stat.f_frsize))
    return filler


def test_a_full_disk_at_every_point_of_a_scan_and_an_approval(small_disk: Path) -> None:
    data = small_disk / "data"
    config = small_disk.parent / "config.toml"
    config.write_text(CONFIG)
    monitor = Monitor.open(config, data)
    rng = random.Random(5)
    step = 0
    failures = 0
    for leave in range(0, 64 * 1024, 4096):
        filler = fill(small_disk, leave)
        now = utcnow()
        scan = ScanResult(
            f"disk-{step}", now - timedelta(seconds=1), now, "7.93", "connect", False,
            HOSTS, HOSTS, "8000-8009", ["tcp"],
            [HostObservation(h, "up", "", [PortObservation(p, "tcp", "open", "http") for p in ps])
             for h, ps in random_ports(rng).items()],
            raw_xml=[b"<nmaprun/>" * 200],
        )  # fmt: skip
        step += 1
        acknowledged = []
        try:
            monitor._ingest_and_detect(scan, "", len(HOSTS))
            acknowledged.append(f"scan {scan.scan_id}")
            findings = [f for f in monitor.findings() if f.port is not None]
            if findings:
                monitor.approve(findings[0].id, justification="disk test", owner="ops")
                acknowledged.append(f"approve {findings[0].id}")
        except UserError as error:
            failures += 1
            assert "space" in str(error) or "No space" in str(error) or "disk" in str(error), error
        except OSError as error:
            failures += 1
            assert error.errno == 28, error
        filler.unlink()
        monitor.close()
        monitor = Monitor.open(config, data)
        check_consistent(monitor, acknowledged)
        assert monitor.store_check() == []
    assert failures >= 3, "the disk never filled up during an operation"
    monitor.close()
    shutil.rmtree(data)
