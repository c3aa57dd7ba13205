"""The demo fleet's listeners: protocol behaviours that answer like the real services
(OpenSSH, nginx, Tomcat, Werkzeug, PostgreSQL, MySQL, Redis, telnetd), and ListenerFleet,
which serves them on loopback addresses from one asyncio thread.

The fleet definition, the generated config and the demo run live in portconsole.demo.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Self

from portconsole.core.errors import UserError

IDLE_SECONDS = 30.0
MAX_REQUEST_BYTES = 16384

SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
# Postgres 15 on Debian 12: nmap keys the version on the source line of the error.
_PG_LINE = b"2194"
_PG_SSL_REQUEST = 80877103
_PG_GSS_REQUEST = 80877104
_TELNET_NEGOTIATION = b"\xff\xfd\x18\xff\xfd\x20\xff\xfd\x23\xff\xfd\x27"
_HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"OPTIONS ", b"DELETE ", b"PATCH ")
_REQUEST_START = re.compile(rb"^[A-Z]{1,10}( |$)")


# -- protocol behaviours ------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Read an HTTP request head: until a blank line, EOF, the size cap, or garbage.

    Like nginx, bytes that cannot start a request line are answered at once (with 400)
    instead of waiting for more: nmap sends many binary probes, and waiting on each one
    would make version detection crawl.
    """
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < MAX_REQUEST_BYTES:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), 2.0 if data else IDLE_SECONDS)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
        if not _REQUEST_START.match(data[:16]):
            break
    return data


async def _drain_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass


def _http_handler(server: str, body: bytes, *, werkzeug_style: bool = False) -> Handler:
    """An HTTP server that names itself in `Server:` (nginx-style by default).

    werkzeug_style: HTTP/1.0 with Server after Content-Type/Length, as the Werkzeug
    development server answers (nmap's signature depends on that order).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        if not request:
            return
        if request.startswith(_HTTP_METHODS):
            status, payload = b"200 OK", body
        else:
            status = b"400 Bad Request"
            payload = b"<html><head><title>400 Bad Request</title></head></html>\r\n"
        length = str(len(payload)).encode()
        if request.startswith(b"HEAD "):
            payload = b""
        server_line = b"Server: " + server.encode() + b"\r\n"
        date_line = b"Date: Fri, 27 Nov 2026 12:00:00 GMT\r\n"
        if werkzeug_style:
            head = (
                b"HTTP/1.0 " + status + b"\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: " + length + b"\r\n" + server_line + date_line
            )
        else:
            head = (
                b"HTTP/1.1 "
                + status
                + b"\r\n"
                + server_line
                + date_line
                + b"Content-Type: text/html\r\nContent-Length: "
                + length
                + b"\r\nConnection: close\r\n"
            )
        writer.write(head + b"\r\n" + payload)
        await writer.drain()

    return handle


async def _ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(SSH_BANNER)
    await writer.drain()
    await _drain_until_eof(reader)


def _pg_error(code: bytes, message: bytes) -> bytes:
    fields = (
        b"SFATAL\0VFATAL\0C"
        + code
        + b"\0M"
        + message
        + b"\0Fpostmaster.c\0L"
        + _PG_LINE
        + b"\0RProcessStartupPacket\0\0"
    )
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


async def _postgresql(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer startup packets the way postgres 15 does (enough for nmap and psql)."""
    while True:
        # Like postgres, judge the length word before waiting for anything more.
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        if length < 8 or length > 10000:
            writer.write(_pg_error(b"08P01", b"invalid length of startup packet"))
            await writer.drain()
            return
        (code,) = struct.unpack("!I", await reader.readexactly(4))
        if length == 8 and code in (_PG_SSL_REQUEST, _PG_GSS_REQUEST):
            writer.write(b"N")  # no SSL / GSS: the client goes on in clear text
            await writer.drain()
            continue
        await reader.readexactly(length - 8)
        major, minor = code >> 16, code & 0xFFFF
        if major != 3:
            message = f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
            writer.write(_pg_error(b"0A000", message.encode()))
        else:
            writer.write(
                _pg_error(b"28000", b'no pg_hba.conf entry for host "127.0.0.1", no encryption')
            )
        await writer.drain()
        return


