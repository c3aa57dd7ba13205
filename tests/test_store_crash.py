"""The store under `kill -9` and under several writing processes.

The writers are this file run as a script (`python tests/test_store_crash.py MODE ...`): each
prints the id of every scan whose ingest returned, so the test knows what was acknowledged.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from portconsole.core.adapters.store import Store  # noqa: E402
from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult  # noqa: E402
from tests.projection_files import read_projection  # noqa: E402

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _scan(scan_id: str, at: datetime, hosts: list[str], seed: int) -> ScanResult:
    rng = random.Random(seed)
    observed = [
        HostObservation(
            address,
            "up",
            "",
            [
                PortObservation(p, "tcp", "open", "http")
                for p in range(8000, 8010)
                if rng.random() < 0.5
            ],
        )
        for address in hosts
    ]
    return ScanResult(
        scan_id=scan_id,
        started_at=at - timedelta(seconds=5),
        finished_at=at,
        nmap_version="7.93",
        scan_type="connect",
        privileged=False,
        targets=hosts,
        addresses=hosts,
        ports="8000-8009",
        protocols=["tcp"],
        hosts=observed,
        raw_xml=[f"<nmaprun id='{scan_id}'/>".encode() * 20],
    )


def _expected_ports(scan: ScanResult) -> set[str]:
    return {f"{h.address}:{p.port}/tcp" for h in scan.hosts for p in h.ports}


def writer_crash(data_dir: str, run: str) -> None:
    """Ingest forever; a day apart so months (new segments, checkpoints) turn over."""
    store = Store(Path(data_dir))
    last = store.last_scan()
    step = 0 if last is None else int(last["scan_id"].split("-")[1]) + 1
    hosts = [f"127.0.0.{i}" for i in range(2, 12)]
    print("ready", flush=True)
    while True:
        scan_id = f"{run}-{step}"
        store.ingest(_scan(scan_id, BASE + timedelta(days=step), hosts, step))
        print(scan_id, flush=True)
        step += 1


def writer_concurrent(data_dir: str, index: str, seconds: str) -> None:
    """Ingest own hosts and insert into a shared table, until the time is up."""
    store = Store(Path(data_dir))
    hosts = [f"127.0.{index}.{i}" for i in range(1, 6)]
    approvals = store.hot.table("approvals")
    deadline = time.monotonic() + float(seconds)
    step = 0
    while time.monotonic() < deadline:
        scan_id = f"w{index}-{step}"
        scan = _scan(scan_id, datetime.now(UTC), hosts, int(index) * 100000 + step)

        def also_record(scan_id: str = scan_id) -> None:
            approvals.insert({"writer": index, "scan_id": scan_id})

        store.ingest(scan, extra=also_record)
        print(scan_id, flush=True)
        step += 1


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _check_files_load(data_dir: Path) -> None:
    """Every file parses: the hot file as JSON, every segment line, every raw XML."""
    read_projection(data_dir)  # the manifest and every shard it names
    for segment in (data_dir / "scans").glob("*.jsonl"):
        for line in segment.read_bytes().splitlines():
            json.loads(line)
    store = Store(data_dir)
    assert store.journal.verify().ok, store.journal.verify().reason
    assert store.check() == []


def _fork_crash_writer(data_dir: Path, run: str) -> tuple[int, int]:
    """Fork a crash writer (a fresh interpreter per run would spend 0.6 s importing)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_fd)
            os.dup2(write_fd, 1)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            writer_crash(str(data_dir), run)
        finally:
            os._exit(1)
    os.close(write_fd)
    return pid, read_fd


def _uncommitted_bytes(data_dir: Path) -> int:
    """Bytes past the commit point: what a kill in the middle of an ingest leaves."""
    hot = read_projection(data_dir)
    [meta] = [d for d in hot["meta"].values() if d.get("name") == "store"]
    sizes = {p.stem: p.stat().st_size for p in (data_dir / "scans").glob("*.jsonl")}
    return sum(size - meta["segments"].get(month, 0) for month, size in sizes.items())


