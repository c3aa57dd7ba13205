"""The headless CLI: every console action has a twin here, for cron, systemd and scripts.

Every command that prints a result takes `--json` (one JSON document on stdout). Exit codes
follow one table (EXIT_CODES, shown in `--help` and docs/cli.md): 0 ok, 1 a check failed,
2 a usage or input error (one line on stderr), 3 partial, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from portconsole import __version__, logs
from portconsole.core.domain.model import location
from portconsole.core.errors import UserError
from portconsole.core.textsafe import terminal_safe
from portconsole.core.timeutil import TIME_FORMS_HELP, iso, parse_until, parse_when

Handler = Callable[[argparse.Namespace], int]

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
  portconsole scan 10.0.0.0/24 --ports all --progress""",
    "state": """examples:
  portconsole state
  portconsole state --host 127.0.0.2 --json
  portconsole state --at 2026-05-27T00:00:00Z | head -20""",
    "history": """examples:
  portconsole history 127.0.0.2
  portconsole history 127.0.0.2:22
  portconsole history [::1]:8443/tcp --json""",
    "import": """examples:
  nmap -sV -p 1-1024 -oX scan.xml 10.0.0.0/24 && portconsole import scan.xml""",
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
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


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
    from portconsole.core.monitor import Monitor

    readonly = reads_only or bool(getattr(args, "readonly", False))
    monitor = Monitor.open(args.config, args.data_dir, origin=origin, readonly=readonly)
    logs.apply_settings(monitor.settings)
    for warning in monitor.warnings:
        print(f"portconsole: {warning}", file=sys.stderr)
    return monitor


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


def _print_cycle(result: Any) -> None:
    scan = result.scan
    print(
        f"scan {scan.scan_id}  {scan.scan_type} scan  {_when(scan.started_at)} -> "
        f"{_when(scan.finished_at)}  outcome {scan.outcome}"
    )
    if scan.error:
        print(f"  note: {terminal_safe(scan.error, 300)}")
    rows = []
    for host in scan.hosts:
        if not host.ports:
            rows.append([host.address, host.status, "-", "", "", ""])
        for port in host.ports:
            key = f"{host.address}:{port.port}/{port.proto}"
            product = " ".join(x for x in (port.product, port.version) if x)
            rows.append(
                [
                    host.address,
                    host.status,
                    f"{port.port}/{port.proto}",
                    port.service,
                    product,
                    result.approval_status.get(key, "unapproved"),
                ]
            )
    print(_table(rows, ["host", "status", "port", "service", "product", "approval"]))
    if result.changes:
        print(f"\n{len(result.changes)} change(s):")
        for change in result.changes:
            where = location(change.host, change.port, change.proto)
            print(f"  {change.kind:16} {terminal_safe(where)}")
    if result.findings:
        print(f"\n{len(result.findings)} new finding(s):")
        for finding in result.findings:
            where = location(finding.host, finding.port, finding.proto)
            print(f"  {finding.id}  {finding.severity:8} {finding.kind:20} {terminal_safe(where)}")


def _cancel_on_signals() -> threading.Event:
    """SIGINT/SIGTERM set an event the scanner polls, so nmap is stopped, not orphaned."""
    cancel = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        cancel.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return cancel


