"""What a KeyedTable shows, without Textual: rows by key, their order, column widths.

A table of 100,000 findings must not build, measure or sort 100,000 rows on the UI thread
each time a snapshot lands. `LazyRows` hands the table its rows by key but builds a row's
cells only when the table draws it (the twenty-odd rows on screen); filtering and sorting
by a column read cheap values of the row's source (`search`, `sort_values`) instead of its
cells. Column widths are fixed per column, or for small tables measured only on the rows
that changed, never all rows on every refresh.
"""

from __future__ import annotations

import functools
import heapq
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from rich.text import Text

from portconsole.core.domain.targets import ip_sort_key

Cells = Sequence[Text]
SortKey = Callable[[str], Any]
Source = TypeVar("Source")

# Tables of more rows than this are filtered and ordered in a thread (KeyedTable): sorting
# or searching 100,000 findings on the UI thread stalled keys for a few hundred ms.
BIG_TABLE = 20_000
# Rows sorted at a time (`sorted_in_runs`): one C-level sort holds the GIL throughout.
_RUN = 4096

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PIECES = re.compile(r"(\d+)")


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


@functools.lru_cache(maxsize=65536)
def address_key(address: str) -> Any:
    """`ip_sort_key`, remembered: sorting 100,000 findings meets each host many times."""
    return ip_sort_key(address)


class LazyRows(Mapping[str, Cells], Generic[Source]):
    """Rows keyed by string, each built from its source object on first read.

    `sources`: key -> the object a row shows (a host, a finding), in the screen's order.
    `build`: the row's cells from its source (runs only for rows that are read).
    `search`: the text the `/` filter looks in (default: the built cells' text).
    `sort_values`: per column key, a sort key from the source (default: the cells' text).
    """

    def __init__(
        self,
        sources: Mapping[str, Source],
        build: Callable[[Source], Cells],
        *,
        search: Callable[[Source], str] | None = None,
        sort_values: Mapping[str, Callable[[Source], Any]] | None = None,
        built: dict[str, Cells] | None = None,
    ) -> None:
        self.sources = sources
        self.build = build
        self.search = search
        self.sort_values = dict(sort_values or {})
        # Rows built so far: a screen whose rows do not depend on its state may pass the
        # same dict again (with the same sources) to keep them.
        self._built: dict[str, Cells] = {} if built is None else built

    def __getitem__(self, key: str) -> Cells:
        cells = self._built.get(key)
        if cells is None:
            cells = self.build(self.sources[key])
            self._built[key] = cells
        return cells

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __contains__(self, key: object) -> bool:
        return key in self.sources

    def matching(self, needle: str) -> LazyRows[Source]:
        """The rows whose text contains `needle` (lower case), sharing built rows."""
        search = self.search
        if search is None:
            kept = {
                k: s
                for k, s in self.sources.items()
                if any(needle in cell.plain.lower() for cell in self[k])
            }
        else:
            kept = {k: s for k, s in self.sources.items() if needle in search(s).lower()}
        return LazyRows(
            kept, self.build, search=search, sort_values=self.sort_values, built=self._built
        )

    def sort_value(self, column: str) -> Callable[[str], Any] | None:
        """A key function over row keys for `column`, if the source gives one."""
        value = self.sort_values.get(column)
        if value is None:
            return None
        sources = self.sources
        return lambda key: value(sources[key])


class Filtered(Mapping[str, Cells]):
    """`rows.matching(needle)`, worked out on first use: for a big table, in its thread."""

    def __init__(self, rows: LazyRows[Any], needle: str) -> None:
        self.rows = rows
        self.needle = needle
        self._kept: LazyRows[Any] | None = None

    def resolve(self) -> LazyRows[Any]:
        if self._kept is None:
            self._kept = self.rows.matching(self.needle)
        return self._kept

    def __getitem__(self, key: str) -> Cells:
        return self.resolve()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.resolve())

    def __len__(self) -> int:
        return len(self.resolve())


def resolved(rows: Mapping[str, Cells]) -> Mapping[str, Cells]:
    """The rows themselves (a `Filtered` worked out)."""
    return rows.resolve() if isinstance(rows, Filtered) else rows


def row_total(rows: Mapping[str, Cells]) -> int:
    """How many rows there are, or for `Filtered` at most (without filtering)."""
    return len(rows.rows) if isinstance(rows, Filtered) else len(rows)


def sorted_in_runs(keys: list[str], key: Callable[[str], Any]) -> list[str]:
    """`sorted(keys, key=key)`, stable, sorting `_RUN` keys at a time and merging them
    (heapq.merge: Python steps, between which other threads run)."""
    if len(keys) <= _RUN:
        return sorted(keys, key=key)
    runs = [sorted(keys[at : at + _RUN], key=key) for at in range(0, len(keys), _RUN)]
    return list(heapq.merge(*runs, key=key))


class Column:
    """One column: its key, label and width (fixed, or measured from changed rows)."""

    __slots__ = ("fixed", "key", "label", "measured")

    def __init__(self, key: str, label: str, width: int | None = None) -> None:
        self.key = key
        self.label = label
        self.fixed = width
        self.measured = len(label)

    @property
    def width(self) -> int:
        return self.fixed if self.fixed is not None else self.measured


def parse_columns(spec: Sequence[tuple[str, str] | tuple[str, str, int]]) -> list[Column]:
    """`(key, label)` (width measured from the rows) or `(key, label, width)` (fixed)."""
    columns = []
    for item in spec:
        width = item[2] if len(item) > 2 else None
        columns.append(Column(item[0], item[1], width))
    return columns


def measure(columns: Sequence[Column], cells: Cells) -> bool:
    """Widen measured columns to fit `cells` (a row that is new or changed); True if any grew."""
    grew = False
    for column, cell in zip(columns, cells, strict=False):
        if column.fixed is None:
            length = cell.cell_len
            if length > column.measured:
                column.measured = length
                grew = True
    return grew


def ordered(
    rows: Mapping[str, Cells],
    columns: Sequence[Column],
    sort_column: int | None,
    descending: bool,
    sort_keys: Mapping[str, SortKey],
) -> list[str]:
    """The row keys in display order: the given order, or sorted by one column."""
    keys = list(rows)
    if sort_column is not None and sort_column < len(columns):
        column = columns[sort_column].key
        by_source = rows.sort_value(column) if isinstance(rows, LazyRows) else None
        if by_source is not None:
            keys = sorted_in_runs(keys, by_source)
        else:
            text_key = sort_keys.get(column, natural_key)
            index = sort_column

            def cell_key(key: str) -> Any:
                cells = rows[key]
                return text_key(cells[index].plain) if index < len(cells) else ()

            keys = sorted_in_runs(keys, cell_key)
    if descending:
        keys.reverse()
    return keys
