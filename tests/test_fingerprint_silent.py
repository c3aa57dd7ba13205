"""Detection first, fingerprints after: a port that answers nothing delays no finding.

A cycle ingests, detects and notifies from its sweep; -sV runs afterwards in the
background and its result is a later transaction (services/fingerprint_after.py). The
cycle's rules are checked on the real Monitor and store through a ReplayScanner whose -sV
a test can hold back; the timing is checked on the real nmap against a real loopback
listener that accepts connections and never writes (TestFleet kind "tcp").
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portconsole.core.adapters.replay import ReplayScanner, Service
from portconsole.core.monitor import Monitor
from portconsole.core.settings import load_settings
from tests.conftest import write_config
from tests.fleet import TestFleet
from tests.replay import replay_monitor
from tests.test_scanner import nmap_processes

HOST = "127.0.0.2"
SSH = Service("ssh", "OpenSSH", "9.2p1")
# A web server moved onto the approved ssh port: a sweep still names 22 "ssh" (the table).
SWAPPED = Service("http", "nginx", "1.25.3", table="ssh")
BASELINE = """version: 1
hosts:
  - selector: [127.0.0.2]
    rules:
      - ports: "22"
        proto: tcp
        service: ssh
        justification: Remote administration for the platform team
        owner: platform-team
        requester: alice
        approver: bob
        ticket: CHG-1
        approved_at: 2026-09-01
        review_by: 2027-02-01
