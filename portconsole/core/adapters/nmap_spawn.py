"""Starting an nmap process that dies with us, and nmap runs started before they are asked.

Why its own module, importing only light parts of the standard library: `portconsole
scan` starts its first sweeps before it has loaded the rest of the product
(`cli_prelaunch`), so what starts a process must load in a few milliseconds. `nmap_process.run_process`
starts its processes here too, and takes over one that was started early.

Starting (`spawn`): nmap runs in its own session (one `killpg` reaches all it forked), with
a fixed environment, and dies when the thread that started it dies. util-linux's `setpriv
--pdeathsig KILL` asks the kernel for that and execs nmap, so Python starts the child with
vfork (~0.3 ms); without setpriv, a preexec_fn calls prctl, which makes Python fork its
whole process (~3 ms a start, holding the interpreter).

Started early (`prelaunch`, `claim`, `discard`): a run started before anyone asked for it
is kept under its exact argument vector. `run_process` asked for the same vector takes it
over (`claim`), as if it had started it then; one nobody asks for within MAX_AGE_SECONDS,
or when the scan says which runs it wants (`discard`), or at exit, is killed. So an early
run can only ever be the run the scan would have started itself, a moment sooner.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# nmap needs nothing from our environment; a fixed one keeps its output stable (LC_ALL).
NMAP_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
# setpriv's status when it cannot exec the program (util-linux's exitcodes.h), as the
# error Popen would have raised starting the program itself. nmap never exits so.
SETPRIV_PATHS = ("/usr/bin/setpriv", "/bin/setpriv")
SETPRIV_EXEC_FAILED: dict[int, type[OSError]] = {127: FileNotFoundError, 126: PermissionError}
# An early run is taken over only this soon after it started: later, what it saw would be
# recorded after scans that looked after it.
MAX_AGE_SECONDS = 5.0
# What an early run's stdout pipe may hold until the scan takes the run over and reads it.
# A pipe holds 64 KiB by default, about a hundred hosts of a sweep's XML: past that, the
# early nmap would stop and wait for the scan. 1 MiB is Linux's default pipe-max-size.
EARLY_PIPE_BYTES = 1024 * 1024


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    """Start `args` in its own session with pipes for stdout and stderr, killed by the
    kernel when the calling thread dies. Raises OSError when it cannot be started."""
    setpriv = _setpriv()
    return subprocess.Popen(
        [setpriv, "--pdeathsig", "KILL", "--", *args] if setpriv else args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so one killpg reaps all
        preexec_fn=None if setpriv else die_with_parent(),
        env=NMAP_ENV,
    )


def exec_failure(proc: subprocess.Popen[bytes]) -> type[OSError] | None:
    """The error for a process that setpriv could not exec (what Popen would have raised
    starting the program itself), or None."""
    return SETPRIV_EXEC_FAILED.get(proc.returncode or 0) if _setpriv() else None


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process and everything in its session, and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ----- runs started early -------------------------------------------------------------------


class _Early:
    __slots__ = ("proc", "started", "wall")

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.started = time.monotonic()
        self.wall = time.time()  # what the scan records as its start


_early: dict[tuple[str, ...], _Early] = {}
_early_lock = threading.Lock()


def prelaunch(commands: Iterable[list[str]]) -> int:
    """Start these runs now, for a scan that will ask for them. Returns how many started;
    the first that cannot be started stops the rest (the scan starts them itself)."""
    started = 0
    for args in commands:
        try:
            proc = spawn(args)
        except OSError:
            break
        _widen_stdout(proc)
        with _early_lock:
            previous = _early.pop(tuple(args), None)
            _early[tuple(args)] = _Early(proc)
        if previous is not None:
            kill_group(previous.proc)
        started += 1
    if started:
        atexit.register(discard)
    return started


def _widen_stdout(proc: subprocess.Popen[bytes]) -> None:
    """Let the early run's stdout pipe hold EARLY_PIPE_BYTES (Linux). Where that is refused
    (another system, or the user's pipe quota spent), it keeps its 64 KiB: the run then
    waits for the scan to read it, sooner, and nothing else changes."""
    import fcntl  # ~0.2 ms, once, after the first early run has started

    assert proc.stdout is not None
    try:
        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, EARLY_PIPE_BYTES)
    except (OSError, AttributeError):
        pass


def claim(args: list[str]) -> subprocess.Popen[bytes] | None:
    """The early run of exactly `args`, now the caller's; None if there is none (or it is
    too old, and killed)."""
    with _early_lock:
        early = _early.pop(tuple(args), None)
    if early is None:
        return None
    if time.monotonic() - early.started > MAX_AGE_SECONDS:
        kill_group(early.proc)
        return None
    return early.proc


def launched_at(args: list[str]) -> float | None:
    """When the early run of `args` started (seconds since the epoch), if there is one."""
    with _early_lock:
        early = _early.get(tuple(args))
    return None if early is None else early.wall


def discard(keep: Iterable[list[str]] = ()) -> None:
    """Kill the early runs not in `keep`."""
    wanted = {tuple(args) for args in keep}
    with _early_lock:
        dropped = [_early.pop(k) for k in list(_early) if k not in wanted]
    for early in dropped:
        kill_group(early.proc)


# ----- dying with the parent ----------------------------------------------------------------


@functools.cache
def _setpriv() -> str:
    """util-linux's setpriv if it is installed and has --pdeathsig (2.33+), else ""."""
    if not sys.platform.startswith("linux"):
        return ""
    # Where util-linux installs it (not a PATH search: shutil costs ~1 ms to load, before
    # the early runs).
    found = next((p for p in SETPRIV_PATHS if os.access(p, os.X_OK)), "")
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
    that is the thread running `run_process` (which waits for its child, so the two end
    together) or the main thread (an early run). A parent that died between fork and prctl
    is caught by the getppid check. None where prctl does not exist (not Linux): the
    cancel and timeout paths remain.
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
