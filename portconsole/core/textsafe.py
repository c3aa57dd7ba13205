"""Untrusted text (banners, host names, script output) made inert for each place it goes.

Anything that came from the network may carry terminal escape sequences, Rich markup,
HTML, or spreadsheet formulas. Each output path uses the matching function here.

Invisible characters are a second danger: the bidi controls (U+202A-202E, U+2066-2069,
U+200E/200F, U+061C) reorder what a reader sees ("Trojan Source": `evil\u202egnp.exe`
shows as `evilexe.png`), and the other format characters (zero-width spaces and joiners,
U+FEFF) hide text inside a value that looks innocent. They are never removed silently:
each is shown as a visible escape such as `\\u202e`, so a reader sees that something was
there and what it was.
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 control characters (ESC, BEL, CSI ...) and DEL; tab and newline are replaced too
# because one value must stay on one line in a table.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "|", "%")
# Invisible characters outside the Cf category that still change layout or hide text:
# line/paragraph separators, and the fillers some fonts draw as nothing.
_INVISIBLE_EXTRA = frozenset("\u2028\u2029\u115f\u1160\u3164\uffa0")


def is_invisible(char: str) -> bool:
    """Whether one character is a bidi control or another invisible format character."""
    return unicodedata.category(char) == "Cf" or char in _INVISIBLE_EXTRA


def escape_invisible(text: str) -> str:
    """Every invisible format character (bidi controls, zero-width ...) as `\\uXXXX`."""
    if text.isascii():
        return text  # the common case: nothing to look at character by character
    return "".join(f"\\u{ord(ch):04x}" if is_invisible(ch) else ch for ch in text)


def terminal_safe(text: object, limit: int = 200) -> str:
    """One printable line: control characters shown as `?`, invisible format characters
    as `\\uXXXX` escapes, bounded length."""
    value = "" if text is None else str(text)
    value = escape_invisible(_CONTROL.sub("?", value))
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


def html_safe(text: object) -> str:
    """Escaped for HTML element content and attribute values."""
    import html  # on use: reports and packs, not every command that prints a line

    return html.escape(terminal_safe(text, limit=2000), quote=True)


def csv_safe(text: object) -> str:
    """A CSV cell that no spreadsheet will evaluate as a formula."""
    value = terminal_safe(text, limit=2000)
    if value.startswith(_FORMULA_START):
        value = "'" + value
    return value


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def markdown_safe(text: object) -> str:
    """Escaped for Markdown table cells and prose (no links, HTML or emphasis)."""
    import html

    return _MD_SPECIAL.sub(r"\\\1", html.escape(terminal_safe(text, limit=2000), quote=False))
