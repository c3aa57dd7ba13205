"""End to end, in tmux at 80x24: a console without the demo's config never leads.

The demo leads in one window. A second console is opened on the demo's data dir (named by
--data-dir) without the demo's config: no config file at all, so it has no groups. It may
show the data but must never lead (it would scan nothing while saying "leading"); its
header says it follows and why. When the demo quits (Ctrl-C, then y) and hands the lease
over, that console still does not take it: no scan starts, the header still says why, and
it writes nothing to the data dir's journal (no takeover, no settings change, no scan).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_e2e_tmux import Tmux, _ended, _session_alive, _start_demo, _with_env, pytestmark

__all__ = ["pytestmark"]

FOLLOWING = "○ following: settings differ"


def _events(data_dir: Path, config: Path) -> list[dict[str, Any]]:
    """Every audit event in the data dir, read through the CLI with the demo's config."""
    shown = subprocess.run(
        [sys.executable, "-m", "portconsole.cli", "--config", str(config)]
        + ["--data-dir", str(data_dir), "--readonly", "audit", "show", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    document = json.loads(shown.stdout)
    events = document["events"] if isinstance(document, dict) else document
    assert isinstance(events, list)
    return events


def _header(screen: str) -> str:
    return "\n".join(screen.splitlines()[:2])


@pytest.fixture
def demo_and_stranger(tmp_path: Path) -> Iterator[tuple[Tmux, Tmux, Path]]:
    """The demo in window "demo"; a console on its data dir with no config in "other"."""
    session = f"pc-e2e-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "demo-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")}
    env |= {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),  # empty: no config file there
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "TERM": "xterm-256color",
    }
    env.pop("NO_COLOR", None)
    demo_command = f"{sys.executable} -m portconsole.cli demo --drift 0 --data-dir {data_dir}"
    try:
        _start_demo(["-s", session, "-n", "demo"], demo_command, env, data_dir)
        other_command = f"{sys.executable} -m portconsole.cli --data-dir {data_dir} console"
        subprocess.run(
            ["tmux", "new-window", "-d", "-t", session, "-n", "other"]
            + [_with_env(other_command, env)],
            check=True,
            env=env,
        )
        yield Tmux(f"{session}:demo"), Tmux(f"{session}:other"), data_dir
    finally:
        for window in ("other", "demo"):
            subprocess.run(["tmux", "send-keys", "-t", f"{session}:{window}", "q"], check=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _session_alive(session):
            time.sleep(0.1)
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


def test_a_console_without_the_config_never_leads(
    demo_and_stranger: tuple[Tmux, Tmux, Path],
) -> None:
    demo, other, data_dir = demo_and_stranger
    config = data_dir / "demo-config.toml"
    size = subprocess.run(
        ["tmux", "display", "-p", "-t", other.session, "#{window_width}x#{window_height}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert size == "80x24"

    # While the demo leads, the other console follows and says why in its header.
    started = time.monotonic()
    screen = other.wait_for(lambda s: FOLLOWING in _header(s), 20, "the follower's reason")
    assert "● leading" not in screen
    # The demo's header says it leads once its first round of scans is over (~30 s).
    demo.wait_for(lambda s: "● leading" in _header(s), 40, "the demo to lead")
    print(f"the demo leads (between scans) after {time.monotonic() - started:.1f} s")

    # The demo quits and hands the lease over: Ctrl-C, then y.
    demo.keys("C-c")
    demo.wait_for(lambda s: "leads the scheduled scans" in s, 10, "the quit question")
    demo.keys("y")
    deadline = time.monotonic() + 10
    while not _ended(demo.session) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ended(demo.session), "the demo did not quit after y"
    events = _events(data_dir, config)
    assert events[-1]["action"] == "leader.handover", events[-1]
    # Only the demo recorded settings (the other console has none to record).
    settings = [e for e in events if e["action"].startswith("settings.")]
    assert [e["action"] for e in settings] == ["settings.recorded"], settings
    assert settings[0]["details"]["config"] == str(config)

    # The lease is free now: the other console asks to lead every second (it would take
    # over within one) and must refuse every time, and say why.
    watch_until = time.monotonic() + 12
    while time.monotonic() < watch_until:
        screen = other.screen()
        header = _header(screen)
        assert "● leading" not in header and "▶ scanning" not in header, screen
        assert FOLLOWING in header, screen
        time.sleep(0.5)

    # Nothing written on its behalf: no takeover, no settings change, no scan.
    after = _events(data_dir, config)[len(events) :]
    assert after == [], [e.get("action") or e.get("type") for e in after]
