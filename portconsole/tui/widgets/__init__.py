"""Widgets shared by the console's screens."""

from portconsole.tui.widgets.status import StatusHeader
from portconsole.tui.widgets.table import KeyedTable

__all__ = ["KeyedTable", "StatusHeader"]
