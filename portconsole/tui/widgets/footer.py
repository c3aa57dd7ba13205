"""A footer that fits the terminal: keys that do not fit are left out, never cut mid-word.

Textual's footer lays every key out in one row and lets the terminal cut the rest; at 80
columns a view's own keys pushed `? Help` off the edge. This one keeps the keys in order
(the focused table's, the view's, then the console's) while they fit, and always keeps
`? Help`, which lists every key there is, grouped by context.
"""

from __future__ import annotations

from rich.cells import cell_len
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey, FooterLabel, KeyGroup

ALWAYS_SHOWN = "help"


def _item_width(item: Widget) -> int:
    """The cells one footer item takes in the compact style."""
    if isinstance(item, FooterKey):
        described = 1 + cell_len(item.description) if item.description else 0
        return cell_len(item.key_display) + described + 1
    if isinstance(item, KeyGroup):
        return sum(_item_width(child) for child in item.children)
    if isinstance(item, FooterLabel):
        return cell_len(str(item.content)) + 1
    return 0


def _is_help(item: Widget) -> bool:
    return isinstance(item, FooterKey) and item.action.endswith(ALWAYS_SHOWN)


class FittingFooter(Footer):
    def on_resize(self) -> None:
        self.call_after_refresh(self.fit)

    async def recompose(self) -> None:
        await super().recompose()
        self.fit()

    def fit(self) -> None:
        budget = self.size.width or self.app.size.width
        items = list(self.children)
        used = sum(_item_width(item) for item in items if _is_help(item))
        full = False
        for item in items:
            if _is_help(item):
                item.display = True
                continue
            width = _item_width(item)
            full = full or used + width > budget
            item.display = not full
            if not full:
                used += width
