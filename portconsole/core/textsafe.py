"""Untrusted text (banners, host names, script output) made inert for each place it goes.

Anything that came from the network may carry terminal escape sequences, Rich markup,
HTML, or spreadsheet formulas. Each output path uses the matching function here.
"""

from __future__ import annotations

import html
import re

# C0 and C1 control characters (ESC, BEL, CSI ...) and DEL; tab and newline are replaced too
# because one value must stay on one line in a table.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def terminal_safe(text: object, limit: int = 200) -> str:
    """One printable line: control characters shown as `?`, bounded length."""
    value = "" if text is None else str(text)
    value = _CONTROL.sub("?", value)
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


def html_safe(text: object) -> str:
    """Escaped for HTML element content and attribute values."""
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
    return _MD_SPECIAL.sub(r"\\\1", html.escape(terminal_safe(text, limit=2000), quote=False))
