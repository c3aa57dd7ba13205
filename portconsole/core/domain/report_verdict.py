"""The verdict an evidence pack opens with: continuity, exposure, response and integrity.

Four sentences, each with its headline figure and the rows behind it, worked out from the
pack's document alone (the same dict every format renders). The verdict is derived, never
stored in the document, so it cannot change `figures_sha256`.

A sentence is a tuple of parts: `Prose` parts are our own words, plain `str` parts are
values from the records (group names, addresses) that each format escapes its own way.
Where a newer key of the document is missing (an older pack), the sentence falls back to
the figures it does hold and says where it came from:

- continuity: `continuity` (the coverage ledger), else `cadence` (scans and recorded gaps);
- exposure: `population.at_end` (every open port and its approval), else `counts` and the
  port findings still open at the period's end;
- response: `metrics.time_to_respond` per severity against `parameters.sla_hours`, and
  `metrics.sla_breaches`;
- integrity: `audit_chain` (verified at generation, its head) and the anchors published in
  the period (`anchors` when the document lists them, else the period's `audit.anchor`
  events).
"""

from __future__ import annotations

import math
from typing import Any

from msgspec import Struct

from portconsole.core.domain.finding import OPEN_STATUSES
from portconsole.core.domain.report_figures import severity_order
from portconsole.core.domain.report_layout import Prose, human_duration, port_text
from portconsole.core.timeutil import parse_iso

# How many named items (ports, findings) a sentence lists before "and N more".
NAMED = 3


class Verdict(Struct, frozen=True):
    """One line of a report's verdict: a figure, its parts, and whether it needs attention."""

    key: str  # continuity | exposure | response | integrity
    label: str
    figure: str  # the headline figure, our own words
    parts: tuple[str, ...]  # the sentence: Prose is ours, plain str comes from the records
    attention: bool  # whether an assessor must look at the rows behind it
    # Where the rows behind it are: table names or section anchors, first present wins.
    targets: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.parts)


def when(text: str | None) -> str:
    """An ISO timestamp as a sentence shows it (`2026-10-20 06:00 UTC`)."""
    if not text:
        return "—"
    return parse_iso(text).strftime("%Y-%m-%d %H:%M UTC")


def plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def percent(part: float, whole: float) -> str:
    """`part` of `whole` rounded down to a tenth, so 99.97% never reads as 100%."""
    return f"{math.floor(1000 * part / whole) / 10:g}%"


def _seconds(entry: dict[str, Any]) -> float:
    return (parse_iso(entry["end"]) - parse_iso(entry["start"])).total_seconds()


def _named(items: list[str]) -> list[str]:
    """Up to NAMED values separated by commas, then how many more (values stay plain str)."""
    parts: list[str] = []
    for number, item in enumerate(items[:NAMED]):
        if number:
            parts.append(Prose(", "))
        parts.append(item)
    if len(items) > NAMED:
        parts.append(Prose(f" and {len(items) - NAMED} more"))
    return parts


# --------------------------------------------------------------------------- continuity


def continuity_verdict(doc: dict[str, Any]) -> Verdict:
    ledger = doc.get("continuity")
    if ledger is None:
        return _cadence_verdict(doc)
    monitored = [g for g in ledger["groups"] if g.get("from") is not None]
    idle = len(ledger["groups"]) - len(monitored)
    idle_text = (
        Prose(f" {plural(idle, 'configured group')} had no monitoring in the period.")
        if idle
        else Prose("")
    )
    if not monitored:
        return Verdict(
            "continuity",
            "Continuity",
            "no group monitored",
            (Prose("No target group was monitored in the period, so no coverage is shown."),),
            True,
            ("continuity_groups", "continuity"),
        )
    covered = sum(float(g["covered_seconds"]) for g in monitored)
    gap_time = sum(float(g["gap_seconds"]) for g in monitored)
    share = percent(covered, covered + gap_time) if covered + gap_time else "0%"
    gaps = [(g["group"], e) for g in monitored for e in g["entries"] if e["kind"] == "gap"]
    groups = plural(len(monitored), "group")
    if not gaps:
        return Verdict(
            "continuity",
            "Continuity",
            f"{share} covered, no gap",
            (
                Prose(
                    f"Every stretch of the period was covered by a successful scan in all "
                    f"{groups}, each from when it was configured ({share} of "
                    f"{human_duration(covered)} monitored); no gap."
                ),
                idle_text,
            ),
            bool(idle),
            ("continuity", "continuity_groups"),
        )
    closed = sum(1 for _, e in gaps if e.get("closed_cause"))
    longest_group, longest = max(gaps, key=lambda ge: _seconds(ge[1]))
    span = Prose(f" from {when(longest['start'])} to {when(longest['end'])}")
    if len(gaps) == 1:
        gap_parts = [Prose(f"one gap of {human_duration(gap_time)}, in "), str(longest_group),
                     span, Prose(", " + ("closed with a root cause." if closed else
                                         "not closed with a root cause."))]  # fmt: skip
    else:
        gap_parts = [Prose(f"{len(gaps)} gaps of {human_duration(gap_time)} in all, the longest "
                           f"({human_duration(_seconds(longest))}) in "), str(longest_group),
                     span, Prose(f"; {closed} of {len(gaps)} closed with a root cause.")]  # fmt: skip
    parts: list[str] = [
        Prose(f"{share} of the monitored time was covered in {groups}; "),
        *gap_parts,
        idle_text,
    ]
    return Verdict(
        "continuity",
        "Continuity",
        f"{share} covered, {plural(len(gaps), 'gap')}",
        tuple(parts),
        True,
        ("continuity", "continuity_groups"),
    )


