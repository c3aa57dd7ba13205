"""End to end: `portconsole demo --drift 0` in tmux at 80x24, driven with keys only.

The drifted port must show up highlighted within one scheduled cycle, and the operator
approves it with a justification from the triage queue; the finding leaves the queue.

The drift opens as the demo starts, so the first scheduled cycle finds it: opening it
later meant waiting a whole demo interval (a minute) for the second. That a port opening
between two scheduled scans is marked is proven without the wait by
tests/tui/test_background.py (test_a_port_opened_between_scheduled_scans_is_marked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from portconsole.demo import DEMO_INTERVAL_SECONDS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("tmux") is None, reason="tmux is not installed (make test installs it)"
    ),
]


class Tmux:
    def __init__(self, session: str) -> None:
        self.session = session

    def keys(self, *keys: str, pause: float = 0.4) -> None:
        # One key or word per call, with a pause, like a person typing: a burst of
        # keys sent in one write can reach the app before a dialog has taken focus.
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.session, key], check=True)
            time.sleep(pause)

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.session],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def wait_for(self, predicate: object, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if callable(predicate) and predicate(screen):
                return screen
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; screen was:\n{screen}")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Tmux, Path]]:
    session = f"pc-e2e-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "demo-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")}
    env |= {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
    }
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    command = f"{sys.executable} -m portconsole.cli demo --drift 0 --data-dir {data_dir}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command],
        check=True,
        env=env,
    )
    tmux = Tmux(session)
    try:
        yield tmux, data_dir
    finally:
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=False)
        # The session ends when the demo has quit (its fleet stopped); give it 5 s at most.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _session_alive(session):
            time.sleep(0.1)
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


def _session_alive(session: str) -> bool:
    found = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True)
    return found.returncode == 0


def _host_row(screen: str, address: str = "127.77.0.21") -> str | None:
    """The overview row of `address` (by default the host that drifts)."""
    for line in screen.splitlines():
        if address in line:
            return line
    return None


def _marked(screen: str, address: str) -> bool:
    row = _host_row(screen, address)
    return row is not None and row.lstrip().startswith("!")


def test_drift_is_seen_and_approved_with_keys_only(demo: tuple[Tmux, Path]) -> None:
    tmux, data_dir = demo
    # Within one scheduled cycle (the first, or at worst the next: the demo's interval plus
    # scan time), the drifted host shows two open ports, one unapproved, and the `!` marker.
    # The cycle scans one group at a time: wait for the legacy host's group too, so the
    # queue holds its telnet finding and the filter below has something to hide.
    tmux.wait_for(
        lambda s: _marked(s, "127.77.0.21") and _marked(s, "127.77.0.50"),
        timeout=DEMO_INTERVAL_SECONDS + 60,
        what="the drifted host and the legacy host to be marked unapproved",
    )
    row = _host_row(tmux.screen())
    assert row is not None and row.split()[3:5] == ["2", "1"], row

    tmux.keys("2")
    tmux.wait_for(lambda s: "8081" in s and "Triage" in s, 10, "the triage queue")
    tmux.keys("/")
    tmux.keys("8081", "Enter")
    screen = tmux.wait_for(
        lambda s: "127.77.0.21:8081" in s and "127.77.0.50:23" not in s, 10, "the filter"
    )
    tmux.keys("a")
    tmux.wait_for(lambda s: "Justification" in s, 10, "the approve form")
    screen = tmux.screen()
    assert "You are" in screen  # who is deciding is shown before confirming
    tmux.keys(
        "Debug",
        "Space",
        "endpoint",
        "Space",
        "for",
        "Space",
        "INC-42",
        "Tab",
        "app-team",
        "Tab",
        "dana",
    )
    tmux.keys("Enter", pause=1.0)
    tmux.wait_for(lambda s: "Justification" not in s, 15, "the form to close")
    tmux.keys("Escape")
    tmux.wait_for(
        lambda s: "127.77.0.50:23" in s and "127.77.0.21:8081" not in s,
        15,
        "the approved finding to leave the queue",
    )

    # The decision is in the real store and the audit chain.
    config = data_dir / "demo-config.toml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "portconsole.cli",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "findings",
            "--all",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    findings = json.loads(result.stdout)["findings"]
    drift = [f for f in findings if f["host"] == "127.77.0.21" and f["port"] in (8081, 18081)]
    assert [f["status"] for f in drift] == ["approved"]
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "portconsole.cli",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "audit",
            "verify",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout
