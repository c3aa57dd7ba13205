"""The one parser of times a person types, in the console and the CLI (fixed clock)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portconsole.core.timeutil import parse_until, parse_when
from tests.test_cli import run_cli

NOW = datetime(2026, 11, 20, 10, 30, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("now", NOW),
        ("  NOW ", NOW),
        ("09:15", datetime(2026, 11, 20, 9, 15, tzinfo=UTC)),
        ("09:15:30", datetime(2026, 11, 20, 9, 15, 30, tzinfo=UTC)),
        # A time of day still to come today is yesterday's (one looks back).
        ("15:06", datetime(2026, 11, 19, 15, 6, tzinfo=UTC)),
        ("1h ago", datetime(2026, 11, 20, 9, 30, 15, tzinfo=UTC)),
        ("90 min ago", datetime(2026, 11, 20, 9, 0, 15, tzinfo=UTC)),
        ("2d ago", datetime(2026, 11, 18, 10, 30, 15, tzinfo=UTC)),
        ("1w ago", datetime(2026, 11, 13, 10, 30, 15, tzinfo=UTC)),
        ("45s ago", datetime(2026, 11, 20, 10, 29, 30, tzinfo=UTC)),
        ("yesterday 14:00", datetime(2026, 11, 19, 14, 0, tzinfo=UTC)),
        ("Yesterday", datetime(2026, 11, 19, tzinfo=UTC)),
        ("today 08:00", datetime(2026, 11, 20, 8, 0, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T14:00:00Z", datetime(2026, 11, 20, 14, 0, tzinfo=UTC)),
        ("2026-11-20 14:00", datetime(2026, 11, 20, 14, 0, tzinfo=UTC)),  # UTC when no offset
        ("2026-11-20T14:00+02:00", datetime(2026, 11, 20, 12, 0, tzinfo=UTC)),
    ],
)
def test_typed_times(typed: str, expected: datetime) -> None:
    assert parse_when(typed, NOW) == expected


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("2026-03-31", datetime(2026, 4, 1, tzinfo=UTC)),  # the whole day is included
        ("yesterday", datetime(2026, 11, 20, tzinfo=UTC)),
        ("today", datetime(2026, 11, 21, tzinfo=UTC)),
        ("yesterday 14:00", datetime(2026, 11, 19, 14, 0, tzinfo=UTC)),  # an instant stays
        ("1h ago", datetime(2026, 11, 20, 9, 30, 15, tzinfo=UTC)),
    ],
)
def test_end_times_include_a_whole_day(typed: str, expected: datetime) -> None:
    assert parse_until(typed, NOW) == expected


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "empty time"),
        ("soon", "1h ago"),
        ("25:00", "HH:MM"),
        ("3 fortnights ago", "s, m, h, d or w"),
        ("yesterday noon", "yesterday 14:00"),
        ("2026-13-01", "ISO 8601"),
    ],
)
def test_bad_times_say_what_is_understood(typed: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_when(typed, NOW)


def test_the_cli_takes_relative_times_and_explains_bad_ones(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    ok = run_cli(tmp_path, "state", "--at", "yesterday 14:00")
    assert ok.returncode == 0, ok.stderr
    bad = run_cli(tmp_path, "state", "--at", "soonish")
    assert bad.returncode == 2
    assert "bad time 'soonish'" in bad.stderr and "1h ago" in bad.stderr