def _mysql_greeting() -> bytes:
    salt = b"demo-salt-0123456789"  # 20 bytes of "scramble", fixed: it is a demo
    capabilities = 0xFFFFF7FF
    payload = (
        b"\x0a"
        + b"8.0.36\0"
        + struct.pack("<I", 8)  # connection id
        + salt[:8]
        + b"\0"
        + struct.pack("<H", capabilities & 0xFFFF)
        + b"\xff"  # utf8mb4_0900_ai_ci
        + struct.pack("<H", 0x0002)  # SERVER_STATUS_AUTOCOMMIT
        + struct.pack("<H", capabilities >> 16)
        + bytes([21])
        + b"\0" * 10
        + salt[8:]
        + b"\0"
        + b"caching_sha2_password\0"
    )
    return struct.pack("<I", len(payload))[:3] + b"\0" + payload


async def _mysql(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_mysql_greeting())
    await writer.drain()
    await _drain_until_eof(reader)


def _redis_reply(args: list[bytes]) -> bytes | None:
    if not args:
        return None
    command = args[0].lower()
    if command == b"ping":
        return b"+PONG\r\n"
    if command == b"get":
        if len(args) != 2:
            return b"-ERR wrong number of arguments for 'get' command\r\n"
        return b"$-1\r\n"
    if command == b"info":
        info = b"# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nos:Linux\r\n"
        return b"$" + str(len(info)).encode() + b"\r\n" + info + b"\r\n"
    if command == b"quit":
        return b"+OK\r\n"
    shown = args[0][:40].decode("latin-1").replace("'", "")
    return f"-ERR unknown command '{shown}'\r\n".encode("latin-1")


async def _redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An unauthenticated Redis: inline and RESP commands, PING/GET/INFO/QUIT."""
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"*"):
            try:
                count = min(int(line[1:].strip() or b"0"), 64)
            except ValueError:
                writer.write(b"-ERR Protocol error: invalid multibulk length\r\n")
                await writer.drain()
                return
            args = []
            for _ in range(count):
                await reader.readline()  # $<len>
                args.append((await reader.readline()).rstrip(b"\r\n"))
        else:
            args = line.split()
        reply = _redis_reply(args)
        if reply:
            writer.write(reply)
            await writer.drain()
        if args and args[0].lower() == b"quit":
            return


async def _telnet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Linux telnetd opens with these DO options and prompts once the client answers.
    writer.write(_TELNET_NEGOTIATION)
    await writer.drain()
    prompted = False
    while await reader.read(4096):
        if not prompted:
            writer.write(b"\r\nDebian GNU/Linux 12\r\nlogin: ")
            await writer.drain()
            prompted = True


async def _bare(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _drain_until_eof(reader)


_NGINX_BODY = (
    b"<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n"
    b"<h1>Welcome to nginx!</h1>\n</body>\n</html>\n"
)

_HANDLERS: dict[str, Handler] = {
    "ssh": _ssh,
    "http": _http_handler("nginx/1.22.1", _NGINX_BODY),
    "https": _http_handler("nginx/1.22.1", _NGINX_BODY),
    "tomcat": _http_handler("Apache-Coyote/1.1", b"<html><body>OK</body></html>\n"),
    "werkzeug": _http_handler(
        "Werkzeug/2.2.2 Python/3.11.2",
        b"<html><body>Debugger PIN required</body></html>\n",
        werkzeug_style=True,
    ),
    "postgresql": _postgresql,
    "mysql": _mysql,
    "redis": _redis,
    "telnet": _telnet,
    "tcp": _bare,
}


# -- the fleet ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Listener:
    """One demo listener: the address and port it serves, its protocol and its server."""

    address: str
    port: int
    kind: str
    server: asyncio.Server
    writers: set[asyncio.StreamWriter] = field(default_factory=set)


def bind_listener_socket(address: str, port: int) -> socket.socket:
    """A listening TCP socket on address:port (0 = any free port).

    Raises UserError naming address:port when it is taken or not allowed.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR only skips TIME_WAIT leftovers of our own earlier runs; it does not
        # let us share a port with a live listener (Linux refuses that, as we want).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise UserError(
                f"{address}:{port} is already in use (perhaps a process listening on "
                f"0.0.0.0:{port}); stop it or run the demo with a port offset"
            ) from None
        if error.errno == errno.EACCES:
            raise UserError(
                f"{address}:{port} needs root to bind (port below 1024); run as root "
                "or use a port offset"
            ) from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise UserError(f"{address} is not a local address; use 127.x.y.z") from None
        raise UserError(f"cannot listen on {address}:{port}: {error.strerror}") from None
    return sock


