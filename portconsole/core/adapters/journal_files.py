"""The journal's segment files: reading events forwards and backwards, and cutting a torn tail.

A crash can only leave a partial last line or a transaction missing its last lines at the
end of the newest segment; `cut_torn_tail` removes exactly that and keeps the bytes aside.
The common case (a whole tail) is decided from the last bytes alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from portconsole.core.adapters.storage import cut_tail_aside

log = logging.getLogger(__name__)

# Tail reads start with this many bytes and grow 4x until they reach what they need.
TAIL_CHUNK = 64 * 1024


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line: cut by the next writer
        if isinstance(record, dict):
            yield record


def records_backwards(path: Path) -> Iterator[dict[str, Any]]:
    """A segment's complete events, newest first, reading its tail in growing chunks."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    with path.open("rb") as handle:
        end = size
        carry = b""
        chunk = TAIL_CHUNK
        while end > 0:
            start = max(0, end - chunk)
            handle.seek(start)
            data = handle.read(end - start) + carry
            lines = data.split(b"\n")
            # The first piece may be a partial line unless the chunk reached the file start.
            carry = lines[0] if start > 0 else b""
            for line in reversed(lines[1:] if start > 0 else lines):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn last line
                if isinstance(record, dict) and "seq" in record:
                    yield record
            end = start
            chunk *= 4


# Every event is written as canonical JSON (keys sorted), so its chain fields come last:
# `"hash":...,"id":...,...,"seq":...,"tx":...}`. Outside a string this key can only be a key:
# inside one, every quote is escaped.
_HASH_KEY = b',"hash":'


def chain_fields(line: bytes) -> dict[str, Any] | None:
    """The fields of an event line from its top-level `hash` key on (hash, ..., seq, tx),
    parsed from the end of `line` alone; None if they are not there (a torn line, or an
    event not in canonical key order).

    A transaction that writes 100,000 findings is one event of tens of MB: parsing it
    whole to learn its seq and hash took ~300 MB and a second, three times as a process
    opened the store. A `hash` key nested deeper leaves unbalanced braces after it, so
    it does not parse: the search goes on to an earlier one."""
    end = len(line)
    while True:
        at = line.rfind(_HASH_KEY, 0, end)
        if at < 0:
            return None
        end = at
        try:
            fields = json.loads(b"{" + line[at + 1 :])
        except ValueError:
            continue
        if isinstance(fields, dict) and "seq" in fields:
            return fields


def last_record(path: Path) -> dict[str, Any] | None:
    """The chain fields (`chain_fields`: seq, hash, tx, ...) of the last complete event of
    a segment, reading only its tail; the whole event only if it is not canonical."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    with path.open("rb") as handle:
        handle.seek(max(0, size - TAIL_CHUNK))
        tail = handle.read()
        if tail.endswith(b"\n"):
            # The last line, or its end when it started before the chunk.
            fields = chain_fields(tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 : -1])
            if fields is not None:
                return fields
        start = max(0, size - TAIL_CHUNK)
        step = TAIL_CHUNK * 4  # grows, so a long last line is read a few times, not n/64k
        while True:
            handle.seek(start)
            tail = handle.read(size - start)
            lines = tail.split(b"\n")
            complete = lines[:-1] if not tail.endswith(b"\n") else lines
            complete = [line for line in complete if line.strip()]
            candidates = complete[1:] if start > 0 else complete
            for line in reversed(candidates):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "seq" in record:
                    return record
            if start == 0:
                return None
            start = max(0, start - step)
            step *= 4


def tail_is_whole(path: Path) -> bool:
    """The common case, read from the last bytes only: the file ends with a newline and its
    last event closes its transaction."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            if size == 0:
                return True
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                return False
    except FileNotFoundError:
        return True
    last = last_record(path)
    if last is None:
        return False
    tx = last.get("tx") or [last.get("seq"), 1]
    try:
        return int(last["seq"]) == int(tx[0]) + int(tx[1]) - 1
    except (TypeError, ValueError, IndexError):
        return False


def cut_torn_tail(path: Path) -> None:
    """Cut a partial last line or an incomplete last transaction; keep the bytes aside."""
    if tail_is_whole(path):
        return
    raw = path.read_bytes()
    if not raw:
        return
    keep = len(raw)
    if not raw.endswith(b"\n"):
        keep = raw.rfind(b"\n") + 1
    # Walk back over the complete lines of the last transaction.
    lines: list[tuple[int, dict[str, Any] | None]] = []
    offset = keep
    while offset > 0 and len(lines) < 100_000:
        start = raw.rfind(b"\n", 0, offset - 1) + 1
        try:
            record = json.loads(raw[start:offset])
        except ValueError:
            record = None
        lines.append((start, record if isinstance(record, dict) else None))
        if record is None or not isinstance(record, dict):
            offset = start
            continue
        tx = record.get("tx")
        if not tx or int(record["seq"]) == int(tx[0]):
            # The first event of the transaction: complete only if its last one is here.
            count = int(tx[1]) if tx else 1
            last_seq = int(record["seq"]) + count - 1
            newest = next((r for _, r in lines if r is not None), None)
            if newest is not None and int(newest["seq"]) >= last_seq:
                break
            keep = start
        offset = start
    if keep == len(raw):
        return
    aside = cut_tail_aside(path, keep, raw)
    log.warning(
        "journal %s: cut a torn tail of %d bytes (kept in %s)", path, len(raw) - keep, aside
    )
