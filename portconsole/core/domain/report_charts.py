"""The evidence pack's pictures, as inline SVG: coverage, open ports, time to respond.

Hand-written SVG strings, so the page needs no script, font, stylesheet or image from
anywhere: every text (group names included) goes through textsafe.html_safe, and no
reference leaves the element (no `url(...)`, no `href`). Each chart has a <title> and a
<desc> saying what it shows in words, and is readable in black-and-white print: covered
time is grey and gaps are white with black stripes; approved ports are light grey and
unapproved ones black; median bars are light and p90 bars dark, with the SLA a dashed line.

- coverage: per group over the period, from the continuity ledger (`continuity`), else
  from the successful scans and the recorded gaps (`cadence`);
- open ports: approved and unapproved, stacked, from `population.series`; a pack without
  it has no chart, and says so;
- time to respond: median and p90 per severity against its SLA (`metrics.time_to_respond`,
  `parameters.sla_hours`), on a logarithmic time scale (minutes and weeks on one chart).

Pure: the document in, markup out; report_render.py places it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from msgspec import Struct

from portconsole.core.domain.report_figures import severity_order
from portconsole.core.domain.report_layout import human_duration
from portconsole.core.textsafe import html_safe
from portconsole.core.timeutil import add_months, parse_iso

WIDTH = 960
LEFT = 130  # the label column
RIGHT = 24
PLOT = WIDTH - LEFT - RIGHT
INK, GREY, LIGHT, FAINT = "#1b1f24", "#8c959f", "#d0d7de", "#eaeef2"
_LABEL_CHARS = 18


class Chart(Struct, frozen=True):
    """One chart of a report: its SVG, caption, and the figures it links to."""

    key: str  # the figure's id is `chart-<key>`
    title: str
    svg: str | None  # escaped markup; None when the pack does not hold the data
    caption: str  # our own words
    targets: tuple[str, ...]  # the rows behind it: table names or section anchors


# --------------------------------------------------------------------------- SVG pieces


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int = 11,
          bold: bool = False, fill: str = INK) -> str:  # fmt: skip
    weight = ' font-weight="bold"' if bold else ""
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}" text-anchor="{anchor}" '
        f'fill="{fill}"{weight}>{html_safe(text)}</text>'
    )


def _text_width(text: str, size: int) -> float:
    """A generous estimate of a text's width (no font metrics without a browser)."""
    return 0.6 * size * len(text)


def _rect(x: float, y: float, w: float, h: float, fill: str, stroke: str = "none") -> str:
    return (
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0))}" height="{_n(h)}" '
        f'fill="{fill}" stroke="{stroke}"/>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str = INK, width: float = 1,
          dash: str = "") -> str:  # fmt: skip
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
        f'stroke-width="{_n(width)}"{dashed}/>'
    )


def _gap_mark(x: float, y: float, w: float, h: float) -> list[str]:
    """A gap: white, outlined, with vertical stripes (no pattern: nothing by reference)."""
    w = max(w, 3.0)
    out = [_rect(x, y, w, h, "#ffffff", INK)]
    stripe = x + 2.0
    while stripe < x + w - 1:
        out.append(_line(stripe, y, stripe, y + h, INK, 0.8))
        stripe += 4.0
    return out


def _svg(key: str, height: float, title: str, desc: str, body: Iterable[str]) -> str:
    return "\n".join(
        [
            f'<svg class="chart" viewBox="0 0 {WIDTH} {_n(height)}" width="{WIDTH}" '
            f'height="{_n(height)}" role="img" aria-labelledby="chart-{key}-title '
            f'chart-{key}-desc" font-family="Helvetica, Arial, sans-serif">',
            f'<title id="chart-{key}-title">{html_safe(title)}</title>',
            f'<desc id="chart-{key}-desc">{html_safe(desc)}</desc>',
            *body,
            "</svg>",
        ]
    )


