"""Logging for every command and the daemon: the standard `logging` module, one stderr handler.

The level and format come from `--log-level` / `--log-format` (highest), then the settings'
`[log] level` / `format` (or `PORTCONSOLE_LOG__LEVEL`), then info for the daemon and warning
for other commands (they print their results; the log is for trouble), and text. Records of the
`portconsole` loggers pass at the chosen level; other libraries' only from warning up, so
`--log-level debug` shows our detail (every nmap command line) without Textual's or urllib's.

- text: `2026-05-27T08:00:00Z INFO daemon: scan web: starting`, one printable line per record.
- json: one object per line: time, level, logger, message, pid, exception, and any `extra`.
- Under systemd (JOURNAL_STREAM names our stderr) each line starts with its `<N>` syslog
  priority (sd-daemon(3)) and text lines carry no timestamp: the journal stamps them itself.

Every record first passes `SecretMask`: the configured notification and anchor URLs' secrets,
and the secret parts of any URL in the text, become `****` (core/secrets.py's rule).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from portconsole.core.secrets import config_secrets, mask_text, url_secrets
from portconsole.core.textsafe import terminal_safe

if TYPE_CHECKING:
    from portconsole.core.settings import Settings

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")
DEFAULT_LEVEL = "warning"
DAEMON_LEVEL = "info"
DEFAULT_FORMAT = "text"
OUR_LOGGER = "portconsole"
# A text line is bounded (an nmap command line over a few hundred targets still fits).
LINE_LIMIT = 8000

# syslog priorities (sd-daemon(3)): a line `<N>text` is logged at priority N by journald.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
# Attributes every LogRecord has; anything else on a record came through `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (the nearest one at or above it)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def under_journald() -> bool:
    """True when stderr is systemd's journal stream (JOURNAL_STREAM=DEVICE:INODE matches)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class SecretMask(logging.Filter):
    """Masks secrets in a record's message, exception and stack text, for every handler."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: frozenset[str] = frozenset()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken log call still leaves a (masked) line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = mask_text(message, self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info, self.secrets)
        return True


def _short_name(name: str) -> str:
    return name.removeprefix(OUR_LOGGER + ".").removeprefix("core.") or name


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class TextFormatter(logging.Formatter):
    """One printable line per record (a traceback follows on its own lines)."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = terminal_safe(record.getMessage(), LINE_LIMIT)
        line = f"{record.levelname} {_short_name(record.name)}: {message}"
        if not self.journald:
            line = f"{_iso(record.created)} {line}"
        lines = [line]
        if record.exc_text:
            lines += [terminal_safe(text, LINE_LIMIT) for text in record.exc_text.splitlines()]
        if record.stack_info:
            lines += [terminal_safe(text, LINE_LIMIT) for text in record.stack_info.splitlines()]
        if self.journald:
            lines = [f"<{priority(record.levelno)}>{text}" for text in lines]
        return "\n".join(lines)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; non-ASCII and control characters escaped by json.dumps."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_text:
            data["exception"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in data and not key.startswith("_"):
                data[key] = value
        text = json.dumps(data, default=str, separators=(",", ":"))
        return f"<{priority(record.levelno)}>{text}" if self.journald else text


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (the console swaps it while it runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_MASK = SecretMask()
_HANDLER = _StderrHandler()
_HANDLER.addFilter(_MASK)
_chosen: dict[str, str] = {}  # what the command line asked for: it outranks the settings
_default = {"level": DEFAULT_LEVEL}  # the command's own default, below the settings


def add_options(parser: argparse.ArgumentParser) -> None:
    """`--log-level` and `--log-format`, for the common parser (every command takes them)."""
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=argparse.SUPPRESS,
        help="least severe log record written to stderr (default: [log] level, else info for "
        "the daemon and warning for other commands); "
        "debug adds every nmap command line, secrets masked",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=argparse.SUPPRESS,
        help="text lines or one JSON object per line (default text, or [log] format)",
    )


def configure(
    level: str | None = None, fmt: str | None = None, *, default_level: str = DEFAULT_LEVEL
) -> None:
    """Install the stderr handler; `level`/`fmt` given here outrank the settings from now on,
    `default_level` applies when neither they nor the settings choose."""
    _default["level"] = default_level
    _chosen.clear()
    if level:
        _chosen["level"] = level
    if fmt:
        _chosen["format"] = fmt
    _apply(_chosen.get("level", default_level), _chosen.get("format", DEFAULT_FORMAT))


def configure_from_args(args: argparse.Namespace) -> None:
    """`configure` with the command line's `--log-level` / `--log-format`, if given."""
    command = getattr(args, "command", None)
    configure(
        getattr(args, "log_level", None),
        getattr(args, "log_format", None),
        default_level=DAEMON_LEVEL if command == "daemon" else DEFAULT_LEVEL,
    )


def apply_settings(settings: Settings) -> None:
    """Take `[log]` (unless the command line chose) and mask the settings' secrets."""
    secrets: set[str] = set(config_secrets(settings))
    for url in settings.audit.anchor_urls:
        secrets |= set(url_secrets(url))
    mask_secrets(secrets, replace=True)
    _apply(
        _chosen.get("level", settings.log.level or _default["level"]),
        _chosen.get("format", settings.log.format),
    )


def mask_secrets(secrets: Iterable[str], *, replace: bool = False) -> None:
    """Mask `secrets` in every record from now on (`replace`: forget the earlier ones)."""
    _MASK.secrets = frozenset(secrets) if replace else _MASK.secrets | frozenset(secrets)


def _apply(level: str, fmt: str) -> None:
    journald = under_journald()
    formatter: logging.Formatter = (
        JsonFormatter(journald=journald) if fmt == "json" else TextFormatter(journald=journald)
    )
    _HANDLER.setFormatter(formatter)
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    levelno = logging.getLevelName(level.upper())
    logging.getLogger(OUR_LOGGER).setLevel(levelno)
    root.setLevel(max(levelno, logging.WARNING))
