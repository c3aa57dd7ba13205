"""Untrusted text made inert for the terminal.

Banners, product/version strings, host names and operator notes reach the screen from the
network or from other people. Rich markup in a plain `str` cell would be interpreted
(`[link=...]`, `[blink]`) and control characters would reach the terminal (cursor moves,
OSC 8/52 sequences). So every such value becomes a `rich.text.Text` (never parsed as markup)
with control characters replaced by a visible placeholder.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from rich.style import Style
from rich.text import Text

from portconsole.core.textsafe import escape_invisible
from portconsole.core.timeutil import iso

# C0 and C1 controls, DEL, and the Unicode bidi overrides that can reorder what a reader sees.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f]")
_PLACEHOLDER = "\N{REPLACEMENT CHARACTER}"


def clean(value: object, limit: int = 200) -> str:
    """`value` as one line of printable text, at most `limit` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        # The common case (addresses, service names): nothing to replace. Checked first
        # because the console cleans thousands of cells per refresh.
        return text if len(text) <= limit else text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"
    # Tabs and newlines become spaces so a banner never breaks the table layout.
    text = text.replace("\t", " ").replace("\r\n", " ").replace("\n", " ")
    text = _CONTROL.sub(_PLACEHOLDER, escape_invisible(text))
    text = "".join(_PLACEHOLDER if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)
    if len(text) > limit:
        text = text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return text


def safe_text(value: object, style: str | Style = "", limit: int = 200) -> Text:
    """A `Text` that shows `value` literally: no markup, no escape sequences."""
    return Text(clean(value, limit), style=style, no_wrap=True, overflow="ellipsis")


def short_time(moment: datetime | str | None) -> str:
    """A compact UTC time for tables: `2026-05-27 12:03Z` (full ISO is in detail views)."""
    if moment is None or moment == "":
        return "-"
    if isinstance(moment, str):
        text = moment
    else:
        text = iso(moment)
    # "2026-05-27T12:03:45.123456Z" -> "2026-05-27 12:03Z"
    if len(text) >= 16 and text[10] == "T":
        return f"{text[:10]} {text[11:16]}Z"
    return clean(text, 40)


def age(moment: datetime | None, now: datetime) -> str:
    """How long ago, in the largest whole unit: `3d`, `5h`, `12m`, `40s`."""
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table_time(moment: datetime | str | None) -> str:
    """A table-width UTC time without the year: `05-27 12:03`."""
    text = short_time(moment)
    return text[5:-1] if len(text) == 17 else text


def exact_time(moment: datetime | str | None) -> str:
    """A UTC time to the second, where the order of close events matters (the audit log, a
    finding's timeline): `2026-05-27 12:03:45Z`."""
    if moment is None or moment == "":
        return "-"
    text = moment if isinstance(moment, str) else iso(moment)
    if len(text) >= 19 and text[10] == "T":
        return f"{text[:10]} {text[11:19]}Z"
    return clean(text, 40)
