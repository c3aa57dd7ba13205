"""Real local servers for notification tests: an HTTP catcher and an SMTP catcher.

Both bind 127.0.0.1 on a free port and record what they receive. `HttpCatcher` can be
switched between up (200), failing (500), black-hole (accepts the request and never answers)
and down (listening socket closed: connection refused), keeping its port across switches.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

UP, FAILING, BLACKHOLE, DOWN = "up", "failing", "blackhole", "down"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class CaughtRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | None  # HTTP status sent back; None for the black hole

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    catcher: HttpCatcher


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None

    def _handle(self) -> None:
        catcher = self.server.catcher
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        mode = catcher.mode
        status = {UP: 200, FAILING: 500}.get(mode)
        catcher._record(
            CaughtRequest(self.command, self.path, dict(self.headers.items()), body, status)
        )
        if status is None:
            # Black hole: hold the connection open without a byte of answer until released.
            catcher._release.wait(60)
            self.close_connection = True
            return
        payload = b'{"ok": true}' if status == 200 else b'{"ok": false}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET = do_PUT = _handle


class HttpCatcher:
    """A threaded HTTP server on 127.0.0.1 that records every request."""

    def __init__(self, port: int | None = None, mode: str = UP) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.mode = mode
        self._requests: list[CaughtRequest] = []
        self._cond = threading.Condition()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> HttpCatcher:
        if self.mode != DOWN:
            self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _start(self) -> None:
        if self._server is not None:
            return
        self._release.clear()
        for attempt in range(50):
            try:
                server = _Server((self.host, self.port), _Handler)
                break
            except OSError:
                # The old socket may linger for a moment after down(); retry briefly.
                if attempt == 49:
                    raise
                time.sleep(0.02)
        server.catcher = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _stop(self) -> None:
        self._release.set()  # let black-hole handlers go
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # ----- modes ----------------------------------------------------------------------
    def up(self) -> None:
        self.mode = UP
        self._start()

    def failing(self) -> None:
        self.mode = FAILING
        self._start()

    def black_hole(self) -> None:
        self.mode = BLACKHOLE
        self._start()

    def down(self) -> None:
        self.mode = DOWN
        self._stop()

    # ----- what arrived ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _record(self, request: CaughtRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    @property
    def requests(self) -> list[CaughtRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def accepted(self) -> list[CaughtRequest]:
        """Requests answered 200: the ones a sender counts as delivered."""
        return [r for r in self.requests if r.answered == 200]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[CaughtRequest]:
        """Wait until at least `count` requests were answered 200; return them."""
        end = time.monotonic() + timeout
        with self._cond:
            while sum(1 for r in self._requests if r.answered == 200) < count:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return self.accepted


@dataclass(slots=True)
class CaughtMail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    authenticated: bool

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain", "html"))
        return "" if part is None else str(part.get_content())


@dataclass(slots=True)
class _SmtpState:
    messages: list[CaughtMail] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


class SmtpCatcher:
    """A real aiosmtpd server on 127.0.0.1 (plain SMTP, AUTH allowed without TLS)."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = user
        self.password = password
        self._state = _SmtpState()
        self._cond = threading.Condition()
        self._controller: Any = None

    def __enter__(self) -> SmtpCatcher:
        from aiosmtpd.controller import Controller

        self._controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            auth_require_tls=False,
            auth_required=False,
            authenticator=self._authenticate,
        )
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._controller is not None:
            with contextlib.suppress(Exception):
                self._controller.stop()
            self._controller = None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult

        login = _text(getattr(auth_data, "login", b""))
        password = _text(getattr(auth_data, "password", b""))
        with self._cond:
            self._state.logins.append((login, password))
        good = self.user is None or (login == self.user and password == self.password)
        return AuthResult(success=good, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        caught = CaughtMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=[str(r) for r in envelope.rcpt_tos],
            message=parsed,
            authenticated=bool(session.authenticated),
        )
        with self._cond:
            self._state.messages.append(caught)
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    @property
    def messages(self) -> list[CaughtMail]:
        with self._cond:
            return list(self._state.messages)

    @property
    def logins(self) -> list[tuple[str, str]]:
        with self._cond:
            return list(self._state.logins)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[CaughtMail]:
        end = time.monotonic() + timeout
        with self._cond:
            while len(self._state.messages) < count:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self._state.messages)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
