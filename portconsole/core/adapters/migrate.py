"""Convert a data dir written before the journal existed, once, keeping copies.

Before: the audit chain lived in `audit/YYYY-MM[.N].json` (a JSON document per segment,
rewritten on each append, with `head.json`), and `hot.json` was the only copy of approvals,
findings and the outbox, and the commit point of the scan history.

After: the old events are carried into the journal unchanged (their hashes and links still
verify), followed by one `store.migrated` event whose effects are the whole of the old
tables and whose chunks vouch for the scan history as it stood. The old `audit/` folder is
renamed `audit.pre-journal-<stamp>` and `hot.json` is copied to
`hot.json.pre-journal-<stamp>`: nothing is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portconsole.core.adapters.journal import HEAD_FILE, JOURNAL_DIR, AuditEntry
from portconsole.core.adapters.projection import position_of, well_formed
from portconsole.core.adapters.storage import atomic_write_bytes, ensure_private_dir, fsync_dir
from portconsole.core.domain.chain import canonical_json
from portconsole.core.errors import StoreError
from portconsole.core.identity import Actor
from portconsole.core.timeutil import utcnow

if TYPE_CHECKING:
    from portconsole.core.adapters.store import Store

OLD_AUDIT_DIR = "audit"
_OLD_SEGMENT = re.compile(r"^(\d{4}-\d{2})(?:\.(\d+))?\.json$")


def _old_segments(folder: Path) -> list[tuple[str, int, Path]]:
    found = []
    for path in folder.iterdir():
        match = _OLD_SEGMENT.match(path.name)
        if match:
            found.append((match.group(1), int(match.group(2) or 0), path))
    return sorted(found)


def needs_migration(data_dir: Path, data: Any = None) -> bool:
    """A data dir of the earlier layout: no journal, and an old audit folder or an old cache."""
    if (data_dir / JOURNAL_DIR).exists():
        return False
    if (data_dir / OLD_AUDIT_DIR / HEAD_FILE).exists():
        return True
    return bool(well_formed(data) and data and position_of(data) is None and _has_tables(data))


def _has_tables(data: dict[str, Any]) -> bool:
    return any(name not in ("journal",) and table for name, table in data.items())


def migrate(store: Store, data: dict[str, Any] | None) -> dict[str, Any]:
    """Carry the old events into the journal and stage the `store.migrated` event (inside the
    store's open transaction). Returns the projection to keep: the old tables as they were."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    old = store.data_dir / OLD_AUDIT_DIR
    journal = store.journal.folder
    ensure_private_dir(journal)
    carried = 0
    last: dict[str, Any] | None = None
    if old.is_dir():
        for month, _, path in _old_segments(old):
            try:
                events = json.loads(path.read_bytes()).get("events") or []
            except (OSError, ValueError, AttributeError) as error:
                raise StoreError(
                    f"cannot convert {path} ({error}): restore it from backup, or move the "
                    "audit folder away to start a new journal"
                ) from None
            lines = b"".join(canonical_json(e) + b"\n" for e in events if isinstance(e, dict))
            if not lines:
                continue
            target = journal / f"{month}.jsonl"
            with target.open("ab") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(target, 0o600)
            carried += len(events)
            last = events[-1]
        fsync_dir(journal)
        if last is not None:
            head = {"format": 1, "seq": last["seq"], "hash": last["hash"], "segment": ""}
            atomic_write_bytes(journal / HEAD_FILE, canonical_json(head))
        old.rename(old.with_name(f"{OLD_AUDIT_DIR}.pre-journal-{stamp}"))
    if store.hot_path.exists():
        shutil.copy2(
            store.hot_path, store.hot_path.with_name(f"{store.hot_path.name}.pre-journal-{stamp}")
        )
    tables: dict[str, Any] = data if well_formed(data) and data else {}
    chunks = _history_chunks(store, tables)
    pending = store._tx_chunks.get(threading.get_ident())
    if pending is not None:
        pending.extend(chunks)
    store.journal.append_many(
        [
            AuditEntry(
                "store.migrated",
                Actor.current("system"),
                details={
                    "from": "hot.json and audit/ (before the journal)",
                    "events_carried": carried,
                    "copy": f"{store.hot_path.name}.pre-journal-{stamp}",
                    "history_months": [c["month"] for c in chunks],
                },
            )
        ]
    )
    return tables


def _history_chunks(store: Store, tables: dict[str, Any]) -> list[dict[str, Any]]:
    """One chunk per history month, as far as the old cache had committed it."""
    meta = next(
        (
            d
            for d in (tables.get("meta") or {}).values()
            if isinstance(d, dict) and d.get("name") == "store"
        ),
        {},
    )
    committed: dict[str, int] = dict(meta.get("segments") or {})
    chunks = []
    for month in sorted(committed):
        size = int(committed[month])
        path = store.segment_dir / f"{month}.jsonl"
        if not size or not path.exists():
            continue
        raw = path.read_bytes()[:size]
        chunks.append(
            {
                "month": month,
                "offset": 0,
                "length": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "scan_id": meta.get("last_scan_id") if month == max(committed) else "",
                "finished_at": meta.get("last_finished_at") if month == max(committed) else None,
            }
        )
    return chunks
