"""The projection cache on disk: a small manifest (`hot.json`) naming immutable shard files.

`hot.json` is the commit point: `{"format": 2, "journal": {"seq", "hash"}, "files": {shard:
[file, size]}, "retired": {file: unix time}}`. Shards live in `hot/` (0700, files 0600):
one per table, except the derived `hosts` and `ports`, split by address block (an IPv4 /24,
an IPv6 /64: domain/changes.address_block), and `findings` and `outbox`, split by document id
range (ID_RANGE documents a shard: `findings.000003` holds ids 6144-8191). A shard file is
named by its shard and the sha256 of its bytes (`ports.127.0.3.<sha256[:16]>.json`) and
never rewritten in place. A table of an id-range kind still held as one shard (an earlier
version's) is read as it is and split by the first write that changes it.

A transaction loads only the shards it touches and writes only those whose bytes changed,
then the manifest (atomic rename). Files a manifest stops naming are `retired` with the time
and deleted by a later write two minutes on, so a lock-free reader that read the previous
manifest still finds them; a reader that finds one gone anyway re-reads the manifest.
Readers share parsed shards by file name (`ShardCache`): a new snapshot after a small change
parses only the changed shards. A shard missing, short or whose bytes do not match its name
is damage: the projection is rebuilt from the journal (see rebuild.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Container, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Literal, overload

from portconsole.core.adapters.projection import DERIVED_TABLES, POSITION_TABLE
from portconsole.core.adapters.storage import (
    FILE_MODE,
    atomic_write_bytes,
    ensure_private_dir,
    fsync_dir,
    keep_owner,
    quarantine,
)
from portconsole.core.domain.changes import address_block
from portconsole.core.errors import StoreError

MANIFEST_FORMAT = 2
SHARD_DIR = "hot"
# Derived tables kept by address block; every other table is one shard.
SHARDED_TABLES = ("hosts", "ports")
_KEY_FIELD = {"hosts": "address", "ports": "host"}
# Tables of many documents kept by document id range (a cycle changes a few findings: it
# writes, and readers re-parse, only their shards).
ID_TABLES = ("findings", "outbox")
ID_RANGE = 2048
# How long a file no manifest names is kept for lock-free readers of an older manifest.
RETIRE_SECONDS = 120.0
_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_FILE = re.compile(r"^(?P<shard>.+)\.(?P<digest>[0-9a-f]{16})\.json$")

ShardCache = dict[str, Any]  # file name -> parsed documents (immutable files)


def encode(docs: Any) -> bytes:
    return json.dumps(docs, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def shard_name(table: str, block: str | None = None) -> str:
    return table if block is None else f"{table}.{block}"


def table_of(shard: str) -> tuple[str, str | None]:
    head, dot, block = shard.partition(".")
    if dot and (head in SHARDED_TABLES or head in ID_TABLES):
        return head, block
    return shard, None


def id_block(doc_id: str) -> str:
    """The block of an id-range table's document (zero-padded: names sort as numbers)."""
    try:
        return f"{int(doc_id) // ID_RANGE:06d}"
    except ValueError:
        return "other"


