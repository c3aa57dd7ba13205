"""The continuity ledger: for each target group, every stretch covered or a gap, with its cause.

Pure: the evidence pack's builder (services/evidence_pack.py) reads the scans, the settings
events, the recorded gaps and the findings, and this module lays the ledger out.

- **From when**: a group is in the ledger from when it was configured (the first settings
  event whose definitions name it) until the period's end, or until a later settings event
  no longer names it. A journal written before settings events carried definitions gives
  the group's first scan instead, and the ledger says so (`configured_basis`). Nothing
  before that is a gap: the group did not exist.
- **Covered**: a group is covered for one *window* (interval + jitter + gap grace, the
  window of the group as configured at the period's end) after each successful scan of it,
  and for one window after it was configured (its first scan is due). Imported and ad hoc
  scans count for a group when they covered every address, port and protocol of it
  (`attach_scans`); the others are listed as ad hoc.
- **Gap**: any time not covered, and every gap the scheduler recorded (a late, failed or
  partial run), merged into one row where they meet. A recorded gap explains the hole that
  follows it within one window (a failed run is why coverage lapsed). Each row has its
  cause, the monitoring-gap finding raised for it, and the root cause given when that
  finding was closed (`portconsole close FINDING --cause T`), as of the period's end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from msgspec import Struct

from portconsole.core.domain.coverage import port_list
from portconsole.core.domain.finding import OPEN_STATUSES, Finding
from portconsole.core.domain.report_figures import (
    first_step,
    seconds,
    status_from_steps,
    steps_until,
)
from portconsole.core.domain.schedule import Gap
from portconsole.core.domain.settings_history import GroupDefinition, SettingsRecord
from portconsole.core.domain.targets import Scope, expand_targets
from portconsole.core.errors import TargetError
from portconsole.core.timeutil import iso, parse_iso

# Group targets are expanded only to match scans against them, never to scan: any address.
_ANY_ADDRESS = Scope(["0.0.0.0/0", "::/0"])

GAP_CAUSES = {
    "late": "late: the scheduled scan did not start on time",
    "failed": "failed: a scan run failed, was cancelled or never finished",
    "partial": "partial: a scan run covered fewer hosts than planned",
}
UNRECORDED_CAUSE = "no successful scan within the window (no gap was recorded at the time)"
STILL_OPEN = " (still open at the period's end)"


class ScanMark(Struct, frozen=True):
    """What the ledger needs of one scan record."""

    scan_id: str
    group: str
    finished: datetime
    success: bool
    addresses: frozenset[str]
    ports: str
    protocols: frozenset[str]
    imported: bool

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> ScanMark:
        return cls(
            scan_id=str(record["scan_id"]),
            group=str(record.get("group") or ""),
            finished=parse_iso(str(record["finished_at"])),
            success=record.get("outcome") == "success",
            addresses=frozenset(record.get("addresses") or ()),
            ports=str(record.get("ports") or ""),
            protocols=frozenset(p.lower() for p in record.get("protocols") or ("tcp",)),
            imported=bool(record.get("imported", False)),
        )


def group_addresses(definition: GroupDefinition) -> frozenset[str] | None:
    """The addresses a group names, or None when they cannot be known here (host names)."""
    try:
        return frozenset(expand_targets(definition.targets, _ANY_ADDRESS))
    except TargetError:
        return None


def _matches(scan: ScanMark, definition: GroupDefinition, addresses: frozenset[str] | None) -> bool:
    wanted, have = port_list(definition.ports), port_list(scan.ports)
    if not addresses or wanted is None or have is None:
        return False
    # Ranges are merged, so a wanted range inside the scan's list lies inside one of them.
    every_port = all(any(lo <= a and b <= hi for lo, hi in have.ranges) for a, b in wanted.ranges)
    return (
        addresses <= scan.addresses and every_port and set(definition.protocols) <= scan.protocols
    )


def attach_scans(
    scans: Iterable[ScanMark], definitions: Mapping[str, GroupDefinition]
) -> tuple[dict[str, list[ScanMark]], list[str]]:
    """Scans per group, and the ids of the ad hoc scans (no group covered by them).

    A scan run for a group belongs to it; any other scan (an import, an ad hoc run) belongs
    to every group whose addresses, ports and protocols it all covered.
    """
    addresses = {name: group_addresses(d) for name, d in definitions.items()}
    per_group: dict[str, list[ScanMark]] = {}
    ad_hoc: list[str] = []
    for scan in scans:
        if scan.group:
            per_group.setdefault(scan.group, []).append(scan)
            continue
        owners = [n for n, d in definitions.items() if _matches(scan, d, addresses[n])]
        for name in owners:
            per_group.setdefault(name, []).append(scan)
        if not owners:
            ad_hoc.append(scan.scan_id)
    return per_group, ad_hoc


def configured(
    name: str, records: Sequence[SettingsRecord], first_scan: datetime | None
) -> tuple[datetime | None, datetime | None, str]:
    """When the group was configured, when it was removed (or None), and on what basis."""
    start: datetime | None = None
    removed: datetime | None = None
    undefined_before = False
    for record in records:
        if record.groups is None:
            if start is None:
                undefined_before = True
            continue
        if name in record.groups:
            if start is None:
                start = record.at
            removed = None
        elif start is not None and removed is None:
            removed = record.at
    if start is not None and not (undefined_before and first_scan and first_scan < start):
        return start, removed, "the first settings event that defines the group"
    if first_scan is not None:
        return (
            first_scan,
            removed,
            "the group's first scan: the journal holds no group definition from before it",
        )
    return None, None, "never configured or scanned"


def _union(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _complement(
    spans: list[tuple[datetime, datetime]], lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime]]:
    holes, cursor = [], lo
    for a, b in spans:
        if a > cursor:
            holes.append((cursor, min(a, hi)))
        cursor = max(cursor, b)
        if cursor >= hi:
            break
    if cursor < hi:
        holes.append((cursor, hi))
    return [(a, b) for a, b in holes if b > a]


class RecordedGap(Struct, frozen=True):
    """A gap the scheduler recorded, with the finding raised for it and its closing cause."""

    gap: Gap
    finding_id: str
    closed_cause: str


def _detected(finding: Finding) -> datetime:
    step = first_step(finding.timeline, "detected")
    return step.at if step else finding.first_seen


def gap_finding(gap: Gap, findings: Iterable[Finding]) -> Finding | None:
    """The monitoring-gap finding raised (or refreshed) for `gap`."""
    mine = [f for f in findings if f.kind == "monitoring_gap" and f.host == gap.group]
    exact = [f for f in mine if f.details.get("start") == iso(gap.start)]
    if exact:
        return exact[0]
    # An open gap finding of the group is refreshed by the next gap, not raised again.
    open_then = [
        f
        for f in mine
        if _detected(f) <= gap.start
        and status_from_steps(f, steps_until(f, gap.start)) in OPEN_STATUSES
    ]
    if open_then:
        return max(open_then, key=_detected)
    later = sorted(
        (f for f in mine if _detected(f) >= gap.start), key=lambda f: (_detected(f), f.id)
    )
    return later[0] if later else None


def closed_cause(finding: Finding, end: datetime) -> str:
    """The root cause given when the finding was closed, if it was by `end`."""
    step = first_step(steps_until(finding, end), "closed")
    if step is not None:
        return step.text or str(finding.details.get("cause", ""))
    return ""


def recorded_gaps(
    gaps: Iterable[Gap], findings: Sequence[Finding], end: datetime
) -> list[RecordedGap]:
    out = []
    for gap in gaps:
        finding = gap_finding(gap, findings)
        out.append(
            RecordedGap(
                gap,
                finding.id if finding else "",
                closed_cause(finding, end) if finding else "",
            )
        )
    return out


def _gap_row(
    lo: datetime, hi: datetime, causes: list[RecordedGap], open_at_end: bool
) -> dict[str, Any]:
    texts = list(dict.fromkeys(GAP_CAUSES.get(r.gap.reason, r.gap.reason) for r in causes))
    cause = "; ".join(texts) if texts else UNRECORDED_CAUSE
    return {
        "kind": "gap",
        "start": iso(lo),
        "end": iso(hi),
        "seconds": seconds(hi - lo),
        "cause": cause + (STILL_OPEN if open_at_end else ""),
        "finding_id": next((r.finding_id for r in causes if r.finding_id), None),
        "closed_cause": next((r.closed_cause for r in causes if r.closed_cause), ""),
        "recorded_gaps": [r.gap.id for r in causes],
    }


def group_ledger(
    name: str,
    *,
    configured_at: datetime | None,
    removed_at: datetime | None,
    basis: str,
    interval: int | None,
    window: timedelta,
    successes: Sequence[datetime],
    gaps: Sequence[RecordedGap],
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    """One group's ledger over [start, end] (see the module's docstring)."""
    row: dict[str, Any] = {
        "group": name,
        "configured_at": iso(configured_at) if configured_at else None,
        "configured_basis": basis,
        "removed_at": iso(removed_at) if removed_at else None,
        "interval_seconds": interval,
        "window_seconds": seconds(window),
        "from": None,
        "to": None,
        "covered_seconds": 0.0,
        "gap_seconds": 0.0,
        "gaps": 0,
        "entries": [],
    }
    lo = max(start, configured_at) if configured_at else None
    hi = min(end, removed_at) if removed_at else end
    if lo is None or lo >= hi:
        return row
    row["from"], row["to"] = iso(lo), iso(hi)
    assert configured_at is not None
    marks = [configured_at, *(t for t in successes if t <= hi)]
    covered = _union((t, t + window) for t in marks)
    last_cover = max((b for _, b in covered), default=lo)
    holes = _complement(covered, lo, hi)
    relevant = [r for r in gaps if r.gap.end >= lo - window and r.gap.start <= hi]
    spans: list[tuple[datetime, datetime, list[RecordedGap]]] = []
    used: set[str] = set()
    for a, b in holes:
        causes = [r for r in relevant if r.gap.start <= b and r.gap.end >= a - window]
        used.update(r.gap.id for r in causes)
        a = min([a, *(r.gap.start for r in causes)])
        b = max([b, *(r.gap.end for r in causes)])
        spans.append((max(lo, a), min(hi, b), causes))
    for r in relevant:
        if r.gap.id not in used:
            spans.append((max(lo, r.gap.start), min(hi, max(r.gap.end, r.gap.start)), [r]))
    spans.sort(key=lambda s: (s[0], s[1]))
    merged: list[tuple[datetime, datetime, list[RecordedGap]]] = []
    for a, b, causes in spans:
        if b < a:
            continue
        if merged and a <= merged[-1][1]:
            pa, pb, pc = merged[-1]
            merged[-1] = (pa, max(pb, b), pc + [c for c in causes if c not in pc])
        else:
            merged.append((a, b, list(causes)))
    entries: list[dict[str, Any]] = []
    cursor = lo
    for a, b, causes in merged:
        if a > cursor:
            entries.append(_covered_row(cursor, a, successes))
        entries.append(_gap_row(a, b, causes, b >= hi and last_cover < hi))
        cursor = max(cursor, b)
    if cursor < hi:
        entries.append(_covered_row(cursor, hi, successes))
    row["entries"] = entries
    row["covered_seconds"] = seconds(
        sum(
            (
                parse_iso(e["end"]) - parse_iso(e["start"])
                for e in entries
                if e["kind"] == "covered"
            ),
            timedelta(),
        )  # fmt: skip
    )
    row["gap_seconds"] = seconds(
        sum(
            (parse_iso(e["end"]) - parse_iso(e["start"]) for e in entries if e["kind"] == "gap"),
            timedelta(),
        )  # fmt: skip
    )
    row["gaps"] = sum(1 for e in entries if e["kind"] == "gap")
    return row


def _covered_row(lo: datetime, hi: datetime, successes: Sequence[datetime]) -> dict[str, Any]:
    return {
        "kind": "covered",
        "start": iso(lo),
        "end": iso(hi),
        "seconds": seconds(hi - lo),
        "cause": "",
        "finding_id": None,
        "closed_cause": "",
        "scans": sum(1 for t in successes if lo <= t <= hi),
    }
