"""An evidence pack's figures, recomputed from the journal's events alone (standard library).

Copied verbatim into every pack's `verify_pack.py` (after domain/chain.py, before
domain/pack_checks.py), so an assessor recomputes the figures without PortConsole: no
PortConsole import here, ever.

Replaying every event's `effects` in seq order rebuilds the findings and approvals documents
(see adapters/projection.py); `scan.end` events give the scans, `change.port_opened`,
`change.port_closed` and `change.port_filtered` the open ports, `monitoring.gap` events and
monitoring_gap findings the gaps. Here is what each figure should be; domain/pack_checks.py compares the document
(figures.json) with it, one line per problem, each naming the figure and what the events say:

- every row traces to events: findings (as of the period's end: timeline steps after it are
  left out), scans, the approvals register, gaps; and every finding, scan and approval the
  events put in the period has its row;
- the aggregates follow from the rows by the contract's definitions (docs/journal.md; the
  pack's own "definitions"): counts, time to detect and to respond (count, median, p90
  nearest-rank, max) over port findings detected in the period, SLA breaches;
- the keys added later (population, continuity, approvals.reviews, metrics.by_kind) are
  checked when the document has them.

The period's parameters (from, to, sla_hours, due_soon_days) are read from the document:
they are what the figures claim to be about, printed on the report's first page.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

# The contract's definitions (docs/journal.md, domain/compliance.py prints them).
PORT_KINDS = ("unapproved_port", "insecure_service", "service_changed", "approved_port_gone")
RESPONSE_STEPS = ("acknowledged", "decided", "remediated", "verified", "closed")
SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")
# Events a report's own making writes: never a figure (the export, the anchor after it).
REPORT_OWN_ACTIONS = ("export",)


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 time as the journal writes it (UTC, `Z`), or None."""
    if not isinstance(text, str) or not text:
        return None
    raw = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def seconds_between(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 6)


def replay(events: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The projection tables as the events' effects leave them (seq order)."""
    tables: dict[str, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: int(e.get("seq", 0))):
        effects = event.get("effects") or {}
        for name, docs in (effects.get("set") or {}).items():
            table = tables.setdefault(name, {})
            for key, doc in docs.items():
                table[key] = copy.deepcopy(doc)
        for name, keys in (effects.get("del") or {}).items():
            for key in keys:
                (tables.get(name) or {}).pop(key, None)
    return tables


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """count, median (mean of the middle two for an even count), p90 (nearest rank), max."""
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "median_seconds": float(statistics.median(ordered)) if ordered else None,
        "p90_seconds": float(ordered[math.ceil(0.9 * len(ordered)) - 1]) if ordered else None,
        "max_seconds": ordered[-1] if ordered else None,
    }


# --------------------------------------------------------------------------- findings


def steps_until(doc: Mapping[str, Any], end: datetime) -> list[dict[str, Any]]:
    kept = []
    for step in doc.get("timeline") or []:
        at = parse_time(step.get("at"))
        if at is not None and at <= end:
            kept.append({**step, "_at": at})
    return kept