def _split(table: str, docs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A sharded table's documents by block."""
    blocks: dict[str, dict[str, Any]] = {}
    if table in ID_TABLES:
        for key, doc in docs.items():
            blocks.setdefault(id_block(key), {})[key] = doc
        return blocks
    for doc in docs.values():
        address = str(doc[_KEY_FIELD[table]])
        blocks.setdefault(address_block(address), {})[address] = doc
    return blocks


def file_name(shard: str, data: bytes) -> str:
    stem = shard if _SAFE.match(shard) else "t-" + hashlib.sha256(shard.encode()).hexdigest()[:12]
    return f"{stem}.{hashlib.sha256(data).hexdigest()[:16]}.json"


def is_manifest(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and data.get("format") == MANIFEST_FORMAT
        and isinstance(data.get("files"), dict)
    )


class Projection(MutableMapping[str, Any]):
    """The projection's tables, each shard loaded on first access.

    A TinyDB table map (`proj[name]` reads a table, `proj[name] = docs` replaces it, as
    TinyDB's writes do) and a TableSource for HotTables (`live_block`, `live_table`: loaded
    for change in place, compared with their files at the commit). A private projection
    (a transaction's) keeps the bytes it read, the before image of the effects diff; a
    shared one (lock-free readers) takes parsed shards from a ShardCache and is never
    changed.
    """

    lazy = True

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any] | None = None,
        cache: ShardCache | None = None,
        reload: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        manifest = manifest or {}
        self.folder = folder
        self.files: dict[str, list[Any]] = dict(manifest.get("files") or {})
        position = manifest.get("journal")
        self.position: dict[str, Any] | None = (
            {"seq": position.get("seq"), "hash": position.get("hash")}
            if isinstance(position, dict)
            else None
        )
        self._cache = cache
        self._reload = reload
        self._loaded: dict[str, dict[str, Any]] = {}
        self._original: dict[str, bytes] = {}
        self._watch: set[str] = set()
        self._set: set[str] = set()
        self._removed: set[str] = set()

    @classmethod
    def from_tables(cls, folder: Path, tables: dict[str, Any]) -> Projection:
        """A projection holding `tables` whole (a rebuild, a converted cache): all to write."""
        projection = cls(folder)
        for name, docs in tables.items():
            projection[name] = docs if isinstance(docs, dict) else {}
        return projection

    # ------------------------------------------------------------------ loading

    def missing(self) -> list[str]:
        """Files the manifest names that are absent or of another size (damage)."""
        out = []
        for entry in self.files.values():
            try:
                size = (self.folder / str(entry[0])).stat().st_size
            except (FileNotFoundError, IndexError, TypeError):
                out.append(str(entry[0]) if entry else "?")
                continue
            if size != entry[1]:
                out.append(str(entry[0]))
        return out

    def _exists(self, shard: str) -> bool:
        return shard not in self._removed and (shard in self._loaded or shard in self.files)

    def _load(self, shard: str) -> dict[str, Any]:
        docs = self._loaded.get(shard)
        if docs is not None:
            return docs
        if shard not in self.files or shard in self._removed:
            docs = {}
        else:
            name = str(self.files[shard][0])
            cached = self._cache.get(name) if self._cache is not None else None
            if cached is not None:
                docs = cached
            else:
                raw = self._read(shard)
                docs = json.loads(raw)
                if self._cache is not None:
                    self._cache[str(self.files[shard][0])] = docs
                else:
                    self._original[shard] = raw
        self._loaded[shard] = docs
        return docs

    def _read(self, shard: str) -> bytes:
        for _ in range(3):
            name = str(self.files[shard][0])
            path = self.folder / name
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                # A lock-free reader of an older manifest: its files retired and went.
                manifest = self._reload() if self._reload is not None else None
                if manifest is None or shard not in (manifest.get("files") or {}):
                    break
                self.files[shard] = manifest["files"][shard]
                continue
            if file_name(shard, raw) != name:
                copy = None
                with contextlib.suppress(OSError):
                    copy = quarantine(path)
                    path.unlink()  # the next writer finds it missing and rebuilds
                raise StoreError(
                    f"projection shard {path} is damaged (a copy is kept at {copy}); the "
                    "projection is rebuilt from the journal by the next operation: retry"
                )
            return raw
        raise StoreError(
            f"projection shard {self.folder / str(self.files[shard][0])} is missing: "
            "the projection is rebuilt from the journal by the next operation"
        )

    def _keep_original(self, shard: str) -> None:
        if self._cache is None and shard in self.files and shard not in self._original:
            self._original[shard] = self._read(shard)

    # ------------------------------------------------------------------ TableSource

    def live_table(self, name: str) -> dict[str, Any]:
        docs = self._load(name)
        self._removed.discard(name)
        self._watch.add(name)
        return docs

    def live_block(
        self, table: str, block: str, create: bool, watch: bool = True
    ) -> dict[str, Any] | None:
        """A block's documents, to change in place (`watch`: compared with the file at the
        commit), or only to read."""
        shard = shard_name(table, block)
        if not self._exists(shard) and not create:
            return None
        docs = self._load(shard)
        if watch:
            self._removed.discard(shard)
            self._watch.add(shard)
        return docs

    def block_names(self, table: str) -> list[str]:
        return [str(table_of(s)[1]) for s in self._shards_of(table)]

    @property
    def shared(self) -> bool:
        """Whether this is a lock-free reader's projection (parsed shards shared, never
        changed) rather than a transaction's own."""
        return self._cache is not None

    @overload
    def table_shards(
        self, table: str, known: Container[str] = (), *, raw: Literal[False] = False
    ) -> Iterator[tuple[str, dict[str, Any] | None]]: ...

    @overload
    def table_shards(
        self, table: str, known: Container[str] = (), *, raw: Literal[True]
    ) -> Iterator[tuple[str, dict[str, Any] | bytes | None]]: ...

    def table_shards(
        self, table: str, known: Container[str] = (), *, raw: bool = False
    ) -> Iterator[tuple[str, dict[str, Any] | bytes | None]]:
        """A table's shards in order, each as (the file it was read from, its documents):
        a file name names the same documents for as long as it exists, so a reader may keep
        what it derived from them by that name. A shard not read from a file (changed in
        memory) is named by `id()` of its documents, prefixed `*`.

        For the reader that keeps its own form of the documents: a shard whose file is in
        `known` is not loaded (None), and the others are parsed without being kept (in a
        shared projection's cache or a transaction's shards: 100,000 findings held twice,
        as documents and as the reader's objects, took 300 MB more). One shard at a time: a reader that parses
        each as it comes holds one shard's documents, not the table's. `raw`: a shard read
        from its file comes as its bytes, for a reader that parses them its own way (one
        held parsed comes as documents still)."""
        for shard in self._shards_of(table):
            changed = shard in self._set or shard in self._watch or shard not in self.files
            if changed:
                loaded = self._load(shard)
                yield f"*{id(loaded)}", loaded
                continue
            if str(self.files[shard][0]) in known:
                yield str(self.files[shard][0]), None
                continue
            docs: dict[str, Any] | bytes | None = self._loaded.get(shard)
            if docs is None and self._cache is not None:
                docs = self._cache.get(str(self.files[shard][0]))
            if docs is None:
                # Not kept (a shared projection's cache, a transaction's shards); the read
                # may move to a newer file name.
                docs = self._read(shard) if raw else json.loads(self._read(shard))
            yield str(self.files[shard][0]), docs
            docs = None  # this shard's documents go before the next is read

    def split_whole(self, table: str) -> None:
        """Split an id-range table held as one shard (an earlier version's), in memory."""
        if table in ID_TABLES and self._exists(table):
            self[table] = self[table]

    # ------------------------------------------------------------------ table map

    def _shards_of(self, table: str) -> list[str]:
        if table in SHARDED_TABLES or table in ID_TABLES:
            prefix = table + "."
            shards = sorted(
                s for s in {*self.files, *self._loaded} if s.startswith(prefix) and self._exists(s)
            )
            if table in ID_TABLES and self._exists(table):
                shards.insert(0, table)  # held whole by an earlier version
            return shards
        return [table] if self._exists(table) else []

    def __iter__(self) -> Iterator[str]:
        names = {table_of(s)[0] for s in {*self.files, *self._loaded} if self._exists(s)}
        if self.position is not None:
            names.add(POSITION_TABLE)
        return iter(sorted(names))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, table: object) -> bool:
        if table == POSITION_TABLE:
            return self.position is not None
        return isinstance(table, str) and bool(self._shards_of(table))

    def __getitem__(self, table: str) -> dict[str, Any]:
        if table == POSITION_TABLE:
            if self.position is None:
                raise KeyError(table)
            return {"1": dict(self.position)}
        shards = self._shards_of(table)
        if not shards:
            raise KeyError(table)
        if len(shards) > 1 or shards[0] != table:
            merged: dict[str, Any] = {}
            for shard in shards:
                merged.update(self._load(shard))
            return merged
        return self._load(table)

    def __setitem__(self, table: str, docs: dict[str, Any]) -> None:
        if table == POSITION_TABLE:
            doc = docs.get("1") if isinstance(docs, dict) else None
            self.position = (
                {"seq": doc.get("seq"), "hash": doc.get("hash")} if isinstance(doc, dict) else None
            )
            return
        if table not in SHARDED_TABLES and table not in ID_TABLES:
            self._put(table, docs)
            return
        blocks = _split(table, docs)
        for shard in self._shards_of(table):
            block = table_of(shard)[1]
            if block is None or block not in blocks:
                self._drop(shard)
        for block, block_docs in blocks.items():
            self._put(shard_name(table, block), block_docs)

    def __delitem__(self, table: str) -> None:
        if table == POSITION_TABLE:
            self.position = None
            return
        shards = self._shards_of(table)
        if not shards:
            raise KeyError(table)
        for shard in shards:
            self._drop(shard)

    def _put(self, shard: str, docs: dict[str, Any]) -> None:
        self._keep_original(shard)
        self._loaded[shard] = docs
        self._set.add(shard)
        self._removed.discard(shard)

    def _drop(self, shard: str) -> None:
        self._keep_original(shard)
        self._loaded.pop(shard, None)
        self._set.discard(shard)
        self._removed.add(shard)

    # ------------------------------------------------------------------ changes

    def changed(self) -> dict[str, bytes | None]:
        """Shards whose bytes differ from their files: new bytes, or None when removed."""
        out: dict[str, bytes | None] = {s: None for s in self._removed if s in self.files}
        for shard in self._set | self._watch:
            if shard in self._removed:
                continue
            docs = self._loaded.get(shard, {})
            entry = self.files.get(shard)
            if entry is None and not docs and shard not in self._set:
                continue  # a block looked up for a host that stayed untracked
            data = encode(docs)
            if entry is not None and entry[0] == file_name(shard, data):
                continue
            out[shard] = data
        return out

    def effect_images(
        self, changed: dict[str, bytes | None]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Before and after of the tables whose changes are effects, for diff_tables."""
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        # Only the changed shards: a document never moves between shards of its table, so
        # those of unchanged shards are the same before and after.
        for shard in changed:
            name = table_of(shard)[0]
            if name in DERIVED_TABLES:
                continue
            raw = self._original.get(shard)
            before.setdefault(name, {}).update(json.loads(raw) if raw is not None else {})
            after.setdefault(name, {}).update(
                self._loaded.get(shard, {}) if self._exists(shard) else {}
            )
        return before, after

    def tables(self) -> dict[str, Any]:
        """Every table, whole (loads every shard): checks, comparisons, a rebuild's copy."""
        return {name: self[name] for name in self}

    def save(self, path: Path, changed: dict[str, bytes | None]) -> None:
        """Write the changed shards, then the manifest at `path` (the commit point)."""
        ensure_private_dir(self.folder)
        written: dict[str, list[Any]] = {}
        for shard, data in changed.items():
            if data is None:
                self.files.pop(shard, None)
                continue
            name = file_name(shard, data)
            _write_file(self.folder / name, data)
            written[shard] = [name, len(data)]
        if written:
            fsync_dir(self.folder)
        self.files.update(written)
        referenced = {str(entry[0]) for entry in self.files.values()}
        now = time.time()
        retired = _retired_before(path, referenced, now)
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "files": dict(sorted(self.files.items())),
            "retired": retired,
        }
        if self.position is not None:
            manifest["journal"] = self.position
        atomic_write_bytes(path, encode(manifest))
        _collect(self.folder, referenced | set(retired), now)
        self._original = {s: d for s, d in changed.items() if d is not None} | {
            s: d for s, d in self._original.items() if s not in changed
        }
        self._set.clear()
        self._watch.clear()
        self._removed.clear()


def _write_file(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        keep_owner(fd, path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _retired_before(path: Path, referenced: set[str], now: float) -> dict[str, float]:
    """The files the manifest on disk names that the new one does not, with when they were
    retired (kept RETIRE_SECONDS for readers of that manifest)."""
    try:
        old = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not is_manifest(old):
        return {}
    retired = {
        str(name): float(at)
        for name, at in (old.get("retired") or {}).items()
        if isinstance(at, int | float) and now - at < RETIRE_SECONDS and name not in referenced
    }
    for entry in old["files"].values():
        if isinstance(entry, list) and entry and str(entry[0]) not in referenced:
            retired.setdefault(str(entry[0]), now)
    return retired


def _collect(folder: Path, keep: set[str], now: float) -> None:
    """Delete shard files no manifest needs any more (retired long enough, or strays a
    crash or a rebuild left), and temp files of writes a kill cut short."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name in keep or not (
                _FILE.match(entry.name) or (entry.name[:1] == "." and entry.name.endswith(".tmp"))
            ):
                continue  # copies of damaged shards (`.corrupt-STAMP`) are kept
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > RETIRE_SECONDS:
                    os.unlink(entry.path)
