"""The domain core stays free of Textual and Rich (STYLE.md habit 1), checked at run time."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_neither_textual_nor_rich() -> None:
    code = (
        "import sys, pkgutil, importlib, portconsole.core as core\n"
        "for info in pkgutil.walk_packages(core.__path__, 'portconsole.core.'):\n"
        "    importlib.import_module(info.name)\n"
        "import portconsole.cli, portconsole.daemon\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"core pulled in: {result.stdout.strip()}"


def test_the_console_does_import_textual() -> None:
    # The check above must be able to fail: the TUI module does load Textual.
    code = "import sys, portconsole.tui.app\nprint('textual' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"
