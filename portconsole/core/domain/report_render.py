"""Render a report document as HTML, Markdown or CSV, from its sections of tables.

Each format escapes every value that is not our own prose with the matching function of
textsafe.py (HTML, Markdown, formula-safe CSV); the sections themselves come from
point_in_time_sections.py or evidence_sections.py, so every format shows the same rows.

An evidence pack opens with its verdict (report_verdict.py: four sentences, each linking to
the rows behind it) and, in HTML, its charts (report_charts.py, inline SVG). Every section
and table has a stable id (`#<section anchor>`, `#t-<table name>`) for those links.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from portconsole.core.domain.evidence_sections import evidence_pack_sections
from portconsole.core.domain.point_in_time_sections import point_in_time_sections
from portconsole.core.domain.report_charts import Chart, charts
from portconsole.core.domain.report_layout import (
    Cell,
    Duration,
    Prose,
    Section,
    Table,
    header_table,
    human_duration,
)
from portconsole.core.domain.report_verdict import Verdict, verdicts
from portconsole.core.textsafe import csv_safe, html_safe, markdown_safe


def sections_for(doc: dict[str, Any]) -> list[Section]:
    """The sections of the document's kind of report."""
    if doc["report"] == "point_in_time":
        return point_in_time_sections(doc)
    return evidence_pack_sections(doc)


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --alert:#fff1e5; --bad:#b42318; }
* { box-sizing: border-box; }
body { font: 13px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
       margin: 24px auto; max-width: 1400px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 18px 0 6px; }
