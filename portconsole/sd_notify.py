"""sd_notify(3) for `Type=notify` units, without libsystemd: one AF_UNIX datagram per message.

systemd passes the socket in NOTIFY_SOCKET (a path, or `@name` in the abstract namespace) and,
with `WatchdogSec=`, the interval in WATCHDOG_USEC (for the process in WATCHDOG_PID, if set).
Outside systemd neither is set and every call here does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1") to systemd; False when not run by it or it cannot be told."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # unset, or a vsock address (not used for services on this machine)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
    except OSError as error:
        log.warning("cannot notify systemd at %s: %s", address.lstrip("\0"), error)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


class Watchdog:
    """Pings WATCHDOG=1 every `every` seconds while `alive()` says the main loop moves.

    A main loop that stops moving (hung on a lock, a scan past every bound) stops the pings,
    so systemd kills and restarts the service after WatchdogSec.
    """

    def __init__(self, every: float, alive: Callable[[], bool]) -> None:
        self.every = every
        self.alive = alive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._stalled = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self.alive():
                self._stalled = False
                notify("WATCHDOG=1")
            elif not self._stalled:
                self._stalled = True
                log.error("the daemon's main loop has stalled: no longer pinging the watchdog")


class Heartbeat:
    """When the main loop last showed progress (monotonic), and how long it may go without."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.last = time.monotonic()

    def beat(self, *_progress: object) -> None:
        self.last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last < self.limit
