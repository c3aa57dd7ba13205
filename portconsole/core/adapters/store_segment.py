"""Monthly history segments: append-only JSON Lines, read only up to the committed size.

A segment (`scans/YYYY-MM.jsonl`) holds one JSON array a line, tagged by its first item:

- `["C", CHECKPOINT]`: the open ports and host statuses as they were at that point of the
  file (strings shared through one table, rows as arrays). The first line of a month is
  one, so a point-in-time answer needs this one file and nothing older; later ones are
  written whenever the history appended since the last grew past a share of its size, so
  an answer replays a few days of events, not a month;
- `["L", ID, ADDRESSES]`: an address list (coverage) written once per segment and referred
  to by id, so 730 hourly scan records of the same 1,000 addresses do not repeat them;
- `["S", FINISHED_AT, SCAN_ID, RECORD, EVENTS]`: a scan record
  (`ScanResult.metadata_json()` with addresses by list id) and its change events, each
  `[kind, host, port, proto, before, after]` (their time and scan id are the record's).

A scan line's time and id come first, so a reader finds the lines a question needs from
their first bytes and parses only those: the JSON parse of a whole month was most of the
cost of a point-in-time answer.

Appending keeps the write cost of an ingest flat however long the month's history is (a
rewrite of the whole segment would grow with it). The hot file records each segment's
committed size: that size is the commit point, so bytes past it are an ingest that crashed
before its commit and are cut off under the lock, and lock-free readers never read past it.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from msgspec import Struct, field

from portconsole.core.adapters.json_pieces import (
    dumps_object_of_arrays,
    each_item,
    expect,
    loads_object_of_arrays,
    skip_values,
)
from portconsole.core.adapters.storage import quarantine
from portconsole.core.domain.state import parse_time
from portconsole.core.errors import StoreError
from portconsole.core.release import release

SEGMENT_DIR = "scans"
SEGMENT_SUFFIX = ".jsonl"
# Scan ids remembered to refuse a duplicate ingest cheaply.
RECENT_SCAN_IDS = 256
CHECKPOINT, LIST, SCAN = "C", "L", "S"
# The first bytes of a scan line hold its time and id (an id is at most 128 characters).
_HEADER_BYTES = 256
_LIST_TAG = b'["L",'
# How much of a segment indexing reads at a time.
_INDEX_CHUNK = 1 << 20


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC while building many small objects at once: with a year of
    history parsed, its full passes doubled the time of a point-in-time answer."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def encode_lines(lines: list[list[Any]]) -> bytes:
    return "".join(
        json.dumps(line, separators=(",", ":"), ensure_ascii=False, sort_keys=True) + "\n"
        for line in lines
    ).encode("utf-8")


# --------------------------------------------------------------------------- checkpoints

# Host fields of a checkpoint row, after the address; absent ones are stored as null.
HOST_FIELDS = (
    "status",
    "hostname",
    "first_seen",
    "last_seen",
    "last_scan_id",
    "last_covered",
    "last_covered_scan_id",
)
_REQUIRED_HOST_FIELDS = ("status", "hostname")


SEEN_AT, SEEN_SCAN = 10, 11  # in a decoded port row, after the PORT_FIELDS


def encode_checkpoint(
    hosts: Iterable[tuple[dict[str, Any], Any, Any]],
    ports: Iterable[tuple[str, list[tuple[str, list[Any], Any, Any]]]],
) -> list[Any]:
    """A checkpoint line: every string once in a table, hosts and port rows as indexes.

    `hosts` gives (doc, seen time, seen scan id); `ports` gives, per address, its open rows
    as (key, row in `PORT_FIELDS` order, seen time, seen scan id). The state and closed_at
    are implied: a checkpoint holds open ports only. "Seen" is the newest scan before the
    checkpoint that covered the host or port. Shared strings (times, scan ids, services)
    make a 20,000-port state 5x smaller than dicts, and quicker to load.
    """
    strings: list[Any] = [None]
    index: dict[Any, int] = {None: 0}

    def ref(value: Any) -> int:
        found = index.get(value)
        if found is None:
            found = index[value] = len(strings)
            strings.append(value)
        return found

    host_rows = [
        [ref(doc["address"]), *(ref(doc.get(name)) for name in HOST_FIELDS), ref(at), ref(scan)]
        for doc, at, scan in hosts
    ]
    port_rows = [
        [ref(address), [[ref(key), *map(ref, row[1:9]), ref(at), ref(scan)] for key, row, at, scan in rows]]
        for address, rows in ports
        if rows
    ]  # fmt: skip
    return [CHECKPOINT, {"strings": strings, "hosts": host_rows, "ports": port_rows}]


def encode_checkpoint_line(
    hosts: Iterable[tuple[dict[str, Any], Any, Any]],
    ports: Iterable[tuple[str, list[tuple[str, list[Any], Any, Any]]]],
) -> bytes:
    """`encode_lines([encode_checkpoint(hosts, ports)])`, encoded a row at a time (the same
    bytes, without one long call holding the GIL: json_pieces.py)."""
    body = encode_checkpoint(hosts, ports)[1]
    try:
        return f'["{CHECKPOINT}",{dumps_object_of_arrays(body)}]\n'.encode()
    finally:
        release(body["ports"], body["hosts"], body["strings"])


class Checkpoint(Struct):
    """A decoded checkpoint: host docs (with `seen_at`, `seen_scan_id`) and open port rows
    (`PORT_FIELDS` order, then the seen time and scan id)."""

    hosts: dict[str, dict[str, Any]]
    ports: dict[str, dict[str, list[Any]]]


def decode_checkpoint(body: dict[str, Any], host: str | None, open_state: str) -> Checkpoint:
    """The checkpoint's state, for one host only when `host` is given."""
    s = strings = body["strings"]
    hosts: dict[str, dict[str, Any]] = {}
    for row in body["hosts"]:
        address = strings[row[0]]
        if host is not None and address != host:
            continue
        doc: dict[str, Any] = {"address": address}
        for name, ref in zip(HOST_FIELDS, row[1:-2], strict=True):
            value = strings[ref]
            if value is not None or name in _REQUIRED_HOST_FIELDS:
                doc[name] = value if value is not None else ""
        doc["seen_at"], doc["seen_scan_id"] = strings[row[-2]], strings[row[-1]]
        hosts[address] = doc
    ports: dict[str, dict[str, list[Any]]] = {}
    for address_ref, rows in body["ports"]:
        address = strings[address_ref]
        if host is not None and address != host:
            continue
        ports[address] = {
            s[k]: [open_state, s[a], s[b], s[c], s[d], s[e], s[f], s[g], s[h], None, s[i], s[j]]
            for k, a, b, c, d, e, f, g, h, i, j in rows
        }
    return Checkpoint(hosts, ports)


