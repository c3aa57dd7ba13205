"""Crash-safe, multi-process-safe files for TinyDB.

Stock TinyDB rewrites its JSON file in place, so a crash can leave it truncated and two
writers corrupt it (FACTS.md: 3 of 3 trials). Here every write goes to a temp file in the
same folder, is fsynced and renamed over the original (then the folder is fsynced), so a
reader sees the old file or the new one, never half of one. `DataLock` serialises every
read-modify-write across processes (flock) and threads (RLock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from tinydb import Storage, TinyDB
from tinydb.table import Table

from portconsole.core.errors import StoreError
from portconsole.core.timeutil import utcnow

FILE_MODE = 0o600
DIR_MODE = 0o700


def keep_owner(fd: int, folder: Path) -> None:
    """Give a file root just created the owner of the folder it is in.

    `sudo portconsole scan` writing into alice's data dir must not leave files alice can no
    longer read (they are mode 0600): when running as root, a new file (or folder) takes
    the uid and gid of its folder. Not root: the kernel gives our own ids, nothing to do.
    """
    if os.geteuid() != 0:
        return
    owner = os.stat(folder)
    if (owner.st_uid, owner.st_gid) != (os.geteuid(), os.getegid()):
        os.fchown(fd, owner.st_uid, owner.st_gid)


def _keep_owner_of_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        keep_owner(fd, path.parent)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700 if missing; return it."""
    # Only a folder created here is made private: an existing one (say /tmp, for an
    # exported report) keeps the mode its owner gave it.
    if path.is_dir():
        return path
    missing = [path, *(p for p in path.parents if not p.exists())]
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    with contextlib.suppress(PermissionError):
        path.chmod(DIR_MODE)
    for created in reversed(missing):  # outermost first: each takes its parent's owner
        _keep_owner_of_path(created)
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file, fsync, rename, fsync folder. Mode 0600."""
    folder = path.parent
    ensure_private_dir(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, FILE_MODE)
        keep_owner(fd, folder)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(folder)


def cut_tail_aside(path: Path, keep: int, raw: bytes | None = None) -> Path:
    """Truncate `path` to `keep` bytes, first keeping the cut bytes in `<name>.torn-STAMP`
    beside it (bytes of an operation that never committed: never silently lost)."""
    data = path.read_bytes() if raw is None else raw
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.torn-{stamp}")
    atomic_write_bytes(aside, data[keep:])
    with path.open("r+b") as handle:
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return aside


def quarantine(path: Path) -> Path:
    """Keep a copy of a damaged file beside it (never silently overwrite it); return the copy."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    copy = path.with_name(f"{path.name}.corrupt-{stamp}")
    shutil.copy2(path, copy)
    return copy


def load_json_file(path: Path) -> Any:
    """Read and parse a JSON data file; a damaged file raises StoreError naming it.

    The damaged file is copied aside first and left in place, so nothing is lost and the
    next writer does not overwrite it without someone looking.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw.strip():
        copy = quarantine(path)
        raise StoreError(
            f"data file {path} is empty (damaged); a copy is kept at {copy}. "
            "Restore it from backup, or move it away to start that file afresh."
        )
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        copy = quarantine(path)
        raise StoreError(
            f"data file {path} is corrupt ({error.__class__.__name__}: {error}); a copy is kept "
            f"at {copy}. Restore it from backup, or move it away to start that file afresh."
        ) from None


class AtomicJSONStorage(Storage):
    """A TinyDB storage that reads the whole file and writes it back atomically.

    For single-file TinyDB data; callers hold a `DataLock` around any read-modify-write.
    The store's projection cache uses hot_storage.ShardedStorage instead (transactions,
    shard files written only when they change).
    """

    def __init__(self, path: str | os.PathLike[str], **_: Any) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        data = load_json_file(self.path)
        if data is not None and not isinstance(data, dict):
            copy = quarantine(self.path)
            raise StoreError(
                f"data file {self.path} does not hold a table map; a copy is kept at {copy}"
            )
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        atomic_write_bytes(self.path, encoded.encode("utf-8"))

    def close(self) -> None:
        return None


class TransactionHooks(Protocol):
    """What a data dir's transaction coordinator (the store) does around a lock hold."""

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class DataLock:
    """One lock for a data dir: exclusive across processes (flock) and threads (RLock).

    Re-entrant within a thread, so a transaction can call helpers that lock again. When a
    coordinator is attached (`hooks`), the outermost hold is one transaction: begun after
    the lock is taken, committed before it is released, rolled back if the body raised.
    `hold(transaction=False)` takes the lock for a read that must not begin one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self.hooks: TransactionHooks | None = None
        self._tx_thread: int | None = None

    @property
    def in_transaction(self) -> bool:
        """Whether the calling thread holds the lock inside a transaction."""
        return self._tx_thread == threading.get_ident()

    def _open_locked(self) -> int:
        ensure_private_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            keep_owner(fd, self.path.parent)
            mode = fcntl.LOCK_EX
        except PermissionError:
            # A read-only data dir (an assessor's snapshot): nobody can write, so a shared
            # lock on a read-only descriptor is enough for reads.
            fd = os.open(self.path, os.O_RDONLY)
            mode = fcntl.LOCK_SH
        except OSError as error:
            if error.errno != 30:  # EROFS
                raise
            fd = os.open(self.path, os.O_RDONLY)
            mode = fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def hold(self, transaction: bool = True) -> Iterator[None]:
        with self._thread_lock:
            outermost = self._depth == 0
            if outermost:
                self._fd = self._open_locked()
            self._depth += 1
            began = False
            try:
                if outermost and transaction and self.hooks is not None:
                    self.hooks.begin()
                    began = True
                    self._tx_thread = threading.get_ident()
                try:
                    yield
                except BaseException:
                    if began:
                        self.hooks.rollback()  # type: ignore[union-attr]
                    raise
                if began:
                    try:
                        self.hooks.commit()  # type: ignore[union-attr]
                    except BaseException:
                        self.hooks.rollback()  # type: ignore[union-attr]
                        raise
            finally:
                if began:
                    self._tx_thread = None
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None


class SharedTable(Table):
    """A TinyDB table safe to share between processes.

    Stock tables cache query results and the next document id in memory, so after another
    process writes the file they answer stale results, or insert over an id that process
    already used (ValueError). This table keeps no cache: every call reads the file.
    """

    def __init__(self, storage: Storage, name: str, **kwargs: Any) -> None:
        kwargs["cache_size"] = 0
        super().__init__(storage, name, **kwargs)
        self._in_update = False

    def _get_next_id(self) -> int:
        # Outside a write, the next id comes from the file (another process may have
        # inserted); inside one (insert_multiple), ids count up from the first.
        if not self._in_update:
            self._next_id = None
        return int(super()._get_next_id())

    def _update_table(self, updater: Callable[[dict[int, Any]], None]) -> None:
        self._in_update = True
        self._next_id = None
        try:
            super()._update_table(updater)
        finally:
            self._in_update = False
            self._next_id = None


def open_tinydb(path: Path) -> TinyDB:
    """A TinyDB over `path` with atomic writes and cache-free tables (see SharedTable).

    Hold the data dir's DataLock around every read-modify-write.
    """
    database = TinyDB(path, storage=AtomicJSONStorage)
    database.table_class = SharedTable  # type: ignore[assignment]
    return database
