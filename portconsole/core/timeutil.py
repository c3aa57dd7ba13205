"""UTC time helpers: every stored or exported timestamp is UTC ISO 8601 with a trailing Z."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, to the microsecond."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Format a datetime as UTC ISO 8601 (`2026-05-27T00:00:00.123456Z`)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time; naive values are taken as UTC.

    Raises ValueError with a message a user can act on.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty time: expected ISO 8601 such as 2026-05-27T00:00:00Z")
    candidate = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise ValueError(
                f"bad time {raw!r}: expected ISO 8601 such as 2026-05-27 or 2026-05-27T00:00:00Z"
            ) from None
        moment = datetime(day.year, day.month, day.day)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def add_months(moment: datetime, months: int) -> datetime:
    """Add calendar months, clamping the day (Aug 31 + 6 months = Feb 28/29)."""
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    for day in (moment.day, 30, 29, 28):
        try:
            return moment.replace(year=year, month=month, day=min(moment.day, day))
        except ValueError:
            continue
    return moment + timedelta(days=30 * months)


def month_key(moment: datetime) -> str:
    """The `YYYY-MM` segment name a moment falls into (UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m")


# ----- times typed by a person (the console's fields and the CLI's --at/--from/--to/--since) --

TIME_FORMS_HELP = (
    "now, 15:06, 1h ago, yesterday 14:00, today, 2026-11-20 or ISO 8601; "
    "UTC unless the text has an offset such as +02:00"
)
_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_AGO = re.compile(r"^(\d+)\s*([a-z]+)\s+ago$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_DAY_WORDS = {"today": 0, "yesterday": 1}


def _clock_time(text: str) -> time | None:
    match = _CLOCK.match(text)
    if match is None:
        return None
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"bad time of day {text!r}: expected HH:MM or HH:MM:SS (24-hour, UTC)")
    return time(hour, minute, second, tzinfo=UTC)


def _parse_typed(text: str, now: datetime) -> tuple[datetime, bool]:
    """(the moment, whether the text named a whole day rather than an instant)."""
    raw = " ".join(text.strip().split())
    lowered = raw.lower()
    now = now.astimezone(UTC)
    if not raw:
        raise ValueError(f"empty time: expected {TIME_FORMS_HELP}")
    if lowered == "now":
        return now, False
    ago = _AGO.match(lowered)
    if ago is not None:
        size = _UNITS.get(ago[2])
        if size is None:
            raise ValueError(
                f"bad time {raw!r}: the unit must be s, m, h, d or w (such as 90m ago, 2d ago)"
            )
        return now - timedelta(seconds=int(ago[1]) * size), False
    word, _, rest = lowered.partition(" ")
    if word in _DAY_WORDS:
        day = now.date() - timedelta(days=_DAY_WORDS[word])
        if not rest:
            return datetime.combine(day, time(0, tzinfo=UTC)), True
        clock = _clock_time(rest)
        if clock is None:
            raise ValueError(f"bad time {raw!r}: expected such as {word} 14:00")
        return datetime.combine(day, clock), False
    clock = _clock_time(lowered)
    if clock is not None:
        # A time of day alone is the latest one that has happened: today's, or yesterday's
        # if today's is still to come (one looks back at what was, not ahead).
        moment = datetime.combine(now.date(), clock)
        if moment > now:
            moment -= timedelta(days=1)
        return moment, False
    try:
        moment = parse_iso(raw)
    except ValueError:
        raise ValueError(f"bad time {raw!r}: expected {TIME_FORMS_HELP}") from None
    return moment, len(raw) == 10


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """The moment a person typed, in UTC (see TIME_FORMS_HELP for what is understood).

    A day alone (`2026-11-20`, `yesterday`) is its first instant. Raises ValueError with a
    message that lists the accepted forms.
    """
    return _parse_typed(text, now or utcnow())[0]


def parse_until(text: str, now: datetime | None = None) -> datetime:
    """An end time a person typed: as `parse_when`, but a day alone means the end of that
    day, so `--to 2026-03-31` or `--to yesterday` includes the whole day."""
    moment, whole_day = _parse_typed(text, now or utcnow())
    return moment + timedelta(days=1) if whole_day else moment