"""


def actions(monitor: Monitor) -> list[str]:
    return [e.action for e in monitor.audit_events()]


def fingerprint_events(monitor: Monitor) -> list[Any]:
    return [e for e in monitor.audit_events() if e.action == "scan.fingerprint"]


def test_detection_and_the_schedule_do_not_wait_for_the_fingerprint(tmp_path: Path) -> None:
    monitor, replay = replay_monitor(tmp_path, {HOST: {22: SSH}}, groups={"web": ([HOST], "22,80")})
    gate = threading.Event()  # -sV answers only once the test lets it

    def hold(kind: str, _address: str, _ports: str) -> None:
        if kind == "fingerprint":
            gate.wait(10)

    replay.on_call = hold
    try:
        first = monitor.run_cycle(group="web")
        # Found, raised and journalled from the sweep while -sV is still running.
        assert [(f.kind, f.port) for f in first.findings] == [("unapproved_port", 22)]
        assert first.fingerprint is not None and first.fingerprint.running()
        assert "scan.end" in actions(monitor) and fingerprint_events(monitor) == []
        assert monitor.store.current_ports()[0].product == ""  # not identified yet
        # The run is finished: no false "late" gap while -sV runs.
        assert monitor.record_gaps() == []
        # A second cycle of the group meanwhile detects too, and leaves -sV to the one running.
        second = monitor.run_cycle(group="web")
        assert second.scan.outcome == "success" and second.fingerprint is None

        gate.set()
        outcome = first.fingerprint.wait(10)
        assert outcome is not None and outcome.scan is not None
        assert outcome.scan.scan_type == "fingerprint" and outcome.findings == []
        (event,) = fingerprint_events(monitor)
        assert event.details["after_scan_id"] == first.scan.scan_id
        assert event.details["group"] == "web" and event.details["identified"] == 1
        (port,) = monitor.store.current_ports()
        assert (port.service, port.product, port.version) == ("ssh", "OpenSSH", "9.2p1")
        assert port.fingerprinted_at is not None
        # History and point-in-time replay see the later transaction like any scan.
        state = monitor.store.state_at(outcome.scan.finished_at)
        assert [(p.port, p.product) for p in state.open_ports] == [(22, "OpenSSH")]
        assert monitor.audit_verify().ok
    finally:
        gate.set()
        monitor.close()


def test_a_service_swapped_behind_an_approved_port_is_a_later_service_changed_finding(
    tmp_path: Path,
) -> None:
    monitor, replay = replay_monitor(
        tmp_path,
        {HOST: {22: SSH}},
        groups={"web": ([HOST], "22")},
    )
    try:
        first = monitor.run_cycle(group="web")
        first.settle_fingerprint()
        baseline = tmp_path / "baseline.yaml"
        baseline.write_text(BASELINE)
        monitor.baseline_import(baseline)
        replay.open_port(HOST, 22, SWAPPED)
        # Due again at once (an ad-hoc scan past the age): -sV after detection sees the swap.
        later = monitor.run_cycle(group="web", fingerprint="all")
        assert [f.kind for f in later.findings] == []  # the sweep cannot tell
        assert later.settle_fingerprint()  # the later transaction raised something
        assert [(f.kind, f.port) for f in later.findings] == [("service_changed", 22)]
        fingerprint = later.fingerprinted
        assert fingerprint is not None and fingerprint.scan is not None
        (change,) = [e for e in monitor.store.history(HOST, 22) if e.kind == "service_changed"]
        assert change.scan_id == fingerprint.scan.scan_id
        assert (change.before or {}).get("product") == "OpenSSH"
        assert (change.after or {}).get("service") == "http"
        raised = [e for e in monitor.audit_events() if e.action == "finding.raised"]
        assert raised[-1].details["kind"] == "service_changed"
        assert monitor.audit_verify().ok
    finally:
        monitor.close()


def test_the_fingerprint_closes_nothing_it_did_not_see_open(tmp_path: Path) -> None:
    monitor, replay = replay_monitor(tmp_path, {HOST: {80: "http", 443: "https"}})

    def close_first(kind: str, address: str, _ports: str) -> None:
        if kind == "fingerprint":
            replay.close_port(address, 443)  # gone between the sweep and -sV

    replay.on_call = close_first
    try:
        first = monitor.run_cycle(targets=[HOST], ports="80,443")
        first.settle_fingerprint()
        replay.on_call = None
        fingerprint = first.fingerprinted
        assert fingerprint is not None and fingerprint.scan is not None
        assert [p.port for h in fingerprint.scan.hosts for p in h.ports] == [80]
        assert fingerprint.changes == []  # neither closed nor changed: identified
        # 443 is still open: not scanned by -sV as open is not closed; the next sweep decides.
        assert sorted(p.port for p in monitor.store.current_ports()) == [80, 443]
        record = monitor.store.scan(fingerprint.scan.scan_id)
        assert record is not None and record["scan_type"] == "fingerprint"
        again = monitor.run_cycle(targets=[HOST], ports="80,443")
        assert [(c.kind, c.port) for c in again.changes] == [("port_closed", 443)]
    finally:
        monitor.close()


def test_a_fingerprint_outrun_by_a_later_sweep_still_updates_the_state(tmp_path: Path) -> None:
    # A pinned clock: the -sV of the first cycle ends "before" a sweep recorded meanwhile.
    now = [datetime(2026, 10, 1, 6, tzinfo=UTC)]
    config = write_config(tmp_path / "config.toml", {"web": ([HOST], "22")})
    settings, paths = load_settings(config, tmp_path / "data")
    replay = ReplayScanner(settings.scope_obj(), {HOST: {22: SSH}}, clock=lambda: now[0])
    monitor = Monitor(settings, paths, scanner=replay, clock=lambda: now[0])
    gate = threading.Event()
    replay.on_call = lambda kind, _a, _p: gate.wait(10) if kind == "fingerprint" else None
    try:
        first = monitor.run_cycle(group="web")
        assert first.fingerprint is not None
        now[0] += timedelta(minutes=1)
        later = monitor.run_cycle(targets=[HOST], ports="22")  # another label: not held
        gate.set()
        first_done = first.fingerprint.wait(10)
        assert later.settle_fingerprint() is False
        assert first_done is not None and first_done.scan is not None
        # Dated at the newest look at its host, never a late report (history only).
        assert first_done.scan.finished_at >= later.scan.finished_at
        (port,) = monitor.store.current_ports()
        assert port.product == "OpenSSH" and port.fingerprinted_at is not None
    finally:
        gate.set()
        monitor.close()


def test_a_port_that_answers_nothing_to_sv_is_not_asked_again_every_cycle(
    tmp_path: Path,
) -> None:
    monitor, replay = replay_monitor(tmp_path, {HOST: {9999: "", 22: SSH}})
    try:
        first = monitor.run_cycle(targets=[HOST], ports="22,9999")
        first.settle_fingerprint()
        ports = {p.port: p for p in monitor.store.current_ports()}
        # -sV named nothing on 9999: fingerprinted all the same (until its age).
        assert ports[9999].product == "" and ports[9999].fingerprinted_at is not None
        assert ports[22].product == "OpenSSH"
        before = len(replay.calls)
        again = monitor.run_cycle(targets=[HOST], ports="22,9999")
        assert again.fingerprint is None
        assert [c[0] for c in replay.calls[before:]] == ["scan"]
    finally:
        monitor.close()


# --------------------------------------------------------------------------- real nmap


def _group_config(root: Path, hosts: list[str], ports: list[int]) -> Path:
    targets = ", ".join(f'"{h}"' for h in hosts)
    # interval 10: each host's -sV budget is at most the group's interval (10 s).
    config = root / "config.toml"
    config.write_text(
        'scope = ["127.0.0.0/8"]\n\n[scan]\ntiming = 4\nworkers = 2\nconfirm_probes = 1\n\n'
        f'[groups.lab]\ntargets = [{targets}]\nports = "{",".join(map(str, ports))}"\n'
        "interval = 10\njitter = 0\n"
    )
    return config


@pytest.mark.nmap
def test_a_new_silent_port_is_a_finding_long_before_its_fingerprint_ends(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        quiet, db = fleet.new_address(), fleet.new_address()
        silent = fleet.listen(quiet, "tcp")  # accepts, never writes: -sV tries for minutes
        mysql = fleet.listen(db, "mysql")
        config = _group_config(tmp_path, [quiet, db], [silent, mysql])
        monitor = Monitor.open(config, tmp_path / "data")
        try:
            started = time.monotonic()
            result = monitor.run_cycle(group="lab")
            detected = time.monotonic() - started
            raised = {(f.host, f.port) for f in result.findings if f.kind == "unapproved_port"}
            assert raised == {(quiet, silent), (db, mysql)}
            job = result.fingerprint
            assert job is not None and job.running()
            assert monitor.record_gaps() == []  # the run is over: no false late gap

            outcome = job.wait(60)
            finished = time.monotonic() - started
            print(f"finding after {detected:.2f} s; fingerprint transaction after {finished:.2f} s")
            assert outcome is not None and outcome.scan is not None
            # Well before the -sV run ends: it spends the silent host's whole budget.
            assert detected < 5.0 and finished > 9.0 and detected * 2 < finished
            assert finished < 10 + 30  # bounded: the budget plus the process slack
            by_port = {p.port: p for p in monitor.store.current_ports()}
            assert by_port[mysql].service == "mysql" and by_port[mysql].product
            assert by_port[mysql].fingerprinted_at is not None
            assert by_port[silent].fingerprinted_at is None  # out of time: asked again later
            (event,) = fingerprint_events(monitor)
            assert event.details["after_scan_id"] == result.scan.scan_id
            assert quiet in event.details["error"] and event.details["identified"] == 1
            assert monitor.audit_verify().ok
        finally:
            monitor.close()


@pytest.mark.nmap
def test_closing_the_monitor_cancels_the_pending_fingerprint_cleanly(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        quiet = fleet.new_address()
        silent = fleet.listen(quiet, "tcp")
        monitor = Monitor.open(_group_config(tmp_path, [quiet], [silent]), tmp_path / "data")
        result = monitor.run_cycle(targets=[quiet], ports=str(silent))
        job = result.fingerprint
        assert job is not None
        deadline = time.monotonic() + 10
        while not nmap_processes(quiet) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert nmap_processes(quiet), "-sV never started"
        closing = time.monotonic()
        monitor.close()
        assert time.monotonic() - closing < 3.0
        assert not job.running() and nmap_processes(quiet) == []
        outcome = job.wait(0)
        assert outcome is not None and outcome.cancelled and outcome.scan is None
        # Nothing half-written: no fingerprint event, no record, the journal verifies.
        assert fingerprint_events(monitor) == []
        assert [r["scan_type"] for r in monitor.store.scans()] != [] and all(
            r["scan_type"] != "fingerprint" for r in monitor.store.scans()
        )
        assert monitor.audit_verify().ok
