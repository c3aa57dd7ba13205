"""A DataTable that is updated by keyed diff, never cleared and refilled.

Clearing a table on every refresh loses the cursor and scroll position and redraws
everything; an operator reading row 40 would be thrown back to the top every two seconds.
`sync` instead removes stale rows, updates only changed cells and adds new ones, inside one
`batch_update`, and keeps the cursor on the same row key.

What operators expect of a table is here too, so every screen gets it alike: `o` cycles the
sort column and `O` reverses it (or a click on a header), the key columns stay pinned when
scrolling sideways, one flexible column takes the width there is (ellipsised at 80 columns,
whole on a wide terminal), and an empty table says what to do next.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import CellKey, RowKey

from portconsole.tui.keys import KeysInOrder

Cells = Sequence[Text]
SortKey = Callable[[str], Any]

# The narrowest a flexible column gets before the table scrolls sideways instead.
FLEX_MIN = 12
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PIECES = re.compile(r"(\d+)")
SORT_MARKS = {
    False: " \N{BLACK UP-POINTING TRIANGLE}",
    True: " \N{BLACK DOWN-POINTING TRIANGLE}",
}


def natural_key(plain: str) -> tuple[tuple[int, int, str], ...]:
    """How a cell sorts by default: numbers by value (addresses, ports, counts), ages by
    duration (`40s` < `5h` < `3d`), the rest case-insensitively."""
    text = plain.strip()
    duration = _DURATION.match(text)
    if duration is not None:
        return ((0, int(duration[1]) * _DURATION_SECONDS[duration[2]], ""),)
    return tuple(
        (0, int(piece), "") if piece.isdigit() else (1, 0, piece.lower())
        for piece in _PIECES.split(text)
        if piece
    )


def _signature(cells: Cells) -> tuple[tuple[str, str], ...]:
    return tuple((cell.plain, f"{cell.style}{cell.spans or ''}") for cell in cells)


class KeyedTable(KeysInOrder, DataTable[Text]):
    """Rows are identified by a stable string key (an address, `host:port/proto`, an id).

    Keys sent together run in order: a key that opens a dialog or switches the view does
    so before the next key is read (tui/keys.py)."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Open", id="table.open"),
        Binding("j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("g", "scroll_top", "Top", show=False, id="table.top"),
        Binding("G", "scroll_bottom", "Bottom", show=False, id="table.bottom"),
        Binding("o", "sort_next", "Sort by next column", show=False, id="sort.next"),
        Binding("O", "sort_reverse", "Reverse the sort", show=False, id="sort.reverse"),
    ]

    def __init__(
        self,
        columns: Sequence[tuple[str, str]],
        *,
        id: str | None = None,  # noqa: A002 - Textual's own name for it
        classes: str = "",
        pinned: int = 1,
        flex: str | None = None,
        sort_keys: Mapping[str, SortKey] | None = None,
    ) -> None:
        """`pinned`: how many columns from the left stay put when scrolling sideways (the
        row's key). `flex`: the column that shrinks to fit the width or grows into it.
        `sort_keys`: per column key, how its plain text sorts (default `natural_key`)."""
        super().__init__(id=id, classes=classes, cursor_type="row", fixed_columns=pinned)
        self._column_spec = list(columns)
        self._flex = flex
        self._sort_keys = dict(sort_keys or {})
        # None: the order the screen gave (its own, meaningful order: worst first...).
        self.sort_column: int | None = None
        self.sort_descending = False
        self._given: Mapping[str, Cells] = {}
        self.empty_text = ""
        self._signatures: dict[str, tuple[tuple[str, str], ...]] = {}
        # The cell tuples last drawn: a caller that reuses an unchanged row's tuple lets
        # `sync` skip it without computing a signature (1,000 rows per refresh add up).
        self._cells: dict[str, Cells] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label in self._column_spec:
            self.add_column(label, key=key)

    # ----- sorting -------------------------------------------------------------------
    def action_sort_next(self) -> None:
        """Cycle: the screen's own order, then each column in turn, then back."""
        count = len(self._column_spec)
        column = 0 if self.sort_column is None else self.sort_column + 1
        self.sort_by(None if column >= count else column, descending=False)

    def action_sort_reverse(self) -> None:
        self.sort_by(self.sort_column, descending=not self.sort_descending)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        index = event.column_index
        descending = not self.sort_descending if index == self.sort_column else False
        self.sort_by(index, descending=descending)

    def sort_by(self, column: int | None, *, descending: bool = False) -> None:
        self.sort_column = column
        self.sort_descending = descending
        for index, (key, label) in enumerate(self._column_spec):
            mark = SORT_MARKS[descending] if index == column else ""
            shown = self.columns[key]  # type: ignore[index]
            shown.label = Text(label + mark)
            shown.content_width = max(shown.content_width, cell_len(shown.label.plain))
        self._clear_caches()
        self._require_update_dimensions = True
        self.sync(self._given, self.empty_text)
        self.refresh()

    def _ordered(self, rows: Mapping[str, Cells]) -> list[str]:
        keys = list(rows)
        if self.sort_column is not None:
            index = self.sort_column
            sort_key = self._sort_keys.get(self._column_spec[index][0], natural_key)
            keys.sort(key=lambda k: sort_key(rows[k][index].plain) if index < len(rows[k]) else ())
        if self.sort_descending:
            keys.reverse()
        return keys

    # ----- width ---------------------------------------------------------------------
    def _on_resize(self, event: events.Resize) -> None:
        super()._on_resize(event)
        self.fit_flex()

    def fit_flex(self) -> None:
        """Give the flexible column what the others leave, between FLEX_MIN and its content."""
        if self._flex is None or self._flex not in self.columns or not self.size.width:
            return
        column = self.columns[self._flex]  # type: ignore[index]
        others = sum(
            c.get_render_width(self) for key, c in self.columns.items() if key != self._flex
        )
        room = self.size.width - others - 2 * self.cell_padding - 1  # 1: the scrollbar
        wanted_auto = room >= column.content_width
        width = column.width if wanted_auto else max(FLEX_MIN, room)
        if column.auto_width == wanted_auto and (wanted_auto or column.width == width):
            return
        column.auto_width = wanted_auto
        if not wanted_auto:
            column.width = width
        self.virtual_size = Size(
            sum(c.get_render_width(self) for c in self.columns.values()),
            self.virtual_size.height,
        )
        self._clear_caches()
        self.refresh()

    # ----- empty state ---------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        if self.row_count or not self.empty_text or y < self.header_height + 1:
            return super().render_line(y)
        width = self.size.width
        lines = self.app.console.render_lines(
            Text(self.empty_text, style="italic"),
            self.app.console.options.update_width(max(1, width - 2)),
            pad=False,
        )
        index = y - self.header_height - 1
        if index >= len(lines):
            return Strip.blank(width, self.rich_style)
        return Strip([Segment("  "), *lines[index]]).adjust_cell_length(width, self.rich_style)

    # Textual 8.2 caches each rendered cell under the table's update count, but widens
    # columns later, on idle, without bumping that count: a row drawn before its column
    # widened stayed truncated ("127.88…"). Bumping the count after each widening makes the
    # next frame re-render those cells at the new width.
    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        super()._update_dimensions(new_rows)
        self._update_count += 1
        self.fit_flex()

    def _update_column_widths(self, updated_cells: set[CellKey]) -> None:
        super()._update_column_widths(updated_cells)
        self._update_count += 1
        self.fit_flex()

    @property
    def keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._order)

    @property
    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:  # noqa: BLE001 - an out-of-range cursor simply means "nothing"
            return None
        return row_key.value

    def select_key(self, key: str) -> bool:
        """Put the cursor on the row `key`; False if there is no such row."""
        try:
            index = self.get_row_index(key)
        except Exception:  # noqa: BLE001 - RowDoesNotExist
            return False
        self.move_cursor(row=index)
        return True

    def invalidate(self) -> None:
        """Forget what was drawn, so the next `sync` rewrites every cell (theme change)."""
        self._signatures = {key: () for key in self._signatures}
        self._cells = {}

    def sync(self, rows: Mapping[str, Cells], empty: str = "") -> None:
        """Make the table show exactly `rows`, in their order (or the chosen sort), by
        keyed diff. `empty` is what an empty table says: what to do next."""
        if empty != self.empty_text:
            self.empty_text = empty
            self.refresh()
        self._given = rows
        keep = self.selected_key
        keep_index = self.cursor_row
        columns = [key for key, _ in self._column_spec]
        wanted = self._ordered(rows)
        with self.app.batch_update():
            for stale in [key for key in self._signatures if key not in rows]:
                self.remove_row(stale)
                del self._signatures[stale]
                self._cells.pop(stale, None)
            for key, cells in rows.items():
                if self._cells.get(key) is cells:
                    continue
                self._cells[key] = cells
                signature = _signature(cells)
                old = self._signatures.get(key)
                if old is None:
                    self.add_row(*cells, key=key)
                elif old != signature:
                    for index, cell in enumerate(cells):
                        if index >= len(old) or old[index] != signature[index]:
                            self.update_cell(key, columns[index], cell, update_width=True)
                self._signatures[key] = signature
            if wanted != self._current_order(wanted):
                rank = {id(self.get_cell(key, columns[0])): i for i, key in enumerate(wanted)}
                self.sort(columns[0], key=lambda cell: rank[id(cell)])
            self._order = wanted
            if keep is not None and keep in rows:
                self.select_key(keep)
            elif self.row_count:
                self.move_cursor(row=min(keep_index, self.row_count - 1))
        self.fit_flex()

    def _current_order(self, wanted: list[str]) -> list[str]:
        found: list[str] = []
        for row in self.ordered_rows:
            key = row.key.value
            if key is not None:
                found.append(key)
        return found if len(found) == len(wanted) else []

    def row_key_of(self, row_key: RowKey) -> str | None:
        return row_key.value
