"""The baseline file format: its keys, its problems, and a YAML loader that remembers lines.

The format is documented in sample_baselines/README.md. Files are parsed with a SafeLoader
subclass (no Python objects, no code) that also keeps the line of every key and list item,
so each problem can point at its field. Parsing text is pure; reading the file, and the
checks that may resolve names, are the reader's (adapters/baseline.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import yaml
from msgspec import Struct

from portconsole.core.errors import UserError
from portconsole.core.timeutil import iso

FORMAT_VERSION = 1
TOP_KEYS = ("version", "description", "defaults", "hosts")
HOST_KEYS = ("selector", "description", "defaults", "rules")
RULE_KEYS = (
    "ports",
    "proto",
    "service",
    "product",
    "justification",
    "owner",
    "requester",
    "approver",
    "ticket",
    "approved_at",
    "review_by",
    "mitigation",
    "description",
)
# Fields a `defaults` mapping may set for the rules below it.
DEFAULT_KEYS = tuple(k for k in RULE_KEYS if k not in ("ports", "description"))
TEXT_KEYS = ("service", "product", "justification", "owner", "requester", "approver", "mitigation")


class LintProblem(Struct, frozen=True):
    """One problem in a baseline file, with where it is."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class BaselineError(UserError):
    """A baseline file has problems; `problems` lists them all (the message names the first)."""

    def __init__(self, path: str, problems: Sequence[LintProblem]) -> None:
        self.path = path
        self.problems = list(problems)
        more = len(self.problems) - 1
        tail = f" (and {more} more problems)" if more else ""
        super().__init__(f"{self.problems[0]}{tail}")


# -- a YAML loader that remembers lines ------------------------------------------------------


class YamlMap(dict[Any, Any]):
    """A mapping from YAML with the line of the mapping and of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class YamlSeq(list[Any]):
    """A sequence from YAML with the line of the sequence and of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class LineLoader(yaml.SafeLoader):
    """yaml.SafeLoader that records node start lines and reports duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []


def _construct_map(loader: LineLoader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)
    result = YamlMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be plain text", key_node.start_mark
            ) from None
        line = key_node.start_mark.line + 1
        if key in result:
            loader.duplicates.append((line, str(key)))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_seq(loader: LineLoader, node: yaml.SequenceNode) -> YamlSeq:
    result = YamlSeq()
    result.line = node.start_mark.line + 1
    result.item_lines = []
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_lines.append(child.start_mark.line + 1)
    return result


def _construct_timestamp(loader: LineLoader, node: yaml.ScalarNode) -> str:
    # PyYAML raises a bare ValueError (no line) on 2026-13-01; keep the text and let lint
    # parse it, so a bad date is one problem at its line like any other.
    return str(loader.construct_scalar(node))


LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def shown_date(moment: datetime) -> str:
    """A date as the format writes it: YYYY-MM-DD at midnight, else the full UTC time."""
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.strftime("%Y-%m-%d")
    return iso(moment)
