"""What every CLI command module shares: exit codes, examples, JSON and table output,
time-argument types and the Monitor a command opens.

The commands live in cli.py (the top, `main` and the parser) and in cli_scan.py,
cli_decisions.py, cli_records.py and cli_ops.py; each of those adds its commands to the
parser through the `add` (and `action`) helpers build_parser passes it.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from portconsole import logs
from portconsole.core.textsafe import terminal_safe
from portconsole.core.timeutil import iso, parse_until, parse_when

Handler = Callable[[argparse.Namespace], int]
# build_parser's `add(name, handler, help)`: a top-level command with examples and exit codes.
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]
# build_parser's `action(subparsers, name, help)`: a second-level command (`audit verify`).
AddAction = Callable[
    ["argparse._SubParsersAction[argparse.ArgumentParser]", str, str], argparse.ArgumentParser
]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = """exit codes:
  0    ok
  1    a check failed: audit verify, store check, baseline lint found problems; a scan
       failed; notify flush/test delivered nothing
  2    usage or input error: bad option, target, port spec, file or config (one line on
       stderr saying what to fix)
  3    partial: a scan covered less than planned; notify flush/test delivered some
  130  interrupted (Ctrl-C, SIGTERM)"""

# Shown under each command's --help (argparse epilog); the main commands have examples.
EXAMPLES: dict[str, str] = {
    "scan": """examples:
  portconsole scan 127.0.0.2-41 --ports 22,80,443
  portconsole scan --group web-tier --json > scan.json
  portconsole scan 127.0.0.0/24 --ports all --progress""",
    "state": """examples:
  portconsole state
  portconsole state --host 127.0.0.2 --json
  portconsole state --at 2026-05-27T00:00:00Z | head -20""",
    "history": """examples:
  portconsole history 127.0.0.2
  portconsole history 127.0.0.2:22
  portconsole history [::1]:8443/tcp --json""",
    "import": """examples:
  nmap -sV -p 1-1024 -oX scan.xml 127.0.0.0/24 && portconsole import scan.xml""",
    "findings": """examples:
  portconsole findings
  portconsole findings --all --json | jq '.findings[] | select(.severity == "high")'""",
    "report": """examples:
  portconsole report --at 2026-05-27 -o state.html
  portconsole report --from 2026-01-01 --to 2026-03-31 -o pack-2026-q1 --sign-key ~/.ssh/id_ed25519
  portconsole report --from 2026-01-01 --to 2026-03-31 --format csv -o q1.csv""",
    "audit": """examples:
  portconsole audit verify
  portconsole audit head            # publish the SEQ:HASH it prints
  portconsole audit verify --anchor 42:3f0c... --json""",
    "notify": """examples:
  portconsole notify status --json
  portconsole notify flush --wait 60
  portconsole notify test --tag ops""",
    "baseline": """examples:
  portconsole baseline lint baseline.yaml
  portconsole baseline import baseline.yaml
  portconsole baseline export -o baseline.yaml""",
    "completion": """examples:
  portconsole completion bash > ~/.local/share/bash-completion/completions/portconsole
  portconsole completion zsh > "${fpath[1]}/_portconsole"
  portconsole completion fish > ~/.config/fish/completions/portconsole.fish
  source <(portconsole completion bash)     # this shell only""",
    "daemon": """examples:
  portconsole daemon --log-format json
  systemctl start portconsole   # the hardened unit in the README runs exactly this""",
}


def _emit_json(data: Any) -> None:
    """One JSON document on stdout: indented on a terminal, compact (no whitespace between
    tokens) for a pipe or a file, where machines read it and the indenting cost most of the
    time of a large document. Keys, values and their order are the same either way."""
    if _stdout_is_terminal():
        text = json.dumps(data, indent=2, default=_json_default)
    else:
        text = json.dumps(data, separators=(",", ":"), default=_json_default)
    sys.stdout.write(text + "\n")


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def _result(args: argparse.Namespace, text: str, data: Any) -> None:
    """A command's result: `data` as JSON with --json, else `text` (one or more lines)."""
    if getattr(args, "json", False):
        _emit_json(data)
    else:
        print(text)


def _add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument(
        "--json", action="store_true", help=f"print {what} as one JSON document on stdout"
    )


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A plain aligned text table; every cell made terminal-safe."""
    cells = [[terminal_safe(c, 60) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return iso(value.replace(microsecond=0))


def _time_arg(text: str) -> datetime:
    """A typed time (`15:06`, `1h ago`, `yesterday 14:00`, ISO), UTC unless it has an offset."""
    try:
        return parse_when(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _end_time_arg(text: str) -> datetime:
    """An end time; a day alone means the end of that day (`--to 2026-03-31` includes it)."""
    try:
        return parse_until(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _date_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad date {text!r}: expected YYYY-MM-DD") from None


def _monitor(args: argparse.Namespace, *, origin: str = "cli", reads_only: bool = False) -> Any:
    """The Monitor for a command; `reads_only` commands open it read-only, so looking (or
    verifying the audit chain) never writes anything, not even a settings-change event."""
    readonly = reads_only or bool(getattr(args, "readonly", False))
    # The command's own process (see cli.main): importing the service layer and opening the
    # store allocate tens of thousands of objects kept for the process's life, which the
    # cyclic collector would walk ~70 times for nothing (10-15 ms of a short command).
    # Collection pauses for that step, and what it made moves to the permanent generation
    # (never walked again; reference counting still frees it). A caller's process (tests,
    # `main(argv)`) is left as it was.
    own_process = bool(getattr(args, "own_process", False))
    collecting = gc.isenabled()
    if own_process:
        gc.disable()
    try:
        from portconsole.core.monitor import Monitor

        monitor = Monitor.open(args.config, args.data_dir, origin=origin, readonly=readonly)
    finally:
        if own_process:
            gc.freeze()
            if collecting:
                gc.enable()
    logs.apply_settings(monitor.settings)
    for warning in monitor.warnings:
        print(f"portconsole: {warning}", file=sys.stderr)
    return monitor
