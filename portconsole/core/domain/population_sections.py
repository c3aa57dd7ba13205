"""The population sections of an evidence pack: every open port at the period's end and at
each sampled date, with its approval and finding then, and the counts over the period.

Laid out from the document's `population` key (domain/population.py makes its rows); the
table model is report_layout.py. The point-in-time report lays its ports out with the same
columns (`population_table`).
"""

from __future__ import annotations

from typing import Any

from portconsole.core.domain.report_layout import Prose, Section, Table, port_text

COLUMNS = [
    "Host",
    "Port",
    "Service",
    "Open since",
    "Approval",
    "Approval id",
    "Approval recorded",
    "Approved by",
    "Finding",
    "Finding status",
    "Backfilled",
    "Seen by scan",
]


def row_attention(row: dict[str, Any]) -> str:
    """What a population row asks the reader to look at (empty when nothing)."""
    marks = []
    if row["approval"] != "approved":
        marks.append(str(row["approval"]).upper())
    if row["backfilled"]:
        marks.append("BACKFILLED")
    return " ".join(marks)


def population_cells(row: dict[str, Any]) -> list[Any]:
    return [
        row["host"],
        port_text(row),
        row["service"],
        row["open_since"],
        row["approval"],
        row["approval_id"],
        row["approval_recorded_at"],
        row["approved_by"],
        row["finding_id"],
        row["finding_status"],
        "yes (imported after the fact)" if row["backfilled"] else "no",
        row["scan_id"],
    ]


def population_table(name: str, title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(name, title, list(COLUMNS), empty="No port was open.")
    for row in rows:
        table.add(population_cells(row), row_attention(row))
    return table


def _summary(ports: list[dict[str, Any]]) -> str:
    approved = sum(1 for p in ports if p["approval"] == "approved")
    expired = sum(1 for p in ports if p["approval"] == "expired")
    backfilled = sum(1 for p in ports if p["backfilled"])
    text = f"{len(ports)} open, {approved} approved, {len(ports) - approved - expired} unapproved"
    if expired:
        text += f", {expired} approved but past their review date"
    if backfilled:
        text += f", {backfilled} known only from backfilled reports"
    return text


def population_sections(doc: dict[str, Any]) -> list[Section]:
    """The open-port population at the period's end and at each sample, and the series."""
    population = doc.get("population")
    if not population:
        return []
    section = Section("population", "Open-port population")
    section.paragraphs.append(
        Prose(
            "Every port open at the period's end and at each sampled time, from the scan "
            "history as it stood then. The approval is the one in force at that time: recorded "
            "at or before it and not yet retired (an approval recorded later does not count, "
            "whatever date it names); detection judged each scan by the same rule. The "
            "finding is the one open for that port then, or else the one that approved it. A "
            "backfilled row was last seen by an nmap report imported after newer history: it "
            "is evidence recorded after the fact."
        )
    )
    moments = [("population_end", "At the period's end", population["at_end"])]
    moments += [
        (f"population_sample_{number}", "Sample", sample)
        for number, sample in enumerate(population.get("samples", []), start=1)
    ]
    for name, label, block in moments:
        ports = block["ports"]
        section.paragraphs.append(Prose(f"{label}, {block['at']}: {_summary(ports)}."))
        section.tables.append(
            population_table(name, f"{label}: open ports at {block['at']}", ports)
        )
    series = Table(
        "population_series",
        "Open ports over the period",
        ["At", "Approved", "Unapproved", "Past review", "Open"],
        empty="No point in the period.",
    )
    for point in population.get("series", []):
        series.add(
            [
                point["at"],
                point["approved"],
                point["unapproved"],
                point.get("expired", 0),
                point.get("open", point["approved"] + point["unapproved"]),
            ],
            "UNAPPROVED" if point["unapproved"] else "",
        )
    section.tables.append(series)
    return [section]
