"""The small rules behind every report figure: as-of views, statistics, the figures' hash.

Shared by the point-in-time report, the evidence pack and their renderers, so a median, a
severity order or a finding's status at T means the same in every figure and format ("the
approval in force at T" is one rule too: domain/approval.py approval_in_force).

- **Median** is the middle value (mean of the two middle values for an even count); **p90** is
  the nearest-rank 90th percentile (the value at rank ceil(0.9 n) of the sorted values).
- A finding's status at a time replays its timeline steps up to then (`status_from_steps`).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from portconsole.core.domain.chain import canonical_json
from portconsole.core.domain.finding import Finding, TimelineEntry
from portconsole.core.domain.model import SEVERITIES as LEAST_SEVERE_FIRST
from portconsole.core.timeutil import iso

# Most severe first, as reports list them (the settings' order, reversed).
SEVERITIES = tuple(reversed(LEAST_SEVERE_FIRST))
# An approval whose review falls within this long after the period's end is listed as due.
DUE_SOON = timedelta(days=30)


def utc(moment: datetime) -> datetime:
    """The moment in UTC; a naive moment is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso_or_none(moment: datetime | None) -> str | None:
    """`iso`, passing None through."""
    return iso(moment) if moment is not None else None


def seconds(delta: timedelta) -> float:
    """A time span in seconds, to the microsecond."""
    return round(delta.total_seconds(), 6)


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def p90(values: Sequence[float]) -> float | None:
    """Nearest-rank 90th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[math.ceil(0.9 * len(ordered)) - 1])


def summarise(values: Sequence[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "median_seconds": median(values),
        "p90_seconds": p90(values),
        "max_seconds": max(values) if values else None,
    }


def severity_order(found: Iterable[str]) -> list[str]:
    extra = sorted({s for s in found if s not in SEVERITIES})
    return [*SEVERITIES, *extra]


# What describes the moment of generation, not the period: left out of `figures_sha256`.
GENERATION_KEYS = ("generated", "audit_chain", "figures_sha256")
SCOPE_GENERATION_KEYS = ("generated_at", "clock", "generator")
# Journal events a report's own making writes (the export, and the anchor published after
# it): a period that includes now must give the same figures before and after an export.
REPORT_OWN_ACTIONS = frozenset({"export"})


def report_own_event(action: str, details: dict[str, Any]) -> bool:
    """Whether a journal event was written by making a report (never counted as a figure)."""
    return action in REPORT_OWN_ACTIONS or (
        action == "audit.anchor" and details.get("reason") == "export"
    )


def figures_body(document: dict[str, Any]) -> dict[str, Any]:
    """The document as `figures_sha256` hashes it (see GENERATION_KEYS)."""
    body = {k: v for k, v in document.items() if k not in GENERATION_KEYS}
    scope = body.get("scope")
    if isinstance(scope, dict):
        body["scope"] = {k: v for k, v in scope.items() if k not in SCOPE_GENERATION_KEYS}
    return body


def figures_sha256(document: dict[str, Any]) -> str:
    """sha256 of the figures alone: the document without what describes its generation
    (the generation block, the audit chain's verification then, and the scope's generation
    time, clock and generator), as canonical JSON. Equal for every format and for every
    regeneration of the same period from the same records."""
    return hashlib.sha256(canonical_json(figures_body(document))).hexdigest()


def steps_until(finding: Finding, end: datetime) -> list[TimelineEntry]:
    return [entry for entry in finding.timeline if entry.at <= end]


def first_step(steps: Iterable[TimelineEntry], name: str) -> TimelineEntry | None:
    return next((entry for entry in steps if entry.step == name), None)


def status_from_steps(finding: Finding, steps: list[TimelineEntry]) -> str:
    """The finding's status after `steps` (its stored status when no step was cut off)."""
    if len(steps) == len(finding.timeline):
        return finding.status
    status = "new"
    before_resolved = "new"
    for entry in steps:
        if entry.step == "acknowledged":
            status = "acknowledged"
        elif entry.step == "decided":
            text = entry.text.lower()
            if text.startswith("approved"):
                status = "approved"
            elif text.startswith("flagged"):
                status = "flagged"
            elif text.startswith("risk accepted"):
                status = "risk_accepted"
        elif entry.step == "closed":
            status = "closed"
        elif entry.step in ("remediated", "verified"):
            if status != "resolved":
                before_resolved = status
            status = "resolved"
        elif entry.step == "reopened":
            status = before_resolved if status == "resolved" else "new"
            if status not in ("new", "acknowledged", "flagged", "risk_accepted"):
                status = "new"
    return status
