"""Freeing big containers a slice at a time.

Dropped at once, a container of hundreds of thousands of objects is freed in one
deallocation cascade that holds the GIL: the rows of a 200,000-port history checkpoint took
~110 ms, a replaced console snapshot 50-150 ms, and a console's UI thread froze that long
(bench/tui.py). Emptied a slice at a time, other threads run between the slices.
"""

from __future__ import annotations

from typing import Any

# How many items are freed at a time.
RELEASE_SLICE = 2048


def release(*containers: list[Any] | dict[Any, Any]) -> None:
    """Empty these lists and dicts, in order, a slice at a time. What they held and others
    still hold is left alone."""
    for items in containers:
        if isinstance(items, dict):
            while items:
                for _ in range(min(RELEASE_SLICE, len(items))):
                    items.popitem()
        else:
            while items:
                del items[-RELEASE_SLICE:]