def _cadence_verdict(doc: dict[str, Any]) -> Verdict:
    """Continuity from the scan cadence, for a document without the coverage ledger."""
    cadence = doc["cadence"]
    gaps = cadence["gaps"]
    exceeded = [g for g in cadence["groups"] if g.get("exceeded")]
    total = sum(float(g["duration_seconds"]) for g in gaps)
    return Verdict(
        "continuity",
        "Continuity",
        f"{plural(len(gaps), 'recorded gap')}",
        (
            Prose(
                f"{plural(len(gaps), 'monitoring gap')} recorded in the period "
                f"({human_duration(total)} in all); {len(exceeded)} of "
                f"{plural(len(cadence['groups']), 'group')} went longer than allowed without a "
                "successful scan. (This pack has no coverage ledger: figures from the scan "
                "cadence.)"
            ),
        ),
        bool(gaps or exceeded),
        ("scans", "groups", "cadence"),
    )


# --------------------------------------------------------------------------- exposure


def _location(row: dict[str, Any]) -> str:
    port = port_text(row)
    return f"{row['host']}:{port}" if port else str(row["host"])


def exposure_verdict(doc: dict[str, Any]) -> Verdict:
    population = doc.get("population")
    at_end = population.get("at_end") if isinstance(population, dict) else None
    if at_end is None:
        return _findings_exposure(doc)
    ports = at_end["ports"]
    unapproved = [r for r in ports if not r.get("approval_id")]
    covered = sum(1 for r in unapproved if r.get("finding_id"))
    parts: list[str] = [
        Prose(
            f"At the period's end ({when(at_end['at'])}) {plural(len(ports), 'port was', 'ports were')} "
            f"open: {len(ports) - len(unapproved)} with an approval in force, "
            f"{len(unapproved)} without"
        )
    ]
    if unapproved:
        parts += [Prose(" ("), *_named([_location(r) for r in unapproved]), Prose(")")]
        if len(unapproved) == 1:
            parts.append(Prose("; a finding was raised for it." if covered else
                               "; no finding was raised for it."))  # fmt: skip
        elif covered == len(unapproved):
            parts.append(Prose("; a finding was raised for each."))
        else:
            parts.append(Prose(f"; {covered} of those {len(unapproved)} had a finding raised."))
    else:
        parts.append(Prose("."))
    return Verdict(
        "exposure",
        "Exposure",
        f"{len(unapproved)} of {len(ports)} open ports unapproved",
        tuple(parts),
        bool(unapproved),
        ("population_at_end", "population_end", "population", "findings"),
    )


def _findings_exposure(doc: dict[str, Any]) -> Verdict:
    """Exposure from the findings, for a document without the open-port population."""
    kinds = set(doc["metrics"].get("port_kinds") or ())
    still_open = [
        f for f in doc["findings"] if f["kind"] in kinds and f["status_at_end"] in OPEN_STATUSES
    ]
    detected = int(doc["counts"].get("unapproved_port_findings", 0))
    parts: list[str] = [
        Prose(
            f"{plural(detected, 'unapproved port was', 'unapproved ports were')} detected in "
            f"the period; {plural(len(still_open), 'port finding was', 'port findings were')} "
            "still open at its end"
        )
    ]
    if still_open:
        parts += [
            Prose(" ("),
            *_named([f"{f['id']} {_location(f)}" for f in still_open]),
            Prose(")"),
        ]
    parts.append(Prose(". (This pack has no open-port population: figures from the findings.)"))
    return Verdict(
        "exposure",
        "Exposure",
        f"{plural(len(still_open), 'port finding')} open at the end",
        tuple(parts),
        bool(still_open),
        ("findings",),
    )


