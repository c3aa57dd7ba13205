"""Monitoring never goes silent: the leadership lease through the Monitor and Supervisor.

In-process Monitors on one real data dir (a real store, ReplayScanner for scans): who may
lead (the data dir's settings only), handing over on quit without a gap, and a gap noticed
by two processes at once. tests/test_lease_daemons.py does the same with real daemons.
"""

from __future__ import annotations

import threading
from pathlib import Path

from portconsole.core.adapters.replay import ReplayScanner
from portconsole.core.monitor import Monitor
from portconsole.core.services.supervisor import Supervisor
from portconsole.core.settings import Paths, Settings, load_settings
from tests.conftest import write_config

NETWORK = {"127.0.0.2": {22: "ssh"}}
WEB = {"web": (["127.0.0.2"], "22")}
FAST = "[daemon]\nlease_seconds = 2\ngap_grace_seconds = 0\n"


def open_monitor(
    tmp_path: Path, name: str, groups: dict[str, tuple[list[str], str]] | None, extra: str = FAST,
    origin: str = "daemon", config: bool = True, latency: float = 0.0,
) -> Monitor:  # fmt: skip
    """A Monitor on the shared data dir with its own config file (or none: defaults)."""
    path = tmp_path / f"{name}.toml"
    if config:
        write_config(path, groups, extra)
        settings, paths = load_settings(path, tmp_path / "data")
    else:  # what load_settings gives when the default config file is absent
        settings = Settings()
        paths = Paths(path, False, tmp_path / "data", ())
    scanner = ReplayScanner(settings.scope_obj(), NETWORK, latency=latency)
    return Monitor(settings, paths, origin=origin, scanner=scanner)


def actions(monitor: Monitor) -> list[str]:
    return [event.action for event in monitor.audit_events()]


def gap_findings(monitor: Monitor) -> list[object]:
    return [f for f in monitor.findings(include_closed=True) if f.kind == "monitoring_gap"]


def test_a_console_without_the_data_dirs_config_never_leads_nor_rewrites_it(
    tmp_path: Path,
) -> None:
    leader = open_monitor(tmp_path, "demo", WEB)
    assert (
        Supervisor(leader)
        .step(lambda g, c: leader.run_cycle(group=g, cancel=c), threading.Event())
        .leading
    )
    assert actions(leader).count("settings.recorded") == 1
    # A console opened on the same data dir without the config (defaults: no groups).
    console = open_monitor(tmp_path, "none", None, origin="tui", config=False)
    other = open_monitor(tmp_path, "other", {"db": (["127.0.0.3"], "5432")}, origin="tui")
    for process in (console, other):
        result = Supervisor(process).step(lambda g, c: None, threading.Event())
        assert not result.leading
        assert process.follow_reason.startswith("settings differ from the data dir's")
        assert leader.settings_sha256[:8] in process.follow_reason
        assert process.overview().follow_reason == process.follow_reason
    assert "settings.changed" not in actions(leader)  # no spurious change on record
    # The leader quits: the lease is free, and still neither takes it.
    leader.close()
    assert "leader.handover" in actions(console)
    for process in (console, other):
        assert not Supervisor(process).step(lambda g, c: None, threading.Event()).leading
        assert process.leader.current() is None
    # A console with the data dir's config does.
    twin = open_monitor(tmp_path, "demo", WEB, origin="tui")
    assert Supervisor(twin).step(lambda g, c: None, threading.Event()).leading
    assert twin.follow_reason == "" and twin.overview().is_leader
    for process in (console, other, twin):
        process.close()


def test_a_daemon_with_an_edited_config_records_it_when_nobody_leads(tmp_path: Path) -> None:
    first = open_monitor(tmp_path, "conf", WEB)
    assert first.try_lead()
    edited = {**WEB, "db": (["127.0.0.3"], "5432")}
    # While a leader with the recorded settings lives, an edited copy follows...
    second = open_monitor(tmp_path, "edited", edited)
    assert not second.try_lead() and second.follow_reason
    assert "settings.changed" not in actions(first)
    second.close()
    first.close()
    # ...and once it has handed over, a daemon restarted with the edit records it and leads.
    third = open_monitor(tmp_path, "edited", edited)
    assert actions(third).count("settings.changed") == 1
    assert third.try_lead()
    third.close()


def test_quitting_mid_scan_hands_over_without_a_gap(tmp_path: Path) -> None:
    # Grace 5 s: a first run a few ms after the group appeared is not late.
    extra = "[daemon]\nlease_seconds = 2\ngap_grace_seconds = 5\n"
    leader = open_monitor(tmp_path, "conf", WEB, extra=extra, origin="tui", latency=5.0)
    follower = open_monitor(tmp_path, "conf", WEB, extra=extra, origin="tui")
    stop = threading.Event()
    # The first run completes (group never run: due at once).
    leader.scanner.latency = 0.0  # type: ignore[attr-defined]
    assert Supervisor(leader).step(lambda g, c: leader.run_cycle(group=g, cancel=c), stop).ran == [
        "web"
    ]
    assert not Supervisor(follower).step(lambda g, c: None, threading.Event()).leading
    # The next run starts and the operator quits in the middle of it.
    leader.scanner.latency = 5.0  # type: ignore[attr-defined]
    leader.scheduler.scan_now("web")

    def quit_soon() -> None:
        threading.Timer(0.3, stop.set).start()

    def run(group: str, cancel: threading.Event) -> None:
        quit_soon()
        assert leader.run_cycle(group=group, cancel=cancel).scan.outcome == "cancelled"

    assert Supervisor(leader).step(run, stop).ran == ["web"]
    leader.close()
    assert "leader.handover" in actions(follower)
    # The follower takes over at its next tick and runs the handed-back run at once.
    ran: list[str] = []

    def follow_run(group: str, cancel: threading.Event) -> None:
        ran.append(group)
        follower.run_cycle(group=group, cancel=cancel)

    result = Supervisor(follower).step(follow_run, threading.Event())
    assert result.leading and ran == ["web"]
    assert [f.details for f in gap_findings(follower)] == []  # type: ignore[attr-defined]
    assert "monitoring.gap" not in actions(follower)
    follower.close()


def test_a_gap_noticed_by_two_processes_is_one_finding(tmp_path: Path) -> None:
    extra = "[daemon]\nlease_seconds = 2\ngap_grace_seconds = 0\n"
    first = open_monitor(tmp_path, "conf", WEB, extra=extra)
    second = open_monitor(tmp_path, "conf", WEB, extra=extra)
    # A group never run is due at once; with no grace it is late a moment later.
    found: list[list[object]] = [[], []]
    barrier = threading.Barrier(2)

    def notice(index: int, monitor: Monitor) -> None:
        barrier.wait()
        for _ in range(20):
            found[index] += monitor.record_gaps()

    import time

    time.sleep(0.05)
    threads = [threading.Thread(target=notice, args=(i, m)) for i, m in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found[0]) + len(found[1]) == 1  # raised once, by whoever noticed first
    assert len(gap_findings(first)) == 1
    assert actions(first).count("monitoring.gap") == 1
    # The run finally starts: the closed gap folds into the same finding.
    assert first.try_lead()
    first.run_cycle(group="web")
    assert len(gap_findings(second)) == 1
    assert actions(first).count("monitoring.gap") == 2  # ongoing, then closed
    first.close()
    second.close()