def _label(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"


# --------------------------------------------------------------------------- time axis


class _TimeScale:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start, self.end = start, end
        self.span = max((end - start).total_seconds(), 1.0)

    def x(self, moment: datetime) -> float:
        offset = (moment - self.start).total_seconds() / self.span
        return LEFT + PLOT * min(max(offset, 0.0), 1.0)

    def ticks(self) -> list[tuple[datetime, str]]:
        """Calendar ticks, about 4 to 14 over the period."""
        days = self.span / 86400
        if days > 45:
            step = 3 if days > 400 else 1
            moment = self.start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            out = []
            while moment <= self.end:
                if moment >= self.start and (moment.month - 1) % step == 0:
                    out.append((moment, moment.strftime("%d %b %Y" if step > 1 else "%d %b")))
                moment = add_months(moment, 1)
            return out
        if days > 14:
            delta, fmt = timedelta(days=7), "%d %b"
        elif days > 3:
            delta, fmt = timedelta(days=1), "%d %b"
        elif days > 0.75:
            delta, fmt = timedelta(hours=6), "%d %b %H:%M"
        else:
            delta, fmt = timedelta(hours=1), "%H:%M"
        moment = self.start.replace(minute=0, second=0, microsecond=0)
        if delta >= timedelta(days=1):
            moment = moment.replace(hour=0)
        out = []
        while moment <= self.end:
            if moment >= self.start:
                out.append((moment, moment.strftime(fmt)))
            moment += delta
        return out

    def axis(self, top: float, bottom: float) -> list[str]:
        out = [_line(LEFT, bottom, LEFT + PLOT, bottom)]
        for moment, label in self.ticks():
            x = self.x(moment)
            out.append(_line(x, top, x, bottom, LIGHT, 0.6))
            out.append(_line(x, bottom, x, bottom + 4))
            out.append(_text(x, bottom + 16, label, anchor="middle", size=10))
        return out


def _period(doc: dict[str, Any]) -> _TimeScale:
    parameters = doc["parameters"]
    return _TimeScale(parse_iso(parameters["from"]), parse_iso(parameters["to"]))


Swatch = Callable[[float, float], list[str]]


def _legend(y: float, items: list[tuple[str, Swatch | None]]) -> list[str]:
    """Swatches and their words in one row under the chart."""
    out: list[str] = []
    x = float(LEFT)
    for words, swatch in items:
        if swatch is not None:
            out += swatch(x, y - 9)
            x += 20
        out.append(_text(x, y, words))
        x += 14 + 6.2 * len(words)
    return out


def _swatch(fill: str) -> Swatch:
    return lambda x, y: [_rect(x, y, 14, 10, fill, INK)]


def _gap_swatch(x: float, y: float) -> list[str]:
    return _gap_mark(x, y, 14, 10)


def _sla_swatch(x: float, y: float) -> list[str]:
    return [_line(x + 7, y - 2, x + 7, y + 12, INK, 1.6, "5 3")]


# --------------------------------------------------------------------------- coverage

_ROW = 40.0
_BAR = 16.0


def _coverage_rows(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Per group: its monitored span and entries, from the ledger (True) or the cadence."""
    ledger = doc.get("continuity")
    if ledger is not None:
        return list(ledger["groups"]), True
    cadence = doc["cadence"]
    rows = []
    for group in cadence["groups"]:
        name = group["group"]
        rows.append(
            {
                "group": name or "(ad hoc)",
                "scans": [
                    s["finished_at"]
                    for s in cadence["scans"]
                    if s["group"] == name and s["outcome"] == "success"
                ],
                "gaps": [g for g in cadence["gaps"] if g["group"] == name],
            }
        )
    return rows, False


def coverage_chart(doc: dict[str, Any]) -> Chart:
    scale = _period(doc)
    groups, from_ledger = _coverage_rows(doc)
    caption = (
        "Coverage per target group over the period: grey where a successful scan covered the "
        "group (one window from each scan), white with stripes where it was a gap, blank "
        "before the group was configured. Gaps are labelled with their length."
        if from_ledger
        else "Scans per target group over the period (a tick per successful scan) and the "
        "recorded monitoring gaps (white with stripes). This pack has no coverage ledger."
    )
    targets = ("continuity", "continuity_groups") if from_ledger else ("scans", "cadence")
    if not groups:
        return Chart("coverage", "Coverage timeline", None,
                     "No target group is in this pack, so there is no coverage to draw.",
                     targets)  # fmt: skip
    top = 8.0
    body: list[str] = []
    said: list[str] = []
    for number, group in enumerate(groups):
        y = top + number * _ROW + 14
        name = str(group["group"])
        body.append(_text(LEFT - 8, y + _BAR - 4, _label(name), anchor="end"))
        body.append(_line(LEFT, y + _BAR / 2, LEFT + PLOT, y + _BAR / 2, LIGHT, 1, "2 3"))
        if from_ledger:
            said.append(_ledger_row(group, scale, y, body))
        else:
            said.append(_cadence_row(group, scale, y, body))
    bottom = top + len(groups) * _ROW + 6
    body += scale.axis(top, bottom)
    body += _legend(
        bottom + 40,
        [("covered" if from_ledger else "successful scan", _swatch(GREY)), ("gap", _gap_swatch)],
    )
    desc = "; ".join(said)
    return Chart(
        "coverage",
        "Coverage timeline",
        _svg("coverage", bottom + 50, "Coverage timeline per target group", desc, body),
        caption,
        targets,
    )


def _ledger_row(group: dict[str, Any], scale: _TimeScale, y: float, body: list[str]) -> str:
    name = str(group["group"])
    if group.get("from") is None:
        body.append(_text(LEFT + 6, y + _BAR - 4, "not configured in the period"))
        return f"{name}: not configured in the period"
    covered = [e for e in group["entries"] if e["kind"] == "covered"]
    gaps = [e for e in group["entries"] if e["kind"] != "covered"]
    for entry in covered:
        x0, x1 = scale.x(parse_iso(entry["start"])), scale.x(parse_iso(entry["end"]))
        body.append(_rect(x0, y, x1 - x0, _BAR, GREY))
    label_end = -1.0
    for entry in gaps:
        start, end = parse_iso(entry["start"]), parse_iso(entry["end"])
        x0, x1 = scale.x(start), scale.x(end)
        body += _gap_mark(x0, y, x1 - x0, _BAR)
        words = "gap " + human_duration((end - start).total_seconds())
        middle = (x0 + x1) / 2
        if middle - 3.2 * len(words) > label_end:
            body.append(_text(middle, y - 4, words, anchor="middle", size=10))
            label_end = middle + 3.2 * len(words)
    first = parse_iso(group["from"])
    if first > scale.start:
        body.append(_text(scale.x(first) - 4, y - 4, "configured", anchor="end", size=10))
    seconds = float(group["covered_seconds"]) + float(group["gap_seconds"])
    share = f"{100 * float(group['covered_seconds']) / seconds:.1f}% covered" if seconds else ""
    listed = ", ".join(
        f"gap {e['start']} to {e['end']}" + (f" ({e['cause']})" if e.get("cause") else "")
        for e in gaps[:5]
    )
    more = f" and {len(gaps) - 5} more gaps" if len(gaps) > 5 else ""
    return f"{name}: monitored from {group['from']} to {group['to']}, {share}, {len(gaps)} gaps" + (
        f": {listed}{more}" if gaps else ""
    )


def _cadence_row(group: dict[str, Any], scale: _TimeScale, y: float, body: list[str]) -> str:
    for finished in group["scans"]:
        x = scale.x(parse_iso(finished))
        body.append(_line(x, y + 2, x, y + _BAR - 2, INK, 1))
    for gap in group["gaps"]:
        x0, x1 = scale.x(parse_iso(gap["start"])), scale.x(parse_iso(gap["end"]))
        body += _gap_mark(x0, y, x1 - x0, _BAR)
    return f"{group['group']}: {len(group['scans'])} successful scans, {len(group['gaps'])} gaps"


# --------------------------------------------------------------------------- open ports


def population_chart(doc: dict[str, Any]) -> Chart:
    targets = ("population_series", "population_end", "population")
    title = "Open ports over the period"
    population = doc.get("population")
    series = population.get("series") if isinstance(population, dict) else None
    if series is None:
        return Chart("ports", title, None,
                     "The open-port population over time is not in this pack, so this chart "
                     "is left out; the findings show each port that opened.",
                     ("findings",))  # fmt: skip
    scale = _period(doc)
    points = sorted(
        (parse_iso(p["at"]), int(p["approved"]), int(p["unapproved"]))
        for p in series
        if scale.start <= parse_iso(p["at"]) <= scale.end
    )
    if not points:
        return Chart("ports", title, None,
                     "No open-port sample falls in the period, so there is nothing to draw.",
                     targets)  # fmt: skip
    peak = max(a + u for _, a, u in points)
    step = max(1, math.ceil(max(peak, 1) / 5))
    top_value = step * max(1, math.ceil(max(peak, 1) / step))
    top, height = 12.0, 180.0
    bottom = top + height

    def y(value: float) -> float:
        return bottom - height * value / top_value

    body: list[str] = []
    for tick in range(0, top_value + 1, step):
        body.append(_line(LEFT, y(tick), LEFT + PLOT, y(tick), FAINT if tick else INK, 0.6))
        body.append(_text(LEFT - 8, y(tick) + 4, str(tick), anchor="end", size=10))
    body.append(
        f'<g transform="translate({_n(LEFT - 44)},{_n(top + height / 2)}) rotate(-90)">'
        + _text(0, 0, "open ports", anchor="middle", size=10)
        + "</g>"
    )
    # A step function: each sample holds until the next (the last until the period's end).
    edges = [scale.x(t) for t, _, _ in points] + [scale.x(scale.end)]
    approved_top = []
    total_top = []
    for index, (_, approved, unapproved) in enumerate(points):
        x0, x1 = edges[index], edges[index + 1]
        approved_top += [(x0, y(approved)), (x1, y(approved))]
        total_top += [(x0, y(approved + unapproved)), (x1, y(approved + unapproved))]
    base = [(edges[-1], bottom), (edges[0], bottom)]
    body += scale.axis(top, bottom)  # under the areas: the grid must not cut them
    body.append(_polygon(approved_top + base, LIGHT))
    body.append(_polygon(total_top + list(reversed(approved_top)), INK))
    body.append(_polyline(approved_top, INK))
    body.append(_line(LEFT, bottom, LEFT + PLOT, bottom))
    body += _legend(bottom + 40, [("approved (in force at the time)", _swatch(LIGHT)),
                                  ("unapproved", _swatch(INK))])  # fmt: skip
    last_at, last_a, last_u = points[-1]
    busiest = max(points, key=lambda p: (p[1] + p[2], p[0]))
    desc = (
        f"{len(points)} samples from {points[0][0]:%Y-%m-%d} to {last_at:%Y-%m-%d}. At most "
        f"{busiest[1] + busiest[2]} open ports ({busiest[1]} approved, {busiest[2]} "
        f"unapproved) on {busiest[0]:%Y-%m-%d %H:%M}; at the last sample {last_a} approved "
        f"and {last_u} unapproved."
    )
    return Chart(
        "ports",
        title,
        _svg(
            "ports", bottom + 50, "Open ports over the period, approved and unapproved", desc, body
        ),  # fmt: skip
        "Open ports at each sample, stacked: light grey with an approval in force at that "
        "time, black without one. Each sample holds until the next.",
        targets,
    )


def _points(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{_n(x)},{_n(y)}" for x, y in points)


def _polygon(points: list[tuple[float, float]], fill: str) -> str:
    return f'<polygon points="{_points(points)}" fill="{fill}" stroke="none"/>'


def _polyline(points: list[tuple[float, float]], stroke: str) -> str:
    return f'<polyline points="{_points(points)}" fill="none" stroke="{stroke}" stroke-width="1"/>'


# --------------------------------------------------------------------------- time to respond

_SPAN_TICKS = (
    (60, "1m"), (600, "10m"), (3600, "1h"), (6 * 3600, "6h"), (86400, "1d"),
    (7 * 86400, "1w"), (30 * 86400, "30d"), (365 * 86400, "1y"),
)  # fmt: skip


def response_chart(doc: dict[str, Any]) -> Chart:
    ttr = doc["metrics"]["time_to_respond"]
    sla = {k: float(v) * 3600 for k, v in doc["parameters"].get("sla_hours", {}).items()}
    severities = [
        s for s in severity_order(ttr) if s != "all" and (s in sla or ttr.get(s, {}).get("count"))
    ]
    targets = ("time_to_respond", "sla_breaches", "metrics")
    title = "Time to respond per severity against its SLA"
    if not severities:
        return Chart("response", title, None, "No severity has an SLA or a measured response.",
                     targets)  # fmt: skip
    values = [v for s in severities for v in (ttr[s]["median_seconds"], ttr[s]["p90_seconds"])
              if v] + [sla[s] for s in severities if s in sla]  # fmt: skip
    high = max([*values, 3600.0]) * 1.6
    low = 60.0
    span = math.log10(high) - math.log10(low)

    def x(value: float | None) -> float:
        value = max(value or 0.0, low)
        return LEFT + PLOT * (math.log10(value) - math.log10(low)) / span

    row = 46.0
    top = 8.0
    bottom = top + row * len(severities) + 4
    body: list[str] = []
    for value, words in _SPAN_TICKS:
        if value <= high:
            body.append(_line(x(value), top, x(value), bottom, LIGHT, 0.6))
            body.append(_line(x(value), bottom, x(value), bottom + 4))
            body.append(_text(x(value), bottom + 16, words, anchor="middle", size=10))
    body.append(_line(LEFT, bottom, LEFT + PLOT, bottom))
    said = []
    for number, severity in enumerate(severities):
        stats = ttr.get(severity) or {"count": 0, "median_seconds": None, "p90_seconds": None}
        y = top + number * row + 8
        body.append(_text(LEFT - 8, y + 14, f"{severity} ({stats['count']})", anchor="end"))
        limit = sla.get(severity)
        if not stats["count"]:
            body.append(_text(LEFT + 6, y + 14, "no response measured"))
        else:
            for offset, key, fill, words in ((0, "median_seconds", LIGHT, "median"),
                                             (13, "p90_seconds", INK, "p90")):  # fmt: skip
                value = stats[key]
                end = x(value)
                body.append(_rect(LEFT, y + offset, max(end - LEFT, 2.0), 11, fill, INK))
                over = limit is not None and value is not None and value > limit
                note = f"{words} {human_duration(value)}" + (" — over SLA" if over else "")
                if end + 5 + _text_width(note, 10) <= WIDTH - 2:
                    body.append(_text(end + 5, y + offset + 9.5, note, size=10, bold=over))
                else:  # no room after the bar: inside it, at its end
                    body.append(_text(end - 5, y + offset + 9.5, note, size=10, bold=over,
                                      anchor="end", fill="#ffffff" if fill == INK else INK))  # fmt: skip
        if limit is not None:
            # A white halo keeps the dashes visible where they cross a black bar.
            body.append(_line(x(limit), y - 5, x(limit), y + 29, "#ffffff", 4))
            body.append(_line(x(limit), y - 5, x(limit), y + 29, INK, 1.6, "5 3"))
            body.append(_text(x(limit) + 3, y - 1, f"SLA {limit / 3600:g} h", size=9))
        said.append(
            f"{severity}: {stats['count']} responses, median {human_duration(stats['median_seconds'])}"
            f", p90 {human_duration(stats['p90_seconds'])}"
            + (f", SLA {limit / 3600:g} h" if limit is not None else ", no SLA")
        )
    body += _legend(bottom + 40, [("median", _swatch(LIGHT)), ("p90", _swatch(INK)),
                                  ("SLA", _sla_swatch)])  # fmt: skip
    return Chart(
        "response",
        title,
        _svg("response", bottom + 50, title, "; ".join(said), body),
        "Time to respond of the port findings detected in the period, per severity (count in "
        "brackets): median (light) and p90 (black) bars, the severity's SLA a dashed line. "
        "The time scale is logarithmic so minutes and weeks both show.",
        targets,
    )


def charts(doc: dict[str, Any]) -> list[Chart]:
    """The pack's three charts, in reading order."""
    return [coverage_chart(doc), population_chart(doc), response_chart(doc)]
