"""Lock-free reads of the findings table, sharing parsed findings by shard file.

The findings table is sharded by id range (shards.py) and a shard file never changes while
it exists, so the findings parsed from one are kept by its file name: after a cycle that
changed a few findings, a read parses only their shard. `all`/`open` here hand out those
objects themselves, for readers that do not change them (FindingBook's `shared_all` and
`shared_open`; its `all`/`open`/`get` answer copies).
"""

from __future__ import annotations

import bisect
import heapq
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from tinydb import TinyDB

from portconsole.core.adapters.shards import Projection
from portconsole.core.domain.finding import Finding, findings_from_stored
from portconsole.core.domain.model import severity_rank

TABLE = "findings"


def queue_key(finding: Finding) -> tuple[int, datetime, str]:
    """The queue's order: most severe first, then oldest."""
    return (-severity_rank(finding.severity), finding.first_seen, finding.id)


def queue_of(findings: Iterable[Finding]) -> list[Finding]:
    """The open findings, most severe first, then oldest."""
    return sorted((f for f in findings if f.is_open), key=queue_key)


class ParsedShard:
    """One shard file's findings, parsed once: all of them by id, and its open ones in
    queue order (the queue merges these: no sort of 100,000 findings, which would hold
    the GIL the console's UI thread needs for a tenth of a second)."""

    __slots__ = ("doc_ids", "findings", "queue")

    def __init__(self, docs: Mapping[str, Any] | bytes) -> None:
        """`docs`: the shard's documents, or its file's bytes (decoded in one pass when
        every document is in the form `to_json` writes, else each with `from_json`)."""
        found = findings_from_stored(docs) if isinstance(docs, bytes) else None
        if found is None:
            documents = json.loads(docs) if isinstance(docs, bytes) else docs
            found = {k: Finding.from_json(v) for k, v in documents.items()}
        self.doc_ids = tuple(sorted(int(k) for k in found))
        self.findings = tuple(found[str(k)] for k in self.doc_ids)
        self.queue = queue_of(self.findings)

    def get(self, doc_id: int) -> Finding | None:
        at = bisect.bisect_left(self.doc_ids, doc_id)
        found = at < len(self.doc_ids) and self.doc_ids[at] == doc_id
        return self.findings[at] if found else None


class SharedReads:
    """The parsed-shard cache of one TinyDB's findings table (see the module docstring)."""

    def __init__(self, db: TinyDB) -> None:
        self.db = db
        # Parsed findings by shard file name, and the last queue with the files it came from.
        self.parsed: dict[str, ParsedShard] = {}
        self._queue: tuple[tuple[str, ...], list[Finding]] = ((), [])

    def shards(self) -> dict[str, ParsedShard] | None:
        """The parsed findings by shard file, in id order (only files not met before are
        parsed); None inside a transaction (or a store rebuilt in memory)."""
        data = self.db.storage.read()
        if not isinstance(data, Projection) or not data.shared:
            return None
        known = self.parsed
        parsed: dict[str, ParsedShard] = {}
        for name, docs in data.table_shards(TABLE, known, raw=True):
            found = known.get(name) if docs is None else None
            parsed[name] = found if found is not None else ParsedShard(docs or {})
        self.parsed = parsed
        return parsed

    def all(self) -> list[Finding] | None:
        """Every finding, oldest id first (shared objects), or None as `shards`."""
        parsed = self.shards()
        if parsed is None:
            return None
        return [f for shard in parsed.values() for f in shard.findings]

    def open(self) -> list[Finding] | None:
        """The queue (shared objects), merged from the shards' own queues again only when a
        shard file changed; None as `shards`."""
        parsed = self.shards()
        if parsed is None:
            return None
        names = tuple(parsed)
        known, queue = self._queue
        if names != known:
            queue = list(heapq.merge(*(p.queue for p in parsed.values()), key=queue_key))
            self._queue = (names, queue)
        return list(queue)

    def find(self, number: int) -> tuple[bool, Finding | None]:
        """(whether this is a shared read, the finding numbered `number` if any): the
        parsed shards, not the table (a table read would parse every shard again)."""
        parsed = self.shards()
        if parsed is None:
            return False, None
        for shard in parsed.values():
            finding = shard.get(number)
            if finding is not None:
                return True, finding
        return True, None
