"""Who is identifying ports right now: a mark per running -sV job in `<data_dir>/fingerprinting/`.

A cycle leaves -sV running in the background (services/fingerprint_after.py). Consoles are
usually followers of a daemon that leads, so the job runs in another process; every console
still says "identifying N ports" while it runs (an approval made then is of a port whose
service is the port table's guess). The journal is no place for that: it is run-time
state, as the leader lease is (adapters/leader.py), and follows the same rules:

- A job writes `<job id>.json` when it starts (atomically, mode 0600, as every data file:
  adapters/storage.py): its id, the marks' owner (a random id per process's marks object,
  so one process's own jobs are never counted twice), pid, host, label, ports, `started`
  and `deadline` (when its bounded -sV must have ended, see `run_seconds`). It removes the
  mark once its result is being written, and when it ends in any way (done, cancelled,
  failed; Monitor.close cancels every job).
- A mark is stale when its deadline has passed (wall clock: the marks are for people to
  read, as the lease's `expires_at`), or when it names this host and its pid no longer
  exists (kill -9). Stale marks are ignored, and removed by whoever notices (best effort;
  a read-only console leaves them). A damaged mark is ignored and left alone.
- Reading takes no lock and never blocks: one directory listing and a few small files, so
  a console can ask every poll. `version()` is the folder's stat, for the console's poll.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from msgspec import Struct

from portconsole.core.adapters.fingerprints import longest_run_seconds
from portconsole.core.adapters.leader import pid_exists
from portconsole.core.adapters.storage import atomic_write_bytes
from portconsole.core.timeutil import iso, parse_iso, utcnow

log = logging.getLogger(__name__)

FOLDER_NAME = "fingerprinting"
SUFFIX = ".json"
# A mark is a few hundred bytes; anything much bigger is not one (never read whole).
MAX_MARK_BYTES = 4096
# After its -sV, a job waits for its label's run lock and writes its result.
RECORD_SLACK_SECONDS = 60.0


def run_seconds(hosts: int, host_timeout: float) -> float:
    """The longest a job over `hosts` hosts may run: its bounded -sV
    (fingerprints.longest_run_seconds), then the recording of its result."""
    return longest_run_seconds(hosts, host_timeout) + RECORD_SLACK_SECONDS


class FingerprintMark(Struct, frozen=True):
    """One running -sV job, as its process announced it."""

    job_id: str
    owner: str
    pid: int
    host: str
    label: str
    ports: int
    started: datetime
    deadline: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "owner": self.owner,
            "pid": self.pid,
            "host": self.host,
            "label": self.label,
            "ports": self.ports,
            "started": iso(self.started),
            "deadline": iso(self.deadline),
        }

    @classmethod
    def from_json(cls, data: object) -> FingerprintMark | None:
        """The mark `data` describes, or None if it is not a well-formed one."""
        if not isinstance(data, dict):
            return None
        try:
            mark = cls(
                job_id=str(data["job_id"]),
                owner=str(data["owner"]),
                pid=int(data["pid"]),
                host=str(data["host"]),
                label=str(data.get("label", "")),
                ports=int(data["ports"]),
                started=parse_iso(str(data["started"])),
                deadline=parse_iso(str(data["deadline"])),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return mark if mark.ports >= 0 else None


class FingerprintMarks:
    """The marks of one process's jobs, and what it sees of everyone else's."""

    def __init__(
        self,
        data_dir: Path,
        host: str,
        *,
        now_fn: Callable[[], datetime] = utcnow,
        pid_alive: Callable[[int], bool] = pid_exists,
    ) -> None:
        self.folder = Path(data_dir) / FOLDER_NAME
        self.host = host
        self.owner = uuid.uuid4().hex
        self._now = now_fn
        self._pid_alive = pid_alive
        self._mine: set[str] = set()

    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}{SUFFIX}"

    def add(self, job_id: str, label: str, ports: int, seconds: float) -> FingerprintMark | None:
        """Announce a job of `ports` ports that ends within `seconds`; None if the mark could
        not be written (logged: the job runs all the same, only others do not see it)."""
        now = self._now()
        mark = FingerprintMark(
            job_id=job_id,
            owner=self.owner,
            pid=os.getpid(),
            host=self.host,
            label=label,
            ports=ports,
            started=now,
            deadline=now + timedelta(seconds=seconds),
        )
        try:
            atomic_write_bytes(self._path(job_id), json.dumps(mark.to_json()).encode("utf-8"))
        except OSError as error:
            log.warning("cannot mark fingerprint job %s in %s: %s", job_id, self.folder, error)
            return None
        self._mine.add(job_id)
        return mark

    def remove(self, job_id: str) -> None:
        """Take the job's mark down (idempotent, best effort)."""
        self._mine.discard(job_id)
        with contextlib.suppress(OSError):
            self._path(job_id).unlink()

    def remove_own(self) -> None:
        """Take down every mark this object wrote that is still up (the process closes)."""
        for job_id in list(self._mine):
            self.remove(job_id)

    def others(self, *, tidy: bool = True) -> list[FingerprintMark]:
        """The live marks of other processes' (other owners') jobs; stale ones are removed
        when `tidy` (see the module docstring)."""
        try:
            entries = list(os.scandir(self.folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        now = self._now()
        live = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(SUFFIX):
                continue  # an atomic write's temp file, or not a mark
            mark = _read_mark(Path(entry.path))
            if mark is None or mark.owner == self.owner:
                continue
            if self.stale(mark, now):
                if tidy:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                continue
            live.append(mark)
        return live

    def stale(self, mark: FingerprintMark, now: datetime | None = None) -> bool:
        """Past its deadline, or its process (on this host) is gone."""
        if (now or self._now()) >= mark.deadline:
            return True
        return mark.host == self.host and not self._pid_alive(mark.pid)

    def version(self) -> str:
        """A cheap token that changes whenever a mark is written or removed (any process)."""
        try:
            info = self.folder.stat()
        except OSError:
            return "none"
        return f"{info.st_ino}:{info.st_mtime_ns}"


def _read_mark(path: Path) -> FingerprintMark | None:
    # Not load_json_file: a mark is advisory, a damaged one is ignored, never quarantined.
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_MARK_BYTES + 1)
    except OSError:
        return None  # removed meanwhile (its job ended), or unreadable
    if len(raw) > MAX_MARK_BYTES:
        return None
    try:
        return FingerprintMark.from_json(json.loads(raw))
    except ValueError:
        return None
