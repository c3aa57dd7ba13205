"""Reading and editing the projection cache's files as a test (or an insider) would: the
manifest `hot.json` and its shard files in `hot/` (see adapters/shards.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from portconsole.core.adapters.shards import SHARD_DIR, Projection, is_manifest


def _projection(data_dir: Path) -> Projection:
    import json

    manifest = json.loads((data_dir / "hot.json").read_bytes())
    assert is_manifest(manifest), manifest
    return Projection(data_dir / SHARD_DIR, manifest)


def read_projection(data_dir: Path) -> dict[str, Any]:
    """Every table of the projection cache, whole (`journal` names its position)."""
    return _projection(data_dir).tables()


def write_projection(data_dir: Path, tables: dict[str, Any]) -> None:
    """Replace the projection cache with `tables`, shard hashes and manifest consistent
    (what someone who edits the files and fixes every name would leave)."""
    projection = Projection.from_tables(data_dir / SHARD_DIR, tables)
    projection.save(data_dir / "hot.json", projection.changed())
