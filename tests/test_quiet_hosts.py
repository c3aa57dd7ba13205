"""A large range of hosts that answer with no open port (loopback answers on every address)
costs a bounded number of journal entries, while every host keeps its own history.

The cycles scan a ReplayScanner (tests/replay.py): the store, journal and detection are real.
"""

from __future__ import annotations

from pathlib import Path

from portconsole.core.domain.changes import address_block
from tests.replay import replay_monitor

QUIET_RANGE = "127.61.4.0/22"  # 1,022 usable addresses in 4 blocks
BUSY = "127.61.5.7"  # inside the range, with a port open


def _quiet_network() -> dict[str, dict[int, str]]:
    network: dict[str, dict[int, str]] = {
        f"127.61.{block}.{host}": {} for block in range(4, 8) for host in range(1, 255)
    }
    network[BUSY] = {22: "ssh"}
    return network


def _cycle_actions(monitor: object, scan_id: str) -> list[tuple[str, dict[str, object]]]:
    events = monitor.audit_events()  # type: ignore[attr-defined]
    return [
        (e.action, {**e.resource, **e.details})
        for e in events
        if e.action.startswith("change.") and e.resource.get("scan_id") == scan_id
    ]


def test_a_range_of_quiet_hosts_is_one_journal_entry_per_kind(tmp_path: Path) -> None:
    network = _quiet_network()
    monitor, replay = replay_monitor(tmp_path, network)
    quiet = sorted(a for a, ports in network.items() if not ports)

    first = monitor.run_cycle(targets=[QUIET_RANGE], ports="22,80")

    # What the scan says is unchanged: every host that came up is a change.
    ups = {c.host for c in first.changes if c.kind == "host_up"}
    assert ups == set(network)
    entries = _cycle_actions(monitor, first.scan.scan_id)
    # The busy host keeps its own entries; the 1,016 quiet ones are one summary.
    assert sorted(action for action, _ in entries) == [
        "change.host_up",
        "change.hosts_up",
        "change.port_opened",
    ]
    [summary] = [info for action, info in entries if action == "change.hosts_up"]
    assert summary["hosts"] == len(quiet)
    assert summary["open_ports"] == 0
    blocks: dict[str, int] = {}
    for address in quiet:
        blocks[address_block(address)] = blocks.get(address_block(address), 0) + 1
    assert summary["by_block"] == blocks
    [own] = [info for action, info in entries if action == "change.host_up"]
    assert own["host"] == BUSY

    # Every quiet host still has its own history and point-in-time answer.
    history = monitor.history(quiet[100], None, None)
    assert [e.kind for e in history] == ["host_up"]

    # All of them go quiet (down): again one summary, but the host holding an open port
    # (not closed: a down host covers no port) is named on its own.
    replay.set_network({})
    second = monitor.run_cycle(targets=[QUIET_RANGE], ports="22,80")
    downs = {c.host for c in second.changes if c.kind == "host_down"}
    assert downs == set(network)
    entries = _cycle_actions(monitor, second.scan.scan_id)
    assert sorted(action for action, _ in entries) == ["change.host_down", "change.hosts_down"]
    [summary] = [info for action, info in entries if action == "change.hosts_down"]
    assert summary["hosts"] == len(quiet)
    [own] = [info for action, info in entries if action == "change.host_down"]
    assert own["host"] == BUSY
    assert [e.kind for e in monitor.history(quiet[100], None, None)] == ["host_up", "host_down"]

    assert monitor.audit_verify().ok
