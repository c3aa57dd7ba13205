"""Delivery through apprise: one message to one target, bounded in time, secrets masked.

The outbox (adapters/notify.py) decides what to send and records what happened; this module
is the only one that talks to apprise. A send runs in a helper thread and is abandoned a
little after its target's timeout (`SEND_GRACE_SECONDS`). Apprise's own log lines may echo
a URL, so every record of the `apprise` logger has the configured secrets masked, and the
warnings a failed send logs are collected (per thread) to explain the failure.

Signed webhooks: with a key, a json:// or form:// send carries `X-PortConsole-Signature:
sha256=HEX`, the HMAC-SHA256 of the exact body bytes sent. Apprise builds the body itself,
so the signature is made where the request is: its webhook plugins call `requests.request`,
and `_SigningRequests` stands in for their `requests` module, preparing the request, signing
the prepared body and sending that same prepared request. The key is per sending thread, so
unsigned targets and other plugins are untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

from portconsole.core.domain.notification import DeliveryTarget
from portconsole.core.secrets import mask_text

# A send is abandoned this long after its target's timeout even if apprise has not returned
# (a server that trickles bytes resets socket read timeouts forever).
SEND_GRACE_SECONDS = 0.5
_APPRISE_TYPE = {"critical": "failure", "high": "failure", "medium": "warning", "low": "info"}
SIGNATURE_HEADER = "X-PortConsole-Signature"
_SEND_OPTIONS = ("timeout", "allow_redirects", "proxies", "stream", "verify", "cert")
_signing = threading.local()


def signature(key: bytes, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of `body`."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class _SigningRequests:
    """The `requests` module as apprise's webhook plugins see it: `request()` signs the body
    when the calling thread has a key (`_signing.key`), and is plain `requests` otherwise."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        key: bytes | None = getattr(_signing, "key", None)
        if not key:
            return self._real.request(method, url, **kwargs)
        # What requests.request does (Session.request), with the signature added to the
        # prepared request: the signed bytes are the bytes sent.
        options = {name: kwargs.pop(name) for name in _SEND_OPTIONS if name in kwargs}
        with self._real.Session() as session:
            prepared = session.prepare_request(
                self._real.Request(method=method.upper(), url=url, **kwargs)
            )
            body = prepared.body or b""
            if isinstance(body, str):
                body = body.encode("utf-8")
                prepared.body = body
                prepared.prepare_content_length(body)
            prepared.headers[SIGNATURE_HEADER] = signature(key, body)
            settings = session.merge_environment_settings(
                prepared.url,
                options.get("proxies") or {},
                options.get("stream"),
                options.get("verify"),
                options.get("cert"),
            )
            return session.send(
                prepared,
                timeout=options.get("timeout"),
                allow_redirects=options.get("allow_redirects", True),
                **settings,
            )


def _signable(plugin: Any) -> bool:
    """Make the plugin's `requests` the signing one; False if the plugin has none to wrap."""
    module = sys.modules.get(type(plugin).__module__)
    current = getattr(module, "requests", None)
    if isinstance(current, _SigningRequests):
        return True
    if module is None or not isinstance(current, ModuleType):
        return False
    module.requests = _SigningRequests(current)  # type: ignore[attr-defined]
    return True


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
    target: DeliveryTarget,
    title: str,
    body: str,
    severity: str,
    mask: Callable[[str], str],
    signing_key: bytes | None = None,
) -> str | None:
    """Send through apprise in a helper thread bounded by the target's timeout; with
    `signing_key`, the request carries the signature header (webhook targets only).

    Returns None on success, else an error text (apprise's errors passed through `mask`).
    """
    # Built here, outside the timed part: the first build loads apprise's plugins (~0.4 s).
    plugin, error = _apprise_plugin(target.url, target.timeout)
    if plugin is None:
        return mask(error or "not a valid apprise URL")
    if signing_key and not _signable(plugin):
        return mask(f"cannot sign messages to {target.target_id}: not a webhook target")
    outcome: list[str | None] = []
    notify_type = _APPRISE_TYPE.get(severity, "failure")

    def run() -> None:
        _signing.key = signing_key
        try:
            outcome.append(_apprise_notify(plugin, title, body, notify_type))
        finally:
            _signing.key = None

    sender = threading.Thread(target=run, name="portconsole-send", daemon=True)
    sender.start()
    sender.join(target.timeout + SEND_GRACE_SECONDS)
    if sender.is_alive():
        # Left to finish on its own (daemon thread); it may still deliver: at least once.
        return f"no answer within {target.timeout:g} s"
    error = outcome[0] if outcome else "delivery failed"
    return None if error is None else mask(error)
