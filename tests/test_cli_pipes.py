"""The CLI in a pipeline: a reader that goes away early is not an error."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from portconsole.core.adapters.journal import AuditEntry, AuditLog
from portconsole.core.adapters.storage import DataLock
from portconsole.core.identity import Actor

DATA = Path(__file__).parent / "data"


def test_a_closed_pipe_ends_quietly_with_exit_0(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = AuditLog(data, DataLock(data / "store.lock"))
    actor = Actor(user="alice", host="h", origin="cli")
    # Far more output than a pipe buffer holds, so the writer does meet the closed pipe.
    log.append_many([AuditEntry("finding.note", actor, details={"i": i}) for i in range(4000)])
    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n')
    command = [sys.executable, "-m", "portconsole.cli", "--config", str(config)]
    command += ["--data-dir", str(data), "audit", "show"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    code = proc.wait(timeout=60)
    errors = proc.stderr.read().decode()
    assert first.strip(), errors
    assert code == 0, errors
    assert "Broken pipe" not in errors and "Traceback" not in errors


def _run_cli(args: list[str], *, terminal: bool) -> str:
    """The CLI's stdout, written into a pipe or into a pseudo-terminal."""
    if not terminal:
        result = subprocess.run(
            [sys.executable, "-m", "portconsole", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return result.stdout
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "portconsole", *args], stdout=secondary, stderr=subprocess.PIPE
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_json_is_compact_in_a_pipe_and_indented_on_a_terminal(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n')
    common = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    _run_cli([*common, "import", str(DATA / "nmap_loopback.xml")], terminal=False)
    for command in (["findings", "--json"], ["state", "--json"], ["paths", "--json"]):
        piped = _run_cli([*common, *command], terminal=False)
        shown = _run_cli([*common, *command], terminal=True)
        # a terminal: indented; a pipe: the same document with no whitespace between tokens
        # (only whitespace differs: the same keys, values and order)
        assert shown.startswith("{\n  ") and shown.count("\n") > 3, shown[:300]
        assert piped.count("\n") == 1 and '": ' not in piped, piped[:300]
        assert json.dumps(json.loads(shown), separators=(",", ":")) + "\n" == piped
        assert json.dumps(json.loads(piped), indent=2) + "\n" == shown
