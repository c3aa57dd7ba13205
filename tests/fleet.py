"""Loopback listener fleets for tests: real sockets on 127.88.x.y, free ports only.

Other processes listen on 0.0.0.0, which answers on every 127.x address, so a test must
only scan (and never -sV) the ports its own fleet opened. This module hands out fresh
loopback addresses in 127.88.0.0/16 (unlikely to clash with the demo's 127.77.0.0/24 or
with other suites) and lets the kernel pick each port, so parallel tests cannot collide.

Typical use::

    from tests.fleet import TestFleet

    def test_something() -> None:
        with TestFleet() as fleet:
            host = fleet.new_address()
            ssh = fleet.listen(host, "ssh")          # a free port with an OpenSSH banner
            closed = fleet.closed_port(host)         # a port nothing listens on
            ... scan [host] on ports [ssh, closed] ...

Kinds are those of portconsole.demo.KINDS: ssh, http, https, tomcat, werkzeug,
postgresql, mysql, redis, telnet, tcp (bare accept, no banner).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import stat
import threading
from pathlib import Path
from types import TracebackType

from portconsole.demo import ListenerFleet

_counter = itertools.count()
_counter_lock = threading.Lock()


def new_address() -> str:
    """A loopback address in 127.88.0.0/16 not handed out before in this process.

    The pid picks the third octet so that two test processes (e.g. pytest -n) use
    different addresses.
    """
    with _counter_lock:
        n = next(_counter)
    third = (os.getpid() + n // 250) % 250 + 1
    return f"127.88.{third}.{n % 250 + 2}"


def free_port(address: str) -> int:
    """A TCP port nothing listens on at `address` right now (the kernel's choice).

    Prefer TestFleet.listen(address, kind) (port 0 binds atomically); use this for a
    port that must stay closed.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def is_listening(address: str, port: int) -> bool:
    """True when something accepts TCP connections on address:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((address, port)) == 0


class TestFleet:
    """A ListenerFleet plus bookkeeping: which ports are open, which are closed on purpose."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.fleet = ListenerFleet()
        self.open: dict[tuple[str, int], str] = {}
        self.closed: set[tuple[str, int]] = set()

    def __enter__(self) -> TestFleet:
        self.fleet.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self.fleet.stop()

    @staticmethod
    def new_address() -> str:
        return new_address()

    def listen(self, address: str, kind: str = "tcp", port: int = 0) -> int:
        """Start a listener (port 0 = a free port) and return its port."""
        bound = self.fleet.add(address, port, kind)
        self.open[(address, bound)] = kind
        return bound

    def close(self, address: str, port: int) -> None:
        """Stop a listener; the port then counts as closed."""
        self.fleet.remove(address, port)
        self.open.pop((address, port), None)
        self.closed.add((address, port))

    def closed_port(self, address: str) -> int:
        """A port with no listener on `address`, remembered as closed on purpose."""
        port = free_port(address)
        while (address, port) in self.open:
            port = free_port(address)
        self.closed.add((address, port))
        return port

    def ports_of(self, address: str) -> list[int]:
        """Every port this fleet touched on `address`, open or closed, sorted."""
        ports = {p for a, p in self.open if a == address} | {
            p for a, p in self.closed if a == address
        }
        return sorted(ports)

    def open_ports_of(self, address: str) -> list[int]:
        return sorted(p for a, p in self.open if a == address)


def logging_nmap(folder: Path, log: Path) -> Path:
    """`folder/nmap`: the real nmap behind a wrapper that appends each start's arguments to
    `log`, to prove which runs started (or that none did)."""
    wrapper = folder / "nmap"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {shutil.which("nmap")} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper
