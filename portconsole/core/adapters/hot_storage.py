"""The TinyDB storage of the store's projection cache: a manifest and shards (shards.py).

Callers hold the data dir's `DataLock`. Inside a transaction (`begin`) the thread that
opened it works on a private Projection, loaded shard by shard; `finish` hands it back for
the store to commit (journal first, then `Projection.save`). Outside one, reads get a
Projection sharing parsed shards with every other lock-free read of this process (they
must not change it: `read_private` is for a scratch copy).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinydb import Storage, TinyDB

from portconsole.core.adapters.projection import DERIVED_TABLES
from portconsole.core.adapters.shards import (
    SHARD_DIR,
    Projection,
    ShardCache,
    is_manifest,
)
from portconsole.core.adapters.storage import SharedTable, load_json_file, quarantine
from portconsole.core.errors import StoreError

log = logging.getLogger(__name__)


class ShardedStorage(Storage):
    """A TinyDB storage over the projection cache (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], **_: Any) -> None:
        self.path = Path(path)
        self.folder = self.path.parent / SHARD_DIR
        self._tx: dict[int, _TxData] = {}
        # Set by the store: checks a loaded projection against the journal, returns the
        # data to use and whether it had to be rebuilt.
        self.on_load: Callable[[Any], tuple[Any, bool]] | None = None
        # A read-only store's projection rebuilt in memory: every read answers from it.
        self.memory: Projection | None = None
        self._cache: ShardCache = {}

    # ------------------------------------------------------------------ loading

    def _manifest(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        return data if is_manifest(data) else None

    def load(self, shared: bool = False) -> Any:
        """What `hot.json` holds: a Projection, an older single-file table map (a cache to
        convert), or None (missing; damaged or of the wrong shape when a store checks it:
        a copy is kept beside it)."""
        try:
            data = load_json_file(self.path)
        except StoreError:
            if self.on_load is None:
                raise
            return None
        if is_manifest(data):
            if not shared:
                return Projection(self.folder, data)
            projection = Projection(self.folder, data, self._cache, reload=self._manifest)
            keep = {str(entry[0]) for entry in projection.files.values()}
            for name in [n for n in self._cache if n not in keep]:
                self._cache.pop(name, None)
            return projection
        return data if isinstance(data, dict) else None

    def load_checked(self) -> Any:
        """`load`, and None when a shard the manifest names is missing or short (damage:
        the store rebuilds; a copy of the manifest is kept beside it)."""
        data = self.load()
        if isinstance(data, Projection):
            missing = data.missing()
            if missing:
                copy = None
                try:
                    copy = quarantine(self.path)
                except OSError:
                    pass
                log.warning(
                    "projection %s names shard files that are missing or damaged (%s); "
                    "copy kept at %s",
                    self.path,
                    ", ".join(missing[:3]),
                    copy,
                )
                return None
        return data

    def load_tables(self) -> dict[str, Any] | None:
        """The whole projection as one table map (checks, a rebuild's copy), or None."""
        data = self.load()
        if isinstance(data, Projection):
            return data.tables()
        return data if isinstance(data, dict) else None

    def read_private(self) -> Projection | dict[str, Any] | None:
        """A projection of this caller's own, safe to change (and never written)."""
        data = self.load()
        return data if isinstance(data, Projection | dict) else None

    # ------------------------------------------------------------------ TinyDB

    def read(self) -> Any:
        if self.memory is not None:
            return self.memory
        tx = self._tx.get(threading.get_ident())
        if tx is None:
            return self.load(shared=True)
        if not tx.loaded:
            tx.loaded = True
            data = self.load_checked()
            rebuilt = False
            if self.on_load is not None:
                data, rebuilt = self.on_load(data)
            if not isinstance(data, Projection):
                tables = data if isinstance(data, dict) else {}
                # A rebuild's effects are the whole of it; an older single-file cache that
                # reflects the journal is only converted (no effects).
                tx.before = None if rebuilt else _copy_effect_tables(tables)
                data = Projection.from_tables(self.folder, tables)
                tx.dirty = tx.wholesale = rebuilt or bool(tables)
            elif rebuilt:
                tx.dirty = True
            tx.data = data
        return tx.data

    def write(self, data: Any) -> None:
        tx = self._tx.get(threading.get_ident())
        if tx is None or data is not tx.data:
            raise StoreError("the projection cache is written only inside a store transaction")
        tx.dirty = True

    def touch(self) -> None:
        """Mark the open transaction's projection for the commit to compare and write."""
        self.write(self.read())

    def begin(self) -> None:
        self._tx[threading.get_ident()] = _TxData()

    def stage(self, data: dict[str, Any], before: dict[str, Any] | None) -> None:
        """Replace the open transaction's data wholesale (a rebuild): `before` is what the
        effects are diffed from."""
        tx = self._tx[threading.get_ident()]
        tx.data = Projection.from_tables(self.folder, data)
        tx.before, tx.loaded, tx.dirty, tx.wholesale = before, True, True, True

    def finish(self) -> _TxData | None:
        return self._tx.pop(threading.get_ident(), None)

    def close(self) -> None:
        return None


def _copy_effect_tables(tables: dict[str, Any]) -> dict[str, Any]:
    return {
        name: json.loads(json.dumps(table))
        for name, table in tables.items()
        if name not in DERIVED_TABLES
    }


class _TxData:
    __slots__ = ("data", "before", "loaded", "dirty", "wholesale")

    def __init__(self) -> None:
        self.data: Projection | None = None
        # The effects' before image when the data was replaced wholesale (a rebuild:
        # None, diffed against nothing); otherwise the projection keeps what it read.
        self.before: dict[str, Any] | None = None
        self.loaded = False
        self.dirty = False
        self.wholesale = False  # replaced whole (a rebuild, a converted cache)

    def effects_and_changes(self) -> tuple[dict[str, Any] | None, dict[str, bytes | None]]:
        """The transaction's effects (diff_tables) and the shards to write."""
        from portconsole.core.adapters.projection import diff_tables

        assert self.data is not None
        changed = self.data.changed()
        if self.wholesale:
            after = {n: t for n, t in self.data.tables().items() if n not in DERIVED_TABLES}
            return diff_tables(self.before, after), changed
        before, after = self.data.effect_images(changed)
        return diff_tables(before, after), changed


def open_projection(path: Path) -> TinyDB:
    """The store's TinyDB over its projection cache (cache-free tables, see SharedTable).

    Hold the data dir's DataLock around every read-modify-write.
    """
    database = TinyDB(path, storage=ShardedStorage)
    database.table_class = SharedTable  # type: ignore[assignment]
    return database
