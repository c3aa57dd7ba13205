"""Shared fixtures: isolated config and data dirs, a Monitor on a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user's config or data."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for name in list(__import__("os").environ):
        if name.startswith("PORTCONSOLE_"):
            monkeypatch.delenv(name)


def write_config(
    path: Path, groups: dict[str, tuple[list[str], str]] | None = None, extra: str = ""
) -> Path:
    """A config with loopback scope, fast scan settings and the given groups."""
    lines = [
        'scope = ["127.0.0.0/8"]',
        "",
        "[scan]",
        "timing = 4",
        "workers = 4",
        "batch_timeout = 60.0",
        "confirm_probes = 1",
        "",
    ]
    for name, (targets, ports) in (groups or {}).items():
        quoted = ", ".join(f'"{t}"' for t in targets)
        lines += [
            f"[groups.{name}]",
            f"targets = [{quoted}]",
            f'ports = "{ports}"',
            "interval = 60",
            "jitter = 0",
            "",
        ]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Iterator[Path]:
    yield write_config(tmp_path / "config.toml")


# The longest tests, each with its rough time in seconds on the 2-core machine
# (`pytest --durations=20`). They run first, longest first, so that under `make unit`
# (`pytest -n 2 --maxschedchunk=1`) the two workers start them at once and share the
# short tests out at the end, instead of one worker meeting two of them last. In a serial
# run the order changes nothing. A test missing here only costs time, never correctness.
_LONGEST_FIRST = {
    "tests/test_crash_journal.py::test_kill_9_at_random_points_of_scan_import_and_approve": 55,
    "tests/test_e2e_tmux.py::test_a_follower_shows_the_drift_alert_within_interval_plus_10s": 55,
    "tests/test_e2e_tmux.py::test_drift_is_seen_and_approved_with_keys_only": 34,
    "tests/test_store_crash.py::test_four_processes_writing_at_once_lose_nothing": 21,
    "tests/test_store_crash.py::test_kill_9_during_ingest_loses_no_acknowledged_scan": 13,
    "tests/test_daemon.py::test_daemon_stopped_longer_than_interval_leaves_a_gap": 13,
    "tests/test_sites_broker.py::test_stopped_site_is_a_gap_for_that_site_only_and_a_broker_down_too": 18,
    "tests/test_scanner.py::test_demo_listeners_are_identified_by_nmap": 6,
    "tests/test_daemon.py::test_two_daemons_one_leader_and_takeover": 4,
    "tests/test_cli.py::test_scan_json_triage_and_audit": 3,
    "tests/test_secrets_apprise.py::test_no_secret_in_any_output_or_file": 60,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: -_LONGEST_FIRST.get(item.nodeid, 0))  # stable for the rest
