"""CLI commands that decide on findings: acknowledging, noting and flagging them,
accepting their risk, approvals with four eyes, their reviews and revocation, and closing and
reopening findings.

`ack` and `note` (one or more findings, one transaction), `flag`, `accept-risk`, `request` (the requester's step), `approve` (the approver's: a finding or a request),
`requests`, `approvals`, `review`, `revoke` (a mistaken approval), `close` (one or more
findings, with a cause) and `reopen` (a flagged or closed finding). The identity behind each is the Actor: the OS
user, the sudo user behind root, the SSH client and key; the shell types none of it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from portconsole.cli_common import (
    AddCommand,
    _add_json,
    _date_arg,
    _emit_json,
    _monitor,
    _result,
    _table,
    _when,
)
from portconsole.core.domain.approval_terms import REVIEW_OUTCOMES


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


def cmd_request(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    made = monitor.request(
        args.id,
        justification=args.justification,
        owner=args.owner,
        ticket=args.ticket or "",
        review_by=args.review_by,
        mitigation=args.mitigation or "",
        on_behalf_of=args.on_behalf_of or "",
    )
    text = (
        f"{made.id} requested by {made.requested_by} for {made.finding_id} "
        f"({made.host}:{made.port}/{made.proto}); another person approves it with "
        f"`portconsole approve {made.id}`"
    )
    _result(args, text, {"request": made.to_json()})
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    finding = monitor.approve(
        args.id,
        justification=args.justification or "",
        owner=args.owner or "",
        ticket=args.ticket or "",
        review_by=args.review_by,
        mitigation=args.mitigation or "",
        requester=args.requester,
    )
    approval = next(a for a in monitor.approvals_list() if a.id == finding.approval_id)
    eyes = "four eyes met" if approval.four_eyes else "four eyes NOT met"
    text = (
        f"{finding.id} approved ({finding.host}:{finding.port}/{finding.proto}) as "
        f"{approval.id}: {eyes} ({approval.four_eyes_basis_text()})"
    )
    _result(args, text, {"finding": finding.to_json(), "approval": approval.to_json()})
    return 0


def cmd_requests(args: argparse.Namespace) -> int:
    requests = _monitor(args, reads_only=True).requests_list(include_done=args.all)
    if args.json:
        _emit_json({"requests": [r.to_json() for r in requests]})
        return 0
    rows = [
        [
            r.id,
            r.finding_id,
            f"{r.host}:{r.port}/{r.proto}",
            r.requester_person,
            _when(r.requested_at),
            r.justification,
            r.status + (f" {r.approval_id}" if r.approval_id else ""),
        ]
        for r in requests
    ]
    headers = ["id", "finding", "where", "requested by", "at", "justification", "status"]
    print(_table(rows, headers))
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    monitor = _monitor(args, reads_only=True)
    approvals = monitor.approvals_list(include_retired=args.all)
    if args.json:
        _emit_json({"approvals": [a.to_json() for a in approvals]})
        return 0
    rows = []
    for a in approvals:
        last = a.last_review()
        rows.append(
            [
                a.id,
                f"{a.host}:{a.port}/{a.proto}",
                # A guess from nmap's port table until the port's first -sV names it.
                f"{a.service} (guess, awaiting -sV)" if a.awaits_identification else a.service,
                a.owner,
                a.requester or "-",
                a.approver,
                "yes" if a.four_eyes else "no",
                _when(a.review_by),
                f"{last.at.date().isoformat()} {last.outcome}" if last else "never",
                a.status,
            ]
        )
    headers = [
        "id",
        "where",
        "service",
        "owner",
        "requester",
        "approver",
        "4 eyes",
        "review by",
        "last review",
        "status",
    ]
    print(_table(rows, headers))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    reviewed = _monitor(args).review(
        args.id, outcome=args.outcome, note=args.note, next_review=args.next_review
    )
    done = reviewed.reviews[-1]
    after = (
        f"next review by {done.next_review_by.date().isoformat()}"
        if done.next_review_by
        else "approval retired"
    )
    text = f"{reviewed.id} reviewed by {done.reviewer}: {done.outcome}; {after}"
    _result(args, text, {"approval": reviewed.to_json()})
    return 0


def cmd_close(args: argparse.Namespace) -> int:
    # Several ids: one transaction, refused whole if any cannot be closed.
    findings = _monitor(args).close_many(args.id, cause=args.cause)
    text = "\n".join(f"{f.id} closed: {f.details['cause']}" for f in findings)
    _result(args, text, _findings_json(findings))
    return 0


def cmd_reopen(args: argparse.Namespace) -> int:
    finding = _monitor(args).reopen(args.id, reason=args.reason)
    _result(args, f"{finding.id} reopened: new again", {"finding": finding.to_json()})
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    done = _monitor(args).revoke(args.id, reason=args.reason)
    after = (
        f"{done.finding.id} is back in the queue"
        if done.finding is not None
        else "the next scan that sees the port open raises it as unapproved"
    )
    where = f"{done.approval.host}:{done.approval.port}/{done.approval.proto}"
    data = {
        "approval": done.approval.to_json(),
        "finding": done.finding.to_json() if done.finding is not None else None,
    }
    _result(args, f"{done.approval.id} revoked ({where}); {after}", data)
    return 0


def add_decision_commands(add: AddCommand) -> None:
    """Add ack, request, approve, requests, approvals, review, close, reopen, revoke, flag,
    accept-risk and note (in that order: the order of `portconsole --help`)."""
    p = add("ack", cmd_ack, "acknowledge one or more findings (one transaction)")
    p.add_argument("id", nargs="+", metavar="FINDING", help="finding ids, e.g. F-0001 F-0002")
    _add_json(p, "the finding")

    p = add(
        "request",
        cmd_request,
        "request approval of a finding's port (the first of the four eyes; another person "
        "approves it)",
    )
    p.add_argument("id", metavar="FINDING", help="a finding id, e.g. F-0001")
    _add_json(p, "the request")
    p.add_argument("--justification", required=True, help="the business need (required)")
    p.add_argument("--owner", required=True, help="who owns the service")
    p.add_argument("--ticket", help="change ticket reference")
    p.add_argument(
        "--review-by", type=_date_arg, help="review date, YYYY-MM-DD (default: six months)"
    )
    p.add_argument("--mitigation", help="required for insecure services (telnet, ftp, ...)")
    p.add_argument(
        "--on-behalf-of",
        metavar="TEXT",
        help="whom you ask for (recorded as text; the requester is you, as the system knows you)",
    )

    p = add(
        "approve",
        cmd_approve,
        "approve a finding's port (F-...) or a request (R-...); a pending request on the "
        "finding is used",
    )
    p.add_argument("id", metavar="FINDING|REQUEST", help="e.g. F-0001 or R-0001")
    _add_json(p, "the finding and its approval")
    p.add_argument("--justification", help="the business need (required when there is no request)")
    p.add_argument("--owner", help="who owns the service (required when there is no request)")
    p.add_argument("--ticket", help="change ticket reference")
    p.add_argument(
        "--review-by", type=_date_arg, help="review date, YYYY-MM-DD (default: six months)"
    )
    p.add_argument("--mitigation", help="required for insecure services (telnet, ftp, ...)")
    p.add_argument(
        "--requester",
        help="who asked for the port, as text: recorded but not four eyes (with separation of "
        "duties on, the request must be recorded by its requester: `portconsole request`)",
    )

    p = add("requests", cmd_requests, "list pending approval requests (--all for approved ones)")
    p.add_argument("--all", action="store_true", help="include approved and withdrawn requests")
    _add_json(p, "the requests")

    p = add("approvals", cmd_approvals, "list approval records, with four eyes and last review")
    p.add_argument("--all", action="store_true", help="include retired approvals")
    _add_json(p, "the approvals")

    p = add(
        "review",
        cmd_review,
        "record a review of an approval (PCI DSS 1.2.7): keep it, ask for a change, or retire it",
    )
    p.add_argument("id", metavar="APPROVAL", help="an approval id, e.g. A-0001")
    _add_json(p, "the approval")
    p.add_argument(
        "--outcome",
        required=True,
        choices=REVIEW_OUTCOMES,
        help="keep: still needed as it is; change: stays in force, but a change was asked for "
        "(request it as a new approval); retire: no longer needed, the approval is retired",
    )
    p.add_argument("--note", required=True, help="what was checked and concluded")
    p.add_argument(
        "--next-review",
        type=_date_arg,
        help="next review date, YYYY-MM-DD (keep/change; default: six months from now)",
    )

    p = add(
        "close",
        cmd_close,
        "close a finding with its root cause (e.g. a monitoring gap); it stays in the record",
    )
    p.add_argument("id", nargs="+", metavar="FINDING", help="finding ids, e.g. F-0001 F-0002")
    _add_json(p, "the finding")
    p.add_argument("--cause", required=True, help="what caused it, e.g. 'scanner VM rebooted'")

    p = add("reopen", cmd_reopen, "reopen a flagged or closed finding: it is new again")
    p.add_argument("id", metavar="FINDING", help="a finding id, e.g. F-0001")
    _add_json(p, "the finding")
    p.add_argument("--reason", required=True, help="why it needs attention again")

    p = add(
        "revoke",
        cmd_revoke,
        "revoke a mistaken approval: it is retired, and the port it allowed is a finding again",
    )
    p.add_argument("id", metavar="APPROVAL", help="an approval id, e.g. A-0001")
    _add_json(p, "the approval and the finding back in the queue")
    p.add_argument("--reason", required=True, help="what was wrong with the approval")

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
