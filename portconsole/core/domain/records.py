"""What the product's records share: they are msgspec Structs (defined in C, so the ~80
record types cost well under a millisecond at start-up where generated dataclass methods cost
~1 ms each), and `asdict` turns one into a fresh dict, nested records and containers copied.

One exception: chain.py keeps dataclasses, as it is copied into every evidence pack's
checker, which runs on the standard library alone.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


def _copied(value: Any) -> Any:
    if isinstance(value, Struct):
        return asdict(value)
    if isinstance(value, list):
        return [_copied(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_copied(item) for item in value)
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    return value


def asdict(record: Struct) -> dict[str, Any]:
    """The record's fields as a new dict; nested records become dicts, lists, tuples and
    dicts are copied (what `dataclasses.asdict` gave)."""
    return {name: _copied(getattr(record, name)) for name in record.__struct_fields__}
