"""One baseline rule's fields, read and checked against the approval policy.

A rule names ports, a protocol and the approval's record (service, justification, owner,
requester and approver, dates, ticket, mitigation), some of them inherited from `defaults`.
Every field is checked here, each problem reported at its line through `problem`, so the
policy's rules for an approval in a file live in one place; the reader (adapters/baseline.py)
turns a rule without problems into one approval per host and port.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from msgspec import Struct

from portconsole.core.domain.approval import PROTOCOLS, is_insecure, is_placeholder, person_of
from portconsole.core.domain.baseline_format import TEXT_KEYS, shown_date
from portconsole.core.domain.targets import PortSpec, parse_ports
from portconsole.core.errors import TargetError
from portconsole.core.settings import ApprovalSettings
from portconsole.core.timeutil import add_months, parse_iso

# Reports one problem: (line, field path, message).
Problem = Callable[[int, str, str], None]


class Value(Struct):
    """A rule field's value, with the line and field path it came from (maybe `defaults`)."""

    value: Any
    line: int
    where: str  # the field path shown in problems


class RuleFields(Struct, frozen=True):
    """A rule's fields as read; `ports` is None when they had a problem."""

    ports: PortSpec | None
    proto: str
    service: str
    product: str
    justification: str
    owner: str
    requester: str
    approver: str
    ticket: str
    mitigation: str
    approved_at: datetime | None
    review_by: datetime | None


def check_rule(
    values: dict[str, Value],
    rule_line: int,
    where: str,
    policy: ApprovalSettings,
    problem: Problem,
) -> RuleFields:
    """Read and check a rule's fields (its own and those inherited), reporting each problem.

    `review_by` defaults to `approved_at` plus the policy's review months.
    """

    def missing(name: str, what: str) -> None:
        problem(rule_line, f"{where}.{name}", f"missing: {what}")

    ports = None
    if "ports" not in values:
        missing("ports", "give ports or ranges such as 80,443 or 8000-8100")
    else:
        item = values["ports"]
        if isinstance(item.value, bool) or not isinstance(item.value, int | str):
            problem(item.line, item.where, "must be ports such as 80,443 or 8000-8100")
        else:
            try:
                ports = parse_ports(str(item.value))
            except TargetError as error:
                problem(item.line, item.where, str(error))

    proto = "tcp"
    if "proto" in values:
        item = values["proto"]
        if not isinstance(item.value, str) or item.value.strip().lower() not in PROTOCOLS:
            problem(item.line, item.where, f"must be one of {', '.join(PROTOCOLS)}")
        else:
            proto = item.value.strip().lower()

    text: dict[str, str] = {}
    for name in (*TEXT_KEYS, "ticket"):
        if name not in values:
            continue
        item = values[name]
        if name == "ticket" and isinstance(item.value, int) and not isinstance(item.value, bool):
            text[name] = str(item.value)
        elif isinstance(item.value, str):
            text[name] = item.value.strip()
        else:
            problem(item.line, item.where, "must be text (quote it)")
            text[name] = ""

    def line_of(name: str) -> int:
        return values[name].line if name in values else rule_line

    def where_of(name: str) -> str:
        return values[name].where if name in values else f"{where}.{name}"

    service = text.get("service", "")
    if "service" not in values:
        missing("service", "name the expected service (e.g. ssh, http; `*` for any)")
    elif not service:
        problem(line_of("service"), where_of("service"), "is empty; name the expected service")
    product = text.get("product", "")
    if product.startswith("re:"):
        try:
            re.compile(product[3:])
        except re.error as error:
            problem(line_of("product"), where_of("product"), f"bad regular expression: {error}")
    justification = text.get("justification", "")
    if "justification" not in values:
        missing("justification", "say what business need the port serves")
    elif not justification or is_placeholder(justification):
        problem(
            line_of("justification"),
            where_of("justification"),
            f"{justification!r} justifies nothing; say what business need the port serves",
        )
    for name, what in (
        ("owner", "name the team or person responsible"),
        ("approver", "name who approved it"),
    ):
        if name not in values:
            missing(name, what)
        elif not text.get(name):
            problem(line_of(name), where_of(name), f"is empty; {what}")
    requester = text.get("requester", "")
    approver = text.get("approver", "")
    if policy.separation_of_duties:
        if "requester" not in values:
            missing("requester", "separation of duties is on: name who asked for the port")
        elif not requester:
            problem(line_of("requester"), where_of("requester"), "is empty; name who asked")
        elif approver and person_of(requester) == person_of(approver):
            problem(
                line_of("approver"),
                where_of("approver"),
                f"separation of duties: {person_of(approver)} requested this and cannot "
                "also approve it",
            )
    mitigation = text.get("mitigation", "")
    if service and is_insecure(service, policy.insecure_services) and not mitigation:
        problem(
            line_of("service"),
            where_of("mitigation"),
            f"{service} is an insecure service: add a `mitigation:` describing the "
            "compensating control",
        )

    approved_at = _date_value(values, "approved_at", problem)
    if "approved_at" not in values:
        missing("approved_at", "give the approval date, e.g. 2026-05-01")
    review_by = _date_value(values, "review_by", problem)
    if approved_at is not None and review_by is not None:
        latest = add_months(approved_at, policy.review_months)
        if review_by <= approved_at:
            problem(
                line_of("review_by"),
                where_of("review_by"),
                f"review_by {shown_date(review_by)} is not after approved_at "
                f"{shown_date(approved_at)}",
            )
        elif review_by > latest:
            problem(
                line_of("review_by"),
                where_of("review_by"),
                f"review_by {shown_date(review_by)} is more than {policy.review_months} "
                f"months after approval; review by {shown_date(latest)} at the latest "
                "(approval.review_months)",
            )
    if approved_at is not None and review_by is None:
        review_by = add_months(approved_at, policy.review_months)

    return RuleFields(
        ports=ports,
        proto=proto,
        service=service,
        product=product,
        justification=justification,
        owner=text.get("owner", ""),
        requester=requester,
        approver=approver,
        ticket=text.get("ticket", ""),
        mitigation=mitigation,
        approved_at=approved_at,
        review_by=review_by,
    )


def _date_value(values: dict[str, Value], name: str, problem: Problem) -> datetime | None:
    if name not in values:
        return None
    item = values[name]
    try:
        return _as_datetime(item.value)
    except (ValueError, TypeError):
        problem(item.line, item.where, f"bad date {item.value!r}: use YYYY-MM-DD")
        return None


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        return parse_iso(value)
    raise TypeError("not a date")
