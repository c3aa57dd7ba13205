"""A TCP connect as the quick second look at a port a sweep has just seen open.

Why: a new port counts only once a re-probe confirms it (services/probe.py), and one nmap
run costs ~80 ms however few ports it asks (its start, and setting up and closing its
packet capture), so a new port waited for two nmap runs before it was a finding. A port
that completes a TCP handshake is open, as surely as nmap's SYN-ACK says so, and asking
the kernel takes well under a millisecond on a LAN.

Only "open" is ever concluded here. A refused, silent or slow connect concludes nothing:
the port goes to nmap's re-probe as before. (A REJECT rule reads *filtered* to a SYN scan
and *refused* to a connect, so a connect's failures would not agree with the sweep they
check.)

Bounded: at most MAX_PAIRS ports per call (more, e.g. the first scan of a large fleet,
go to nmap whole), at most MAX_IN_FLIGHT connects at once, all within `window` seconds.
Each connection is closed as soon as it is made; nothing is sent on it.
"""

from __future__ import annotations

import errno
import selectors
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from portconsole.core.adapters.scanning import checked_questions

if TYPE_CHECKING:
    import socket

    from portconsole.core.domain.targets import Scope

# More ports than this in one confirm go to nmap whole: each connect leaves a socket in
# TIME_WAIT for a minute, and a batch this size is not a new port someone waits for.
MAX_PAIRS = 1024
MAX_IN_FLIGHT = 128
# A port the sweep saw open answers a connect within a round trip; a SYN that a rate limit
# dropped would be sent again only after 1 s, so nothing is waited for beyond that.
WINDOW = 1.0
_POLL = 0.05


def open_ports(
    questions: Mapping[str, Iterable[tuple[int, str]]],
    scope: Scope,
    cancel: threading.Event | None = None,
) -> dict[str, set[tuple[int, str]]]:
    """The TCP ports of `questions` (address -> (port, proto) pairs) that accept a
    connection now, by canonical address (`accepting`); UDP ones are never asked. Every
    address and port is checked first, as for nmap (`checked_questions`)."""
    pairs = [
        (address, port)
        for address, asked in checked_questions(questions, scope).items()
        for port, proto in sorted(asked)
        if proto == "tcp"
    ]
    found: dict[str, set[tuple[int, str]]] = {}
    for address, port in accepting(pairs, cancel=cancel):
        found.setdefault(address, set()).add((port, "tcp"))
    return found


def accepting(
    pairs: Iterable[tuple[str, int]],
    *,
    window: float = WINDOW,
    cancel: threading.Event | None = None,
) -> set[tuple[str, int]]:
    """The (address, TCP port) pairs that accept a connection now; the others are unknown
    (not closed). Addresses must already be checked against the scope. Empty when there
    are more than MAX_PAIRS pairs."""
    pending = list(dict.fromkeys(pairs))
    if not pending or len(pending) > MAX_PAIRS:
        return set()
    import socket  # only when there is a new port to confirm: ~2 ms a steady scan skips

    pending.reverse()  # popped from the end: asked in the caller's order
    deadline = time.monotonic() + window
    accepted: set[tuple[str, int]] = set()
    with selectors.DefaultSelector() as selector:
        try:
            while pending or selector.get_map():
                while pending and len(selector.get_map()) < MAX_IN_FLIGHT:
                    pair = pending.pop()
                    sock = _start(pair)
                    if sock is None:
                        continue
                    selector.register(sock, selectors.EVENT_WRITE, pair)
                left = deadline - time.monotonic()
                if left <= 0 or (cancel is not None and cancel.is_set()):
                    break
                for key, _ in selector.select(min(left, _POLL)):
                    done = key.fileobj
                    assert isinstance(done, socket.socket)
                    selector.unregister(done)
                    if done.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        accepted.add(key.data)
                    done.close()
        finally:
            for key in list(selector.get_map().values()):
                selector.unregister(key.fileobj)
                assert isinstance(key.fileobj, socket.socket)
                key.fileobj.close()
    return accepted


def _start(pair: tuple[str, int]) -> socket.socket | None:
    """A non-blocking connect under way to `pair`, or None when it failed at once (refused,
    unreachable, or no socket to be had: the port is then left to nmap)."""
    import socket

    address, port = pair
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        sock.setblocking(False)
        code = sock.connect_ex((address, port))
    except OSError:
        sock.close()
        return None
    if code in (errno.EINPROGRESS, errno.EAGAIN, 0):
        return sock  # 0: connected at once; select says writable and SO_ERROR is 0
    sock.close()
    return None
