"""One scan leader per data dir: whoever holds an flock on `<data_dir>/leader.lock`.

Several processes share a data dir (a daemon, consoles over SSH). Only the leader runs
scheduled scans; the others show who leads. The kernel releases an flock when its holder
dies (even on SIGKILL), so a follower that calls `try_acquire()` once per tick takes over
within one tick of the leader's death, with no lease arithmetic that clocks could break.

The leader describes itself in `<data_dir>/leader.json` (pid, user, host, origin, since,
heartbeat), written atomically. Only the flock holder writes that file, so it needs no
other lock. The heartbeat cannot detect a hung leader and take over from it (the kernel
keeps its lock); it lets followers *show* that the leader stopped responding (`stale`).

flock belongs to an open file description, so two LeaderElection objects, even in one
process, never both lead. The lock fd is not inherited by children (os.open makes it
non-inheritable), so an nmap child cannot keep a dead leader's lock alive.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from portconsole.core.adapters.storage import FILE_MODE, atomic_write_bytes, ensure_private_dir
from portconsole.core.identity import Actor
from portconsole.core.timeutil import iso, parse_iso, utcnow

LOCK_NAME = "leader.lock"
INFO_NAME = "leader.json"


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """Who leads. `alive`: the lock is held right now. `stale`: its heartbeat is old."""

    pid: int
    user: str
    host: str
    origin: str
    since: datetime
    heartbeat: datetime
    alive: bool
    stale: bool
    is_self: bool = False
    sudo_user: str | None = None
    ssh_client: str | None = None

    def describe(self) -> str:
        """One line for a status bar: "pid 4242 alice@db1 (daemon) since 2026-05-27T10:00:00Z"."""
        text = f"pid {self.pid} {self.user}@{self.host} ({self.origin}) since {iso(self.since)}"
        if not self.alive:
            text += " [gone]"
        elif self.stale:
            text += f" [not responding since {iso(self.heartbeat)}]"
        return text


class LeaderElection:
    """Leader election for one process over one data dir.

    `try_acquire()` never blocks; call it once per tick. While leading, call `heartbeat()`
    (or `start_heartbeat()`) more often than `stale_after` seconds.
    """

    def __init__(
        self,
        data_dir: Path,
        actor: Actor,
        stale_after: float,
        *,
        now_fn: Callable[[], datetime] = utcnow,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.lock_path = self.data_dir / LOCK_NAME
        self.info_path = self.data_dir / INFO_NAME
        self.actor = actor
        self.stale_after = float(stale_after)
        self._now = now_fn
        self._fd: int | None = None
        self._since: datetime | None = None
        self._mutex = threading.Lock()
        self._beat_stop: threading.Event | None = None
        self._beat_thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        return self._since is not None

    def try_acquire(self) -> bool:
        """Take the lead if nobody holds it; True if this object leads (already or now)."""
        with self._mutex:
            if self._since is not None:
                return True
            ensure_private_dir(self.data_dir)
            for _attempt in range(3):
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as error:
                    os.close(fd)
                    if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        return False
                    raise
                # Someone may have replaced the lock file between open and flock; a lock on
                # an unlinked inode excludes nobody, so retry on the current file.
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    self._fd = fd
                    break
                os.close(fd)
            else:
                return False
            self._since = self._now()
            self._write_info()
            return True

    def heartbeat(self) -> None:
        """Refresh leader.json's heartbeat (no-op unless leading)."""
        with self._mutex:
            if self._since is not None:
                self._write_info()

    def start_heartbeat(self, every: float) -> None:
        """Beat from a background thread, so a long scan does not make the leader look hung."""
        if self._beat_thread is not None:
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                with contextlib.suppress(OSError):
                    self.heartbeat()

        self._beat_stop = stop
        self._beat_thread = threading.Thread(target=beat, name="leader-heartbeat", daemon=True)
        self._beat_thread.start()

    def release(self) -> None:
        """Give up the lead (idempotent). leader.json is marked released while still held."""
        if self._beat_stop is not None and self._beat_thread is not None:
            self._beat_stop.set()
            self._beat_thread.join(timeout=2)
            self._beat_stop = self._beat_thread = None
        with self._mutex:
            if self._fd is None:
                return
            if self._since is not None:
                with contextlib.suppress(OSError):
                    self._write_info(released=True)
            self._since = None
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def current(self) -> LeaderInfo | None:
        """Who leads now, or None if nobody does (no live holder of the lock)."""
        if self.is_leader:
            alive = True
        else:
            alive = self._lock_held_elsewhere()
        if not alive:
            # The kernel dropped a dead leader's lock; any leader.json left is history.
            return None
        info = _read_info(self.info_path)
        if info is None:
            return None
        try:
            since = parse_iso(str(info["since"]))
            heartbeat = parse_iso(str(info.get("heartbeat") or info["since"]))
            pid = int(info["pid"])
        except (KeyError, TypeError, ValueError):
            return None
        age = (self._now() - heartbeat).total_seconds()
        return LeaderInfo(
            pid=pid,
            user=str(info.get("user", "?")),
            host=str(info.get("host", "?")),
            origin=str(info.get("origin", "?")),
            since=since,
            heartbeat=heartbeat,
            alive=alive,
            stale=age > self.stale_after,
            is_self=self.is_leader,
            sudo_user=info.get("sudo_user"),
            ssh_client=info.get("ssh_client"),
        )

    def _lock_held_elsewhere(self) -> bool:
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def _write_info(self, released: bool = False) -> None:
        assert self._since is not None
        record: dict[str, Any] = {
            "pid": os.getpid(),
            "user": self.actor.user,
            "sudo_user": self.actor.sudo_user,
            "ssh_client": self.actor.ssh_client,
            "host": self.actor.host,
            "origin": self.actor.origin,
            "since": iso(self._since),
            "heartbeat": iso(self._now()),
        }
        if released:
            record["released_at"] = iso(self._now())
        atomic_write_bytes(self.info_path, json.dumps(record, sort_keys=True).encode("utf-8"))

    def __enter__(self) -> LeaderElection:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _read_info(path: Path) -> dict[str, Any] | None:
    # Not load_json_file: leader.json is advisory, a damaged one is ignored, not quarantined.
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None
