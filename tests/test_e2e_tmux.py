"""End to end: `portconsole demo --drift 0` in tmux at 80x24, driven with keys only.

The drifted port must show up highlighted within one scheduled cycle, and the operator
approves it with a justification from the triage queue; the finding leaves the queue.

The drift opens as the demo starts, so the first scheduled cycle finds it. A port opening
between two scheduled scans is tested below with a second console: the test opens the drift
port itself once the follower is ready, and the follower (which never scans) must show the
alert within the interval + 10 s.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from portconsole.demo import DEMO_INTERVAL_SECONDS, DEMO_PORT_OFFSET, DRIFT

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
        shown = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.session],
            capture_output=True,
            text=True,
            check=False,
        )
        if shown.returncode != 0:
            raise AssertionError(
                f"tmux session {self.session} is gone: the program in it quit "
                f"({shown.stderr.strip()})"
            )
        return shown.stdout

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
    _start_demo(["-s", session], command, env, data_dir)
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


# What a console run here may see of the environment (everything else is dropped).
_PASSED = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM")


def _with_env(command: str, env: dict[str, str]) -> str:
    """`command` run with exactly `env`'s PATH, HOME... and its XDG_ and PORTCONSOLE_ vars.

    A tmux session started while the tmux server already runs (another test's session)
    gets the server's environment, not the one tmux was called with: without this, a
    second console would read the first test's XDG dirs, or no PORTCONSOLE_DATA_DIR.
    """
    chosen = {
        k: v for k, v in env.items() if k in _PASSED or k.startswith(("XDG_", "PORTCONSOLE_"))
    }
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(chosen.items()))
    return f"env -i {assignments} {command}"


def settled_services(tmux: Tmux) -> None:
    """Wait until the console's header no longer says it is identifying ports (the cycle's
    background -sV): an approval made before -sV names a port's service expects nmap's
    port-table guess, and -sV naming another service then raises a service_changed finding
    on the port just approved."""
    tmux.wait_for(
        lambda s: bool(s) and "identifying" not in s.splitlines()[0], 120, "-sV to finish"
    )


def _start_demo(session_args: list[str], command: str, env: dict[str, str], data: Path) -> None:
    """Start a demo in a new 80x24 tmux session, one demo at a time until its fleet is up.

    Two demos starting at once (the two tests here, under `-n 2`) race for the same ports
    and can both lose, on the real ports and on the offset ones. A demo writes its config
    only once its fleet listens, so the lock is held until that file exists.
    """
    config = data / "demo-config.toml"
    with open(Path(tempfile.gettempdir()) / "portconsole-e2e-demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # A demo that fails (a traceback, a non-zero status) keeps its pane for a minute,
        # so the test's next look at the screen shows why instead of "no server running".
        kept = (
            f"{_with_env(command, env)}; status=$?; if [ $status -ne 0 ]; then "
            'echo "the demo exited with status $status"; sleep 60; fi'
        )
        subprocess.run(
            ["tmux", "new-session", "-d", *session_args, "-x", "80", "-y", "24"]
            + ["sh -c " + shlex.quote(kept)],
            check=True,
            env=env,
        )
        deadline = time.monotonic() + 20
        while not config.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
    if not config.is_file():
        shown = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session_args[1]], capture_output=True, text=True
        )
        raise AssertionError(f"the demo did not write {config}; its screen:\n{shown.stdout}")


def _wait_for_lease(lease: Path, timeout: float) -> None:
    """Wait until `lease` (a data dir's leader.json) names a holder that has not let go."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            held = json.loads(lease.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            held = {}
        if held.get("holder") and not held.get("released_at"):
            return
        time.sleep(0.1)
    raise AssertionError(f"nobody took the lease in {lease} within {timeout:.0f} s")


def _session_alive(session: str) -> bool:
    found = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True)
    return found.returncode == 0


def _host_row(screen: str, address: str = "127.77.0.21") -> str | None:
    """The overview row of `address` (by default the host that drifts), not the banner."""
    for line in screen.splitlines():
        if address in line and not line.lstrip().startswith("▲"):
            return line
    return None


def _shows(screen: str, address: str, port: int) -> bool:
    """`address:port/` is on screen, at the demo's port or its offset one (when another
    demo, say the test beside this one, holds the real ports)."""
    return any(f"{address}:{p}/" in screen for p in (port, port + DEMO_PORT_OFFSET))


def _marked(screen: str, address: str) -> bool:
    row = _host_row(screen, address)
    return row is not None and row.lstrip().startswith("!")


def test_drift_is_seen_and_approved_with_keys_only(demo: tuple[Tmux, Path]) -> None:
    tmux, data_dir = demo
    # Within one scheduled cycle (the first, or at worst the next: the demo's interval plus
    # scan time), the drifted host shows two open ports, one unapproved, and the `!` marker.
    # Wait for the legacy host's group too, so the queue holds its telnet finding and the
    # filter below has something to hide.
    tmux.wait_for(
        lambda s: _marked(s, "127.77.0.21") and _marked(s, "127.77.0.50"),
        timeout=DEMO_INTERVAL_SECONDS + 60,
        what="the drifted host and the legacy host to be marked unapproved",
    )
    # Groups scan in parallel: the toasts of both first cycles may cover the row's right
    # half for a few seconds, as they would an operator's.
    tmux.wait_for(
        lambda s: (row := _host_row(s)) is not None and row.split()[3:5] == ["2", "1"],
        15,
        "the drifted host's row to read 2 open ports, 1 unapproved",
    )

    # The findings the demo's scans raised are alerts: `!` opens them in triage.
    tmux.wait_for(lambda s: "! to view" in s and "unseen" in s, 10, "the alert banner")
    tmux.keys("!")
    tmux.wait_for(
        lambda s: "8081" in s and "Triage" in s and "! to view" not in s, 10, "the triage queue"
    )
    tmux.keys("/")
    tmux.keys("8081", "Enter")
    screen = tmux.wait_for(
        lambda s: _shows(s, "127.77.0.21", 8081) and not _shows(s, "127.77.0.50", 23),
        10,
        "the filter",
    )
    settled_services(tmux)
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
        lambda s: _shows(s, "127.77.0.50", 23) and not _shows(s, "127.77.0.21", 8081),
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


