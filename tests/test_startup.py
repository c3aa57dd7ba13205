"""The fixed cost of a command: light commands do not import what only others need.

Each check runs the real CLI in a fresh interpreter with `-X importtime` and reads the
modules it imported from stderr (one line per module), so a heavy import that creeps back
to module level (Textual, apprise, rich, prometheus_client, the evidence-pack builder)
fails here by name, whatever the machine's speed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_config

DATA = Path(__file__).parent / "data"
# Never needed by --help, --version, state or findings (the console, notifications,
# metrics and evidence packs import them when they run).
HEAVY = (
    "textual",
    "apprise",
    "rich",
    "prometheus_client",
    "portconsole.tui",
    "portconsole.core.services.evidence_pack",
    "portconsole.core.services.report",
)
# Not needed either to print help or the version: no settings, no store.
NOT_FOR_HELP = (*HEAVY, "pydantic", "tinydb", "nmap", "portconsole.core.monitor")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")


def imported_modules(tmp_path: Path, *args: str) -> set[str]:
    """The modules `portconsole ARGS` imports (it must exit 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "portconsole", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = {
        match.group(1)
        for match in map(_IMPORT_LINE.match, result.stderr.splitlines())
        if match is not None
    }
    assert "portconsole.cli" in modules  # the reading above works
    return modules


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of `names` (packages: any submodule counts) were imported."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


@pytest.fixture
def store_args(tmp_path: Path) -> list[str]:
    """--config and --data-dir of a small store (one imported nmap report)."""
    config = write_config(tmp_path / "config.toml")
    args = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    result = subprocess.run(
        [sys.executable, "-m", "portconsole", *args, "import", str(DATA / "nmap_loopback.xml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return args


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["scan", "--help"]])
def test_help_and_version_import_no_settings_store_or_ui(tmp_path: Path, args: list[str]) -> None:
    assert loaded(imported_modules(tmp_path, *args), NOT_FOR_HELP) == []


@pytest.mark.parametrize("command", [["state", "--json"], ["findings", "--json"], ["state"]])
def test_reading_the_store_imports_no_ui_notifier_metrics_or_pack(
    tmp_path: Path, store_args: list[str], command: list[str]
) -> None:
    modules = imported_modules(tmp_path, *store_args, *command)
    assert "portconsole.core.monitor" in modules  # it did open the store
    assert loaded(modules, HEAVY) == []
