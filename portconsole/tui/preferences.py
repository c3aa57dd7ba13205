"""The console's preferences: the theme catalogue (built-in and the operator's theme
files), the theme chosen at start (--theme, the remembered one, [tui] theme, the terminal),
switching themes and remembering the choice in the operator's config dir.

A mixin of PortConsoleApp (app.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.screen import ModalScreen
from textual.theme import Theme

from portconsole.tui.screens.base import ConsoleScreen
from portconsole.tui.themes import (
    ThemeCatalog,
    choose_theme,
    load_themes,
    load_ui_prefs,
    migrate_ui_prefs,
    prefs_dir,
    remember_theme,
)

if TYPE_CHECKING:
    from textual.app import App

    from portconsole.core.monitor import Monitor

    _AppBase = App[None]
else:
    _AppBase = object

# The app's logger: the records read as before the split.
log = logging.getLogger("portconsole.tui.app")


class PreferencesMixin(_AppBase):
    """Themes and the operator's remembered preferences (PortConsoleApp's)."""

    # Set by PortConsoleApp.__init__.
    monitor: Monitor
    generation: int

    if TYPE_CHECKING:

        def report_error(self, text: str) -> None: ...

    def _load_preferences(
        self, theme: str | None, environ: Mapping[str, str] | None, preferences: Path | None
    ) -> None:
        """Load the themes and the operator's preferences, and choose the theme (at start)."""
        monitor = self.monitor
        self.theme_catalog: ThemeCatalog = load_themes(monitor.paths.themes_dirs)
        for loaded in self.theme_catalog.themes.values():
            self.register_theme(loaded)
        # Preferences are the operator's: in their config dir, not the shared data dir.
        self.preferences = prefs_dir() if preferences is None else preferences
        if not monitor.readonly:
            try:
                migrate_ui_prefs(self.preferences, monitor.paths.data_dir)
            except OSError as error:
                log.warning("could not move ui.json to %s: %s", self.preferences, error)
        prefs = load_ui_prefs(self.preferences)
        if not prefs:
            prefs = load_ui_prefs(monitor.paths.data_dir)  # read-only: read where it was
        chosen, self._theme_warning = choose_theme(
            self.theme_catalog,
            requested=theme,
            remembered=prefs.get("theme") if isinstance(prefs.get("theme"), str) else None,
            configured=monitor.settings.tui.theme,
            environ=os.environ if environ is None else environ,
        )
        self.theme = chosen
        self._remembered_theme = chosen

    def theme_problems(self) -> list[str]:
        """Broken theme files and an unusable requested theme, to report once at start."""
        return [p for p in (self.theme_catalog.error_summary(), self._theme_warning) if p]

    def switch_theme(self, name: str) -> None:
        if name not in self.available_themes:
            self.notify(f"No theme {name!r}.", severity="error", markup=False)
            return
        self.theme = name

    def _on_theme_changed(self, theme: Theme) -> None:
        # Cell colours come from the theme: other screens redraw when they are next shown.
        self.generation += 1
        if not isinstance(self.screen, ModalScreen) and isinstance(self.screen, ConsoleScreen):
            self.screen.refresh_view()
        if theme.name != self._remembered_theme and not self.monitor.readonly:
            self._remembered_theme = theme.name
            self.save_theme(theme.name)

    @work(thread=True, exit_on_error=False, group="prefs", description="remember theme")
    def save_theme(self, name: str) -> None:
        try:
            remember_theme(self.preferences, name)
        except OSError as error:
            self.report_error(f"could not remember the theme: {error.strerror}")
