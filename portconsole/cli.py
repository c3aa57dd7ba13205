"""The headless CLI: every console action has a twin here, for cron, systemd and scripts.

User errors print one line on stderr and exit 2; `audit verify` exits 1 on a broken chain.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from portconsole import __version__
from portconsole.core.domain.model import location
from portconsole.core.errors import UserError
from portconsole.core.textsafe import terminal_safe
from portconsole.core.timeutil import iso, parse_iso

Handler = Callable[[argparse.Namespace], int]


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


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
    try:
        return parse_iso(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _end_time_arg(text: str) -> datetime:
    """An end time; a date alone means the end of that day (`--to 2026-03-31` includes it)."""
    moment = _time_arg(text)
    if len(text.strip()) == 10:
        moment += timedelta(days=1)
    return moment


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
        return 130
    # cron and systemd must be able to tell: a scan that covered less than planned fails.
    return 1 if result.scan.outcome in ("failed", "partial") else 0


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
    finding = _monitor(args).ack(args.id)
    print(f"{finding.id} acknowledged")
    return 0


def cmd_note(args: argparse.Namespace) -> int:
    finding = _monitor(args).note(args.id, args.text)
    print(f"note added to {finding.id}")
    return 0


def cmd_flag(args: argparse.Namespace) -> int:
    finding = _monitor(args).flag(args.id, reason=args.reason)
    print(f"{finding.id} flagged as unauthorized")
    return 0


def cmd_accept_risk(args: argparse.Namespace) -> int:
    finding = _monitor(args).risk_accept(args.id, until=args.until, reason=args.reason)
    print(f"{finding.id} risk accepted until {args.until.isoformat()}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    if args.baseline_command == "lint":
        problems = monitor.baseline_lint(args.file)
        for problem in problems:
            print(str(problem))
        if problems:
            print(f"{len(problems)} problem(s) in {args.file}", file=sys.stderr)
            return 2
        print(f"{args.file}: OK")
        return 0
    if args.baseline_command == "import":
        added, unchanged = monitor.baseline_import(args.file)
        print(f"{args.file}: {added} approval(s) added, {unchanged} already present")
        return 0
    text = monitor.baseline_export()
    if args.output:
        from portconsole.core.adapters.storage import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode("utf-8"))
        print(f"wrote {args.output}")
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
    print("rebuilt the projections from the journal")
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
            print("no notification targets configured ([notify] urls)")
            return 2
        failed = 0
        for url, ok, error in results:
            print(f"{'OK  ' if ok else 'FAIL'} {url}{'' if ok else '  ' + terminal_safe(error)}")
            failed += 0 if ok else 1
        return 1 if failed else 0
    flush_code = 0
    if args.notify_command == "flush":
        results = monitor.flush_outbox(seconds=args.wait)
        ok = sum(1 for r in results if r.ok)
        print(f"{ok} delivered, {len(results) - ok} failed this round")
        if len(results) > ok:
            flush_code = 3 if ok else 1  # some delivered: partial; none: failed
    status = monitor.notifier.status()
    if getattr(args, "json", False):
        _emit_json(status)
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

    return run_daemon(_monitor(args, origin="daemon"))


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
    for path in paths:
        kind = "manifest" if path.name.endswith("manifest.json") else "wrote"
        print(f"{kind} {path}")
        if kind == "manifest":
            # What the reader must know first (e.g. a time before history starts).
            for notice in json.loads(path.read_bytes()).get("notices", []):
                print(f"note: {notice}", file=sys.stderr)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    counts = _monitor(args).prune()
    print(", ".join(f"{k}: {v}" for k, v in counts.items()) or "nothing to prune")
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

    parser = argparse.ArgumentParser(
        prog="portconsole",
        description="Continuous port monitoring that proves compliance. Without a command, opens the console.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"portconsole {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(handler=handler)
        return p

    p = add("console", cmd_console, "open the operator console (the default)")
    p.add_argument("--theme", help="theme name (see themes/); remembered for next time")

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
    p.add_argument("--json", action="store_true")

    p = add("scan", cmd_scan, "run one scan cycle over targets or the configured groups")
    p.add_argument(
        "targets", nargs="*", metavar="TARGET", help="address, CIDR, range (127.0.0.2-41) or name"
    )
    p.add_argument("--ports", help="ports, e.g. 22,80,443,8000-8100 or all")
    p.add_argument("--group", help="scan one configured target group")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--progress", action="store_true", help="print progress on stderr")
    p.add_argument(
        "--notify-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time to deliver notifications (default 10)",
    )

    p = add("state", cmd_state, "open ports now, or at a past time with --at")
    p.add_argument("--at", type=_time_arg, help="UTC time, e.g. 2026-05-27T00:00:00Z")
    p.add_argument("--host")
    p.add_argument("--json", action="store_true")

    p = add("history", cmd_history, "change events of a host or host:port")
    p.add_argument(
        "target",
        metavar="HOST[:PORT[/PROTO]]",
        help="e.g. 127.0.0.2, 127.0.0.2:22, 127.0.0.2:53/udp, [::1]:22 (an IPv6 address with "
        "a port goes in brackets; ::1 alone is a host)",
    )
    p.add_argument("--json", action="store_true")

    p = add("import", cmd_import, "ingest an nmap XML report made elsewhere")
    p.add_argument("file", type=Path, metavar="FILE.xml")
    p.add_argument("--json", action="store_true")

    p = add("findings", cmd_findings, "list open findings (--all for closed ones too)")
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")

    p = add("ack", cmd_ack, "acknowledge a finding")
    p.add_argument("id")

    from portconsole.cli_decisions import add_decision_commands

    # request, approve, requests, approvals, review, close (portconsole/cli_decisions.py)
    add_decision_commands(add)

    p = add("flag", cmd_flag, "flag a finding as unauthorized")
    p.add_argument("id")
    p.add_argument("--reason", required=True)

    p = add(
        "accept-risk", cmd_accept_risk, "accept a finding's risk until a date (it reopens after)"
    )
    p.add_argument("id")
    p.add_argument("--until", type=_date_arg, required=True, help="YYYY-MM-DD")
    p.add_argument("--reason", required=True)

    p = add("note", cmd_note, "add a note to a finding")
    p.add_argument("id")
    p.add_argument("text")

    p = add("baseline", cmd_baseline, "lint, import or export baseline files")
    bsub = p.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")
    b = bsub.add_parser("lint", help="report every problem with file:line", parents=[common])
    b.add_argument("file", type=Path)
    b = bsub.add_parser(
        "import", help="turn a baseline file into approval records", parents=[common]
    )
    b.add_argument("file", type=Path)
    b = bsub.add_parser(
        "export", help="write the current approvals as a baseline file", parents=[common]
    )
    b.add_argument("-o", "--output")

    p = add("audit", cmd_audit, "verify or show the audit chain")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    asub.add_parser(
        "verify", help="check every hash; exit 1 at the first broken event", parents=[common]
    )
    verify = asub.choices["verify"]
    verify.add_argument(
        "--anchor",
        action="append",
        metavar="SEQ:HASH",
        help="a head published earlier (from `audit head`); fails if the journal up to SEQ "
        "no longer has HASH, e.g. --anchor 42:3f0c...",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    a = asub.add_parser(
        "head",
        help="print the journal's newest event as SEQ:HASH (to publish as an anchor)",
        parents=[common],
    )
    a.add_argument("--json", action="store_true", help='print {"seq", "hash", "recorded_at"}')
    a = asub.add_parser("show", help="list audit events", parents=[common])
    a.add_argument("--since", type=_time_arg)
    a.add_argument("--json", action="store_true")

    p = add("store", cmd_store, "check or rebuild the projections (caches) from the journal")
    ssub = p.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    s = ssub.add_parser(
        "check",
        help="compare the cache with a replay of the journal; exit 1 on a difference",
        parents=[common],
    )
    s.add_argument("--json", action="store_true", help="print the differences as JSON")
    ssub.add_parser(
        "rebuild",
        help="rebuild the cache from the journal (the old one is kept beside it)",
        parents=[common],
    )

    p = add("notify", cmd_notify, "notification outbox: status, flush, test")
    nsub = p.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    n = nsub.add_parser("status", help="show the outbox", parents=[common])
    n.add_argument("--json", action="store_true")
    n = nsub.add_parser("flush", help="retry what is due in the outbox now", parents=[common])
    n.add_argument("--wait", type=float, default=30.0, metavar="SECONDS")
    n = nsub.add_parser("test", help="send a test message to each target", parents=[common])
    n.add_argument("--tag")

    p = add("daemon", cmd_daemon, "run scheduled scans until SIGTERM or Ctrl-C")

    p = add("report", cmd_report, "point-in-time report (--at) or evidence pack (--from/--to)")
    p.add_argument("--at", type=_time_arg)
    p.add_argument("--from", dest="start", type=_time_arg)
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
    p.add_argument("--format", choices=["html", "md", "csv", "json"], default="html")
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

    add("prune", cmd_prune, "drop scan records and raw XML past retention")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
