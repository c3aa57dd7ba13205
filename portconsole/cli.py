"""The headless CLI: every console action has a twin here, for cron, systemd and scripts.

Every command that prints a result takes `--json` (one JSON document on stdout). Exit codes
follow one table (EXIT_CODES, shown in `--help` and docs/cli.md): 0 ok, 1 a check failed,
2 a usage or input error (one line on stderr), 3 partial, 130 interrupted.

This module holds `main`, the parser's top (common options, the `add` and `action` helpers)
and the commands that open things (console, demo, paths, daemon, completion). The other
commands live by concern in cli_scan.py, cli_decisions.py, cli_records.py and cli_ops.py;
what they share (output, time arguments, the Monitor, EXIT_CODES) is cli_common.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from portconsole import __version__, logs
from portconsole.cli_common import (
    EXAMPLES,
    EXIT_CODES,
    Handler,
    _add_json,
    _emit_json,
    _monitor,
)
from portconsole.cli_decisions import add_decision_commands
from portconsole.cli_ops import add_ops_commands
from portconsole.cli_records import add_record_commands, add_report_commands
from portconsole.cli_scan import add_scan_commands
from portconsole.cli_sites import add_site_commands
from portconsole.core.errors import UserError
from portconsole.core.textsafe import terminal_safe

# ----- commands -----------------------------------------------------------------------


def cmd_paths(args: argparse.Namespace) -> int:
    from portconsole.core.settings import load_settings

    _, paths = load_settings(args.config, args.data_dir)
    rows = paths.as_rows()
    if args.json:
        _emit_json({name: value for name, value in rows})
    else:
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name.ljust(width)}  {value}")
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from portconsole.daemon import run_daemon

    return run_daemon(_monitor(args, origin="daemon"), metrics=getattr(args, "metrics", None))


def cmd_demo(args: argparse.Namespace) -> int:
    from portconsole.demo_cli import run_demo

    return run_demo(args)


def cmd_console(args: argparse.Namespace) -> int:
    monitor = _monitor(args, origin="tui")
    from portconsole.tui.app import run_console

    try:
        return run_console(monitor, theme=getattr(args, "theme", None))
    finally:
        monitor.close()


def cmd_completion(args: argparse.Namespace) -> int:
    from portconsole.completion import completion_script

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return 0


# ----- parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="config file (env PORTCONSOLE_CONFIG)",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="data dir (env PORTCONSOLE_DATA_DIR)",
    )
    common.add_argument(
        "--readonly", action="store_true", default=argparse.SUPPRESS, help="refuse every write"
    )
    logs.add_options(common)

    parser = argparse.ArgumentParser(
        prog="portconsole",
        description="Continuous port monitoring that proves compliance. Without a command, "
        "opens the console.\nEvery command that prints a result takes --json; "
        "`portconsole COMMAND --help` shows its options and examples.",
        epilog="""examples:
  portconsole demo                          # a loopback fleet and the console on it
  portconsole scan 127.0.0.2-41 --ports 22,80
  portconsole findings --json
  portconsole audit verify
  source <(portconsole completion bash)     # completion for bash, zsh or fish

"""
        + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"portconsole {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        epilog = "\n\n".join(x for x in (EXAMPLES.get(name), EXIT_CODES) if x)
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        p.set_defaults(handler=handler)
        return p

    def action(
        actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
    ) -> argparse.ArgumentParser:
        """A second-level command (`audit verify`), with the exit codes under its --help."""
        return actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )

    p = add("console", cmd_console, "open the operator console (the default)")
    p.add_argument("--theme", help="theme name (see `portconsole paths`); remembered for next time")

    p = add("demo", cmd_demo, "start the loopback demo fleet and open the console on it")
    p.add_argument(
        "--drift",
        type=float,
        metavar="SECONDS",
        help="open an unapproved port on one host after SECONDS",
    )
    p.add_argument(
        "--no-tui", action="store_true", help="run one scan cycle, print it, stop the fleet"
    )
    p.add_argument("--keep", action="store_true", help="keep the demo data from an earlier run")

    p = add("paths", cmd_paths, "print every config and data path in use")
    _add_json(p, "the paths (the same names as the text)")

    # scan, state, history, import, findings (portconsole/cli_scan.py)
    add_scan_commands(add)

    # ack, request, approve, requests, approvals, review, close, reopen, revoke, flag,
    # accept-risk, note (portconsole/cli_decisions.py)
    add_decision_commands(add)

    # baseline, audit, store, notify (portconsole/cli_records.py)
    add_record_commands(add, action)

    p = add("daemon", cmd_daemon, "run scheduled scans until SIGTERM or Ctrl-C")
    # metrics, events, export-xml, and the daemon's --metrics (portconsole/cli_ops.py)
    add_ops_commands(add, daemon=p)

    # report, prune (portconsole/cli_records.py)
    add_report_commands(add)

    # worker --site NAME (portconsole/cli_sites.py)
    add_site_commands(add)

    p = add("completion", cmd_completion, "print a shell completion script (bash, zsh or fish)")
    p.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell to complete in")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure_from_args(args)
    for name in ("config", "data_dir", "readonly"):
        if not hasattr(args, name):
            setattr(args, name, None if name != "readonly" else False)
    handler: Handler = getattr(args, "handler", cmd_console)
    try:
        code = handler(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`portconsole state | head -1`): that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as error:
        print(f"portconsole: {terminal_safe(str(error), 500)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("portconsole: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        # A path the user named cannot be written or read (e.g. -o into a missing folder).
        where = f" {error.filename}" if error.filename else ""
        print(f"portconsole: cannot use{where}: {error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