# --------------------------------------------------------------------------- response


def response_verdict(doc: dict[str, Any]) -> Verdict:
    metrics = doc["metrics"]
    ttr = metrics["time_to_respond"]
    sla = doc["parameters"].get("sla_hours", {})
    breaches = metrics["sla_breaches"]
    late = sum(1 for b in breaches if b.get("responded"))
    counted = int(metrics.get("findings_counted", ttr["all"]["count"]))
    overall = ttr["all"]
    parts: list[str] = [
        Prose(
            f"{overall['count']} of {plural(counted, 'port finding')} detected in the period "
            "had a response by its end"
        )
    ]
    if overall["count"]:
        parts.append(
            Prose(
                f" (median {human_duration(overall['median_seconds'])}, p90 "
                f"{human_duration(overall['p90_seconds'])})"
            )
        )
    by_severity = []
    for severity in severity_order(ttr):
        stats = ttr.get(severity)
        if severity == "all" or not stats or not stats["count"] or severity not in sla:
            continue
        limit = float(sla[severity]) * 3600
        over = stats["p90_seconds"] is not None and stats["p90_seconds"] > limit
        by_severity.append(
            f"{severity} {human_duration(stats['p90_seconds'])} against {sla[severity]:g} h"
            + (" (over)" if over else "")
        )
    if by_severity:
        parts.append(Prose("; p90 by severity: " + ", ".join(by_severity)))
    if breaches:
        parts.append(
            Prose(
                f". {plural(len(breaches), 'finding')} breached "
                f"{'its' if len(breaches) == 1 else 'their'} SLA: {late} responded "
                f"after it, {len(breaches) - late} had no response by the period's end."
            )
        )
    else:
        parts.append(Prose(". No finding breached its SLA."))
    return Verdict(
        "response",
        "Response",
        f"{plural(len(breaches), 'SLA breach', 'SLA breaches')}" if breaches else "no SLA breach",
        tuple(parts),
        bool(breaches),
        ("sla_breaches", "time_to_respond", "metrics")
        if breaches
        else ("time_to_respond", "metrics"),
    )


# --------------------------------------------------------------------------- integrity


def anchors_in_period(doc: dict[str, Any]) -> int:
    """Anchors published in the period: the document's list, else its `audit.anchor` events."""
    listed = doc.get("anchors")
    if isinstance(listed, list):
        return len(listed)
    return int(doc.get("audit", {}).get("by_action", {}).get("audit.anchor", 0))


def integrity_verdict(doc: dict[str, Any]) -> Verdict:
    chain = doc["audit_chain"]
    anchors = anchors_in_period(doc)
    targets = ("audit_chain", "audit")
    if not chain["ok"]:
        bad = chain.get("first_bad_seq")
        return Verdict(
            "integrity",
            "Integrity",
            "chain BROKEN",
            (
                Prose("The journal's hash chain is BROKEN"),
                Prose(f" at event {bad}" if bad is not None else ""),
                Prose(": "),
                str(chain["reason"]),
                Prose(". Figures from events after that point cannot be relied on."),
            ),
            True,
            targets,
        )
    head = chain.get("head")
    head_text = f"; its head is event {head['seq']}, sha256 {head['hash'][:16]}…" if head else ""
    anchored = (
        f" {plural(anchors, 'anchor was', 'anchors were')} published outside the data "
        "directory in the period: a copy held elsewhere shows the log was not rewritten since."
        if anchors
        else " No anchor was published in the period: the chain shows the log is consistent, "
        "not that it was not rewritten whole; compare its head with a copy held elsewhere."
    )
    return Verdict(
        "integrity",
        "Integrity",
        f"chain intact, {plural(anchors, 'anchor')}",
        (
            Prose(
                f"The journal's hash chain of {plural(int(chain['events']), 'event')} was "
                f"verified intact when this pack was made{head_text}.{anchored}"
            ),
        ),
        not anchors,
        targets,
    )


def verdicts(doc: dict[str, Any]) -> list[Verdict]:
    """The four verdicts of an evidence pack, in reading order."""
    return [
        continuity_verdict(doc),
        exposure_verdict(doc),
        response_verdict(doc),
        integrity_verdict(doc),
    ]
