"""The finding documents a read-modify-write touches, and the key index that finds them.

Inside a store transaction the findings table is a Projection's id-range shards
(shards.py): `ShardDocs` reads and writes only the shards of the findings it is asked for
(a transition: its finding's shard; new findings: the last id shard), so a write to a
100,000-finding store neither loads nor re-encodes the other shards. Detection needs the
newest finding per key (kind + host + port + proto) and the findings a scan may resolve:
`ShardKeys` holds those for one shard, derived from its documents (or from the findings
the shared reads parsed from the same file) and kept by the shard's file name in a
`KeyIndex`: a file never changes while it exists, so an entry is stale only when its shard
was rewritten under a new name, and is then derived again from that one shard.

`TableDocs` does the same over a plain TinyDB table (a single-file book): it reads the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from msgspec import Struct, field
from tinydb.table import Document, Table

from portconsole.core.adapters.findings_reads import TABLE, ParsedShard
from portconsole.core.adapters.hot_storage import ShardedStorage
from portconsole.core.adapters.shards import Projection, id_block
from portconsole.core.domain.finding import (
    APPROVED,
    RESOLVABLE_STATUSES,
    Finding,
    finding_key,
)
from portconsole.core.domain.record_ids import RecordIds

IDS = RecordIds("F-")

# A finding a scan may resolve: (number, key, kind, host, port, proto, status).
Resolvable = tuple[int, str, str, str, int | None, str | None, str]


class ShardKeys(Struct):
    """One shard's findings as detection matches them: the newest number per key, the
    highest number, the findings in a resolvable status (in id order), and the approved
    ones by the approval they were approved under (a revocation reopens those)."""

    latest: dict[str, int] = field(default_factory=dict)
    top: int = 0
    resolvable: list[Resolvable] = field(default_factory=list)
    approved: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def of_docs(cls, docs: Mapping[str, Any]) -> ShardKeys:
        keys = cls()
        for number in sorted(int(n) for n in docs):
            doc = docs[str(number)]
            keys._add(number, doc["kind"], doc["host"], doc["port"], doc["proto"], doc["status"])
            if doc["status"] == APPROVED:
                keys.approved.setdefault(str(doc.get("approval_id") or ""), []).append(number)
        return keys

    @classmethod
    def of_findings(cls, findings: Iterable[Finding]) -> ShardKeys:
        keys = cls()
        for f in findings:
            number = IDS.number(f.id) or 0
            keys._add(number, f.kind, f.host, f.port, f.proto, f.status)
            if f.status == APPROVED:
                keys.approved.setdefault(f.approval_id, []).append(number)
        return keys

    def _add(
        self, number: int, kind: str, host: str, port: int | None, proto: str | None, status: str
    ) -> None:
        key = finding_key(kind, host, port, proto)
        self.latest[key] = number  # in id order: the newest finding per key stays
        self.top = max(self.top, number)
        if status in RESOLVABLE_STATUSES:
            self.resolvable.append((number, key, kind, host, port, proto, status))


class KeyIndex:
    """ShardKeys by shard file name (see the module docstring)."""

    def __init__(self) -> None:
        self.by_file: dict[str, ShardKeys] = {}


class TableDocs:
    """A plain TinyDB findings table (one file): every read reads the table."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._docs: dict[int, Document] | None = None

    def find(self, number: int) -> Finding | None:
        if self._docs is not None:
            found: Any = self._docs.get(number)
        else:
            found = self.table.get(doc_id=number)
        return Finding.from_json(found) if isinstance(found, dict) else None

    def keys(self) -> list[ShardKeys]:
        self._docs = {d.doc_id: d for d in self.table.all()}
        return [ShardKeys.of_docs({str(n): d for n, d in self._docs.items()})]

    def write(self, changed: Iterable[Finding], created: Iterable[Finding] = ()) -> None:
        """Rewrite the changed findings in one file write, then insert the new ones."""
        by_id = {IDS.number(f.id) or 0: f.to_json() for f in changed}
        if by_id:

            def rewrite(doc: dict[str, Any]) -> None:
                fresh = by_id[IDS.number(doc["id"]) or 0]
                doc.clear()
                doc.update(fresh)

            self.table.update(rewrite, doc_ids=list(by_id))  # type: ignore[arg-type]
        new = [Document(f.to_json(), doc_id=IDS.number(f.id) or 0) for f in created]
        if new:
            self.table.insert_multiple(new)
        self._docs = None


class ShardDocs:
    """A transaction's findings, shard by shard (see the module docstring)."""

    def __init__(
        self,
        projection: Projection,
        storage: ShardedStorage,
        index: KeyIndex,
        parsed: Mapping[str, ParsedShard],
    ) -> None:
        self.projection = projection
        self.storage = storage
        self.index = index
        self.parsed = parsed
        projection.split_whole(TABLE)  # written only if the transaction writes

    def find(self, number: int) -> Finding | None:
        docs = self.projection.live_block(TABLE, id_block(str(number)), False, watch=False)
        doc = docs.get(str(number)) if docs is not None else None
        return Finding.from_json(doc) if doc is not None else None

    def keys(self) -> list[ShardKeys]:
        """Every shard's ShardKeys in id order: from the index, else derived from the
        findings the shared reads parsed from that file, else from its documents."""
        known = self.index.by_file
        out: list[ShardKeys] = []
        kept: dict[str, ShardKeys] = {}
        for name, docs in self.projection.table_shards(TABLE, known.keys() | self.parsed.keys()):
            if docs is not None and name.startswith("*"):
                out.append(ShardKeys.of_docs(docs))  # changed in this transaction
                continue
            keys = known.get(name)
            if keys is None:
                parsed = self.parsed.get(name) if docs is None else None
                keys = (
                    ShardKeys.of_findings(parsed.findings)
                    if parsed is not None
                    else ShardKeys.of_docs(docs or {})
                )
            kept[name] = keys
            out.append(keys)
        self.index.by_file = kept
        return out

    def write(self, changed: Iterable[Finding], created: Iterable[Finding] = ()) -> None:
        """Put each finding's document into its id shard (a new one: the last shard, or a
        new shard past it)."""
        wrote = False
        for finding in (*changed, *created):
            number = IDS.number(finding.id) or 0
            docs = self.projection.live_block(TABLE, id_block(str(number)), create=True)
            assert docs is not None
            docs[str(number)] = finding.to_json()
            wrote = True
        if wrote:
            self.storage.touch()  # the transaction's projection: compared and written


FindingDocs = TableDocs | ShardDocs


def approved_under(docs: FindingDocs, approval_id: str) -> list[Finding]:
    """The findings approved under `approval_id`, oldest first: only their shards read."""
    numbers = sorted(n for keys in docs.keys() for n in keys.approved.get(approval_id, ()))
    return [f for f in map(docs.find, numbers) if f is not None]


def resolvable_on(
    docs: FindingDocs, kind: str, host: str, port: int | None, proto: str | None
) -> list[Finding]:
    """The findings of `kind` on host/port/proto in a resolvable status, oldest first."""
    numbers = [
        r[0] for keys in docs.keys() for r in keys.resolvable if r[2:6] == (kind, host, port, proto)
    ]
    return [f for f in map(docs.find, numbers) if f is not None]
