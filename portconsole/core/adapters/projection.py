"""Projections are caches of the journal: how a transaction's effects are taken and replayed.

The projection cache (TinyDB over a manifest and shard files, see shards.py) holds tables that other modules change in place: approvals, findings,
the outbox, settings fingerprints, pause state. A transaction's effects on them are the
documents it set (whole, as they are after the transaction) and the ids it removed, table
by table; they ride on the transaction's last journal event. Replaying every event's
effects in seq order rebuilds those tables exactly.

Current scan state (`hosts`, `ports`) and the store's bookkeeping (`meta`) are not carried
as effects: a scan touches every covered port's last-seen time, so its effects would be the
whole fleet on every cycle. They are derived instead from the scan history segments, whose
bytes the journal vouches for chunk by chunk (sha256), see Store.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, MutableMapping
from typing import Any

# Tables derived from the scan history or the journal itself, never carried as effects.
DERIVED_TABLES = frozenset({"hosts", "ports", "meta", "journal"})
POSITION_TABLE = "journal"
# The projection cache's manifest, in the data dir (its shards are in `hot/`, shards.py).
HOT_FILE = "hot.json"


def diff_tables(
    before: Mapping[str, Any] | None, after: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The effects that turn `before` into `after`: {"set": {table: {id: doc}}, "del": {...}}."""
    before = before or {}
    sets: dict[str, dict[str, Any]] = {}
    dels: dict[str, list[str]] = {}
    for name in set(before) | set(after):
        if name in DERIVED_TABLES:
            continue
        old = before.get(name) or {}
        new = after.get(name) or {}
        if not isinstance(old, dict) or not isinstance(new, dict):
            continue
        changed = {key: doc for key, doc in new.items() if old.get(key) != doc}
        removed = [key for key in old if key not in new]
        if changed:
            sets[name] = changed
        if removed:
            dels[name] = sorted(removed)
    if not sets and not dels:
        return None
    effects: dict[str, Any] = {}
    if sets:
        effects["set"] = sets
    if dels:
        effects["del"] = dels
    return effects


def apply_effects(tables: dict[str, Any], effects: Mapping[str, Any]) -> None:
    """Replay one transaction's effects onto `tables` in place."""
    for name, docs in (effects.get("set") or {}).items():
        table = tables.setdefault(name, {})
        for key, doc in docs.items():
            table[key] = copy.deepcopy(doc)
    for name, keys in (effects.get("del") or {}).items():
        table = tables.get(name) or {}
        for key in keys:
            table.pop(key, None)


def position_of(data: Mapping[str, Any] | None) -> tuple[int, str] | None:
    """The journal position a projection names, or None (missing or malformed)."""
    if not isinstance(data, Mapping):
        return None
    table = data.get(POSITION_TABLE)
    if not isinstance(table, Mapping):
        return None
    doc = table.get("1")
    if not isinstance(doc, Mapping):
        return None
    seq, digest = doc.get("seq"), doc.get("hash")
    if not isinstance(seq, int) or not isinstance(digest, str):
        return None
    return seq, digest


def set_position(data: MutableMapping[str, Any], seq: int, digest: str) -> None:
    data[POSITION_TABLE] = {"1": {"seq": seq, "hash": digest}}


def well_formed(data: Any) -> bool:
    """A table map whose tables are maps of documents (what TinyDB can open). A lazy
    projection (shards.Projection) checked its manifest when it was read."""
    if getattr(data, "lazy", False):
        return True
    if not isinstance(data, dict):
        return False
    return all(
        isinstance(table, dict) and all(isinstance(doc, dict) for doc in table.values())
        for table in data.values()
    )


def chunk_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compare_tables(live: Mapping[str, Any], replayed: Mapping[str, Any]) -> list[str]:
    """Every difference between a projection and its replay, one line each (effect tables)."""
    problems: list[str] = []
    for name in sorted(set(live) | set(replayed)):
        if name in DERIVED_TABLES:
            continue
        have = live.get(name) or {}
        want = replayed.get(name) or {}
        for key in sorted(set(have) | set(want), key=_id_order):
            if key not in want:
                problems.append(f"{name} #{key}: in the projection, not in the journal")
            elif key not in have:
                problems.append(f"{name} #{key}: in the journal, missing from the projection")
            elif have[key] != want[key]:
                fields = sorted(
                    f
                    for f in set(have[key]) | set(want[key])
                    if have[key].get(f) != want[key].get(f)
                )
                label = _label(want[key])
                problems.append(
                    f"{name} #{key}{label}: {', '.join(fields)} differ from the journal"
                )
    return problems


def _label(doc: Mapping[str, Any]) -> str:
    for field in ("id", "finding_id", "approval_id"):
        if isinstance(doc.get(field), str):
            return f" ({doc[field]})"
    return ""


def _id_order(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 62, key)
