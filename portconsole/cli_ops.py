"""CLI commands that wire PortConsole into an operations team's tools.

`metrics` (Prometheus exposition, or a file for node_exporter's textfile collector),
`events` (the journal as JSON Lines, CEF or RFC 5424 syslog for a SIEM, optionally followed),
`export-xml` (a scan's raw nmap XML, for DefectDojo and other importers), and the daemon's
`--metrics ADDR:PORT` endpoint. The formats are core/services/metrics.py and events_out.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from portconsole.cli_common import AddCommand, _monitor, _time_arg
from portconsole.core.errors import UserError

# ----- metrics --------------------------------------------------------------------------------


def listen_address(text: str) -> tuple[str, int]:
    """`ADDR:PORT` or `[IPV6]:PORT` for the metrics endpoint (argparse type)."""
    from portconsole.core.domain.targets import parse_location

    try:
        host, port, proto = parse_location(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if port is None or "/" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected ADDR:PORT, e.g. 127.0.0.1:9464 or [::1]:9464"
        )
    return host, port


def start_metrics(monitor: Any, address: tuple[str, int] | None) -> Callable[[], None]:
    """Serve the monitor's metrics on `address` (None: off); returns the stopper."""
    if address is None:
        return lambda: None
    from portconsole.core.services.metrics import serve_metrics

    host, port = address
    try:
        stop = serve_metrics(monitor, host, port)
    except OSError as error:
        raise UserError(
            f"cannot serve metrics on {host}:{port}: {error.strerror or error}"
        ) from None
    print(f"portconsole: metrics on http://{_url_host(host)}:{port}/metrics", file=sys.stderr)
    return stop


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def cmd_metrics(args: argparse.Namespace) -> int:
    from prometheus_client import generate_latest

    from portconsole.core.services.metrics import metrics_registry, write_textfile

    monitor = _monitor(args, reads_only=True)
    if args.textfile is None:
        sys.stdout.write(generate_latest(metrics_registry(monitor)).decode("utf-8"))
        return 0
    path = Path(args.textfile)
    if path.suffix != ".prom":
        raise UserError(
            f"{path}: node_exporter's textfile collector reads only *.prom files; "
            "name it e.g. portconsole.prom"
        )
    if not path.parent.is_dir():
        raise UserError(f"{path.parent} is not a folder: create it, or point --textfile elsewhere")
    write_textfile(monitor, path)
    return 0


# ----- events ---------------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace) -> int:
    from portconsole.core.services.events_out import (
        FORMATTERS,
        follow_records,
        journal_records,
    )

    monitor = _monitor(args, reads_only=True)
    render = FORMATTERS[args.format]
    if args.follow:
        records = follow_records(monitor.audit, args.since, poll_seconds=args.poll)
    else:
        records = journal_records(monitor.audit, args.since)
    out = sys.stdout
    try:
        for record in records:
            out.write(render(record) + "\n")
            if args.follow:
                out.flush()  # a forwarder reads line by line, not when a buffer fills
    except KeyboardInterrupt:
        return 0  # Ctrl-C ends a follow: that is how it is stopped
    return 0


# ----- export-xml -----------------------------------------------------------------------------


def cmd_export_xml(args: argparse.Namespace) -> int:
    from portconsole.core.adapters.storage import atomic_write_bytes

    monitor = _monitor(args, reads_only=True)
    scan_id = args.scan_id
    if monitor.store.scan(scan_id) is None:
        raise UserError(f"no scan {scan_id!r}; list scans with `portconsole audit show`")
    documents = monitor.store.raw_xml(scan_id)
    if not documents:
        raise UserError(
            f"scan {scan_id} has no raw XML kept (pruned past [retention] raw_xml_months, "
            "or never stored)"
        )
    out = Path(args.output)
    # One file per nmap run of the scan (sweep, confirm, fingerprint): FILE, FILE-2, ...
    paths = [out] + [
        out.with_name(f"{out.stem}-{n}{out.suffix}") for n in range(2, len(documents) + 1)
    ]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not args.force:
        raise UserError(f"{', '.join(existing)} exists: use --force to overwrite")
    for path, document in zip(paths, documents, strict=True):
        atomic_write_bytes(path, document)
        print(f"wrote {path}")
    return 0


# ----- parser ---------------------------------------------------------------------------------


def add_ops_commands(add: AddCommand, daemon: argparse.ArgumentParser) -> None:
    """Add `metrics`, `events` and `export-xml`, and the daemon's `--metrics` option."""
    from portconsole.core.services.events_out import FORMATS

    daemon.add_argument(
        "--metrics",
        type=listen_address,
        metavar="ADDR:PORT",
        help="serve Prometheus metrics at http://ADDR:PORT/metrics (default off), "
        "e.g. --metrics 127.0.0.1:9464",
    )

    p = add("metrics", cmd_metrics, "print Prometheus metrics, or write them for node_exporter")
    p.add_argument(
        "--textfile",
        metavar="PATH",
        help="write atomically to PATH (*.prom, in node_exporter's "
        "--collector.textfile.directory), e.g. /var/lib/node_exporter/portconsole.prom",
    )

    p = add("events", cmd_events, "stream journal events for a SIEM (JSON Lines, CEF, syslog)")
    p.add_argument(
        "--since",
        type=_time_arg,
        metavar="TIME",
        help="only events observed at or after TIME (UTC), e.g. 2026-05-27T00:00:00Z",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep running and print each new event (from the head, or from --since)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="jsonl: each event as recorded; cef: ArcSight CEF:0; syslog: RFC 5424 (default jsonl)",
    )
    p.add_argument(
        "--poll",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="with --follow, how often to look for new events (default 1)",
    )

    p = add("export-xml", cmd_export_xml, "write a scan's raw nmap XML report to a file")
    p.add_argument("scan_id", metavar="SCAN_ID", help="e.g. s-20260527T000000Z-1a2b")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="e.g. scan.xml; a scan of several nmap runs also writes scan-2.xml, ...",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")


__all__ = ["add_ops_commands", "listen_address", "start_metrics"]