p { margin: 6px 0; max-width: 95ch; }
.meta { color: var(--muted); }
nav ol { columns: 3; margin: 8px 0 0; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f6f8fa; }
td.num { text-align: right; white-space: nowrap; }
tr.attention td { background: var(--alert); }
td.flag { color: var(--bad); font-weight: 600; white-space: nowrap; }
.statement { border-left: 4px solid var(--bad); padding: 6px 10px; background: #fff5f5; }
.empty { color: var(--muted); font-style: italic; }
.verdict ol { list-style: none; padding: 0; margin: 10px 0; }
.verdict li { border-left: 6px solid var(--line); padding: 6px 12px; margin: 0 0 10px;
              max-width: 120ch; }
.verdict li.attention { border-left-color: var(--fg); border-left-style: double; }
.verdict .mark { display: inline-block; min-width: 9ch; font-weight: 700; letter-spacing: .04em; }
.verdict .figure { font-weight: 700; }
.verdict .rows { white-space: nowrap; }
figure { margin: 12px 0 22px; }
figure svg { display: block; width: 100%; max-width: 960px; height: auto; }
figcaption { color: var(--muted); max-width: 120ch; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; max-width: none; font-size: 9pt; }
  nav { display: none; }
  a { color: inherit; text-decoration: none; }
  .verdict { break-after: page; page-break-after: always; }
  #charts { break-after: page; page-break-after: always; }
  figure { break-inside: avoid; page-break-inside: avoid; }
  figure svg { max-width: 250mm; max-height: 120mm; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  table { page-break-inside: auto; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  tr.attention td, th, .statement { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _html_cell(value: Cell) -> tuple[str, str]:
    """(text, css class) of one cell."""
    if isinstance(value, Duration):
        return html_safe(human_duration(value.seconds)), "num"
    if value is None:
        return "", ""
    if isinstance(value, bool):
        return ("yes" if value else "no"), ""
    if isinstance(value, int | float):
        return html_safe(f"{value:g}" if isinstance(value, float) else value), "num"
    return html_safe(value), ""


def _html_table(table: Table, ident: str = "") -> list[str]:
    heading = f' id="{html_safe(ident)}"' if ident else ""
    out = [f"<h3{heading}>{html_safe(table.title)}</h3>"]
    if not table.rows:
        out.append(f'<p class="empty">{html_safe(table.empty)}</p>')
        return out
    flagged = any(table.attention)
    out.append("<table><thead><tr>")
    if flagged:
        out.append("<th>Attention</th>")
    out.extend(f"<th>{html_safe(c)}</th>" for c in table.columns)
    out.append("</tr></thead><tbody>")
    for row, attention in zip(table.rows, table.attention, strict=True):
        css = ' class="attention"' if attention else ""
        cells = []
        if flagged:
            cells.append(f'<td class="flag">{html_safe(attention)}</td>')
        for value in row:
            text, cls = _html_cell(value)
            cells.append(f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>")
        out.append(f"<tr{css}>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return out


def _table_ids(sections: list[Section]) -> dict[int, str]:
    """A stable id per table (`t-<name>`; a repeated name gets `-2`, `-3`), by table identity."""
    ids: dict[int, str] = {}
    seen: dict[str, int] = {}
    for table in (t for s in sections for t in s.tables):
        seen[table.name] = seen.get(table.name, 0) + 1
        number = seen[table.name]
        ids[id(table)] = f"t-{table.name}" + (f"-{number}" if number > 1 else "")
    return ids


def _link_targets(sections: list[Section], ids: dict[int, str]) -> dict[str, tuple[str, str]]:
    """Table names and section anchors -> (element id, title) for the verdict's links."""
    targets: dict[str, tuple[str, str]] = {}
    for section in sections:
        for table in section.tables:
            targets.setdefault(table.name, (ids[id(table)], table.title))
    for section in sections:  # a section's anchor names it when no table has that name
        targets.setdefault(section.anchor, (section.anchor, section.title))
    return targets


def _rows_link(names: tuple[str, ...], targets: dict[str, tuple[str, str]]) -> str:
    """A link to the first of `names` the page holds (tables before their section)."""
    found = next((targets[n] for n in names if n in targets), None)
    if found is None:
        return ""
    ident, title = found
    return f' <a class="rows" href="#{html_safe(ident)}">Rows: {html_safe(title)}</a>'


def _html_verdict(
    doc: dict[str, Any], found: list[Verdict], targets: dict[str, tuple[str, str]]
) -> list[str]:
    chart_of = {"continuity": "coverage", "exposure": "ports", "response": "response"}
    period = doc["parameters"]
    out = [
        '<section id="verdict" class="verdict"><h2>Verdict</h2>',
        f'<p class="meta">Period {html_safe(period["from"])} to {html_safe(period["to"])}. '
        "Each line gives its figure and links to the rows it comes from; ATTENTION marks "
        "what an assessor should read first.</p>",
        "<ol>",
    ]
    for verdict in found:
        css = "attention" if verdict.attention else "ok"
        chart = chart_of.get(verdict.key)
        chart_link = f' · <a href="#chart-{chart}">Chart</a>' if chart else ""
        out.append(
            f'<li class="{css}" id="verdict-{verdict.key}"><p>'
            f'<span class="mark">{"ATTENTION" if verdict.attention else "OK"}</span> '
            f"<strong>{html_safe(verdict.label)}:</strong> "
            f'<span class="figure">{html_safe(verdict.figure)}.</span> '
            f"{html_safe(verdict.text)}{_rows_link(verdict.targets, targets)}{chart_link}"
            "</p></li>"
        )
    out.append("</ol></section>")
    return out


def _html_charts(found: list[Chart], targets: dict[str, tuple[str, str]]) -> list[str]:
    out = ['<section id="charts"><h2>Charts</h2>']
    for chart in found:
        out.append(f'<figure id="chart-{chart.key}">')
        out.append(f"<h3>{html_safe(chart.title)}</h3>")
        if chart.svg is not None:
            out.append(chart.svg)
        out.append(
            f"<figcaption>{html_safe(chart.caption)}{_rows_link(chart.targets, targets)}"
            "</figcaption></figure>"
        )
    out.append("</section>")
    return out


def render_html(doc: dict[str, Any], fmt: str = "html") -> bytes:
    """One self-contained page: inline CSS, no script, no external resource (the CSP says so)."""
    sections = sections_for(doc)
    ids = _table_ids(sections)
    pack = doc["report"] == "evidence_pack"
    generated = doc["generated"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>PortConsole — {html_safe(doc['title'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>PortConsole — {html_safe(doc['title'])}</h1>",
        f'<p class="meta">Generated {html_safe(generated["at"])} by {html_safe(generated["by"])} '
        f"({html_safe(generated['tool'])}).</p></header>",
    ]
    if doc.get("statement"):
        out.append(f'<p class="statement">{html_safe(doc["statement"])}</p>')
    if pack:
        targets = _link_targets(sections, ids)
        out += _html_verdict(doc, verdicts(doc), targets)
        out += _html_charts(charts(doc), targets)
    out.append("<nav><ol>")
    if pack:
        out.append('<li><a href="#verdict">Verdict</a></li><li><a href="#charts">Charts</a></li>')
    out.append('<li><a href="#about">About this report</a></li>')
    out.extend(
        f'<li><a href="#{html_safe(s.anchor)}">{html_safe(s.title)}</a></li>' for s in sections
    )
    out.append("</ol></nav>")
    out.append('<section id="about"><h2>About this report</h2>')
    out.extend(_html_table(header_table(doc, fmt))[1:])
    out.append("</section>")
    for section in sections:
        out.append(f'<section id="{html_safe(section.anchor)}"><h2>{html_safe(section.title)}</h2>')
        out.extend(f"<p>{html_safe(p)}</p>" for p in section.paragraphs)
        for table in section.tables:
            out.extend(_html_table(table, ids[id(table)]))
        out.append("</section>")
    out.append("</body></html>")
    return ("\n".join(out) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- Markdown


def _md_cell(value: Cell) -> str:
    if isinstance(value, Duration):
        return human_duration(value.seconds)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, Prose):
        # Our own text: only the characters that would break a table cell.
        return value.replace("|", "\\|").replace("\n", " ")
    return markdown_safe(value)


def _md_text(value: str) -> str:
    return value if isinstance(value, Prose) else markdown_safe(value)


def _md_verdict(found: list[Verdict]) -> list[str]:
    out = ["## Verdict", ""]
    for verdict in found:
        sentence = "".join(p if isinstance(p, Prose) else markdown_safe(p) for p in verdict.parts)
        mark = "ATTENTION" if verdict.attention else "OK"
        out.append(f"- **{mark} — {verdict.label}: {verdict.figure}.** {sentence}")
    return [*out, ""]


def _md_table(table: Table, level: str = "###") -> list[str]:
    out = [f"{level} {_md_text(Prose(table.title))}", ""]
    if not table.rows:
        return [*out, f"_{table.empty}_", ""]
    flagged = any(table.attention)
    columns = (["Attention"] if flagged else []) + table.columns
    out.append("| " + " | ".join(columns) + " |")
    out.append("|" + "|".join("---" for _ in columns) + "|")
    for row, attention in zip(table.rows, table.attention, strict=True):
        cells = ([f"**{attention}**" if attention else ""] if flagged else []) + [
            _md_cell(v) for v in row
        ]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def render_markdown(doc: dict[str, Any], fmt: str = "md") -> bytes:
    sections = sections_for(doc)
    generated = doc["generated"]
    out = [
        f"# PortConsole — {markdown_safe(doc['title'])}",
        "",
        f"Generated {markdown_safe(generated['at'])} by {markdown_safe(generated['by'])} "
        f"({markdown_safe(generated['tool'])}).",
        "",
    ]
    if doc.get("statement"):
        out += [f"> **{doc['statement']}**", ""]
    if doc["report"] == "evidence_pack":
        out += _md_verdict(verdicts(doc))
    out += _md_table(header_table(doc, fmt), "##")
    for section in sections:
        out += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            out += [_md_text(paragraph), ""]
        for table in section.tables:
            out += _md_table(table)
    return ("\n".join(out).rstrip("\n") + "\n").encode("utf-8")


# --------------------------------------------------------------------------- CSV


def _csv_cell(value: Cell) -> str | int | float:
    if isinstance(value, Duration):
        return "" if value.seconds is None else value.seconds
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return value
    return csv_safe(value)


def _csv_bytes(table: Table) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    flagged = any(table.attention)
    columns = table.columns
    has_duration = any(isinstance(v, Duration) for row in table.rows for v in row)
    if has_duration:
        # CSV holds durations as seconds: say so in the header of those columns.
        kinds = [
            any(isinstance(row[i], Duration) for row in table.rows) for i in range(len(columns))
        ]
        columns = [f"{c} (seconds)" if k else c for c, k in zip(columns, kinds, strict=True)]
    writer.writerow([csv_safe(c) for c in (["Attention"] if flagged else []) + columns])
    for row, attention in zip(table.rows, table.attention, strict=True):
        cells = [_csv_cell(v) for v in row]
        writer.writerow(([csv_safe(attention)] if flagged else []) + cells)
    return buffer.getvalue().encode("utf-8")


def render_csv(doc: dict[str, Any], fmt: str = "csv") -> dict[str, bytes]:
    """One CSV file per table (`<name>.csv`), `summary.csv` first; formula-safe cells."""
    files: dict[str, bytes] = {"summary.csv": _csv_bytes(header_table(doc, fmt))}
    tables: Iterable[Table] = (t for s in sections_for(doc) for t in s.tables)
    for table in tables:
        name = f"{table.name}.csv"
        if name in files:  # two tables must never overwrite each other
            name = f"{table.name}_{len(files)}.csv"
        files[name] = _csv_bytes(table)
    if doc.get("statement"):
        statement = Table("statement", "Statement", ["Statement"])
        statement.add([doc["statement"]])
        files["statement.csv"] = _csv_bytes(statement)
    return files
