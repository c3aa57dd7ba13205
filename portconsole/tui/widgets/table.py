"""A DataTable that is updated by keyed diff, never cleared and refilled.

Clearing a table on every refresh loses the cursor and scroll position and redraws
everything; an operator reading row 40 would be thrown back to the top every two seconds.
`sync` instead removes stale rows, updates only changed cells and adds new ones, inside one
`batch_update`, and keeps the cursor on the same row key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import CellKey, RowKey

Cells = Sequence[Text]


def _signature(cells: Cells) -> tuple[tuple[str, str], ...]:
    return tuple((cell.plain, f"{cell.style}{cell.spans or ''}") for cell in cells)


class KeyedTable(DataTable[Text]):
    """Rows are identified by a stable string key (an address, `host:port/proto`, an id)."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Open", id="table.open"),
        Binding("j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("g", "scroll_top", "Top", show=False, id="table.top"),
        Binding("G", "scroll_bottom", "Bottom", show=False, id="table.bottom"),
    ]

    def __init__(
        self,
        columns: Sequence[tuple[str, str]],
        *,
        id: str | None = None,  # noqa: A002 - Textual's own name for it
        classes: str = "",
    ) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row")
        self._column_spec = list(columns)
        self._signatures: dict[str, tuple[tuple[str, str], ...]] = {}
        # The cell tuples last drawn: a caller that reuses an unchanged row's tuple lets
        # `sync` skip it without computing a signature (1,000 rows per refresh add up).
        self._cells: dict[str, Cells] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label in self._column_spec:
            self.add_column(label, key=key)

    # Textual 8.2 caches each rendered cell under the table's update count, but widens
    # columns later, on idle, without bumping that count: a row drawn before its column
    # widened stayed truncated ("127.88…"). Bumping the count after each widening makes the
    # next frame re-render those cells at the new width.
    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        super()._update_dimensions(new_rows)
        self._update_count += 1

    def _update_column_widths(self, updated_cells: set[CellKey]) -> None:
        super()._update_column_widths(updated_cells)
        self._update_count += 1

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

    def sync(self, rows: Mapping[str, Cells]) -> None:
        """Make the table show exactly `rows`, in their order, by keyed diff."""
        keep = self.selected_key
        keep_index = self.cursor_row
        columns = [key for key, _ in self._column_spec]
        wanted = list(rows)
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

    def _current_order(self, wanted: list[str]) -> list[str]:
        found: list[str] = []
        for row in self.ordered_rows:
            key = row.key.value
            if key is not None:
                found.append(key)
        return found if len(found) == len(wanted) else []

    def row_key_of(self, row_key: RowKey) -> str | None:
        return row_key.value
