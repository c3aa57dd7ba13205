"""The CLI in a pipeline: a reader that goes away early is not an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from portconsole.core.adapters.journal import AuditEntry, AuditLog
from portconsole.core.adapters.storage import DataLock
from portconsole.core.identity import Actor


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