class ListenerFleet:
    """Loopback TCP listeners with realistic banners, served by asyncio in one thread.

    Use as a context manager, or start()/stop(). add()/remove() work while running (the
    demo's drift and the tests use them). Errors from a taken port are one-line UserErrors.
    """

    def __init__(self, specs: Iterable[tuple[str, int, str]] = ()) -> None:
        self._initial = list(specs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listeners: dict[tuple[str, int], _Listener] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._loop is not None

    def listeners(self) -> list[tuple[str, int, str]]:
        """(address, port, kind) of every open listener, sorted."""
        with self._lock:
            return sorted((x.address, x.port, x.kind) for x in self._listeners.values())

    def start(self) -> Self:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="demo-fleet", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        try:
            for address, port, kind in self._initial:
                self.add(address, port, kind)
        except BaseException:
            self.stop()
            raise
        return self

    def _call(self, coro: Awaitable[object]) -> object:
        assert self._loop is not None
        future: Future[object] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(timeout=10)

    def add(self, address: str, port: int, kind: str) -> int:
        """Listen on address:port with behaviour `kind`; port 0 picks a free one.

        Returns the port bound. Raises UserError when address:port is taken.
        """
        if kind not in _HANDLERS:
            raise UserError(f"unknown listener kind {kind!r}; use one of {', '.join(_HANDLERS)}")
        if self._loop is None:
            raise UserError("the listener fleet is not running; call start() first")
        sock = bind_listener_socket(address, port)
        bound = int(sock.getsockname()[1])
        listener_box: list[_Listener] = []
        handler = _HANDLERS[kind]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            listener = listener_box[0]
            listener.writers.add(writer)
            try:
                await asyncio.wait_for(handler(reader, writer), IDLE_SECONDS)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                listener.writers.discard(writer)
                writer.close()

        async def create() -> asyncio.Server:
            return await asyncio.start_server(serve, sock=sock)

        try:
            server = self._call(create())
        except BaseException:
            sock.close()
            raise
        assert isinstance(server, asyncio.Server)
        listener = _Listener(address, bound, kind, server)
        listener_box.append(listener)
        with self._lock:
            self._listeners[(address, bound)] = listener
        return bound

    def remove(self, address: str, port: int) -> None:
        """Stop listening on address:port and drop its open connections."""
        with self._lock:
            listener = self._listeners.pop((address, port), None)
        if listener is None or self._loop is None:
            return
        self._call(self._close(listener))

    @staticmethod
    async def _close(listener: _Listener) -> None:
        listener.server.close()
        for writer in list(listener.writers):
            writer.close()
        await asyncio.sleep(0)

    def stop(self) -> None:
        """Close every socket and end the thread. Safe to call twice."""
        loop = self._loop
        if loop is None:
            return
        with self._lock:
            listeners = list(self._listeners.values())
            self._listeners.clear()
        for listener in listeners:
            try:
                self._call(self._close(listener))
            except Exception:  # noqa: BLE001 - closing the rest matters more
                pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        loop.close()
        self._loop = None
        self._thread = None
