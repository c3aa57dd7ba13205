"""Drawing a KeyedTable's lines: each cell padded, justified and ellipsised to its column's
width, the pinned columns kept put while the rest scroll sideways, the hint an empty table
shows below its header, and which column a click on a line lands in. Plain functions of
cells, widths and styles: the widget (table.py) picks the styles from its component classes
and caches the strips it draws."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip

PADDING = 1  # blank cells either side of each column's text


def cell_segments(cell: Text, width: int, console: Console) -> list[Segment]:
    """One cell, padded and justified to `width` (ellipsised when longer)."""
    text = cell
    if cell.cell_len > width:
        text = cell.copy()
        text.truncate(width, overflow="ellipsis")
    gap = max(0, width - text.cell_len)
    left = gap if cell.justify == "right" else gap // 2 if cell.justify == "center" else 0
    segments = [Segment(" " * (PADDING + left))]
    segments.extend(text.render(console))
    segments.append(Segment(" " * (PADDING + gap - left)))
    return segments


def styled_segments(
    cells: Sequence[Text], widths: list[int], pre: Style, post: Style | None, console: Console
) -> list[Segment]:
    segments: list[Segment] = []
    for cell, width in zip(cells, widths, strict=False):
        segments.extend(cell_segments(cell, width, console))
    return list(Segment.apply_style(segments, pre, post))


def row_strip(
    cells: Sequence[Text],
    widths: list[int],
    pinned: int,
    styles: tuple[Style, Style, Style | None],
    scroll_x: int,
    width: int,
    base: Style,
    console: Console,
) -> Strip:
    """One row drawn whole, `width` cells wide: the `pinned` columns, then the rest scrolled
    by `scroll_x`. `styles`: the pinned columns', the others' and the one applied after."""
    pre_fixed, pre_rest, post = styles
    fixed = styled_segments(cells[:pinned], widths[:pinned], pre_fixed, post, console)
    rest = styled_segments(cells[pinned:], widths[pinned:], pre_rest, post, console)
    fixed_width = sum(w + 2 * PADDING for w in widths[:pinned])
    room = max(0, width - fixed_width)
    scrolled = Strip(rest).crop(scroll_x, scroll_x + room)
    return Strip([*fixed, *scrolled]).adjust_cell_length(width, base)


def hint_strip(hint: str, index: int, width: int, style: Style, console: Console) -> Strip:
    """Line `index` of an empty table's hint (what to do next), indented; blank past it."""
    lines = console.render_lines(
        Text(hint, style="italic"),
        console.options.update_width(max(1, width - 2)),
        pad=False,
    )
    if index >= len(lines):
        return Strip.blank(width, style)
    return Strip([Segment("  "), *lines[index]]).adjust_cell_length(width, style)


def column_at(widths: list[int], pinned: int, x: int, scroll_x: int) -> int | None:
    """The column at cell `x` of a line scrolled by `scroll_x` (the `pinned` ones stay put)."""
    pinned_width = sum(w + 2 * PADDING for w in widths[:pinned])
    position = x if x < pinned_width else x + scroll_x
    for index, width in enumerate(widths):
        position -= width + 2 * PADDING
        if position < 0:
            return index
    return None
