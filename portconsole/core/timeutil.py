"""UTC time helpers: every stored or exported timestamp is UTC ISO 8601 with a trailing Z."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


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