# --------------------------------------------------------------------------- segments


# A line parsed once is kept parsed while it is at most this long; a longer one (a sweep of
# 10,000 hosts is one 25 MB line, a checkpoint of 200,000 ports 20 MB) is read and parsed
# again each time it is needed, rather than held by every process that once read it.
KEEP_PARSED_BYTES = 256 * 1024


class Line(Struct):
    """One committed line: its tag, where it is and, for a scan, its time and id. Its bytes
    stay in the file (committed bytes never change) and are read and parsed on demand."""

    kind: str
    offset: int  # in the file
    length: int  # without its newline
    at: datetime | None = None
    at_text: str = ""
    scan_id: str = ""
    value: list[Any] | None = None


class Segment(Struct):
    """One month's history, up to `size` bytes: lines indexed, parsed as questions need."""

    month: str
    path: Path
    size: int = 0
    lines: list[Line] = field(default_factory=list)
    lists: dict[str, list[str]] = field(default_factory=dict)
    list_sets: dict[str, frozenset[str]] = field(default_factory=dict)

    def address_set(self, list_id: str | None) -> frozenset[str]:
        if not list_id:
            return frozenset()
        cached = self.list_sets.get(list_id)
        if cached is None:
            cached = frozenset(self.lists.get(list_id, ()))
            self.list_sets[list_id] = cached
        return cached

    def raw(self, line: Line, limit: int | None = None) -> bytes:
        """The line's bytes (its first `limit` only, if given), read from the file."""
        length = line.length if limit is None else min(limit, line.length)
        try:
            with self.path.open("rb") as handle:
                handle.seek(line.offset)
                data = handle.read(length)
        except FileNotFoundError:
            raise StoreError(
                f"history segment {self.path} went away while it was read (pruned by "
                "retention?): retry"
            ) from None
        if len(data) < length:
            raise _damaged(self.path, f"truncated (the line at byte {line.offset} is cut off)")
        return data

    def parsed(self, line: Line) -> list[Any]:
        """The line's JSON; a line that does not parse names the file (and is copied aside)."""
        if line.value is not None:
            return line.value
        try:
            value = json.loads(self.raw(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _damaged(
                self.path, f"corrupt (the line at byte {line.offset} is not JSON)"
            ) from None
        if not isinstance(value, list) or not value or value[0] != line.kind:
            raise _damaged(self.path, f"corrupt (the line at byte {line.offset})")
        if line.kind == SCAN and (
            len(value) != 5 or not isinstance(value[3], dict) or not isinstance(value[4], list)
        ):
            raise _damaged(self.path, f"corrupt (the scan line at byte {line.offset})")
        if line.length <= KEEP_PARSED_BYTES:
            line.value = value
        return value

    def scan_lines(self) -> list[Line]:
        return [line for line in self.lines if line.kind == SCAN]

    def record(self, line: Line) -> dict[str, Any]:
        record: dict[str, Any] = self.parsed(line)[3]
        return record

    def events(self, line: Line) -> list[list[Any]]:
        events: list[list[Any]] = self.parsed(line)[4]
        return events

    def each_event(self, line: Line) -> Iterator[list[Any]]:
        """A scan line's events one at a time: a line kept parsed gives its list; a long one
        is decoded an event at a time (a first sweep of 10,000 hosts is 200,000 events in
        one 25 MB line: parsed whole, ~250 MB at once)."""
        if line.value is not None or line.length <= KEEP_PARSED_BYTES:
            yield from self.events(line)
            return
        try:
            text = self.raw(line).decode("utf-8")
            # Past the tag, the time, the scan id and the record.
            at = skip_values(text, expect(text, 0, "["), 4)
            ends: list[int] = []
            for event in each_item(text, at, ends):
                if not isinstance(event, list):
                    raise ValueError(at)
                yield event
            if text[ends[0] :] != "]":
                raise ValueError(ends[0])
        except (ValueError, IndexError, UnicodeDecodeError):
            raise _damaged(self.path, f"corrupt (the scan line at byte {line.offset})") from None

    def checkpoint(self, line: Line) -> dict[str, Any]:
        if line.value is None and line.length > KEEP_PARSED_BYTES:
            # A big one is decoded a row at a time (json_pieces.py); a line in another form
            # than the store writes is parsed whole below, and refused there if damaged.
            try:
                text = self.raw(line).decode("utf-8")
                streamed, at = loads_object_of_arrays(text, expect(text, 0, '["C",'))
                if text[at:] == "]":
                    return streamed
            except (ValueError, IndexError, UnicodeDecodeError):
                pass
        value = self.parsed(line)
        if len(value) != 2 or not isinstance(value[1], dict):
            raise _damaged(self.path, f"corrupt (the checkpoint at byte {line.offset})")
        body: dict[str, Any] = value[1]
        return body

    def add(self, handle: BinaryIO, start: int, end: int) -> None:
        """Index the committed lines from byte `start` (where `handle` is) to `end`, reading
        in chunks: of each line only its first bytes are kept while indexing (a list's, all
        of it), so a 50 MB line costs a chunk, not its size twice over."""
        offset = start  # where the current line starts
        head = bytearray()  # its first bytes, or all of it for a list line
        position = start
        while position < end:
            chunk = handle.read(min(_INDEX_CHUNK, end - position))
            if not chunk:
                raise _damaged(self.path, f"truncated ({position} of {end} bytes)")
            view = memoryview(chunk)
            at = 0
            while True:
                newline = chunk.find(b"\n", at)
                piece = view[at : len(chunk) if newline < 0 else newline]
                if head.startswith(_LIST_TAG):
                    head += piece
                elif len(head) < _HEADER_BYTES:
                    need = _HEADER_BYTES - len(head)
                    head += piece[:need]
                    if head.startswith(_LIST_TAG):
                        head += piece[need:]
                if newline < 0:
                    break
                end_of_line = position + newline
                self.lines.append(self._index(bytes(head), offset, end_of_line - offset))
                offset, head, at = end_of_line + 1, bytearray(), newline + 1
            position += len(chunk)
        if offset != end:
            raise _damaged(self.path, "corrupt (a committed line is cut off)")

    def _index(self, raw: bytes, offset: int, length: int) -> Line:
        """A line from its first bytes (`raw`: all of it for a list line)."""
        tag = raw[:6]
        if tag.startswith(b'["S","'):
            parts = raw[:_HEADER_BYTES].split(b'"', 6)
            if len(parts) == 7 and parts[2] == b"," and parts[4] == b",":
                try:
                    at_text = parts[3].decode("ascii")
                    return Line(
                        SCAN,
                        offset,
                        length,
                        parse_time(at_text),
                        at_text,
                        parts[5].decode("ascii"),
                    )
                except (UnicodeDecodeError, ValueError):
                    pass
        elif tag.startswith(b'["C",'):
            return Line(CHECKPOINT, offset, length)
        elif tag.startswith(b'["L",'):
            line = Line(LIST, offset, length)
            value = _parsed_list(raw, self.path, offset)
            if len(value) == 3 and isinstance(value[2], list):
                self.lists[str(value[1])] = [str(item) for item in value[2]]
                return line
        raise _damaged(self.path, f"corrupt (the line at byte {offset})")


def _parsed_list(raw: bytes, path: Path, offset: int) -> list[Any]:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _damaged(path, f"corrupt (the line at byte {offset} is not JSON)") from None
    if not isinstance(value, list) or not value or value[0] != LIST:
        raise _damaged(path, f"corrupt (the line at byte {offset})")
    return value


def _damaged(path: Path, what: str) -> StoreError:
    copy = quarantine(path)
    return StoreError(
        f"history segment {path} is {what}; a copy is kept at {copy}. "
        "Restore it from backup, or move it away to drop that month's history."
    )


class SegmentCache:
    """Indexed segments kept between queries; a segment that grew is read only for its tail.

    Segments only grow (bytes past the committed size are never read), so (month, size)
    identifies an indexed state. At most `capacity` months are kept to bound memory.
    """

    def __init__(self, folder: Path, capacity: int = 2) -> None:
        self.folder = folder
        self.capacity = capacity
        self._cache: OrderedDict[str, Segment] = OrderedDict()

    def path(self, month: str) -> Path:
        return self.folder / f"{month}{SEGMENT_SUFFIX}"

    def clear(self) -> None:
        self._cache.clear()

    def load(self, month: str, committed: int) -> Segment:
        """The segment of `month` up to `committed` bytes; missing file (pruned) -> empty."""
        path = self.path(month)
        segment = self._cache.get(month)
        if segment is None or segment.size > committed:
            segment = Segment(month=month, path=path)
        if committed > segment.size:
            self._cache.pop(month, None)  # re-cached only once fully indexed
            try:
                with path.open("rb") as handle:
                    handle.seek(segment.size)
                    segment.add(handle, segment.size, committed)
            except FileNotFoundError:
                return Segment(month=month, path=path)
            segment.size = committed
        self._cache[month] = segment
        self._cache.move_to_end(month)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return segment
