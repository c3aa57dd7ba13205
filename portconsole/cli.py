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
import functools
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, cast

from portconsole import __version__, logs
from portconsole.cli_common import (
    EXAMPLES,
    EXIT_CODES,
    Handler,
    _add_json,
    _emit_json,
    _monitor,
)
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


class _Unbuilt:
    """Stands in for the parser of a command this run does not parse: every call on it
    (add_argument, set_defaults, add_subparsers, add_parser, ...) is accepted and builds
    nothing. Building all ~40 command parsers is most of a light command's parse time."""

    def __getattr__(self, name: str) -> Callable[..., _Unbuilt]:
        return lambda *args, **kwargs: self


class _Undecided(Exception):
    """The pre-parse could not tell the command: the whole parser decides (and reports)."""


class _PreParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Undecided(message)


@functools.cache
def _common_options() -> argparse.ArgumentParser:
    """The options every command and the top level take (the `parents` of each parser, which
    only copy from it: one is built per process)."""
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
    return common


def command_named(argv: Sequence[str]) -> str | None:
    """The command `argv` runs, when parsing it needs that command's parser only ("" for the
    top level's --version, which needs none); None when it names no command, or asks the top
    level for --help (which lists every command), or when the options before it do not parse."""
    pre = _PreParser(add_help=False, parents=[_common_options()])
    pre.add_argument("-h", "--help", action="store_true")
    pre.add_argument("--version", action="store_true")
    pre.add_argument("rest", nargs=argparse.REMAINDER)
    try:
        known, extra = pre.parse_known_args(list(argv))
    except _Undecided:
        return None
    if extra or known.help:
        return None
    if known.version:
        return ""  # argparse prints the version as soon as it reads the option
    if not known.rest:
        return None
    name: str = known.rest[0]
    return None if name.startswith("-") else name


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser. With `command` (see `command_named`), only that command's parser is
    built: the commands before it are stood in for and the modules of those after it are not
    even imported. The top level's --help, an unknown command and completion scripts use the
    whole parser (command None)."""
    common = _common_options()
    built: list[str] = []

    def pending() -> bool:
        """Whether the commands still to add may hold the one being parsed."""
        return command is None or (command != "" and not built)

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
        if command is not None and name != command:
            return cast(argparse.ArgumentParser, _Unbuilt())
        built.append(name)
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

    # Each module below holds the handlers of its commands: imported only while the command
    # being parsed may be among them (`pending`), so a run imports the modules it needs.
    if pending():
        # scan, state, history, import, findings
        from portconsole.cli_scan import add_scan_commands

        add_scan_commands(add)
    if pending():
        # ack, request, approve, requests, approvals, review, close, reopen, revoke, flag,
        # accept-risk, note
        from portconsole.cli_decisions import add_decision_commands

        add_decision_commands(add)
    if pending():
        # baseline, audit, store, notify
        from portconsole.cli_records import add_record_commands

        add_record_commands(add, action)
    p = add("daemon", cmd_daemon, "run scheduled scans until SIGTERM or Ctrl-C")
    if pending() or command == "daemon":
        # metrics, events, export-xml, and the daemon's --metrics
        from portconsole.cli_ops import add_ops_commands

        add_ops_commands(add, daemon=p)
    if pending():
        # report, prune
        from portconsole.cli_records import add_report_commands

        add_report_commands(add)
    if pending():
        # worker --site NAME
        from portconsole.cli_sites import add_site_commands

        add_site_commands(add)

    p = add("completion", cmd_completion, "print a shell completion script (bash, zsh or fish)")
    p.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell to complete in")
    if command and not built:
        return build_parser()  # not a command: the whole parser says which ones there are
    return parser


def _before_exit() -> None:
    """The command is done and the process is about to exit: move every object to the
    collector's permanent generation, so the interpreter's shutdown does not walk them all
    once more (measured: 60-90 ms of a `portconsole scan`'s wall time, more than its
    ingest). Reference counting still frees them; atexit handlers and thread joins run as
    usual. Only when the process is the command's own (see `main`)."""
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_named(arguments))
    args = parser.parse_args(arguments)
    logs.configure_from_args(args)
    # Run as the `portconsole` command (argv from sys.argv), not called by other code: the
    # process ends with the command, which lets it tune the collector (_monitor, _before_exit).
    args.own_process = argv is None
    for name in ("config", "data_dir", "readonly"):
        if not hasattr(args, name):
            setattr(args, name, None if name != "readonly" else False)
    handler: Handler = getattr(args, "handler", cmd_console)
    try:
        code = handler(args)
        sys.stdout.flush()
        if args.own_process:
            _before_exit()
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
