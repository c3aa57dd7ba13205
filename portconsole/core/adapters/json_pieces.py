"""Big JSON lines read and written a piece at a time.

A history checkpoint of 200,000 ports is a 20 MB line, and a first sweep of 10,000 hosts a
25 MB one. `json.loads`/`json.dumps` handle such a line in one call that holds the GIL for
a few hundred ms: a console running its own scan cycle froze that long when the cycle wrote
or read one. Here an array's items are decoded or encoded one by one (many short calls,
the same bytes), so other threads run between them. Only the compact form the store
writes (no whitespace) is read this way; anything else raises ValueError, and callers fall
back to, or report, the whole line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

_DECODER = json.JSONDecoder()


def dumps(value: Any) -> str:
    """One value in the store's compact, key-sorted form."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def expect(text: str, at: int, token: str) -> int:
    """The position past `token`, which must be at `at`."""
    if not text.startswith(token, at):
        raise ValueError(f"expected {token!r} at {at}")
    return at + len(token)


def skip_values(text: str, at: int, count: int) -> int:
    """The position past `count` comma-separated values starting at `at` (and their commas)."""
    for _ in range(count):
        _, at = _DECODER.raw_decode(text, at)
        at = expect(text, at, ",")
    return at


def each_item(text: str, at: int, ends: list[int]) -> Iterator[Any]:
    """The items of the array that starts at `at`, one at a time; `ends` receives the
    position past the array once it is read to its end."""
    at = expect(text, at, "[")
    if text.startswith("]", at):
        ends.append(at + 1)
        return
    while True:
        item, at = _DECODER.raw_decode(text, at)
        yield item
        if text.startswith("]", at):
            ends.append(at + 1)
            return
        at = expect(text, at, ",")


def loads_object_of_arrays(text: str, at: int) -> tuple[dict[str, Any], int]:
    """An object whose values are arrays, decoded an item at a time, and the position past it."""
    at = expect(text, at, "{")
    body: dict[str, Any] = {}
    if text.startswith("}", at):
        return body, at + 1
    while True:
        key, at = _DECODER.raw_decode(text, at)
        at = expect(text, at, ":")
        ends: list[int] = []
        body[str(key)] = list(each_item(text, at, ends))
        at = ends[0]
        if text.startswith("}", at):
            return body, at + 1
        at = expect(text, at, ",")


def dumps_array(items: Sequence[Any]) -> str:
    """`dumps(items)` for a list, encoded an item at a time (the same text)."""
    return "[" + ",".join(map(dumps, items)) + "]"


def dumps_object_of_arrays(body: Mapping[str, Sequence[Any]]) -> str:
    """`dumps(body)` for an object whose values are lists, an item at a time (the same text)."""
    return "{" + ",".join(f"{dumps(key)}:{dumps_array(body[key])}" for key in sorted(body)) + "}"
