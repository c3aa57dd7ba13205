"""Running nmap processes so that none outlives the scan that started it.

Why this is its own module: how a child process is started, polled, cancelled and killed
has nothing to do with what nmap is asked or how its XML is read, and it is the part
that must hold under the worst conditions (a cancel, a timeout, a parent killed with
SIGKILL). Three guarantees:

* A cancel or a timeout kills the whole process group within one poll (0.1 s): nmap runs
  in its own session (`start_new_session`), so one `killpg` reaches everything it forked.
* nmap dies with its parent: the kernel kills it when the thread that started it dies
  (`nmap_spawn.spawn`, which also keeps the runs started early for a scan, `prelaunch`).
* A scan that stops (cancel, or a worker's error) waits for its workers, so no nmap is
  still running when the call returns.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Protocol

from msgspec import Struct

from portconsole.core.adapters import nmap_budget
from portconsole.core.adapters.nmap_spawn import claim, exec_failure, kill_group, spawn

POLL_SECONDS = 0.1
READ_BYTES = 256 * 1024
MAX_STDERR_BYTES = 1024 * 1024  # nmap's warnings; the first line is what a user reads

log = logging.getLogger(__name__)

CAP_NET_ADMIN, CAP_NET_RAW = 12, 13  # <linux/capability.h>


def raw_sockets_allowed() -> bool:
    """Root, or CAP_NET_RAW and CAP_NET_ADMIN in effect (a service's AmbientCapabilities=):
    nmap can then send raw packets, told so by `--privileged` when not root."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status", encoding="ascii") as file:
            status = file.read()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
            return all(effective >> bit & 1 for bit in (CAP_NET_RAW, CAP_NET_ADMIN))
    return False


class Cancellable(Protocol):
    def is_set(self) -> bool: ...


class AnyEvent:
    """Set when any of its events is: the caller's cancel or the scan's own stop."""

    def __init__(self, *events: threading.Event | None) -> None:
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


class ProcessResult(Struct, frozen=True):
    """How one process ended. On cancel or timeout it was killed and its output dropped."""

    returncode: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    cancelled: bool = False
    timed_out: bool = False


@nmap_budget.limited(lambda: ProcessResult(None, cancelled=True))  # one slot per nmap
def run_process(
    args: list[str],
    cancel: Cancellable | None,
    timeout: float,
    stdout_sink: Callable[[bytes], None] | None = None,
) -> ProcessResult:
    """Run `args` to completion, timeout or cancel, polling every POLL_SECONDS.

    With `stdout_sink`, each piece of stdout is handed to it as it arrives (nmap's XML is
    parsed while nmap runs) and ProcessResult.stdout is empty; an exception from the sink
    kills the process and propagates. stderr is kept up to MAX_STDERR_BYTES.
    Raises FileNotFoundError or PermissionError when the program cannot be started.
    """
    if cancel is not None and cancel.is_set():
        return ProcessResult(None, cancelled=True)
    # The same run started early for this scan (cli_prelaunch) is taken over, not doubled.
    proc = claim(args)
    if log.isEnabledFor(logging.DEBUG):
        started = "started early" if proc is not None else "running"
        log.debug("%s: %s", started, shlex.join(args))  # secrets are masked by the log handler
    if proc is None:
        proc = spawn(args)
    assert proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []
    err: list[bytes] = []
    err_size = 0
    sink = stdout_sink if stdout_sink is not None else out.append
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    selector.register(proc.stderr, selectors.EVENT_READ)
    try:
        while selector.get_map() or proc.poll() is None:
            if selector.get_map():
                ready = selector.select(timeout=POLL_SECONDS)
            else:  # both pipes closed: only the exit is left
                ready = []
                try:
                    proc.wait(timeout=POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
            for key, _ in ready:
                data = os.read(key.fd, READ_BYTES)
                if not data:
                    selector.unregister(key.fileobj)
                elif key.fileobj is proc.stdout:
                    sink(data)
                elif err_size < MAX_STDERR_BYTES:
                    err.append(data)
                    err_size += len(data)
            if proc.returncode is not None and not selector.get_map():
                break
            if cancel is not None and cancel.is_set():
                return ProcessResult(None, cancelled=True)
            if time.monotonic() > deadline:
                return ProcessResult(None, timed_out=True)
        failure = exec_failure(proc)
        if failure is not None:
            # setpriv could not exec the program: what Popen raises when it starts it.
            raise failure(f"cannot execute {args[0]}")
        return ProcessResult(proc.returncode, b"".join(out), b"".join(err))
    finally:
        selector.close()
        if proc.returncode is None:
            kill_group(proc)
        proc.stdout.close()
        proc.stderr.close()


def wait_all(
    futures: list[Future[Any]], cancel: threading.Event | None, stop: threading.Event
) -> bool:
    """Wait for every future, or for cancel. True when cancelled.

    On cancel (or a worker's error), queued work is dropped and running workers notice
    `stop` within one poll, kill their nmap and return; we wait for them so that no nmap
    process outlives the call.
    """
    pending: set[Future[Any]] = set(futures)
    while pending:
        done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        for future in done:
            error = future.exception()
            if error is not None:
                # A user-fixable error (no privilege, no nmap): stop the rest, then raise.
                stop.set()
                _drain(pending)
                raise error
        if cancel is not None and cancel.is_set():
            stop.set()
            _drain(pending)
            return True
    return bool(cancel is not None and cancel.is_set())


def _drain(pending: set[Future[Any]]) -> None:
    for future in pending:
        future.cancel()
    for future in pending:
        if future.cancelled():
            continue
        try:
            future.result()
        except Exception:  # noqa: BLE001 - the first error is the one reported
            pass