def _ended(target: str) -> bool:
    """The window running `target` has gone (its program quit)."""
    found = subprocess.run(
        ["tmux", "list-windows", "-a", "-F", "#{session_name}:#{window_name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return target not in found.stdout.split()


@pytest.fixture
def two_consoles(tmp_path: Path) -> Iterator[tuple[Tmux, Tmux, Path]]:
    """`demo` in one window (the data dir given by PORTCONSOLE_DATA_DIR only), and a
    second console on the same config and data dir in another: a follower."""
    session = f"pc-e2e-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "demo-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")}
    env |= {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "TERM": "xterm-256color",
        "PORTCONSOLE_DATA_DIR": str(data_dir),
    }
    env.pop("NO_COLOR", None)
    # No --drift: the test opens the drift port itself, when it is ready to time the alert
    # (a timer in the demo could fire before the follower's first alerts were dismissed).
    demo_command = f"{sys.executable} -m portconsole.cli demo"
    config = data_dir / "demo-config.toml"
    try:
        # Named by PORTCONSOLE_DATA_DIR only: the demo must honour it.
        _start_demo(["-s", session, "-n", "demo"], demo_command, env, data_dir)
        # The second console starts once the demo holds the lease: started sooner, it could
        # take the lead itself (whichever console asks first leads), and this test is about
        # a follower. (The demo's header says "leading" only after its first round.)
        _wait_for_lease(data_dir / "leader.json", 20)
        follower_command = (
            f"{sys.executable} -m portconsole.cli --config {config} --data-dir {data_dir} console"
        )
        subprocess.run(
            ["tmux", "new-window", "-d", "-t", session, "-n", "follower"]
            + [_with_env(follower_command, env)],
            check=True,
            env=env,
        )
        yield Tmux(f"{session}:demo"), Tmux(f"{session}:follower"), data_dir
    finally:
        for window in ("follower", "demo"):
            subprocess.run(["tmux", "send-keys", "-t", f"{session}:{window}", "q"], check=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _session_alive(session):
            time.sleep(0.1)
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


def test_a_follower_shows_the_drift_alert_within_interval_plus_10s(
    two_consoles: tuple[Tmux, Tmux, Path],
) -> None:
    demo, follower, data_dir = two_consoles
    size = subprocess.run(
        ["tmux", "display", "-p", "-t", follower.session, "#{window_width}x#{window_height}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert size == "80x24"
    # The demo leads and scans; its header says "leading" once its first round of sweeps
    # is over, and the follower's stops saying "identifying" once that round's -sV is done
    # (-sV can raise a finding's severity: an alert). Nothing new is raised after that
    # until the drift.
    demo.wait_for(lambda s: "● leading" in s[: s.find("\n")], 90, "the demo's first round")
    screen = follower.wait_for(
        lambda s: _marked(s, "127.77.0.50"), 30, "the follower to show the legacy host"
    )
    assert "● leading" not in screen
    settled_services(follower)
    # Whatever the follower alerted on so far (findings raised after it started) is seen
    # (`!` opens triage and marks every alert seen), so the banner below is the drift's.
    follower.keys("!")
    follower.wait_for(lambda s: "Triage" in s and "! to view" not in s, 10, "alerts seen")
    follower.keys("1")
    # The demo's own drift port: the offset one when another demo holds the real ports.
    ports = (data_dir / "demo-config.toml").read_text(encoding="utf-8")
    shifted = str(DRIFT.port + DEMO_PORT_OFFSET) in ports
    drift = (DRIFT.address, DRIFT.port + (DEMO_PORT_OFFSET if shifted else 0))
    # The drift port, opened now by the test (a listening socket: nmap sees it open).
    with socket.create_server(drift) as _listener:
        opened_at = time.monotonic()
        target = f"{drift[0]}:{drift[1]}/tcp"
        budget = DEMO_INTERVAL_SECONDS + 10
        screen = follower.wait_for(
            lambda s: "! to view" in s and target in s, budget + 5, "the drift's banner"
        )
        took = time.monotonic() - opened_at
    print(f"port open -> banner on the follower: {took:.1f} s (budget {budget} s)")
    assert took <= budget, f"the alert took {took:.1f} s, over {budget} s:\n{screen}"
    assert "▲ 1 unseen" in screen and "NEW" in screen

    # Ctrl-C quits: the follower at once, the leading demo after a y/n.
    follower.keys("C-c")
    # Quitting may wait for a store read in flight while the demo writes (seen under CI load).
    deadline = time.monotonic() + 15
    while not _ended(follower.session) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ended(follower.session), f"Ctrl-C did not quit the follower:\n{follower.screen()}"
    demo.keys("C-c")
    demo.wait_for(lambda s: "leads the scheduled scans" in s, 10, "the quit question")
    demo.keys("y")
    deadline = time.monotonic() + 10
    while not _ended(demo.session) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ended(demo.session), "the demo did not quit after y"
    assert (data_dir / "journal").is_dir()  # the demo used PORTCONSOLE_DATA_DIR
