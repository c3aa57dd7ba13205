"""Widgets shared by the console's screens."""

from portconsole.tui.widgets.status import StatusHeader
from portconsole.tui.widgets.table import KeyedTable
from portconsole.tui.widgets.table_model import LazyRows

__all__ = ["KeyedTable", "LazyRows", "StatusHeader"]
