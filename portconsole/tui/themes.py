"""Theme files: TOML in the themes folders, validated strictly, turned into Textual themes.

Each file holds exactly the fields of `textual.theme.Theme` (unknown keys are errors) and
every colour is parsed with `textual.color.Color.parse`, so a typo is caught at start and
reported (once, with every other broken file) instead of surfacing as a crash mid-session.
A broken file is skipped; the console falls back to `portconsole-dark`, and to a theme
built into this module if even that file is unusable.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from textual.color import Color, ColorParseError
from textual.theme import Theme

from portconsole.core.adapters.storage import atomic_write_bytes, load_json_file
from portconsole.core.errors import StoreError
from portconsole.core.settings import default_config_file
from portconsole.core.strict import FieldError, Strict, convert, problem, to_builtins

DEFAULT_THEME = "portconsole-dark"
MONO_THEME = "portconsole-mono"
UI_PREFS_FILE = "ui.json"

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_VARIABLE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")

# Used only when the theme files themselves are missing or broken: the console must start.
FALLBACK_THEMES: dict[str, Theme] = {
    DEFAULT_THEME: Theme(
        name=DEFAULT_THEME,
        primary="#3B82C4",
        secondary="#2A5F8F",
        accent="#E0A030",
        warning="#E0A030",
        error="#E05252",
        success="#4EBF71",
        foreground="#D8DEE9",
        background="#16191D",
        surface="#1E2227",
        panel="#262B31",
        dark=True,
    ),
    MONO_THEME: Theme(
        name=MONO_THEME,
        primary="#C0C0C0",
        secondary="#A0A0A0",
        accent="#FFFFFF",
        warning="#FFFFFF",
        error="#FFFFFF",
        success="#C0C0C0",
        foreground="#E0E0E0",
        background="#000000",
        surface="#101010",
        panel="#202020",
        dark=True,
    ),
}


def _parse_colour(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        Color.parse(value)
    except ColorParseError:
        raise ValueError(f"{value!r} is not a colour (try '#RRGGBB' or 'ansi_red')") from None
    return value


_COLOUR_FIELDS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)


class ThemeFile(Strict):
    """The content of one theme file: the fields of `textual.theme.Theme`, nothing else."""

    name: Annotated[str, Meta(description="Theme name, lower-case letters, digits and dashes.")]
    primary: Annotated[str, Meta(description="Main accent colour (cursor, focused borders).")]
    secondary: Annotated[str | None, Meta(description="Second accent colour.")] = None
    warning: Annotated[str | None, Meta(description="Warnings; unapproved ports use it too.")] = (
        None
    )
    error: Annotated[
        str | None, Meta(description="Errors and unapproved, high-severity items.")
    ] = None
    success: Annotated[str | None, Meta(description="Good news: approved, verified.")] = None
    accent: Annotated[str | None, Meta(description="Highlights.")] = None
    foreground: Annotated[str | None, Meta(description="Default text colour.")] = None
    background: Annotated[str | None, Meta(description="Screen background.")] = None
    surface: Annotated[str | None, Meta(description="Widget background.")] = None
    panel: Annotated[str | None, Meta(description="Panels and headers.")] = None
    boost: Annotated[str | None, Meta(description="Tint added to raised surfaces.")] = None
    dark: Annotated[bool, Meta(description="True for a dark theme.")] = True
    luminosity_spread: Annotated[float, Meta(ge=0, le=1, description="Shade spread.")] = 0.15
    text_alpha: Annotated[float, Meta(ge=0, le=1, description="Text opacity.")] = 0.95
    variables: Annotated[
        dict[str, str],
        Meta(description="Extra Textual CSS variables, e.g. footer-key-foreground."),
    ] = msgspec.field(default_factory=dict)
    ansi: Annotated[bool, Meta(description="Use the terminal's own ANSI colours.")] = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise FieldError("name", "use lower-case letters, digits and dashes")
        for colour in _COLOUR_FIELDS:
            try:
                _parse_colour(getattr(self, colour))
            except ValueError as error:
                raise FieldError(colour, str(error)) from None
        for key, text in self.variables.items():
            if not _VARIABLE.match(key):
                raise FieldError(
                    "variables", f"variable name {key!r}: use lower-case letters and dashes"
                )
            # Colour-valued variables are checked; others (text styles) are free-form words.
            if key.endswith(("-background", "-foreground", "-color")) and text not in (
                "auto",
                "transparent",
            ):
                head = text.rsplit(" ", 1)[0] if text.endswith("%") else text
                try:
                    Color.parse(head)
                except ColorParseError:
                    raise FieldError(
                        "variables", f"variable {key}: {text!r} is not a colour"
                    ) from None

    def to_theme(self) -> Theme:
        return Theme(**to_builtins(self))


@dataclass
class ThemeCatalog:
    """The themes that loaded, where each came from, and what went wrong with the rest."""

    themes: dict[str, Theme] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return sorted(self.themes)

    def error_summary(self) -> str | None:
        """Every problem in one message (shown once, in one toast), or None."""
        if not self.errors:
            return None
        head = (
            "Skipped a broken theme file" if len(self.errors) == 1 else "Skipped broken theme files"
        )
        return head + ":\n" + "\n".join(f"- {line}" for line in self.errors)


def _first_error(path: Path, error: msgspec.ValidationError) -> str:
    where, what = problem(error, kind=ThemeFile)
    return f"{path}: {where}: {what}"


def load_theme_file(path: Path) -> Theme:
    """One theme file as a Theme. Raises ValueError with a message naming the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read: {error}") from None
    try:
        return convert(data, ThemeFile, strict=True).to_theme()
    except msgspec.ValidationError as error:
        raise ValueError(_first_error(path, error)) from None