def first_step(steps: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((s for s in steps if s.get("step") == name), None)


def status_after(doc: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> str:
    """A finding's status after `steps` (its stored status when no step was left out)."""
    if len(steps) == len(doc.get("timeline") or []):
        return str(doc.get("status"))
    status = before_resolved = "new"
    for entry in steps:
        step, text = entry.get("step"), str(entry.get("text", "")).lower()
        if step == "acknowledged":
            status = "acknowledged"
        elif step == "decided":
            for prefix, name in (
                ("approved", "approved"),
                ("flagged", "flagged"),
                ("risk accepted", "risk_accepted"),
            ):
                if text.startswith(prefix):
                    status = name
        elif step == "closed":
            status = "closed"
        elif step in ("remediated", "verified"):
            if status != "resolved":
                before_resolved = status
            status = "resolved"
        elif step == "reopened":
            status = before_resolved if status == "resolved" else "new"
            if status not in ("new", "acknowledged", "flagged", "risk_accepted"):
                status = "new"
    return status


def finding_figures(
    doc: Mapping[str, Any], start: datetime, end: datetime, sla_hours: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A finding's row as the events give it, or None when it is not in the period."""
    steps = steps_until(doc, end)
    detected_step = first_step(steps, "detected")
    detected = detected_step["_at"] if detected_step else parse_time(doc.get("first_seen"))
    if detected is None or detected > end:
        return None
    in_period = detected >= start
    carried = not in_period and status_after(doc, steps_until(doc, start)) not in (
        "resolved",
        "approved",
    )
    touched = any(start <= s["_at"] <= end for s in steps)
    if not (in_period or carried or touched):
        return None
    decided = first_step(steps, "decided")
    response = min(
        (s for s in steps if s.get("step") in RESPONSE_STEPS), key=lambda s: s["_at"], default=None
    )
    responded = response["_at"] if response else None
    hours = sla_hours.get(str(doc.get("severity")))
    breach = ""
    if hours is not None:
        deadline = detected + timedelta(hours=float(hours))
        if responded is not None and responded > deadline:
            breach = "responded after the SLA"
        elif responded is None and deadline < end:
            breach = "no response by the period's end"
    return {
        "kind": doc.get("kind"),
        "severity": doc.get("severity"),
        "host": doc.get("host"),
        "port": doc.get("port"),
        "proto": doc.get("proto"),
        "detected": detected,
        "detected_in_period": in_period,
        "carried_over": carried,
        "responded": responded,
        "response_step": response.get("step") if response else None,
        "time_to_respond_seconds": (
            seconds_between(responded, detected) if responded is not None else None
        ),
        "decided": decided["_at"] if decided else None,
        "status_at_end": status_after(doc, steps),
        "port_finding": doc.get("kind") in PORT_KINDS,
        "sla_hours": float(hours) if hours is not None else None,
        "sla_breach": breach,
        "_steps": steps,
    }


# --------------------------------------------------------------------------- approvals


def in_force(doc: Mapping[str, Any], at: datetime) -> bool:
    """Recorded (created_at) by `at` and not retired by then."""
    created = parse_time(doc.get("created_at"))
    if created is not None and created > at:
        return False
    retired = parse_time(doc.get("retired_at"))
    return doc.get("status") == "active" or (retired is not None and retired > at)


def approval_at(
    approvals: Iterable[Mapping[str, Any]], key: tuple[Any, Any, Any], at: datetime
) -> Mapping[str, Any] | None:
    """The approval in force for host:port/proto at `at` (the newest approved)."""
    found = [
        a
        for a in approvals
        if (a.get("host"), a.get("port"), a.get("proto")) == key and in_force(a, at)
    ]
    return (
        max(found, key=lambda a: (str(a.get("approved_at")), str(a.get("id")))) if found else None
    )


def review_by_at(doc: Mapping[str, Any], at: datetime) -> datetime | None:
    reviews = doc.get("reviews") or []
    due = parse_time(reviews[0].get("previous_review_by") if reviews else doc.get("review_by"))
    for review in reviews:
        done, nxt = parse_time(review.get("at")), parse_time(review.get("next_review_by"))
        if done is not None and done <= at and nxt is not None:
            due = nxt
    return due


def approval_figures(doc: Mapping[str, Any], end: datetime, due_soon: timedelta) -> dict[str, Any]:
    """An approval's register row as the events give it (as of the period's end)."""
    force = in_force(doc, end)
    due = review_by_at(doc, end)
    if not force:
        review = "retired"
    elif due is not None and due < end:
        review = "overdue"
    elif due is not None and due <= end + due_soon:
        review = "due"
    else:
        review = "ok"
    done = [r for r in doc.get("reviews") or [] if (parse_time(r.get("at")) or end) <= end]
    last = done[-1] if done else None
    source = str(doc.get("source", ""))
    return {
        **{k: doc.get(k) for k in _APPROVAL_COPIED},
        "approved_at": parse_time(doc.get("approved_at")),
        "requested_by": doc.get("requested_by") or None,
        "requested_at": parse_time(doc.get("requested_at")),
        "recorded_at": parse_time(doc.get("created_at") or doc.get("approved_at")),
        "approved_by": (
            f"{doc.get('approver')} (named in the baseline file)"
            if source.startswith("baseline:")
            else doc.get("created_by") or doc.get("approver")
        ),
        "review_by": due,
        "in_force_at_end": force,
        "review": review,
        "retired_at": None if force else parse_time(doc.get("retired_at")),
        "last_review": (
            {k: last.get(k) for k in ("at", "reviewer", "outcome", "note", "next_review_by")}
            if last
            else None
        ),
    }


_APPROVAL_COPIED = (
    "host",
    "port",
    "proto",
    "service",
    "justification",
    "owner",
    "requester",
    "approver",
    "ticket",
    "four_eyes",
    "mitigation",
    "source",
)


# --------------------------------------------------------------------------- gaps, ports, statistics


def recorded_gaps(
    events: Iterable[Mapping[str, Any]], findings: Iterable[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Every gap the events record once, by id (the closed record wins over the ongoing)."""
    found: dict[str, dict[str, Any]] = {}
    candidates = [
        dict(e.get("details") or {}) for e in events if e.get("action") == "monitoring.gap"
    ]
    for doc in findings:
        if doc.get("kind") == "monitoring_gap":
            candidates.append({"group": doc.get("host"), **(doc.get("details") or {})})
    for gap in candidates:
        start, end = parse_time(gap.get("start")), parse_time(gap.get("end"))
        if not gap.get("id") or start is None or end is None:
            continue
        gap = {**gap, "start": start, "end": end}
        current = found.get(str(gap["id"]))
        if current is None or (bool(current.get("ongoing")), -current["end"].timestamp()) > (
            bool(gap.get("ongoing")),
            -end.timestamp(),
        ):
            found[str(gap["id"])] = gap
    return found


def open_ports_at(events: Iterable[Mapping[str, Any]], at: datetime) -> dict[tuple, str]:
    """The ports open at `at` by the change events up to then: {(host, port, proto): service}."""
    state: dict[tuple, str] = {}
    for event in events:
        action = event.get("action")
        if action not in ("change.port_opened", "change.port_closed", "change.port_filtered"):
            continue
        moment = parse_time(event.get("at"))
        if moment is None or moment > at:
            continue
        resource = event.get("resource") or {}
        key = (resource.get("host"), resource.get("port"), resource.get("proto"))
        if action == "change.port_opened":
            state[key] = str(((event.get("details") or {}).get("after") or {}).get("service", ""))
        else:
            state.pop(key, None)
    return state


def severity_stats(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """Per severity (most severe first, then any other) and "all"."""
    found = {str(r.get("severity")) for r in rows}
    order = [*SEVERITY_ORDER, *sorted(found - set(SEVERITY_ORDER))]
    out = {
        severity: summarise(
            [r[key] for r in rows if r.get("severity") == severity and r.get(key) is not None]
        )
        for severity in order
    }
    out["all"] = summarise([r[key] for r in rows if r.get(key) is not None])
    return out


def report_own(event: Mapping[str, Any]) -> bool:
    details = event.get("details") or {}
    return event.get("action") in REPORT_OWN_ACTIONS or (
        event.get("action") == "audit.anchor" and details.get("reason") == "export"
    )
