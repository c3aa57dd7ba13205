"""Keys that arrive together (a paste, an SSH packet) go where the focus is, in order.

Textual hands every key of a packet to the widget focused when the packet arrived, and runs
the key's binding only when the key has bubbled up to the app, a few messages later: by
then the next keys already sit in the old widget's queue. So `abc<Tab>def` filled one
field with `abcdef`, and keys typed right after the key that opened a dialog ran as the
old screen's hotkeys. A widget mixing in KeysInOrder runs a key's binding at once (Tab
moves the focus before the next key is read), and hands a key on to the focused widget
when the focus has moved since the key was queued. A dialog hands keys it received
before its field had the focus to that field (see `forward_to_focus`).
"""

from __future__ import annotations

import weakref
from typing import cast

from textual import events
from textual.app import App
from textual.widget import Widget
from textual.widgets import Input

# Keys a KeysInOrder widget has seen: when one bubbles up to its screen, the screen must
# not hand it back to the widget.
_SEEN: weakref.WeakSet[events.Key] = weakref.WeakSet()


def hand_on(event: events.Key, target: Widget) -> None:
    """Queue a copy of `event` at `target`, keeping its arrival time."""
    copy = events.Key(event.key, event.character)
    copy.time = event.time
    copy._set_forwarded()
    target.post_message(copy)


async def route_key(widget: Widget, event: events.Key) -> bool:
    """Deal with `event` here if it belongs elsewhere or has a binding; True if dealt with."""
    _SEEN.add(event)
    app = cast("App[object]", widget.app)
    target = app.focused or app.screen
    if target is not widget:
        hand_on(event, target)
    elif not await app._check_bindings(event.key):  # noqa: SLF001 - see the docstring
        return False
    event.stop()
    event.prevent_default()
    return True


class KeysInOrder:
    """Mix in before a Textual widget class: its keys are handled in arrival order.

    A plain class, not a Widget: Textual reads CSS and component classes along the MRO."""

    async def _on_key(self, event: events.Key) -> None:
        await route_key(cast("Widget", self), event)


class FieldInput(KeysInOrder, Input):
    """A dialog's text field: typed text, Tab and Enter in the order they arrived."""


def forward_to_focus(screen: Widget, event: events.Key) -> bool:
    """A key a dialog screen received itself (before a field had the focus): hand it to
    the focused field. True if handed on."""
    focused = screen.screen.focused
    if isinstance(focused, FieldInput) and event not in _SEEN:
        _SEEN.add(event)
        hand_on(event, focused)
        event.stop()
        event.prevent_default()
        return True
    return False
