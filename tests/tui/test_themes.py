"""Theme files: strict validation, one report for every broken file, a safe fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portconsole.core.settings import builtin_themes_dir
from portconsole.tui.themes import (
    DEFAULT_THEME,
    MONO_THEME,
    choose_theme,
    load_theme_file,
    load_themes,
    load_ui_prefs,
    remember_theme,
)

REQUIRED = {
    "portconsole-dark",
    "portconsole-light",
    "portconsole-high-contrast",
    "portconsole-mono",
}


def test_shipped_themes_all_load_cleanly() -> None:
    catalog = load_themes([builtin_themes_dir()])
    assert catalog.errors == []
    assert REQUIRED <= set(catalog.themes)
    for name in REQUIRED:
        assert catalog.sources[name].parent == builtin_themes_dir()
    assert catalog.themes["portconsole-light"].dark is False


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('name = "typo"\nprimary = "#112233"\nprimry = "#000000"\n')
    with pytest.raises(ValueError, match="primry: unknown key"):
        load_theme_file(path)


def test_bad_colour_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nprimary = "blurple"\n')
    with pytest.raises(ValueError, match="'blurple' is not a colour"):
        load_theme_file(path)


def test_broken_files_are_skipped_and_reported_together(tmp_path: Path) -> None:
    user = tmp_path / "themes"
    user.mkdir()
    (user / "one.toml").write_text('name = "one"\nprimary = "nope"\n')
    (user / "two.toml").write_text("this is not toml = = =\n")
    (user / "good.toml").write_text('name = "good"\nprimary = "#102030"\n')
    # A user theme with a shipped name overrides the shipped one.
    (user / "dark.toml").write_text(f'name = "{DEFAULT_THEME}"\nprimary = "#abcdef"\n')
    catalog = load_themes([user, builtin_themes_dir()])
    assert "good" in catalog.themes and "one" not in catalog.themes
    assert catalog.themes[DEFAULT_THEME].primary == "#abcdef"
    summary = catalog.error_summary()
    assert summary is not None
    assert "one.toml" in summary and "two.toml" in summary
    assert len(catalog.errors) == 2


def test_missing_theme_folders_fall_back_to_built_in_themes(tmp_path: Path) -> None:
    catalog = load_themes([tmp_path / "nowhere"])
    assert DEFAULT_THEME in catalog.themes and MONO_THEME in catalog.themes


def test_choice_order() -> None:
    catalog = load_themes([builtin_themes_dir()])
    assert choose_theme(catalog, environ={}) == (DEFAULT_THEME, None)
    assert choose_theme(catalog, environ={"NO_COLOR": "1"})[0] == MONO_THEME
    assert (
        choose_theme(catalog, requested="portconsole-light", environ={"NO_COLOR": "1"})[0]
        == "portconsole-light"
    )
    assert (
        choose_theme(catalog, remembered="portconsole-light", environ={})[0] == "portconsole-light"
    )
    name, warning = choose_theme(catalog, configured="missing", environ={})
    assert name == DEFAULT_THEME and warning and "missing" in warning


def test_theme_choice_is_remembered_atomically(tmp_path: Path) -> None:
    remember_theme(tmp_path, "portconsole-light")
    assert load_ui_prefs(tmp_path) == {"theme": "portconsole-light"}
    assert (tmp_path / "ui.json").stat().st_mode & 0o777 == 0o600
    (tmp_path / "ui.json").write_text("{broken")
    assert load_ui_prefs(tmp_path) == {}
    remember_theme(tmp_path, "portconsole-mono")
    assert json.loads((tmp_path / "ui.json").read_text()) == {"theme": "portconsole-mono"}
