"""Typed records read from TOML (the settings file, theme files): msgspec Structs that refuse
unknown keys, converted from parsed TOML with the errors said as `where: what`.

msgspec, not a model library with a runtime schema builder: every command starts by loading
the settings, and defining and validating these records costs well under a millisecond,
where building validators at import cost ~100 ms of each command's start-up.

A field check that is more than a type or a bound lives in the record's `__post_init__`
(it runs on conversion and on direct construction) and raises `FieldError(field, text)`,
so the message names the field, not only the table it sits in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A record of a TOML table: unknown keys are errors; fields are passed by name."""


class Secret:
    """A value never shown: repr and str print asterisks, like the settings fingerprint."""

    __slots__ = ("_value",)
    MASK = "**********"

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.MASK!r})"

    def __str__(self) -> str:
        return self.MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class FieldError(ValueError):
    """A bad value of one field, raised from a record's `__post_init__`."""

    def __init__(self, field: str, text: str) -> None:
        # msgspec keeps only the text: the field's name leads it, split off again by `problem`.
        super().__init__(f"{field}{_FIELD_MARK}{text}")


_FIELD_MARK = " \u2192 "  # between a FieldError's field and its text (never in msgspec's own)
_AT = re.compile(r"^(?P<text>.*) - at `\$?(?P<path>[^`]*)`(?: in `\$(?P<outer>[^`]*)`)?$", re.S)


def _decode(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise NotImplementedError  # msgspec says the value has the wrong type


def _encode(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Secret):
        return Secret.MASK
    raise NotImplementedError


def convert(data: Any, kind: type[T], *, strict: bool = False) -> T:
    """`data` (parsed TOML) as a `kind`. Raises msgspec.ValidationError (see `problem`).
    Not strict (settings): "2" for an int is taken, as environment overrides are text;
    an int for a float always is."""
    return msgspec.convert(data, kind, strict=strict, dec_hook=_decode)


def to_builtins(record: Any) -> Any:
    """A record as JSON-ready dicts and lists (paths as text, secrets masked)."""
    return msgspec.to_builtins(record, enc_hook=_encode)


def _dotted(path: str) -> list[str]:
    """`.scan.ports` or `.notify.urls[0].timeout` as its keys: scan, ports / notify, urls, 0,
    timeout."""
    return [part for part in re.split(r"[.\[\]]+", path) if part]


def _choices(kind: type, path: list[str], of_key: bool) -> tuple[Any, ...]:
    """The values a Literal field at `path` of `kind` allows (of its keys, for a dict whose
    key was refused); () when the path does not lead to one."""
    from msgspec import inspect

    node: Any = inspect.type_info(kind)
    for step in [*path, "<key>" if of_key else None]:
        while isinstance(node, inspect.Metadata | inspect.UnionType):
            if isinstance(node, inspect.Metadata):
                node = node.type
            else:  # `X | None`: the X
                rest = [t for t in node.types if not isinstance(t, inspect.NoneType)]
                node = rest[0] if len(rest) == 1 else None
        if step is None:
            break
        if isinstance(node, inspect.StructType):
            node = next((f.type for f in node.fields if f.name == step), None)
        elif isinstance(node, inspect.DictType):
            node = node.key_type if step == "<key>" else node.value_type
        elif isinstance(node, inspect.ListType):
            node = node.item_type
        else:
            return ()
    return node.values if isinstance(node, inspect.LiteralType) else ()


def problem(
    error: msgspec.ValidationError, prefix: tuple[str, ...] = (), kind: type | None = None
) -> tuple[str, str]:
    """(where, what) of a conversion error: `scan.workers`, `expected int >= 1`; an unknown
    key is `scan.workrs`, `unknown key`; where is "(top level)" for the document itself.
    Given the `kind` converted to, a refused choice says which ones there are."""
    text = str(error)
    parts = list(prefix)
    path: list[str] = []
    matched = _AT.match(text)
    if matched:
        text = matched["text"]
        path = _dotted(matched["outer"] or matched["path"])
        parts += path
    if kind is not None and text.startswith("Invalid enum value"):
        allowed = _choices(kind, path, of_key=bool(matched and matched["outer"]))
        if allowed:
            text += f" (one of: {', '.join(str(value) for value in allowed)})"
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", text)
    missing = re.fullmatch(r"Object missing required field `(.+)`", text)
    if unknown or missing:
        parts.append((unknown or missing)[1])  # type: ignore[index]
        text = "unknown key" if unknown else "required, missing"
    elif _FIELD_MARK in text:
        field, text = text.split(_FIELD_MARK, 1)
        parts.append(field)
    else:
        text = text.replace("`", "")
        text = text[:1].lower() + text[1:]
    return ".".join(parts) or "(top level)", text