def cmd_scan(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    cancel = _cancel_on_signals()
    progress = None
    if args.progress:

        def progress(p: Any) -> None:
            print(
                f"[{p.phase}] {p.hosts_done}/{p.hosts_total} hosts, {p.open_ports} open",
                file=sys.stderr,
            )

    result = monitor.run_cycle(
        group=args.group,
        targets=args.targets or None,
        ports=args.ports,
        progress=progress,
        cancel=cancel,
    )
    # Deliver what this cycle raised, bounded by the targets' timeouts; the rest stays queued.
    monitor.deliver(seconds=args.notify_wait)
    if args.json:
        _emit_json(result.to_json())
    else:
        _print_cycle(result)
    if result.scan.outcome == "cancelled":
        return EXIT_INTERRUPTED
    # cron and systemd must be able to tell: a scan that covered less than planned is partial.
    if result.scan.outcome == "partial":
        return EXIT_PARTIAL
    return EXIT_CHECK_FAILED if result.scan.outcome == "failed" else EXIT_OK


def cmd_state(args: argparse.Namespace) -> int:
    monitor = _monitor(args, reads_only=True)
    if args.at is None:
        rows = []
        items = []
        for host in monitor.host_rows():
            if args.host and host.address != args.host:
                continue
            for port in monitor.host_ports(host.address):
                items.append(
                    {
                        "host": port.host,
                        "port": port.port,
                        "proto": port.proto,
                        "service": port.service,
                        "product": port.product,
                        "version": port.version,
                        "approval": port.approval,
                        "first_seen": iso(port.first_seen) if port.first_seen else None,
                        "last_seen": iso(port.last_seen) if port.last_seen else None,
                    }
                )
                rows.append(
                    [
                        port.host,
                        f"{port.port}/{port.proto}",
                        port.service,
                        port.approval,
                        _when(port.last_seen),
                    ]
                )
        if args.json:
            _emit_json({"at": None, "open_ports": items})
        else:
            print(_table(rows, ["host", "port", "service", "approval", "last seen"]))
        return 0
    point = monitor.state_at(args.at, args.host)
    if args.json:
        _emit_json(point.to_json())
        return 0
    print(f"fleet as of {_when(point.at)}")
    rows = [
        [
            p.host,
            f"{p.port}/{p.proto}",
            p.service,
            " ".join(x for x in (p.product, p.version) if x),
            p.last_scan_id,
        ]
        for p in point.open_ports
    ]
    print(_table(rows, ["host", "port", "service", "product", "seen by scan"]))
    if point.uncovered:
        print(f"\nnot covered near that time ({len(point.uncovered)}):")
        for item in point.uncovered:
            where = location(item.host, item.port, item.proto)
            print(f"  {terminal_safe(where)}  last covered {_when(item.last_covered)}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    monitor = _monitor(args, reads_only=True)
    from portconsole.core.domain.targets import parse_location

    host, port, proto = parse_location(args.target)
    events = monitor.history(host, port, proto)
    if args.json:
        _emit_json(
            {"host": host, "port": port, "proto": proto, "events": [e.to_json() for e in events]}
        )
        return 0
    rows = [
        [
            _when(e.at),
            e.kind,
            f"{e.port}/{e.proto}" if e.port else "-",
            _describe(e.after or e.before),
            e.scan_id,
        ]
        for e in events
    ]
    print(_table(rows, ["time", "event", "port", "detail", "scan"]))
    return 0


def _describe(value: dict[str, Any] | None) -> str:
    if not value:
        return ""
    return " ".join(
        str(value.get(k, "")) for k in ("service", "product", "version", "status") if value.get(k)
    )


def cmd_import(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    result = monitor.import_xml(args.file)
    # Like `scan`: deliver what the import raised, bounded; the rest stays queued.
    monitor.deliver(seconds=args.notify_wait)
    if args.json:
        _emit_json(result.to_json())
    else:
        _print_cycle(result)
    return 0


def _finding_json(finding: Any) -> dict[str, Any]:
    return finding.to_json()


def cmd_findings(args: argparse.Namespace) -> int:
    monitor = _monitor(args, reads_only=True)
    findings = monitor.findings(include_closed=args.all)
    if args.json:
        _emit_json({"findings": [_finding_json(f) for f in findings]})
        return 0
    rows = [
        [
            f.id,
            f.severity,
            f.kind,
            location(f.host, f.port, f.proto),
            f.service,
            f.status,
            _when(f.first_seen),
        ]
        for f in findings
    ]
    print(_table(rows, ["id", "severity", "kind", "where", "service", "status", "first seen"]))
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    # Several ids: one transaction, refused whole if any cannot be acknowledged.
    findings = _monitor(args).ack_many(args.id)
    _result(args, "\n".join(f"{f.id} acknowledged" for f in findings), _findings_json(findings))
    return 0


def cmd_note(args: argparse.Namespace) -> int:
    findings = _monitor(args).note_many(args.id, args.text)
    _result(args, "\n".join(f"note added to {f.id}" for f in findings), _findings_json(findings))
    return 0


def _findings_json(findings: Sequence[Any]) -> dict[str, Any]:
    """`finding` (one id given, as before) or `findings` (several)."""
    if len(findings) == 1:
        return {"finding": findings[0].to_json()}
    return {"findings": [f.to_json() for f in findings]}


def cmd_flag(args: argparse.Namespace) -> int:
    finding = _monitor(args).flag(args.id, reason=args.reason)
    _result(args, f"{finding.id} flagged as unauthorized", {"finding": finding.to_json()})
    return 0


def cmd_accept_risk(args: argparse.Namespace) -> int:
    finding = _monitor(args).risk_accept(args.id, until=args.until, reason=args.reason)
    text = f"{finding.id} risk accepted until {args.until.isoformat()}"
    _result(args, text, {"finding": finding.to_json()})
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    if args.baseline_command == "lint":
        problems = monitor.baseline_lint(args.file)
        if args.json:
            _emit_json(
                {"file": args.file, "ok": not problems, "problems": [str(p) for p in problems]}
            )
        else:
            for problem in problems:
                print(terminal_safe(str(problem), 500))
            if problems:
                print(f"{len(problems)} problem(s) in {args.file}", file=sys.stderr)
            else:
                print(f"{args.file}: OK")
        return EXIT_CHECK_FAILED if problems else EXIT_OK
    if args.baseline_command == "import":
        added, unchanged = monitor.baseline_import(args.file)
        text = f"{args.file}: {added} approval(s) added, {unchanged} already present"
        _result(args, text, {"file": args.file, "added": added, "unchanged": unchanged})
        return 0
    text = monitor.baseline_export()
    if args.output:
        from portconsole.core.adapters.storage import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode("utf-8"))
        _result(args, f"wrote {args.output}", {"wrote": [str(args.output)]})
    else:
        sys.stdout.write(text)
    monitor.baseline_exported(args.output or "-", len(monitor.approvals_list()))
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    if args.store_command == "check":
        problems = _monitor(args, reads_only=True).store_check()
        if args.json:
            _emit_json({"ok": not problems, "differences": problems})
        elif problems:
            for problem in problems:
                print(terminal_safe(problem))
        else:
            print("OK: the projections match a replay of the journal")
        return 1 if problems else 0
    monitor = _monitor(args)
    monitor.store_rebuild()
    _result(args, "rebuilt the projections from the journal", {"rebuilt": True})
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    monitor = _monitor(args, reads_only=True)
    if args.audit_command == "verify":
        from portconsole.core.adapters.journal import parse_anchor

        anchors = [parse_anchor(text) for text in args.anchor or ()]
        result = monitor.audit_verify(anchors)
        if args.json:
            _emit_json(result.to_json())
            return 0 if result.ok else 1
        if result.ok:
            anchored = f", {len(anchors)} anchors match" if anchors else ""
            print(
                f"OK: {result.count} events, chain intact{anchored}, projections match the journal"
            )
            return 0
        where = f" at event {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        print(f"BROKEN{where}: {result.reason}")
        for problem in result.problems[1:]:
            print(f"  also: {problem}")
        return 1
    if args.audit_command == "head":
        tip = monitor.audit.tip()
        events = monitor.audit.events() if tip.seq else []
        recorded = iso(events[-1].recorded_at or events[-1].at) if events else None
        head = {"seq": tip.seq, "hash": tip.hash, "recorded_at": recorded}
        if args.json:
            _emit_json(head)
        else:
            print(f"{tip.seq}:{tip.hash}  (recorded {recorded or 'never'})")
        return 0
    events = monitor.audit_events(since=args.since)
    if args.json:
        _emit_json({"events": [e.to_json() for e in events]})
        return 0
    rows = [
        [
            e.seq,
            _when(e.at),
            e.actor.get("user", ""),
            e.origin,
            e.action,
            e.outcome,
            _resource(e.resource),
        ]
        for e in events
    ]
    print(_table(rows, ["seq", "time", "user", "origin", "action", "outcome", "resource"]))
    return 0


def _resource(resource: dict[str, Any] | None) -> str:
    if not resource:
        return ""
    return " ".join(f"{k}={v}" for k, v in resource.items() if v is not None)


def cmd_notify(args: argparse.Namespace) -> int:
    monitor = _monitor(args, reads_only=args.notify_command == "status")
    if args.notify_command == "test":
        results = monitor.notify_test(args.tag)
        if not results:
            raise UserError("no notification targets configured ([notify] urls)")
        failed = sum(0 if ok else 1 for _url, ok, _error in results)
        if args.json:
            _emit_json(
                {
                    "results": [
                        {"target": url, "ok": ok, "error": None if ok else error}
                        for url, ok, error in results
                    ]
                }
            )
        else:
            for url, ok, error in results:
                shown = f"{url}{'' if ok else '  ' + terminal_safe(error)}"
                print(f"{'OK  ' if ok else 'FAIL'} {shown}")
        if not failed:
            return EXIT_OK
        return EXIT_PARTIAL if failed < len(results) else EXIT_CHECK_FAILED
    flush_code = 0
    if args.notify_command == "flush":
        results = monitor.flush_outbox(seconds=args.wait)
        ok = sum(1 for r in results if r.ok)
        flushed = {"delivered": ok, "failed": len(results) - ok}
        if not args.json:
            print(f"{ok} delivered, {len(results) - ok} failed this round")
        if len(results) > ok:
            # some delivered: partial; none: failed
            flush_code = EXIT_PARTIAL if ok else EXIT_CHECK_FAILED
    status = monitor.notifier.status()
    if getattr(args, "json", False):
        _emit_json({**status, "flush": flushed} if args.notify_command == "flush" else status)
        return flush_code
    counts = status.get("counts", {})
    print(", ".join(f"{counts.get(k, 0)} {k}" for k in ("pending", "delivered", "dead")))
    age = status.get("oldest_pending_age_seconds")
    if age:
        print(f"oldest pending message: {age:.0f} s old")
    rows = [
        [
            target,
            info.get("pending", 0),
            info.get("delivered", 0),
            info.get("dead", 0),
            "yes" if info.get("configured") else "no (removed from config)",
            info.get("last_error") or "",
        ]
        for target, info in status.get("targets", {}).items()
    ]
    if rows:
        print(_table(rows, ["target", "pending", "delivered", "dead", "configured", "last error"]))
    else:
        print("no notification targets configured ([notify] urls)")
    return flush_code


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


def cmd_report(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    paths = monitor.export_report(
        Path(args.output),
        at=args.at,
        start=args.start,
        end=args.end,
        fmt=args.format,
        with_raw=args.with_raw,
        sign_key=args.sign_key,
        samples=args.samples or (),
    )
    notices: list[str] = []
    for path in paths:
        kind = "manifest" if path.name.endswith("manifest.json") else "wrote"
        if not args.json:
            print(f"{kind} {path}")
        if kind == "manifest":
            # What the reader must know first (e.g. a time before history starts).
            notices = list(json.loads(path.read_bytes()).get("notices", []))
            for notice in notices:
                print(f"note: {notice}", file=sys.stderr)
    if args.json:
        manifest = next((p for p in paths if p.name.endswith("manifest.json")), None)
        _emit_json({"wrote": [str(p) for p in paths], "manifest": manifest, "notices": notices})
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    counts = _monitor(args).prune()
    text = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "nothing to prune"
    _result(args, text, {"pruned": counts})
    return 0


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

    p = add("scan", cmd_scan, "run one scan cycle over targets or the configured groups")
    p.add_argument(
        "targets", nargs="*", metavar="TARGET", help="address, CIDR, range (127.0.0.2-41) or name"
    )
    p.add_argument("--ports", help="ports, e.g. 22,80,443,8000-8100 or all")
    p.add_argument("--group", help="scan one configured target group")
    _add_json(p, "the scan, its changes and findings")
    p.add_argument("--progress", action="store_true", help="print progress on stderr")
    p.add_argument(
        "--notify-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time to deliver notifications (default 10)",
    )

    p = add("state", cmd_state, "open ports now, or at a past time with --at")
    p.add_argument("--at", type=_time_arg, help=f"when: {TIME_FORMS_HELP}")
    p.add_argument("--host", metavar="ADDRESS", help="only this host, e.g. 127.0.0.2")
    _add_json(p, "the open ports")

    p = add("history", cmd_history, "change events of a host or host:port")
    p.add_argument(
        "target",
        metavar="HOST[:PORT[/PROTO]]",
        help="e.g. 127.0.0.2, 127.0.0.2:22, 127.0.0.2:53/udp, [::1]:22 (an IPv6 address with "
        "a port goes in brackets; ::1 alone is a host)",
    )
    _add_json(p, "the events")

    p = add("import", cmd_import, "ingest an nmap XML report made elsewhere")
    p.add_argument("file", type=Path, metavar="FILE.xml", help="an nmap XML report (nmap -oX)")
    _add_json(p, "the imported scan, its changes and findings")
    p.add_argument(
        "--notify-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time to deliver notifications (default 10)",
    )

    p = add("findings", cmd_findings, "list open findings (--all for closed ones too)")
    p.add_argument("--all", action="store_true", help="include closed findings")
    _add_json(p, "the findings")

    p = add("ack", cmd_ack, "acknowledge one or more findings (one transaction)")
    p.add_argument("id", nargs="+", metavar="FINDING", help="finding ids, e.g. F-0001 F-0002")
    _add_json(p, "the finding")

    from portconsole.cli_decisions import add_decision_commands

    # request, approve, requests, approvals, review, close (portconsole/cli_decisions.py)
    add_decision_commands(add)

    p = add("flag", cmd_flag, "flag a finding as unauthorized")
    p.add_argument("id", metavar="FINDING", help="a finding id, e.g. F-0001")
    p.add_argument("--reason", required=True, help="why it is unauthorized (required)")
    _add_json(p, "the finding")

    p = add(
        "accept-risk", cmd_accept_risk, "accept a finding's risk until a date (it reopens after)"
    )
    p.add_argument("id", metavar="FINDING", help="a finding id, e.g. F-0001")
    p.add_argument(
        "--until", type=_date_arg, required=True, help="YYYY-MM-DD; the finding reopens after"
    )
    p.add_argument("--reason", required=True, help="why the risk is accepted (required)")
    _add_json(p, "the finding")

    p = add("note", cmd_note, "add a note to one or more findings (one transaction)")
    p.add_argument("id", nargs="+", metavar="FINDING", help="finding ids, e.g. F-0001 F-0002")
    p.add_argument("text", help="the note, quoted")
    _add_json(p, "the finding")

    p = add("baseline", cmd_baseline, "lint, import or export baseline files")
    bsub = p.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")
    b = action(bsub, "lint", "report every problem with file:line; exit 1 if there is one")
    b.add_argument("file", type=Path, help="a baseline file (YAML)")
    _add_json(b, "the problems")
    b = action(bsub, "import", "turn a baseline file into approval records")
    b.add_argument("file", type=Path, help="a baseline file (YAML)")
    _add_json(b, "the counts")
    b = action(bsub, "export", "write the current approvals as a baseline file")
    b.add_argument("-o", "--output", help="write this file (default: stdout)")
    _add_json(b, "the file written (with -o)")

    p = add("audit", cmd_audit, "verify or show the audit chain")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = action(asub, "verify", "check every hash; exit 1 at the first broken event")
    verify.add_argument(
        "--anchor",
        action="append",
        metavar="SEQ:HASH",
        help="a head published earlier (from `audit head`); fails if the journal up to SEQ "
        "no longer has HASH, e.g. --anchor 42:3f0c...",
    )
    _add_json(verify, "the result")
    a = action(
        asub, "head", "print the journal's newest event as SEQ:HASH (to publish as an anchor)"
    )
    _add_json(a, '{"seq", "hash", "recorded_at"}')
    a = action(asub, "show", "list audit events")
    a.add_argument("--since", type=_time_arg, help=f"from when: {TIME_FORMS_HELP}")
    _add_json(a, "the events")

    p = add("store", cmd_store, "check or rebuild the projections (caches) from the journal")
    ssub = p.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    s = action(
        ssub, "check", "compare the cache with a replay of the journal; exit 1 on a difference"
    )
    _add_json(s, "the differences")
    s = action(
        ssub, "rebuild", "rebuild the cache from the journal (the old one is kept beside it)"
    )
    _add_json(s, "the outcome")

    p = add("notify", cmd_notify, "notification outbox: status, flush, test")
    nsub = p.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    n = action(nsub, "status", "show the outbox (secrets in target URLs masked)")
    _add_json(n, "the outbox status")
    n = action(nsub, "flush", "retry what is due in the outbox now; exit 1 none, 3 some failed")
    n.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="time to spend delivering (default 30)",
    )
    _add_json(n, "the outbox status and this round's counts")
    n = action(nsub, "test", "send a test message to each target; exit 1 none, 3 some failed")
    n.add_argument("--tag", help="only the targets with this tag")
    _add_json(n, "one result per target")

    p = add("daemon", cmd_daemon, "run scheduled scans until SIGTERM or Ctrl-C")
    from portconsole.cli_ops import add_ops_commands

    # metrics, events, export-xml, and the daemon's --metrics (portconsole/cli_ops.py)
    add_ops_commands(add, daemon=p)

    p = add("report", cmd_report, "point-in-time report (--at) or evidence pack (--from/--to)")
    p.add_argument("--at", type=_time_arg, help=f"state report at: {TIME_FORMS_HELP}")
    p.add_argument(
        "--from", dest="start", type=_time_arg, help="start of an evidence pack's period"
    )
    p.add_argument(
        "--to", dest="end", type=_end_time_arg, help="end; a date alone includes that day"
    )
    p.add_argument(
        "--sample",
        dest="samples",
        action="append",
        type=_end_time_arg,
        metavar="DATE",
        help="also list every port open at this time, with its approval then (repeatable; "
        "a date alone means the end of that day)",
    )
    p.add_argument(
        "--format",
        choices=["html", "md", "csv", "json"],
        default="html",
        help="report format (default html)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="a file (pack.html), or a folder for a verifiable pack: report, manifest, "
        "journal excerpt, SHA256SUMS and verify_pack.py (e.g. -o pack-2026-11)",
    )
    p.add_argument(
        "--with-raw", action="store_true", help="a pack folder also holds the raw nmap XML"
    )
    p.add_argument(
        "--sign-key",
        type=Path,
        metavar="KEY",
        help="sign the pack's SHA256SUMS with this SSH private key (ssh-keygen -Y sign, "
        "namespace portconsole)",
    )
    _add_json(p, "the files written")

    p = add("prune", cmd_prune, "drop scan records and raw XML past retention")
    _add_json(p, "the counts")

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
