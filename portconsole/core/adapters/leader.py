"""One scan leader per data dir: a lease in `<data_dir>/leader.json` that the leader renews.

Several processes share a data dir (a daemon, consoles over SSH). Only the leader runs
scheduled scans; the others follow and show who leads. The rule:

- The lease names one holder (a random id per election object, with its pid, user, host,
  tty, origin and settings fingerprint), a `term` that grows with each new holder, a
  `renewals` counter, and `renewed_at` / `expires_at` for people to read.
- Every read-check-write of the lease happens under an flock on `<data_dir>/leader.lock`,
  held only for that (milliseconds), so two processes never both write themselves in: the
  file names exactly one holder at any moment. A process stopped inside that window holds
  the flock until continued, as with the store's data lock.
- The holder renews every `lease_seconds / 3` (from a background thread, so a long scan
  does not lose the lease). A holder that stops renewing (stopped with SIGSTOP, hung on a
  dead disk, killed) loses the lease `lease_seconds` after its last renewal, and the next
  follower that tries takes over (a new term). A holder that quits releases the lease at
  once (`released_at`), so a follower takes over at its next try.
- Expiry is judged on the follower's monotonic clock, never by comparing wall clocks: a
  follower takes over only after it has seen the same lease (holder, term, renewals)
  unchanged for `lease_seconds`. A wall-clock step on either side cannot shorten that. On
  one host, a holder whose pid no longer exists has lost the lease at once (kill -9).
- The leader trusts its own lead only until `lease_seconds` after it *started* its last
  successful renewal (monotonic). Past that (it was stopped, or renewals failed), it must
  renew under the flock before acting; if the lease names someone else it steps down at
  once (`lost` says to whom), before any scan. Since a follower's clock starts after that
  renewal was written, the leader's trust always ends before a follower may take over.

Who may *take* a free lease is the caller's rule (`eligible`, see Monitor.try_lead: only a
process with the data dir's settings fingerprint). The file never blocks a reader: a
damaged lease is treated as free (the flock still serialises who writes the next one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from msgspec import Struct

from portconsole.core.adapters.storage import (
    FILE_MODE,
    atomic_write_bytes,
    ensure_private_dir,
    keep_owner,
)
from portconsole.core.identity import Actor
from portconsole.core.timeutil import iso, parse_iso, utcnow

LOCK_NAME = "leader.lock"
INFO_NAME = "leader.json"
# How long to wait for the lease's flock before giving up this try (it is held for
# milliseconds; longer means a process was stopped inside the window).
LOCK_WAIT = 2.0


def this_tty() -> str | None:
    """The controlling terminal of this process as `pts/3`, or None (a daemon)."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                name = os.ttyname(fd)
                return name.removeprefix("/dev/")
    return None


class LeaderInfo(Struct, frozen=True):
    """Who holds the lease. `alive`: not expired by this process's judgement. `stale`: its
    renewal is overdue by the wall clock (shown, never acted upon)."""

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
    tty: str | None = None
    fingerprint: str = ""
    term: int = 0
    expires_at: datetime | None = None

    def who(self) -> str:
        """`alice@db1 pid 4242 tty pts/3` (`no tty` for a daemon)."""
        tty = f"tty {self.tty}" if self.tty else "no tty"
        return f"{self.user}@{self.host} pid {self.pid} {tty}"

    def describe(self) -> str:
        """One line: "alice@db1 pid 4242 tty pts/3 (daemon) since 2026-05-27T10:00:00Z"."""
        text = f"{self.who()} ({self.origin}) since {iso(self.since)}"
        if not self.alive:
            text += f" [lease lapsed: last renewed {iso(self.heartbeat)}]"
        elif self.stale:
            text += f" [not renewing since {iso(self.heartbeat)}]"
        return text


