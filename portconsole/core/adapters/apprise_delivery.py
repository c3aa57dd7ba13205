"""Delivery through apprise: one message to one target, bounded in time, secrets masked.

The outbox (adapters/notify.py) decides what to send and records what happened; this module
is the only one that talks to apprise. A send runs in a helper thread and is abandoned a
little after its target's timeout (`SEND_GRACE_SECONDS`). Apprise's own log lines may echo
a URL, so every record of the `apprise` logger has the configured secrets masked, and the
warnings a failed send logs are collected (per thread) to explain the failure.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from portconsole.core.domain.notification import DeliveryTarget
from portconsole.core.secrets import mask_text

# A send is abandoned this long after its target's timeout even if apprise has not returned
# (a server that trickles bytes resets socket read timeouts forever).
SEND_GRACE_SECONDS = 0.5
_APPRISE_TYPE = {"critical": "failure", "high": "failure", "medium": "warning", "low": "info"}


class _ThreadLogCapture(logging.Handler):
    """Collects apprise's warnings logged by one thread (they explain a failure)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.thread_id = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            try:
                self.lines.append(record.getMessage())
            except Exception:  # a broken log call must not break a delivery
                self.lines.append(str(record.msg))


class _MaskingFilter(logging.Filter):
    """Masks configured secrets in every record of the apprise logger, wherever it goes.

    Apprise's messages may carry URL parts; the application's log handlers must not see them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        record.msg = mask_text(text, self.secrets)
        record.args = None
        return True


_APPRISE_LOG_MASK = _MaskingFilter()


def mask_apprise_logs(secrets: Iterable[str]) -> None:
    """Mask `secrets` in every record of the apprise logger from now on (process-wide)."""
    _APPRISE_LOG_MASK.secrets.update(secrets)
    apprise_logger = logging.getLogger("apprise")
    if _APPRISE_LOG_MASK not in apprise_logger.filters:
        apprise_logger.addFilter(_APPRISE_LOG_MASK)


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    apprise_logger = logging.getLogger("apprise")
    capture = _ThreadLogCapture()
    apprise_logger.addHandler(capture)
    try:
        yield capture.lines
    finally:
        apprise_logger.removeHandler(capture)


def _apprise_plugin(url: str, timeout: float) -> tuple[Any, str | None]:
    """Build the apprise plugin for one URL (no network); (plugin, None) or (None, error)."""
    import apprise  # lazily: 140 ms import, and most commands never notify

    with _captured_warnings() as lines:
        try:
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=False)
        except Exception as error:
            return None, f"bad notification URL: {error.__class__.__name__}: {error}"
    if plugin is None:
        reason = "; ".join(dict.fromkeys(lines)) or "unknown scheme or bad syntax"
        return None, f"not a valid apprise URL ({reason})"
    # Per target: connect and read timeouts (what the ?cto=&rto= URL parameters set) ...
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    # ... and no throttle: apprise sleeps 5.5 s between two sends of one mailto object.
    plugin.request_rate_per_sec = 0
    return plugin, None


def _apprise_notify(plugin: Any, title: str, body: str, notify_type: str) -> str | None:
    """Send one notification; None on success, else what went wrong (unmasked)."""
    import apprise

    with _captured_warnings() as lines:
        try:
            ok = plugin.notify(body=body, title=title, notify_type=apprise.NotifyType(notify_type))
        except Exception as error:  # apprise plugins raise freely; one bad target must not stop us
            return f"{error.__class__.__name__}: {error}"
    if ok:
        return None
    return "; ".join(dict.fromkeys(lines)) or "delivery failed"


def send(
    target: DeliveryTarget, title: str, body: str, severity: str, mask: Callable[[str], str]
) -> str | None:
    """Send through apprise in a helper thread bounded by the target's timeout.

    Returns None on success, else an error text (apprise's errors passed through `mask`).
    """
    # Built here, outside the timed part: the first build loads apprise's plugins (~0.4 s).
    plugin, error = _apprise_plugin(target.url, target.timeout)
    if plugin is None:
        return mask(error or "not a valid apprise URL")
    outcome: list[str | None] = []
    notify_type = _APPRISE_TYPE.get(severity, "failure")

    def run() -> None:
        outcome.append(_apprise_notify(plugin, title, body, notify_type))

    sender = threading.Thread(target=run, name="portconsole-send", daemon=True)
    sender.start()
    sender.join(target.timeout + SEND_GRACE_SECONDS)
    if sender.is_alive():
        # Left to finish on its own (daemon thread); it may still deliver: at least once.
        return f"no answer within {target.timeout:g} s"
    error = outcome[0] if outcome else "delivery failed"
    return None if error is None else mask(error)