def test_kill_9_during_ingest_loses_no_acknowledged_scan(tmp_path: Path) -> None:
    rng = random.Random(7)
    acknowledged: list[str] = []
    torn = 0
    for run in range(50):
        pid, read_fd = _fork_crash_writer(tmp_path, f"r{run}")
        received = b""
        deadline = None
        while True:
            timeout: float | None = (
                None if deadline is None else max(0.0, deadline - time.monotonic())
            )
            ready, _, _ = select.select([read_fd], [], [], timeout)
            if not ready:
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            received += chunk
            if deadline is None and received.count(b"\n") >= 2:
                # Once it ingests (one acknowledged), kill at a random moment.
                deadline = time.monotonic() + rng.uniform(0.01, 0.2)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        while chunk := os.read(read_fd, 65536):
            received += chunk
        os.close(read_fd)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        lines = received.decode().split("\n")
        assert lines[0] == "ready", received[:200]
        acknowledged += [line for line in lines[1:-1]]  # a last line without newline: not acked
        if (tmp_path / "hot.json").exists():
            torn += _uncommitted_bytes(tmp_path) > 0
        store = Store(tmp_path)  # recovers what the kill left
        _check_files_load(tmp_path)
        assert _uncommitted_bytes(tmp_path) == 0
        stored = {s["scan_id"] for s in store.scans()}
        missing = [scan_id for scan_id in acknowledged if scan_id not in stored]
        assert not missing, f"run {run}: acknowledged but lost: {missing[:5]}"
    assert torn >= 5, f"only {torn} of 50 kills landed inside an ingest"
    assert len(acknowledged) > 100
    store = Store(tmp_path)
    last = store.last_scan()
    assert last is not None
    step = int(last["scan_id"].split("-")[1])
    hosts = [f"127.0.0.{i}" for i in range(2, 12)]
    final = _scan(last["scan_id"], BASE + timedelta(days=step), hosts, step)
    assert {p.key for p in store.current_ports()} == _expected_ports(final)
    assert store.raw_xml(last["scan_id"]) == final.raw_xml
    # History replays to the same state as the hot file.
    at = BASE + timedelta(days=step)
    assert {p.key for p in store.state_at(at).open_ports} == _expected_ports(final)
    assert len(list((tmp_path / "scans").glob("*.jsonl"))) >= 2


def test_four_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    Store(tmp_path)
    writers = [_start("concurrent", str(tmp_path), str(i), "20") for i in range(1, 5)]
    outputs = [w.communicate(timeout=90) for w in writers]
    for writer, (_, errors) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, errors
    acknowledged = [line.split() for line, _ in outputs]
    assert all(len(ids) > 20 for ids in acknowledged), [len(ids) for ids in acknowledged]
    _check_files_load(tmp_path)
    store = Store(tmp_path)
    stored = [s["scan_id"] for s in store.scans()]
    assert len(stored) == len(set(stored))
    assert set(stored) == {i for ids in acknowledged for i in ids}
    approvals = store.hot.table("approvals").all()
    assert sorted(d["scan_id"] for d in approvals) == sorted(i for ids in acknowledged for i in ids)
    # Each writer's hosts end exactly as its last scan saw them.
    for index, ids in enumerate(acknowledged, start=1):
        step = int(ids[-1].split("-")[1])
        hosts = [f"127.0.{index}.{i}" for i in range(1, 6)]
        last = _scan(ids[-1], BASE, hosts, index * 100000 + step)
        got = {p.key for h in hosts for p in store.current_ports(h)}
        assert got == _expected_ports(last)


if __name__ == "__main__":
    mode, *arguments = sys.argv[1:]
    if mode == "crash":
        writer_crash(*arguments)
    elif mode == "concurrent":
        writer_concurrent(*arguments)
