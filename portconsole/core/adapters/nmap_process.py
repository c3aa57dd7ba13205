"""Running nmap processes so that none outlives the scan that started it.

Why this is its own module: how a child process is started, polled, cancelled and killed
has nothing to do with what nmap is asked or how its XML is read, and it is the part
that must hold under the worst conditions (a cancel, a timeout, a parent killed with
SIGKILL). Three guarantees:

* A cancel or a timeout kills the whole process group within one poll (0.1 s): nmap runs
  in its own session (`start_new_session`), so one `killpg` reaches everything it forked.
* nmap dies with its parent. A CLI killed with SIGKILL runs no cleanup, and its own
  session keeps nmap out of the terminal's signals, so before nmap execs it asks the
  kernel for SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`). util-linux's
  `setpriv --pdeathsig KILL` does that and execs nmap, so Python starts the child with
  vfork (~0.3 ms); without setpriv, a preexec_fn calls prctl, which makes Python fork its
  whole process (~3 ms a start, holding the interpreter: a scan's runs start one by one).
* A scan that stops (cancel, or a worker's error) waits for its workers, so no nmap is
  still running when the call returns.
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Protocol

from msgspec import Struct

from portconsole.core.adapters import nmap_budget

POLL_SECONDS = 0.1
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# nmap needs nothing from our environment; a fixed one keeps its output stable (LC_ALL).
NMAP_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
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
    if log.isEnabledFor(logging.DEBUG):
        log.debug("running: %s", shlex.join(args))  # secrets are masked by the log handler
    setpriv = _setpriv()
    proc = subprocess.Popen(
        [setpriv, "--pdeathsig", "KILL", "--", *args] if setpriv else args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so one killpg reaps all
        preexec_fn=None if setpriv else die_with_parent(),
        env=NMAP_ENV,
    )
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
        if setpriv and proc.returncode in SETPRIV_EXEC_FAILED:
            # setpriv could not exec the program: what Popen raises when it starts it.
            raise SETPRIV_EXEC_FAILED[proc.returncode](f"cannot execute {args[0]}")
        return ProcessResult(proc.returncode, b"".join(out), b"".join(err))
    finally:
        selector.close()
        if proc.returncode is None:
            kill_group(proc)
        proc.stdout.close()
        proc.stderr.close()


# setpriv's status when it cannot exec the program (util-linux's exitcodes.h), as the
# error Popen would have raised starting the program itself. nmap never exits so.
SETPRIV_EXEC_FAILED: dict[int, type[OSError]] = {127: FileNotFoundError, 126: PermissionError}


@functools.cache
def _setpriv() -> str:
    """util-linux's setpriv if it is installed and has --pdeathsig (2.33+), else ""."""
    if not sys.platform.startswith("linux"):
        return ""
    found = shutil.which("setpriv", path="/usr/bin:/bin")
    if not found:
        return ""
    # Its option table names the options it has: read, not run (a run costs a process
    # start in each of the scan's first runs, ~1-4 ms).
    try:
        with open(found, "rb") as binary:
            return found if b"pdeathsig" in binary.read(4 * 1024 * 1024) else ""
    except OSError:
        return ""


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once, before any fork (never inside a child)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only without setpriv (see _setpriv): ~1 ms of every scan's start-up

    try:
        function = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    function.restype = ctypes.c_int
    return function


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGKILL the child when its parent dies.

    The signal follows the death of the *thread* that forked, not of the process: here
    that is the thread running `run_process`, which waits for its child, so the two end
    together. A parent that died between fork and prctl is caught by the getppid check.
    None where prctl does not exist (not Linux): the cancel and timeout paths remain.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        # Between fork and exec: one system call, no locks, no imports.
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
