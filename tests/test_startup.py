"""The fixed cost of a command: light commands do not import what only others need.

Each check runs the real CLI in a fresh interpreter with `-X importtime` and reads the
modules it imported from stderr (one line per module), so a heavy import that creeps back
to module level (Textual, apprise, rich, prometheus_client, the evidence-pack builder)
fails here by name, whatever the machine's speed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from portconsole.cli import build_parser, command_named
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
# The nmap report reader (defusedxml) and process runner: only a scan or an import runs them.
NMAP_RUNNING = (
    "defusedxml",
    "subprocess",
    "portconsole.core.adapters.nmap_parse",
    "portconsole.core.adapters.nmap_output",
    "portconsole.core.adapters.nmap_process",
)
# Not needed either to print help or the version: no settings, no store.
NOT_FOR_HELP = (*HEAVY, "msgspec", "tinydb", "nmap", "portconsole.core.monitor")
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
    assert loaded(modules, NMAP_RUNNING) == []


# The modules of the commands' handlers (cli.py imports one only to parse its commands).
COMMAND_MODULES = (
    "portconsole.cli_scan",
    "portconsole.cli_decisions",
    "portconsole.cli_records",
    "portconsole.cli_ops",
    "portconsole.cli_sites",
)


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (["--version"], []),
        (["scan", "--help"], ["portconsole.cli_scan"]),
        (["approve", "--help"], ["portconsole.cli_decisions", "portconsole.cli_scan"]),
    ],
)
def test_a_command_imports_the_handlers_of_its_own_and_earlier_commands_only(
    tmp_path: Path, args: list[str], wanted: list[str]
) -> None:
    assert loaded(imported_modules(tmp_path, *args), COMMAND_MODULES) == wanted


def test_the_state_command_imports_no_other_commands_handlers(
    tmp_path: Path, store_args: list[str]
) -> None:
    modules = imported_modules(tmp_path, *store_args, "state")
    assert loaded(modules, COMMAND_MODULES) == ["portconsole.cli_scan"]
    # Only a settings change (recorded by the import above) reads the settings' definitions.
    assert loaded(modules, ("portconsole.core.domain.settings_history",)) == []


# Command lines parsed by the one-command parser and by the whole one: same outcome.
PARSED = [
    ["scan", "127.0.0.2", "--ports", "22", "--json"],
    ["--config", "c.toml", "--log-level", "debug", "state", "--json"],
    ["--readonly", "findings"],
    ["scan", "--bogus"],
    ["scan", "--version"],
    ["state", "extra"],
    ["audit", "verify", "--json"],
    ["audit"],
    ["daemon", "--metrics", "127.0.0.1:9100"],
    ["worker", "--site", "pci"],
    ["completion", "tcsh"],
    ["note"],
    ["scna"],
    ["--version"],
    ["--version", "scan"],
    ["--bogus", "--version"],
    ["-h", "scan"],
    ["--version", "-h"],
    ["--log-level", "loud", "scan"],
    ["--config"],
    [],
]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[object, ...]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return ("parsed", vars(parser.parse_args(argv)), out.getvalue(), err.getvalue())
        except SystemExit as stop:
            return ("exit", stop.code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("argv", PARSED, ids=" ".join)
def test_the_one_command_parser_parses_as_the_whole_parser(argv: list[str]) -> None:
    assert _parse(build_parser(command_named(argv)), argv) == _parse(build_parser(), argv)


def _commands_in(parser: argparse.ArgumentParser) -> list[str]:
    return [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]


def test_a_command_line_builds_its_commands_parser_only() -> None:
    every = _commands_in(build_parser())
    assert len(every) > 30 and "scan" in every and "worker" in every
    for name in every:
        assert _commands_in(build_parser(command_named([name, "--json"]))) == [name]
    assert _commands_in(build_parser(command_named(["--version"]))) == []
    assert _commands_in(build_parser(command_named(["scna"]))) == every  # the real error
    assert _commands_in(build_parser(command_named(["-h", "scan"]))) == every


def test_only_the_commands_own_process_tunes_the_garbage_collector(
    tmp_path: Path, store_args: list[str]
) -> None:
    """`portconsole` (argv from sys.argv) opens the Monitor with the collector paused and
    freezes what it made, then freezes everything before exiting (shutdown would walk it
    all again); `main(argv)` called by other code leaves the caller's collector alone."""
    code = (
        "import gc, io, sys\n"
        "from contextlib import redirect_stdout\n"
        "from portconsole.cli import main\n"
        "before = gc.get_freeze_count()\n"
        f"args = [*{store_args!r}, 'state', '--json']\n"
        "with redirect_stdout(io.StringIO()):\n"
        "    assert main(args) == 0\n"
        "called = (gc.get_freeze_count() == before, gc.isenabled())\n"
        "sys.argv = ['portconsole', *args]\n"
        "with redirect_stdout(io.StringIO()):\n"
        "    assert main() == 0\n"
        "print(called, (gc.get_freeze_count() > before, gc.isenabled()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[0] == "(True, True) (True, True)"


def test_the_core_defines_its_records_as_structs() -> None:
    """Every command loads the core's ~80 record types: as dataclasses they cost ~50 ms of
    each start-up (each generated method compiled at import), as msgspec Structs ~2 ms. Only
    chain.py keeps dataclasses: it ships in the evidence pack's standard-library checker."""
    core = Path(__file__).resolve().parents[1] / "portconsole" / "core"
    with_dataclasses = sorted(
        str(path.relative_to(core))
        for path in core.rglob("*.py")
        if re.search(r"^@dataclass\b", path.read_text(encoding="utf-8"), re.M)
    )
    assert with_dataclasses == ["domain/chain.py"]
