"""End to end at 80x24 in tmux: whole key sequences sent as one paste (one write to the
terminal, as over SSH) fill the approve form field by field, and a mistaken approval is
revoked from the palette, with the finding back in the queue. The demo runs with
separation_of_duties = false, so the approval needs no request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from portconsole.demo import DEMO_INTERVAL_SECONDS, DEMO_PORT_OFFSET
from tests.test_e2e_tmux import Tmux, _marked, _shows, demo, pytestmark, settled_services

__all__ = ["demo", "pytestmark"]

DRIFT_PORTS = (8081, 8081 + DEMO_PORT_OFFSET)  # the demo's, or its offset one


def paste(tmux: Tmux, text: str) -> None:
    """`text` in one write: tab and CR inside it are keys like any other."""
    subprocess.run(["tmux", "send-keys", "-t", tmux.session, "-l", text], check=True)


def approval_of(data_dir: Path, host: str, ports: tuple[int, ...]) -> str:
    """The id of the approval in force for host on one of `ports`, read with the CLI."""
    listed = subprocess.run(
        [sys.executable, "-m", "portconsole.cli", "--config", str(data_dir / "demo-config.toml")]
        + ["--data-dir", str(data_dir), "approvals", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return next(
        a["id"]
        for a in json.loads(listed.stdout)["approvals"]
        if a["host"] == host and a["port"] in ports
    )


def field_line(screen: str, label: str) -> str:
    line = next((row for row in screen.splitlines() if label in row), "")
    return line.split(label, 1)[1] if line else ""


def test_pasted_keys_fill_the_approve_form_and_a_revoke_brings_the_finding_back(
    demo: tuple[Tmux, Path],
) -> None:
    tmux, data_dir = demo
    tmux.wait_for(
        lambda s: _marked(s, "127.77.0.21"),
        timeout=DEMO_INTERVAL_SECONDS + 60,
        what="the drifted host to be marked unapproved",
    )
    tmux.keys("2")
    tmux.wait_for(lambda s: "Triage" in s and _shows(s, "127.77.0.21", 8081), 15, "the queue")
    paste(tmux, "/8081\r")  # filter and enter in one write
    tmux.wait_for(
        lambda s: "No open findings" not in s and s.splitlines()[-2].strip().startswith("8081"),
        10,
        "the filter, submitted",
    )
    settled_services(tmux)
    # The key that opens the form and everything typed into it, in one write.
    paste(tmux, "apublic web 2nd\tweb team\tcarol")
    screen = tmux.wait_for(lambda s: "carol" in s, 10, "the approve form, filled")
    assert field_line(screen, "Justification*").strip().startswith("public web 2nd"), screen
    assert field_line(screen, "Owner*").strip().startswith("web team"), screen
    assert field_line(screen, "Requested by").strip().startswith("carol"), screen
    assert "Triage" not in screen.splitlines()[0] or "Approve this port" in screen
    paste(tmux, "\r")
    tmux.wait_for(lambda s: "No rows match '8081'" in s, 15, "the approval")
    approval_id = approval_of(data_dir, "127.77.0.21", DRIFT_PORTS)

    # It was a mistake: revoke it from the palette; the finding is back in the queue.
    tmux.keys("C-p")
    tmux.wait_for(lambda s: "Search" in s or ">" in s, 10, "the palette")
    paste(tmux, "Revoke an approval")
    tmux.wait_for(lambda s: "Revoke an approval" in s, 10, "the revoke command")
    tmux.keys("Enter")
    tmux.wait_for(lambda s: "Reason*" in s, 10, "the revoke form")
    paste(tmux, f"{approval_id}\tapproved the wrong port\r")
    tmux.wait_for(
        lambda s: any(
            "unapproved_port" in row and "127.77.0.21:" in row and "new" in row
            for row in s.splitlines()
        ),
        15,
        "the finding back in the queue",
    )
