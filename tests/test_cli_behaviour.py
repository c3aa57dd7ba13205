"""A CLI that behaves: help and examples, --json everywhere, one exit-code table, completion
scripts that real shells load, and a config whose group targets leave scope refused."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portconsole.cli import EXIT_CODES, build_parser
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
# Commands that print no result to pipe on: the console, the demo, the daemon, and the
# completion script itself (its output is the script).
NO_RESULT = {"console", "demo", "daemon", "completion", "events", "export-xml", "metrics", "worker"}


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """(path, parser, has sub-commands) for every command and sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                nested = any(isinstance(a, argparse._SubParsersAction) for a in child._actions)
                yield (*path, name), child, nested
                yield from _commands(child, (*path, name))


def test_every_option_has_help_and_the_main_commands_examples() -> None:
    parser = build_parser()
    missing = [
        f"{' '.join(path)} {action.option_strings or action.dest}"
        for path, child, _nested in _commands(parser)
        for action in child._actions
        if not action.help
        and not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
    ]
    assert missing == []
    helps = {path: child.format_help() for path, child, _ in _commands(parser)}
    for name in ("scan", "state", "history", "findings", "report", "audit", "notify"):
        assert "examples:\n  portconsole " + name in helps[(name,)], name
    assert EXIT_CODES in parser.format_help()


def test_every_command_that_prints_a_result_takes_json() -> None:
    lacking = [
        " ".join(path)
        for path, child, nested in _commands(build_parser())
        if not nested
        and path[0] not in NO_RESULT
        and "--json" not in {o for a in child._actions for o in a.option_strings}
    ]
    assert lacking == []


def test_the_exit_code_table_is_documented_and_followed(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    for line in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"):
        assert line in doc
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nhosts: 7\n")
    lint = run_cli(tmp_path, "baseline", "lint", "--json", str(bad))
    assert lint.returncode == 1, lint.stderr  # a check that failed
    assert json.loads(lint.stdout)["ok"] is False
    usage = run_cli(tmp_path, "scan", "--ports", "", "127.0.0.2")
    assert usage.returncode == 2 and usage.stderr.startswith("portconsole: ")
    assert run_cli(tmp_path, "state", "--no-such-option").returncode == 2
    empty = run_cli(tmp_path, "notify", "test", "--json")
    assert empty.returncode == 2 and "[notify] urls" in empty.stderr


def test_results_as_json(tmp_path: Path) -> None:
    for args in (("notify", "status"), ("notify", "flush", "--wait", "1"), ("store", "check")):
        result = run_cli(tmp_path, *args, "--json")
        assert result.returncode == 0, result.stderr
        assert isinstance(json.loads(result.stdout), dict), args
    flushed = json.loads(run_cli(tmp_path, "notify", "flush", "--json").stdout)
    assert flushed["flush"] == {"delivered": 0, "failed": 0}


def _completion(shell: str, tmp_path: Path) -> Path:
    script = tmp_path / f"portconsole.{shell}"
    result = subprocess.run(
        [sys.executable, "-m", "portconsole", "completion", shell],
        capture_output=True,
        text=True,
        check=True,
    )
    script.write_text(result.stdout)
    return script


def test_bash_completion_loads_and_completes(tmp_path: Path) -> None:
    script = _completion("bash", tmp_path)
    probe = (
        f"source {script}; complete -p portconsole; "
        "COMP_WORDS=(portconsole sc); COMP_CWORD=1; COMP_LINE='portconsole sc'; "
        'COMP_POINT=${#COMP_LINE}; _shtab_portconsole; echo "words: ${COMPREPLY[*]}"; '
        "COMP_WORDS=(portconsole report --for); COMP_CWORD=2; COMP_LINE='portconsole report --for'; "
        'COMP_POINT=${#COMP_LINE}; _shtab_portconsole; echo "options: ${COMPREPLY[*]}"'
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "-F _shtab_portconsole portconsole" in result.stdout
    assert "words: scan" in result.stdout
    assert "options: --format" in result.stdout
    # A path option completes file names.
    assert "_shtab_compgen_files" in script.read_text()


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_is_valid_zsh(tmp_path: Path) -> None:
    script = _completion("zsh", tmp_path)
    result = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "#compdef portconsole" in script.read_text()


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completion_loads_and_completes(tmp_path: Path) -> None:
    script = _completion("fish", tmp_path)
    syntax = subprocess.run(["fish", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    probe = (
        f"source {script}; complete -C 'portconsole sc'; echo ---; "
        "complete -C 'portconsole report --fo'; echo ---; complete -C 'portconsole audit v'"
    )
    result = subprocess.run(["fish", "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    commands, options, actions = result.stdout.split("---")
    assert commands.split()[0] == "scan"
    assert "--format" in options
    assert actions.split()[0] == "verify"


def test_an_out_of_scope_group_target_is_refused_when_the_settings_load(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'scope = ["127.0.0.0/8"]\n[groups.dmz]\n'
        'targets = ["127.0.0.2", "db.internal", "127.0.0-1.1-9", "10.0.0.0/24"]\n'
    )
    result = run_cli(tmp_path, "paths")
    assert result.returncode == 2
    assert "groups.dmz.targets" in result.stderr and "10.0.0.0/24" in result.stderr
    assert "outside the configured scope" in result.stderr
    # A range that leaves scope at its end is refused too, naming the target as written.
    config.write_text('scope = ["127.0.0.0/8"]\n[groups.edge]\ntargets = ["126-127.0.0.1"]\n')
    result = run_cli(tmp_path, "paths")
    assert result.returncode == 2 and "'126-127.0.0.1'" in result.stderr
    # Names are resolved (and checked) per scan, not here; in-scope blocks pass at once.
    config.write_text(
        'scope = ["127.0.0.0/8"]\n[groups.ok]\ntargets = ["db.internal", "127.1.0.0/16"]\n'
    )
    assert run_cli(tmp_path, "paths").returncode == 0
