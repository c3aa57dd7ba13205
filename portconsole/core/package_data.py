"""Files shipped inside the package (themes, sample baselines), found beside this module.

The product keeps `themes/` and `sample_baselines/` at the top of the repository; the package
reaches them through the symlinks `portconsole/_data/themes` and `portconsole/_data/sample_baselines`,
which setuptools follows when it builds a wheel, so an installed PortConsole carries real copies
and a checkout (or an editable install) reads the repository's folders directly.
"""

from __future__ import annotations

from pathlib import Path

from portconsole.core.errors import UserError


def _folder(name: str) -> Path:
    # The package's own folder, as importlib.resources.files("portconsole") finds it for an
    # unzipped install (without importing importlib.resources at every start: ~3 ms).
    found = Path(__file__).resolve().parent.parent / "_data" / name
    if not found.is_dir():
        # Only a zipped install (zipimport) has no such folder; pip and pipx never do that.
        raise UserError(f"PortConsole must be installed unzipped to read its {name}/ folder")
    return found


def themes_dir() -> Path:
    """The built-in themes (*.toml)."""
    return _folder("themes")


def sample_baselines_dir() -> Path:
    """The sample baselines (*.yaml) and their format's README."""
    return _folder("sample_baselines")
