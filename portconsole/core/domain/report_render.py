"""Render a report document as HTML, Markdown or CSV, from its sections of tables.

Each format escapes every value that is not our own prose with the matching function of
textsafe.py (HTML, Markdown, formula-safe CSV); the sections themselves come from
point_in_time_sections.py or evidence_sections.py, so every format shows the same rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from portconsole.core.domain.evidence_sections import evidence_pack_sections
from portconsole.core.domain.point_in_time_sections import point_in_time_sections
from portconsole.core.domain.report_layout import (
    Cell,
    Duration,
    Prose,
    Section,
    Table,
    header_table,
    human_duration,
)
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
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; max-width: none; font-size: 9pt; }
  nav { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
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


def _html_table(table: Table) -> list[str]:
    out = [f"<h3>{html_safe(table.title)}</h3>"]
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


def render_html(doc: dict[str, Any], fmt: str = "html") -> bytes:
    """One self-contained page: inline CSS, no script, no external resource (the CSP says so)."""
    sections = sections_for(doc)
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
    out.append('<nav><ol><li><a href="#about">About this report</a></li>')
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
            out.extend(_html_table(table))
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
