"""Untrusted text stays inert: no markup, no escape sequences, one line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console

from portconsole.tui.safe import age, clean, safe_text, short_time, table_time


def render(text: object) -> str:
    console = Console(width=200, force_terminal=True, color_system=None, record=True)
    console.print(text)
    return console.export_text()


def test_markup_in_a_banner_is_shown_literally() -> None:
    banner = "[link=http://evil]click[/link] [blink]x[/blink]"
    cell = safe_text(banner)
    assert cell.plain == banner
    assert cell.spans == []
    assert "[link=http://evil]" in render(cell)


def test_escape_sequences_and_controls_are_replaced() -> None:
    hostile = "ok\x1b]52;c;ZXZpbA==\x07\x1b[2J\r\nnext\x00\u202eevil"
    text = clean(hostile)
    assert "\x1b" not in text and "\x07" not in text and "\x00" not in text
    assert "\u202e" not in text and "\n" not in text and "\r" not in text
    assert text.startswith("ok") and "next" in text


def test_long_values_are_bounded() -> None:
    assert len(clean("x" * 5000, limit=50)) == 50


def test_times_are_utc_and_compact() -> None:
    moment = datetime(2026, 5, 27, 12, 3, 45, tzinfo=UTC)
    assert short_time(moment) == "2026-05-27 12:03Z"
    assert short_time("2026-05-27T12:03:45.123Z") == "2026-05-27 12:03Z"
    assert table_time(moment) == "05-27 12:03"
    assert short_time(None) == "-"
    assert age(moment - timedelta(hours=5), moment) == "5h"
    assert age(moment - timedelta(days=3, hours=2), moment) == "3d"
