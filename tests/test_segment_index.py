"""A history segment is indexed in chunks without holding its lines: every line found where
it is, whatever chunk boundary it crosses, and read back from the file on demand."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import portconsole.core.adapters.store_segment as store_segment
from portconsole.core.adapters.store_segment import (
    CHECKPOINT,
    KEEP_PARSED_BYTES,
    LIST,
    SCAN,
    SegmentCache,
    encode_checkpoint,
    encode_checkpoint_line,
    encode_lines,
)
from portconsole.core.errors import StoreError
from portconsole.core.release import release


def _lines(rng: random.Random) -> list[list]:
    out: list[list] = [[CHECKPOINT, {"strings": [None], "hosts": [], "ports": []}]]
    for n in range(40):
        roll = rng.random()
        if roll < 0.2:
            size = rng.choice([1, 3, 500, 40_000])
            out.append([LIST, f"l{n}", [f"127.0.{i // 250}.{i % 250}" for i in range(size)]])
        elif roll < 0.3:
            out.append([CHECKPOINT, {"strings": [None, "x" * rng.randint(0, 3000)]}])
        else:
            events = [["host_up", f"127.0.0.{i % 250}", None, None, None, {}] for i in range(
                rng.choice([0, 1, 50, 30_000])
            )]  # fmt: skip
            at = f"2026-11-0{1 + n % 9}T00:00:{n % 60:02d}.000000Z"
            out.append([SCAN, at, f"scan-{n}", {"scan_id": f"scan-{n}", "n": n}, events])
    return out


@pytest.mark.parametrize("chunk", [7, 256, 4096, 1 << 20])
def test_lines_are_indexed_across_chunk_boundaries(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_segment, "_INDEX_CHUNK", chunk)
    lines = _lines(random.Random(chunk))
    folder = tmp_path / "scans"
    folder.mkdir()
    path = folder / "2026-11.jsonl"
    first, rest = encode_lines(lines[:10]), encode_lines(lines[10:])
    path.write_bytes(first + rest + b'["S","2026-11-30T00:00:00Z","torn"')  # past the commit
    cache = SegmentCache(folder)
    cache.load("2026-11", len(first))  # indexed in two steps, as a growing month is
    segment = cache.load("2026-11", len(first) + len(rest))
    assert [line.kind for line in segment.lines] == [line[0] for line in lines]
    offsets = [0]
    for raw in (first + rest).splitlines(keepends=True):
        offsets.append(offsets[-1] + len(raw))
    assert [line.offset for line in segment.lines] == offsets[:-1]
    for line, expected in zip(segment.lines, lines, strict=True):
        if line.kind == SCAN:
            assert (line.at_text, line.scan_id) == (expected[1], expected[2])
            assert segment.record(line) == expected[3]
            assert list(segment.each_event(line)) == expected[4]  # streamed when long
            assert segment.events(line) == expected[4]
            # Kept parsed only when small: a big line is read again when next needed.
            assert (line.value is not None) == (line.length <= KEEP_PARSED_BYTES)
        elif line.kind == LIST:
            assert segment.lists[expected[1]] == expected[2]
        else:
            assert segment.checkpoint(line) == expected[1]


def test_a_committed_size_past_the_file_is_damage(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    data = encode_lines(_lines(random.Random(1))[:5])
    (folder / "2026-11.jsonl").write_bytes(data)
    with pytest.raises(StoreError, match="truncated"):
        SegmentCache(folder).load("2026-11", len(data) + 10)
    with pytest.raises(StoreError, match="cut off"):
        SegmentCache(folder).load("2026-11", len(data) - 3)


def test_a_line_read_after_its_month_was_pruned_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    big = [[SCAN, "2026-11-01T00:00:00.000000Z", "s", {}, [["x"] * 200_000]]]
    data = encode_lines(big)
    (folder / "2026-11.jsonl").write_bytes(data)
    segment = SegmentCache(folder).load("2026-11", len(data))
    (folder / "2026-11.jsonl").unlink()
    with pytest.raises(StoreError, match="went away"):
        segment.events(segment.lines[0])
    assert json.loads(data)[2] == "s"


def test_a_damaged_long_scan_line_is_refused_when_streamed(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    events = [["host_up", f"127.0.0.{i % 250}", None, None, None, {}] for i in range(20_000)]
    data = encode_lines([[SCAN, "2026-11-01T00:00:00.000000Z", "s", {"n": 1}, events]])
    assert len(data) > KEEP_PARSED_BYTES
    cut = data.rindex(b'["host_up"')  # the last event's opening bracket
    (folder / "2026-11.jsonl").write_bytes(data[:cut] + b"X" + data[cut + 1 :])
    segment = SegmentCache(folder).load("2026-11", len(data))
    seen = []
    with pytest.raises(StoreError, match="corrupt"):
        seen.extend(segment.each_event(segment.lines[0]))
    assert len(seen) == 19_999  # every event before the damaged one


def _checkpoint_rows(size: int) -> tuple[list, list]:
    hosts = [
        (
            {"address": f"127.0.{i // 250}.{i % 250}", "status": "up", "hostname": "h\u00e9"},
            None,
            "s",
        )
        for i in range(size)
    ]
    row = ["open", "http", 'nginx "1"', "1.27", "", "2026-11-01T00:00:00Z", "t", "s", None, None]
    ports = [(f"127.0.{i // 250}.{i % 250}", [(f"{p}/tcp", row, "t2", "s2") for p in range(8000, 8020)])
             for i in range(size)]  # fmt: skip
    return hosts, ports


def test_a_checkpoint_is_written_and_read_a_row_at_a_time_as_the_same_bytes(
    tmp_path: Path,
) -> None:
    hosts, ports = _checkpoint_rows(3000)
    whole = encode_lines([encode_checkpoint(hosts, ports)])
    assert encode_checkpoint_line(hosts, ports) == whole
    assert encode_checkpoint_line([], []) == encode_lines([encode_checkpoint([], [])])
    folder = tmp_path / "scans"
    folder.mkdir()
    spaced = json.dumps(json.loads(whole), indent=None).encode() + b"\n"  # ", " and ": "
    (folder / "2026-11.jsonl").write_bytes(whole + spaced)
    segment = SegmentCache(folder).load("2026-11", len(whole) + len(spaced))
    streamed, fallback = segment.lines
    assert streamed.length > KEEP_PARSED_BYTES
    assert segment.checkpoint(streamed) == json.loads(whole)[1]
    assert streamed.value is None  # decoded a row at a time, not kept
    assert segment.checkpoint(fallback) == json.loads(whole)[1]  # another form: parsed whole


def test_release_empties_big_containers_and_leaves_what_they_held_to_others() -> None:
    kept = ["a row someone else still holds"]
    rows = [[n, "x"] for n in range(5000)] + [kept]
    table = {f"127.0.{n // 250}.{n % 250}": {"22/tcp": [n]} for n in range(5000)}
    table["127.9.9.9"] = {"kept": kept}
    release(rows, table, [], {})
    assert rows == [] and table == {}
    assert kept == ["a row someone else still holds"]