class LeaderElection:
    """The lease for one process over one data dir.

    Call `try_acquire()` once per tick (never blocks for long); it takes a free lease,
    renews one already held, or says False. `start_heartbeat()` renews in the background.
    """

    def __init__(
        self,
        data_dir: Path,
        actor: Actor,
        lease_seconds: float,
        *,
        fingerprint: str = "",
        now_fn: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        tty: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.lock_path = self.data_dir / LOCK_NAME
        self.info_path = self.data_dir / INFO_NAME
        self.actor = actor
        self.lease_seconds = float(lease_seconds)
        self.fingerprint = fingerprint
        self.holder_id = uuid.uuid4().hex
        self.tty = tty if tty is not None else this_tty()
        self._now = now_fn
        self._mono = monotonic
        self._mutex = threading.RLock()
        self._term: int | None = None
        self._valid_until = 0.0
        self._since: datetime | None = None
        # What a follower last saw of someone else's lease, and since when (monotonic).
        self._seen: tuple[str, int, int] | None = None
        self._seen_at = 0.0
        self.lost: LeaderInfo | None = None  # set when this process was displaced
        self._lost_pending = False
        self.took_over: dict[str, Any] | None = None  # the lapsed lease replaced, once
        self._beat_stop: threading.Event | None = None
        self._beat_thread: threading.Thread | None = None

    # -- state -------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Holding the lease and trusted to (renewed within `lease_seconds`, monotonic)."""
        return self._term is not None and self._mono() < self._valid_until

    @property
    def holds(self) -> bool:
        """Believes it holds the lease (maybe past its trust: renew before acting)."""
        return self._term is not None

    def try_acquire(self, eligible: Callable[[dict[str, Any] | None], bool] | None = None) -> bool:
        """Keep (renew) or take the lease; True if this object leads now.

        `eligible(lapsed_record_or_None)` is asked only before taking a free lease.
        """
        with self._mutex:
            started = self._mono()
            if self._term is not None and started < self._valid_until - self.lease_seconds * 2 / 3:
                return True  # renewed less than a third of a lease ago
            try:
                with self._locked():
                    return self._acquire_locked(started, eligible)
            except TimeoutError:
                return self.is_leader

    def _acquire_locked(
        self, started: float, eligible: Callable[[dict[str, Any] | None], bool] | None
    ) -> bool:
        record = _read_record(self.info_path)
        if self._term is not None:
            if (
                record is not None
                and record.get("holder") == self.holder_id
                and record.get("released_at") is None
            ):
                self._write(record, renew=True)
                self._valid_until = started + self.lease_seconds
                return True
            # Someone else holds it now: this process was stopped or hung past its lease.
            self._step_down(record)
            return False
        if record is not None and not self._free(record, started):
            return False
        if eligible is not None and not eligible(record):
            return False
        previous = record if record is not None and record.get("released_at") is None else None
        self.took_over = previous
        term = int(record.get("term", 0)) + 1 if record is not None else 1
        self._since = self._now()
        self._term = term
        self.lost = None
        self._write({"term": term, "renewals": 0}, renew=False)
        self._valid_until = started + self.lease_seconds
        return True

    def _free(self, record: dict[str, Any], now_mono: float) -> bool:
        """Is someone else's lease free for the taking (released, dead or lapsed)?"""
        if record.get("released_at") is not None:
            return True
        if record.get("host") == self.actor.host and not pid_exists(record.get("pid")):
            return True
        key = (
            str(record.get("holder")),
            int(record.get("term", 0)),
            int(record.get("renewals", 0)),
        )
        if key != self._seen:
            self._seen, self._seen_at = key, now_mono
            return False
        return now_mono - self._seen_at >= self.lease_seconds

    def _step_down(self, record: dict[str, Any] | None) -> None:
        self._term = None
        self._since = None
        self._valid_until = 0.0
        self.lost = _info(record, self, now_mono=self._mono()) if record else None
        self._lost_pending = True

    def take_lost(self) -> tuple[bool, LeaderInfo | None]:
        """(True, who took over) once after this process was displaced, else (False, None)."""
        with self._mutex:
            pending, self._lost_pending = self._lost_pending, False
            return pending, self.lost if pending else None

    def _write(self, base: dict[str, Any], *, renew: bool) -> None:
        now = self._now()
        assert self._since is not None
        record: dict[str, Any] = {
            "holder": self.holder_id,
            "term": int(base.get("term", self._term or 0)),
            "renewals": int(base.get("renewals", 0)) + (1 if renew else 0),
            "pid": os.getpid(),
            "user": self.actor.user,
            "sudo_user": self.actor.sudo_user,
            "ssh_client": self.actor.ssh_client,
            "host": self.actor.host,
            "tty": self.tty,
            "origin": self.actor.origin,
            "fingerprint": self.fingerprint,
            "since": iso(self._since),
            "renewed_at": iso(now),
            "expires_at": iso(now + timedelta(seconds=self.lease_seconds)),
            "lease_seconds": self.lease_seconds,
        }
        atomic_write_bytes(self.info_path, json.dumps(record, sort_keys=True).encode("utf-8"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        ensure_private_dir(self.data_dir)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        keep_owner(fd, self.data_dir)
        try:
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise TimeoutError("the lease lock is held") from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing the description drops the flock

    # -- renewal and release -----------------------------------------------------------

    def heartbeat(self) -> bool:
        """Renew now if holding the lease; True while still leading."""
        with self._mutex:
            if self._term is None:
                return False
            started = self._mono()
            try:
                with self._locked():
                    return self._acquire_locked(started, lambda _record: False)
            except TimeoutError:
                return self.is_leader

    def start_heartbeat(self, every: float | None = None) -> None:
        """Renew from a background thread every `every` s (default a third of the lease)."""
        if self._beat_thread is not None:
            return
        stop = threading.Event()
        period = every if every is not None else self.lease_seconds / 3

        def beat() -> None:
            while not stop.wait(period):
                with contextlib.suppress(OSError):
                    if not self.heartbeat():
                        return

        self._beat_stop = stop
        self._beat_thread = threading.Thread(target=beat, name="leader-lease", daemon=True)
        self._beat_thread.start()

    def _stop_heartbeat(self) -> None:
        if self._beat_stop is not None and self._beat_thread is not None:
            self._beat_stop.set()
            if self._beat_thread is not threading.current_thread():
                self._beat_thread.join(timeout=2)
        self._beat_stop = self._beat_thread = None

    def release(self) -> bool:
        """Give the lease up (idempotent); True if this object held it until now."""
        self._stop_heartbeat()
        with self._mutex:
            if self._term is None:
                return False
            released = False
            with contextlib.suppress(OSError, TimeoutError), self._locked():
                record = _read_record(self.info_path)
                if record is not None and record.get("holder") == self.holder_id:
                    record["released_at"] = iso(self._now())
                    atomic_write_bytes(
                        self.info_path, json.dumps(record, sort_keys=True).encode("utf-8")
                    )
                    released = True
            self._term = None
            self._since = None
            self._valid_until = 0.0
            return released

    # -- reading -----------------------------------------------------------------------

    def current(self) -> LeaderInfo | None:
        """Who holds the lease, or None when nobody does (released or never taken)."""
        record = _read_record(self.info_path)
        if record is None or record.get("released_at") is not None:
            return None
        with self._mutex:
            if record.get("holder") != self.holder_id:
                # Watching counts as seeing: a console's header also times a lapse.
                key = (
                    str(record.get("holder")),
                    int(record.get("term", 0)),
                    int(record.get("renewals", 0)),
                )
                if key != self._seen:
                    self._seen, self._seen_at = key, self._mono()
            return _info(record, self, now_mono=self._mono())

    def __enter__(self) -> LeaderElection:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def pid_exists(pid: object) -> bool:
    """Whether a process with this pid runs on this host (one of another user's counts)."""
    try:
        os.kill(int(pid), 0)  # type: ignore[call-overload]
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _info(
    record: dict[str, Any], election: LeaderElection, *, now_mono: float
) -> LeaderInfo | None:
    try:
        since = parse_iso(str(record["since"]))
        renewed = parse_iso(str(record.get("renewed_at") or record["since"]))
        expires = parse_iso(str(record["expires_at"])) if record.get("expires_at") else None
        pid = int(record["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    is_self = record.get("holder") == election.holder_id
    if is_self:
        alive = election.is_leader
    elif record.get("host") == election.actor.host and not pid_exists(pid):
        alive = False
    else:
        key = (
            str(record.get("holder")),
            int(record.get("term", 0)),
            int(record.get("renewals", 0)),
        )
        alive = key != election._seen or now_mono - election._seen_at < election.lease_seconds
    stale = expires is not None and election._now() > expires
    return LeaderInfo(
        pid=pid,
        user=str(record.get("user", "?")),
        host=str(record.get("host", "?")),
        origin=str(record.get("origin", "?")),
        since=since,
        heartbeat=renewed,
        alive=alive,
        stale=stale,
        is_self=is_self,
        sudo_user=record.get("sudo_user"),
        ssh_client=record.get("ssh_client"),
        tty=record.get("tty"),
        fingerprint=str(record.get("fingerprint") or ""),
        term=int(record.get("term", 0)),
        expires_at=expires,
    )


def _read_record(path: Path) -> dict[str, Any] | None:
    # Not load_json_file: the lease is advisory, a damaged one is free, not quarantined.
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("holder") else None