def load_themes(folders: Iterable[Path]) -> ThemeCatalog:
    """Every `*.toml` in `folders`; the first folder that defines a name wins (user over
    built-in). Missing folders are fine; broken files are listed in `errors` and skipped."""
    catalog = ThemeCatalog()
    for folder in folders:
        if not folder.is_dir():
            continue
        seen_here: set[str] = set()
        for path in sorted(folder.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except ValueError as error:
                catalog.errors.append(str(error))
                continue
            if theme.name in seen_here:
                catalog.errors.append(f"{path}: theme {theme.name!r} is defined twice in {folder}")
                continue
            seen_here.add(theme.name)
            if theme.name not in catalog.themes:
                catalog.themes[theme.name] = theme
                catalog.sources[theme.name] = path
    for name, theme in FALLBACK_THEMES.items():
        catalog.themes.setdefault(name, theme)
    return catalog


def choose_theme(
    catalog: ThemeCatalog,
    *,
    requested: str | None = None,
    remembered: str | None = None,
    configured: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str | None]:
    """Pick the theme to start with, and a warning when a wanted one is not available.

    Order: an explicit request, then NO_COLOR (monochrome), then the operator's last choice,
    then the configured default, then `portconsole-dark`.
    """
    env = os.environ if environ is None else environ
    warning = None
    if requested:
        if requested in catalog.themes:
            return requested, None
        warning = (
            f"theme {requested!r} is not available; choose one of: {', '.join(catalog.names())}"
        )
    if env.get("NO_COLOR"):  # no-color.org: present and not empty
        return MONO_THEME, warning
    for candidate in (remembered, configured):
        if candidate and candidate in catalog.themes:
            return candidate, warning
    if configured and warning is None:
        warning = f"configured theme {configured!r} is not available; using {DEFAULT_THEME}"
    return DEFAULT_THEME, warning


def prefs_dir() -> Path:
    """Where the operator's console preferences live: their config dir (XDG_CONFIG_HOME).

    Preferences belong to a person, not to a data dir: a data dir is shared by everyone
    who watches it, and the demo's is wiped by every `make demo`.
    """
    return default_config_file().parent


def load_ui_prefs(folder: Path) -> dict[str, Any]:
    """The console's remembered preferences; a damaged file is ignored (it is kept aside)."""
    try:
        data = load_json_file(folder / UI_PREFS_FILE)
    except StoreError:
        return {}
    return data if isinstance(data, dict) else {}


def migrate_ui_prefs(folder: Path, data_dir: Path) -> bool:
    """Copy preferences kept in a data dir (before they moved) into `folder`, once.

    Nothing happens when `folder` already has its own file or the data dir has none; the
    old file is left where it was (a data dir is not this console's to tidy). True if copied.
    """
    if (folder / UI_PREFS_FILE).exists():
        return False
    old = load_ui_prefs(data_dir)
    if not old:
        return False
    _write_prefs(folder, old)
    return True


def remember_theme(folder: Path, name: str) -> None:
    """Store the chosen theme in `<folder>/ui.json`, atomically."""
    prefs = load_ui_prefs(folder)
    prefs["theme"] = name
    _write_prefs(folder, prefs)


def _write_prefs(folder: Path, prefs: dict[str, Any]) -> None:
    atomic_write_bytes(
        folder / UI_PREFS_FILE, json.dumps(prefs, indent=2, sort_keys=True).encode("utf-8")
    )
