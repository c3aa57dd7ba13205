"""Shared fixtures: isolated config and data dirs, a Monitor on a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user's config or data."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    for name in list(__import__("os").environ):
        if name.startswith("PORTCONSOLE_"):
            monkeypatch.delenv(name)


def write_config(
    path: Path, groups: dict[str, tuple[list[str], str]] | None = None, extra: str = ""
) -> Path:
    """A config with loopback scope, fast scan settings and the given groups."""
    lines = [
        'scope = ["127.0.0.0/8"]',
        "",
        "[scan]",
        "timing = 4",
        "workers = 4",
        "batch_timeout = 60.0",
        "confirm_probes = 1",
        "",
    ]
    for name, (targets, ports) in (groups or {}).items():
        quoted = ", ".join(f'"{t}"' for t in targets)
        lines += [
            f"[groups.{name}]",
            f"targets = [{quoted}]",
            f'ports = "{ports}"',
            "interval = 60",
            "jitter = 0",
            "",
        ]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Iterator[Path]:
    yield write_config(tmp_path / "config.toml")
