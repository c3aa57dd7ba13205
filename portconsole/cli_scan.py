"""CLI commands that scan and look: `scan`, `state`, `history`, `import` and `findings`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from portconsole.cli_common import (
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    AddCommand,
    _add_json,
    _emit_json,
    _monitor,
    _table,
    _time_arg,
    _when,
)
from portconsole.core.textsafe import terminal_safe
from portconsole.core.timeutil import TIME_FORMS_HELP, iso

# The text of a scan stays readable over a large range (every address of a /16 on loopback
# answers): past this many hosts up with no open port, or changes of one kind, the rest are
# counted in one line. Findings are always listed whole; --json always has everything.
LIST_AT_MOST = 20


def _print_cycle(result: Any) -> None:
    scan = result.scan
    print(
        f"scan {scan.scan_id}  {scan.scan_type} scan  {_when(scan.started_at)} -> "
        f"{_when(scan.finished_at)}  outcome {scan.outcome}"
    )
    if scan.error:
        print(f"  note: {terminal_safe(scan.error, 300)}")
    quiet = sum(1 for host in scan.hosts if not host.ports and host.status == "up")
    rows = []
    for host in scan.hosts:
        if not host.ports and (host.status != "up" or quiet <= LIST_AT_MOST):
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
    if rows or quiet <= LIST_AT_MOST:
        print(_table(rows, ["host", "status", "port", "service", "product", "approval"]))
    if quiet > LIST_AT_MOST:
        print(
            f"{'and ' if rows else ''}{quiet:,} hosts up with no open port among those scanned"
            " (--json lists them)"
        )
    if result.changes:
        print(f"\n{len(result.changes)} change(s):")
        by_kind: dict[str, int] = {}
        for change in result.changes:
            by_kind[change.kind] = by_kind.get(change.kind, 0) + 1
            if by_kind[change.kind] <= LIST_AT_MOST:
                where = location(change.host, change.port, change.proto)
                print(f"  {change.kind:16} {terminal_safe(where)}")
        for kind, count in by_kind.items():
            if count > LIST_AT_MOST:
                print(f"  {kind:16} and {count - LIST_AT_MOST:,} more (--json, or `history`)")
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


def location(host: str, port: int | None, proto: str | None) -> str:
    """`host:port/proto` (domain/model.py's, imported when a result is printed: `--help`
    and a usage error never load the domain's records)."""
    from portconsole.core.domain.model import location as of

    return of(host, port, proto)


def cmd_scan(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    cancel = _cancel_on_signals()
    # Progress by default, on stderr only (stdout is the result): --no-progress stops it.
    progress = None
    if args.progress:
        from portconsole.cli_progress import stderr_progress

        progress = stderr_progress()
    try:
        result = monitor.run_cycle(
            group=args.group,
            targets=args.targets or None,
            ports=args.ports,
            progress=progress,
            cancel=cancel,
        )
    finally:
        if progress is not None:
            progress.close()
    # Deliver what this cycle raised, bounded by the targets' timeouts; the rest stays queued.
    monitor.deliver(seconds=args.notify_wait)
    # -sV runs after detection (services/fingerprint_after.py): wait for it before exiting,
    # then show what it identified, and deliver what it raised (a service changed).
    if result.settle_fingerprint():
        monitor.deliver(seconds=args.notify_wait)
    if args.json:
        _emit_json(result.to_json())
    else:
        _print_cycle(result)
    if args.own_process and result.scan.outcome == "success":
        # The sweeps this command's next run starts before it has loaded (cli_prelaunch),
        # for a short scan only: a long one would gain a fraction of a second, and working
        # out a /16's sweeps again costs ~2 s.
        from portconsole import cli_prelaunch

        sys.stdout.flush()
        took = (result.scan.finished_at - result.scan.started_at).total_seconds()
        first = (
            monitor.first_sweeps(args.group, args.targets or None, args.ports)
            if took <= cli_prelaunch.WORTH_SECONDS
            else []
        )
        cli_prelaunch.remember(sys.argv[1:], first, monitor.paths.config_file)
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
        hosts = [h.address for h in monitor.host_rows()]
        if args.host:
            hosts = [address for address in hosts if address == args.host]
        per_host = monitor.port_rows(hosts if args.host else None)
        for address in hosts:
            for port in per_host.get(address, []):
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


# ----- parser -------------------------------------------------------------------------


def add_scan_commands(add: AddCommand) -> None:
    """Add `scan`, `state`, `history`, `import` and `findings`."""
    p = add("scan", cmd_scan, "run one scan cycle over targets or the configured groups")
    p.add_argument(
        "targets", nargs="*", metavar="TARGET", help="address, CIDR, range (127.0.0.2-41) or name"
    )
    p.add_argument("--ports", help="ports, e.g. 22,80,443,8000-8100 or all")
    p.add_argument("--group", help="scan one configured target group")
    _add_json(p, "the scan, its changes and findings")
    p.add_argument(
        "--progress",
        action="store_const",
        const=True,
        default=True,
        help="show progress on stderr: a bar on a terminal, a line now and then otherwise "
        "(the default)",
    )
    p.add_argument(
        "--no-progress",
        "--quiet",
        dest="progress",
        action="store_const",
        const=False,
        help="no progress on stderr",
    )
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
