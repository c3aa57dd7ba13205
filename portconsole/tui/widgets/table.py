"""A virtual table keyed by row: it draws only the rows on screen.

Textual's DataTable stores, measures and renders every row it is given: 65,534 rows froze
the console for 38 s. KeyedTable is a Line API widget (a ScrollView) over a mapping of rows
by key (table_model.py): `sync` takes the screen's rows, keeps the cursor on the same key,
and `render_line` builds only the lines on screen (drawn by table_lines.py). Column widths
are fixed, or measured on rows that are new or changed (small tables), never on every row
per refresh; with `LazyRows`, a row's cells are not even built until it is drawn.

What operators expect of a table is here too, so every screen gets it alike: `o` cycles the
sort column and `O` reverses it (or a click on a header), the key columns stay pinned when
scrolling sideways, one flexible column takes the width there is (ellipsised at 80 columns,
whole on a wide terminal), and an empty table says what to do next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from portconsole.tui.keys import KeysInOrder
from portconsole.tui.widgets.table_lines import PADDING, column_at, hint_strip, row_strip
from portconsole.tui.widgets.table_model import (
    BIG_TABLE,
    Cells,
    Filtered,
    LazyRows,
    SortKey,
    measure,
    natural_key,
    ordered,
    parse_columns,
    resolved,
    row_total,
)

# The narrowest a flexible column gets before the table scrolls sideways instead.
FLEX_MIN = 12
SORT_MARKS = {
    False: " \N{BLACK UP-POINTING TRIANGLE}",
    True: " \N{BLACK DOWN-POINTING TRIANGLE}",
}
_CACHE_LIMIT = 400  # drawn lines kept (a few screens' worth)

__all__ = ["FLEX_MIN", "SORT_MARKS", "Cells", "KeyedTable", "LazyRows", "natural_key"]


class KeyedTable(KeysInOrder, ScrollView, can_focus=True):
    """Rows are identified by a stable string key (an address, `host:port/proto`, an id).

    Keys sent together run in order: a key that opens a dialog or switches the view does
    so before the next key is read (tui/keys.py)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", id="table.open"),
        Binding("down,j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("up,k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("home,g", "scroll_top", "Top", show=False, id="table.top"),
        Binding("end,G", "scroll_bottom", "Bottom", show=False, id="table.bottom"),
        Binding("o", "sort_next", "Sort by next column", show=False, id="sort.next"),
        Binding("O", "sort_reverse", "Reverse the sort", show=False, id="sort.reverse"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "keyed-table--header",
        "keyed-table--fixed",
        "keyed-table--cursor",
        "keyed-table--fixed-cursor",
        "keyed-table--header-cursor",
    }

    # DataTable's look, so the screens read as before.
    DEFAULT_CSS = """
    KeyedTable {
        background: $surface;
        color: $foreground;
        &:focus {
            background-tint: $foreground 5%;
            & > .keyed-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .keyed-table--header { background-tint: $foreground 5%; }
            & > .keyed-table--fixed-cursor {
                color: $block-cursor-foreground;
                background: $block-cursor-background;
            }
        }
        & > .keyed-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .keyed-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .keyed-table--fixed {
            background: $secondary-muted;
            color: $foreground;
        }
        & > .keyed-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .keyed-table--fixed-cursor {
            background: $block-cursor-blurred-background;
            color: $foreground;
        }
    }
    """

    class RowMessage(Message):
        """About the row `key` of `table`."""

        def __init__(self, table: KeyedTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> KeyedTable:
            return self.table

    class RowHighlighted(RowMessage):
        """The cursor is on another row."""

    class RowSelected(RowMessage):
        """Enter (or a click on the cursor's row) opened the row."""

    class Ordered(Message, bubble=False):
        """A big table's rows filtered and ordered in a thread (`_order_later`)."""

        def __init__(self, job: int, rows: Mapping[str, Cells], order: list[str]) -> None:
            super().__init__()
            self.job = job
            self.rows = rows
            self.order = order

    def __init__(
        self,
        columns: Sequence[tuple[str, str] | tuple[str, str, int]],
        *,
        id: str | None = None,  # noqa: A002 - Textual's own name for it
        classes: str = "",
        pinned: int = 1,
        flex: str | None = None,
        sort_keys: Mapping[str, SortKey] | None = None,
    ) -> None:
        """`columns`: `(key, label)` or `(key, label, width)`; without a width, the column
        fits the rows that are new or changed (for small tables). `pinned`: how many columns
        from the left stay put when scrolling sideways (the row's key). `flex`: the column
        that shrinks to fit the width or grows into it. `sort_keys`: per column key, how its
        plain text sorts (default `natural_key`; `LazyRows.sort_values` come first)."""
        super().__init__(id=id, classes=classes)
        self._columns = parse_columns(columns)
        self._pinned = pinned
        self._flex = flex
        self._sort_keys = dict(sort_keys or {})
        # None: the order the screen gave (its own, meaningful order: worst first...).
        self.sort_column: int | None = None
        self.sort_descending = False
        self.empty_text = ""
        self._rows: Mapping[str, Cells] = {}
        self._order: list[str] = []
        self._drawn: dict[str, Cells] = {}  # measured columns: the cells last measured
        self.cursor_row = 0
        self._cursor_key: str | None = None
        self._widths: list[int] = []
        self._widths_for: tuple[object, ...] = ()
        self._lines: dict[tuple[object, ...], tuple[Cells, Strip]] = {}
        self._style_generation = 0
        self._job = 0  # the newest ordering asked of a thread (older answers are dropped)

    # ----- the rows ------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._order)

    def get_row(self, key: str) -> list[Text]:
        return list(self._rows[key])

    @property
    def selected_key(self) -> str | None:
        if not self._order:
            return None
        return self._order[min(self.cursor_row, len(self._order) - 1)]

    def select_key(self, key: str) -> bool:
        """Put the cursor on the row `key`; False if there is no such row."""
        if key not in self._rows:
            return False
        self.move_cursor(row=self._order.index(key))
        return True

    def invalidate(self) -> None:
        """Forget what was drawn, so the next frame redraws every line (theme change)."""
        self._lines.clear()
        self._drawn = {}
        self._style_generation += 1
        self.refresh()

    def sync(self, rows: Mapping[str, Cells], empty: str = "") -> None:
        """Show exactly `rows`, in their order (or the chosen sort), keeping the cursor on
        the same key. Costs a pass over the keys, not over the cells: only measured columns
        read the rows that are new or changed, and nothing is drawn until it is on screen."""
        self.empty_text = empty
        measured = any(column.fixed is None for column in self._columns)
        if (
            row_total(rows) > BIG_TABLE
            and not measured
            and (self.sort_column is not None or isinstance(rows, Filtered))
        ):
            # Filtered or sorted in a thread; the rows shown meanwhile stay as they were.
            self._order_later(rows)
            return
        self._job += 1  # an ordering still running in a thread is out of date
        self._rows = rows = resolved(rows)
        if measured:
            drawn = self._drawn
            grew = False
            for key, cells in rows.items():
                if drawn.get(key) is not cells:
                    grew = measure(self._columns, cells) or grew
            self._drawn = dict(rows)
            if grew:
                self._lines.clear()
        self._reorder()

    def _reorder(self) -> None:
        if len(self._rows) > BIG_TABLE and self.sort_column is not None:
            self._order_later(self._rows)
            return
        self._show_order(
            ordered(
                self._rows, self._columns, self.sort_column, self.sort_descending, self._sort_keys
            )
        )

    def _order_later(self, rows: Mapping[str, Cells]) -> None:
        """Filter and order `rows` in a thread, then show them (`on_keyed_table_ordered`)."""
        self._job += 1
        job, column, descending = self._job, self.sort_column, self.sort_descending
        columns, sort_keys = list(self._columns), self._sort_keys

        def work() -> None:
            shown = resolved(rows)
            order = ordered(shown, columns, column, descending, sort_keys)
            self.post_message(self.Ordered(job, shown, order))

        self.run_worker(work, thread=True, group="order", exit_on_error=False)

    def on_keyed_table_ordered(self, message: Ordered) -> None:
        message.stop()
        if message.job == self._job:
            self._rows = message.rows
            self._show_order(message.order)

    def _show_order(self, order: list[str]) -> None:
        keep = self._cursor_key
        self._order = order
        row = self.cursor_row
        if keep is not None and keep in self._rows:
            row = self._order.index(keep)
        self.virtual_size = Size(self._total_width(), len(self._order) + 1)
        self.move_cursor(row=row, scroll=keep != self._cursor_key or row != self.cursor_row)
        self.refresh()

    def move_cursor(self, *, row: int, scroll: bool = True) -> None:
        count = len(self._order)
        row = max(0, min(row, count - 1)) if count else 0
        old_row = self.cursor_row
        self.cursor_row = row
        key = self._order[row] if count else None
        if scroll:
            self._scroll_to_cursor()
        if row != old_row:
            self.refresh()
        if key != self._cursor_key:
            self._cursor_key = key
            self.refresh()
            if key is not None:
                self.post_message(self.RowHighlighted(self, key))

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)  # the header stays
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True)

    # ----- keys and mouse ------------------------------------------------------------
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 2)

    def action_cursor_down(self) -> None:
        self.move_cursor(row=self.cursor_row + 1)

    def action_cursor_up(self) -> None:
        self.move_cursor(row=self.cursor_row - 1)

    def action_page_down(self) -> None:
        self.move_cursor(row=self.cursor_row + self._page())

    def action_page_up(self) -> None:
        self.move_cursor(row=self.cursor_row - self._page())

    def action_scroll_top(self) -> None:
        self.move_cursor(row=0)

    def action_scroll_bottom(self) -> None:
        self.move_cursor(row=len(self._order) - 1)

    def action_select_cursor(self) -> None:
        key = self.selected_key
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            column = self._column_at(offset.x)
            if column is not None:
                descending = not self.sort_descending if column == self.sort_column else False
                self.sort_by(column, descending=descending)
            return
        row = offset.y - 1 + round(self.scroll_y)
        if row >= len(self._order):
            return
        if row == self.cursor_row:
            self.action_select_cursor()
        else:
            self.move_cursor(row=row)

    def _column_at(self, x: int) -> int | None:
        return column_at(self._render_widths(), self._pinned, x, round(self.scroll_x))

    # ----- sorting -------------------------------------------------------------------
    def action_sort_next(self) -> None:
        """Cycle: the screen's own order, then each column in turn, then back."""
        column = 0 if self.sort_column is None else self.sort_column + 1
        self.sort_by(None if column >= len(self._columns) else column, descending=False)

    def action_sort_reverse(self) -> None:
        self.sort_by(self.sort_column, descending=not self.sort_descending)

    def sort_by(self, column: int | None, *, descending: bool = False) -> None:
        self.sort_column = column
        self.sort_descending = descending
        if column is not None:
            shown = self._columns[column]
            shown.measured = max(shown.measured, len(shown.label) + len(SORT_MARKS[descending]))
        self._lines.clear()
        self._reorder()

    # ----- width ---------------------------------------------------------------------
    def _render_widths(self) -> list[int]:
        """Each column's text width: the flexible one gets what the others leave, between
        FLEX_MIN and its own width."""
        shape = (self.size.width, self._style_generation, *(c.width for c in self._columns))
        if shape == self._widths_for:
            return self._widths
        widths = [column.width for column in self._columns]
        for index, column in enumerate(self._columns):
            if column.key == self._flex:
                others = sum(w + 2 * PADDING for i, w in enumerate(widths) if i != index)
                room = self.size.width - others - 2 * PADDING - 1  # 1: the scrollbar
                widths[index] = max(FLEX_MIN, min(column.width, room)) if room > 0 else FLEX_MIN
        self._widths = widths
        self._widths_for = shape
        return widths

    def _total_width(self) -> int:
        return sum(w + 2 * PADDING for w in self._render_widths())

    def on_resize(self, event: events.Resize) -> None:
        self._lines.clear()
        self.virtual_size = Size(self._total_width(), len(self._order) + 1)
        self._scroll_to_cursor()

    # ----- drawing (the lines themselves: table_lines.py) ------------------------------
    def _line(self, cells: Sequence[Text], header: bool, cursor: bool) -> Strip:
        """One row drawn whole: the pinned columns, then the rest scrolled by scroll_x."""
        base = self.rich_style
        component = self.get_component_rich_style
        if header:
            pre_fixed = pre_rest = base + component("keyed-table--header")
            post = None
        elif cursor:
            cursor_style = component("keyed-table--cursor")
            pre_rest = base + cursor_style
            pre_fixed = base + component("keyed-table--fixed") + cursor_style
            pre_fixed += component("keyed-table--fixed-cursor")
            post = Style.from_color(cursor_style.color, cursor_style.bgcolor)
        else:
            pre_rest = base
            pre_fixed = base + component("keyed-table--fixed")
            post = None
        return row_strip(
            cells,
            self._render_widths(),
            self._pinned,
            (pre_fixed, pre_rest, post),
            round(self.scroll_x),
            self.size.width,
            base,
            self.app.console,
        )

    def _header_cells(self) -> list[Text]:
        return [
            Text(c.label + (SORT_MARKS[self.sort_descending] if i == self.sort_column else ""))
            for i, c in enumerate(self._columns)
        ]

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._line(self._header_cells(), header=True, cursor=False)
        index = y - 1 + round(self.scroll_y)
        if index >= len(self._order):
            return self._empty_line(y - 2)
        key = self._order[index]
        cells = self._rows[key]
        cursor = index == self.cursor_row
        cache_key = (
            key,
            cursor,
            round(self.scroll_x),
            width,
            self._widths_for,
            self.has_focus,
            self.app.current_theme.name,
        )
        cached = self._lines.get(cache_key)
        if cached is not None and cached[0] is cells:
            return cached[1]
        strip = self._line(cells, header=False, cursor=cursor)
        if len(self._lines) > _CACHE_LIMIT:
            self._lines.clear()
        self._lines[cache_key] = (cells, strip)
        return strip

    def _empty_line(self, index: int) -> Strip:
        """Below the rows: blank, or (in an empty table) what to do next."""
        width = self.size.width
        if self._order or not self.empty_text or index < 0:
            return Strip.blank(width, self.rich_style)
        return hint_strip(self.empty_text, index, width, self.rich_style, self.app.console)

    def _on_focus(self, event: events.Focus) -> None:
        super()._on_focus(event)
        self.refresh()

    def _on_blur(self, event: events.Blur) -> None:
        super()._on_blur(event)
        self.refresh()
