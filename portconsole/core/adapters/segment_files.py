"""The on-disk life of the store's history files: segment bytes appended at the commit
point, bytes past it cut aside (what a failed or crashed operation left), and whole months
of segments and raw XML dropped past retention. A mixin of the Store (see store.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from portconsole.core.adapters.projection import HOT_FILE
from portconsole.core.adapters.storage import (
    FILE_MODE,
    DataLock,
    ensure_private_dir,
    fsync_dir,
    keep_owner,
)
from portconsole.core.adapters.store_segment import SEGMENT_SUFFIX, SegmentCache
from portconsole.core.domain.changes import HotTables
from portconsole.core.domain.state import as_utc
from portconsole.core.errors import StoreError
from portconsole.core.settings import RetentionSettings
from portconsole.core.timeutil import add_months, utcnow

_MONTH = re.compile(r"^\d{4}-\d{2}$")


class SegmentFiles:
    """Segment and raw-XML file upkeep of the Store (a mixin: the Store sets these attributes
    and provides the hot-file access and `_cut_aside` below)."""

    data_dir: Path
    segment_dir: Path
    xml_dir: Path
    lock: DataLock
    retention: RetentionSettings
    _segments: SegmentCache

    if TYPE_CHECKING:

        def _read_hot(self) -> HotTables: ...

        def _write_hot(self, hot: HotTables) -> None: ...

        def _months(self, hot: HotTables) -> list[str]: ...

        def _cut_aside(self, path: Path, keep: int) -> None: ...

    # ------------------------------------------------------------------ recovery

    def _recover(self, hot: HotTables) -> bool:
        """Cut what a failed or crashed operation appended past the commit point, keeping it
        aside (under the lock). The committed sizes come from a projection already checked
        against the journal, so a cache restored from a backup can never cut history.

        Returns whether the hot state needs writing (never, today; kept for callers).
        """
        committed = hot.segments
        files = (
            sorted(self.segment_dir.glob(f"*{SEGMENT_SUFFIX}")) if self.segment_dir.exists() else []
        )
        for path in files:
            month = path.name[: -len(SEGMENT_SUFFIX)]
            size = path.stat().st_size
            want = committed.get(month, 0)
            if size == want:
                continue
            if size < want:
                raise StoreError(
                    f"history segment {path} is truncated ({size} of {want} committed bytes); "
                    "restore it from backup"
                )
            if want == 0:
                stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
                path.rename(path.with_name(f"{path.name}.uncommitted-{stamp}"))
                self._segments.clear()
                continue
            self._cut_aside(path, want)
        for month, want in committed.items():
            if want and not self._segments.path(month).exists():
                raise StoreError(
                    f"history segment {self._segments.path(month)} is missing; restore it from "
                    "backup (`portconsole audit verify` names what the journal recorded)"
                )
        # Temp files of writes a kill cut short (only ours: other modules' files are theirs).
        temps = [*self.data_dir.glob(f".{HOT_FILE}.*.tmp")]
        if self.xml_dir.exists():
            temps += self.xml_dir.glob("*/.*.xml.gz.*.tmp")
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return False

    # ------------------------------------------------------------------ appending

    def _append(self, month: str, offset: int, data: bytes, *, durable: bool) -> None:
        created = not self.segment_dir.exists()
        ensure_private_dir(self.segment_dir)
        path = self._segments.path(month)
        created = created or not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
        keep_owner(fd, path.parent)
        try:
            os.ftruncate(fd, offset)
            written = os.pwrite(fd, data, offset)
            if written != len(data):
                raise StoreError(f"short write to {path}: disk full? free space and retry")
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if created and durable:
            fsync_dir(self.segment_dir)
            fsync_dir(self.data_dir)

    # ------------------------------------------------------------------ retention

    def prune(self, now: datetime | None = None) -> dict[str, int]:
        """Drop whole months of scan history and raw XML past retention.

        A month goes once all of it is older than the retention period. The newest segment
        always stays (it holds the checkpoint current answers start from); each kept month
        carries its own checkpoint, so answers after the cut stay complete. Other tables in
        the hot file (approvals, findings) and the audit chain are never touched.
        """
        moment = as_utc(now or utcnow())
        removed = {"scan_months": 0, "xml_months": 0, "xml_files": 0}

        def expired(month: str, keep_months: int) -> bool:
            start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
            return add_months(start, 1 + keep_months) <= moment

        with self.lock.hold():
            hot = self._read_hot()
            self._recover(hot)
            months = self._months(hot)
            drop = [m for m in months[:-1] if expired(m, self.retention.scan_months)]
            if drop:
                for month in drop:
                    del hot.segments[month]
                self._write_hot(hot)  # commit first: a crash leaves only unreferenced files
                for month in drop:
                    with contextlib.suppress(FileNotFoundError):
                        self._segments.path(month).unlink()
                    removed["scan_months"] += 1
                self._segments.clear()
            if self.xml_dir.exists():
                for folder in sorted(self.xml_dir.iterdir()):
                    if not folder.is_dir() or not _MONTH.match(folder.name):
                        continue
                    if expired(folder.name, self.retention.raw_xml_months) or folder.name in drop:
                        removed["xml_files"] += sum(1 for _ in folder.glob("*.xml.gz"))
                        shutil.rmtree(folder)
                        removed["xml_months"] += 1
        return removed
