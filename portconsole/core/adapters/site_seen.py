"""The central's record of site answers already taken (job id and nonce), so a replayed
answer is refused, after a restart too; pruned once no answer to an entry could be taken
anyway (see `SeenJobs`)."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path

from portconsole.core.timeutil import iso, parse_iso, utcnow


class SeenJobs:
    """Job ids and nonces already answered, kept in a file so a replay is refused after a
    restart too (one JSON line each, appended).

    Pruned: an entry older than `keep` seconds (the longest deadline a job can have, and
    some slack) answers a job whose deadline has passed, so any answer to that job is
    refused as late (or as answering another job) anyway. On the first acceptance after a
    start, then at most every `keep / 2` seconds, the file is rewritten without them
    (atomically: a crash leaves the old file or the new one).
    """

    def __init__(self, path: Path, keep: float = 86400.0) -> None:
        self.path = path
        self.keep = timedelta(seconds=keep)
        self._lock = threading.Lock()
        self._seen: set[str] | None = None  # "j:ID" and "n:NONCE"
        self._next_prune: datetime | None = None  # None: at the next acceptance

    def _read(self) -> list[tuple[str, str, datetime]]:
        """(job id, nonce, accepted at) of every entry in the file."""
        entries: list[tuple[str, str, datetime]] = []
        now = utcnow()
        try:
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    at = parse_iso(str(item["at"])) if item.get("at") else now
                    entries.append((str(item["job_id"]), str(item["nonce"]), at))
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue  # a torn last line: what it held was never accepted
        except FileNotFoundError:
            pass
        return entries

    def _load(self) -> set[str]:
        if self._seen is None:
            self._seen = {k for j, n, _ in self._read() for k in (f"j:{j}", f"n:{n}")}
        return self._seen

    def first_time(self, job_id: str, nonce: str) -> bool:
        """Record the pair; False when either was seen before (a replay)."""
        with self._lock:
            seen = self._load()
            if f"j:{job_id}" in seen or f"n:{nonce}" in seen:
                return False
            now = utcnow()
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"job_id": job_id, "nonce": nonce, "at": iso(now)}))
                handle.write("\n")
            seen.update({f"j:{job_id}", f"n:{nonce}"})
            if self._next_prune is None or now >= self._next_prune:
                self._prune(now)
            return True

    def _prune(self, now: datetime) -> None:
        """Rewrite the file without the entries older than `keep`, and forget them. The
        file is read again: it is the record (a reloaded monitor's other instance appends
        to it too)."""
        self._next_prune = now + self.keep / 2
        entries = self._read()
        kept = [entry for entry in entries if entry[2] >= now - self.keep]
        if len(kept) == len(entries):
            return
        fresh = self.path.with_name(self.path.name + ".new")
        with fresh.open("w", encoding="utf-8") as handle:
            for job_id, nonce, at in kept:
                handle.write(json.dumps({"job_id": job_id, "nonce": nonce, "at": iso(at)}))
                handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(fresh, self.path)
        self._seen = {k for j, n, _ in kept for k in (f"j:{j}", f"n:{n}")}
