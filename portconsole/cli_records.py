"""CLI commands over the record itself: `baseline`, `audit`, `store`, `notify`, `report`
and `prune`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from portconsole.cli_common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    AddAction,
    AddCommand,
    _add_json,
    _emit_json,
    _end_time_arg,
    _monitor,
    _result,
    _table,
    _time_arg,
    _when,
)
from portconsole.core.errors import UserError
from portconsole.core.textsafe import terminal_safe
from portconsole.core.timeutil import TIME_FORMS_HELP, iso


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


# ----- parser -------------------------------------------------------------------------


def add_record_commands(add: AddCommand, action: AddAction) -> None:
    """Add `baseline`, `audit`, `store` and `notify`, each with its actions."""
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


def add_report_commands(add: AddCommand) -> None:
    """Add `report` and `prune`."""
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
