"""When each target group is scanned, and the record of when monitoring fell short.

Each group is scanned every `interval` seconds plus a uniform jitter in [0, jitter],
counted from the start of its previous run. Groups run in parallel, but a group's runs never
overlap (the supervisor starts a group only when no run of it is in flight, and reschedules it
when its run has started); each run is bounded by `cycle_timeout`. `schedule.json`
in the data dir keeps, per group, the last run, its outcome and the next due time, so a
restarted daemon, or a console that takes over as leader, knows what is late. Any process may
ask for a scan now (`scan_now`): the request is written to the same file and the leader sees
it on its next tick, because every read first reloads the file when it changed on disk.

The scheduler also notices when monitoring fell short and records it as `Gap`s (the kinds are
described in domain/schedule.py). While a "late" gap is still open, `find_gaps` reports it
once with `ongoing=True` (so a daemon starting after a long stop, or a console watching a hung
leader, can raise it at once) and once more, closed, when the run starts.

Any process with the data dir's settings may call `find_gaps`, leader or follower: it runs
under the data lock and returns each gap to one caller only, who records it. A run cut short
because its leader quit is handed back (`hand_back`): due again at once, and a gap only if the
next leader starts it after the deadline counted from the run before.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from portconsole.core.adapters.leader import pid_exists
from portconsole.core.adapters.storage import DataLock, atomic_write_bytes, load_json_file
from portconsole.core.domain.schedule import OUTCOMES, Gap, GroupStatus
from portconsole.core.errors import NotFoundError
from portconsole.core.timeutil import iso, parse_iso, utcnow

STATE_FORMAT = 1
RECENT_GAPS_KEPT = 500


class GroupTiming(Protocol):
    """What the scheduler needs of a group (settings.GroupSettings fits)."""

    @property
    def interval(self) -> int: ...

    @property
    def jitter(self) -> int: ...


class RunLocks:
    """One lock per run label in this process: two runs of one group (or two manual scans
    of one label) never overlap, while different groups run in parallel."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, label: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(label, threading.Lock())


def _when(value: Any) -> datetime | None:
    return parse_iso(str(value)) if value else None


def _runner_alive(record: Mapping[str, Any]) -> bool:
    """Is the process that marked the current run still running?

    A console's manual scan of a group may overlap the leader's; that is not an
    interrupted run. A runner on another host cannot be checked and counts as gone.
    """
    runner = record.get("runner")
    if not isinstance(runner, dict) or runner.get("host") != os.uname().nodename:
        return False
    return pid_exists(runner.get("pid"))


class Scheduler:
    """Due times and gap records for target groups, persisted in `state_path`.

    `lock` should be the data dir's DataLock: the file is read-modified-written by the
    leader and by any process asking for a scan now. `grace` is settings.daemon
    .gap_grace_seconds. Pass `now_fn` and a seeded `rng` in tests.
    """

    def __init__(
        self,
        groups: Mapping[str, GroupTiming],
        state_path: Path,
        now_fn: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        *,
        grace: float = 120.0,
        lock: DataLock | None = None,
    ) -> None:
        self.groups: dict[str, GroupTiming] = dict(groups)
        self.state_path = Path(state_path)
        self.now = now_fn
        self.rng = rng if rng is not None else random.Random()
        self.grace = timedelta(seconds=grace)
        self._lock = lock
        self._mutex = threading.RLock()
        # A group never run before is due at once; remember when this process first saw
        # it so the first-run deadline is stable until it is written.
        self._created = iso(now_fn())
        self._state: dict[str, Any] = {}
        self._stamp: tuple[int, int, int] | None = None
        with self._mutex:
            self._reload(force=True)

    # -- persistence ---------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def _reload(self, force: bool = False) -> None:
        stamp = self._file_stamp()
        if not force and stamp == self._stamp:
            return
        data = load_json_file(self.state_path) if stamp is not None else None
        if not isinstance(data, dict):
            data = {}
        data.setdefault("format", STATE_FORMAT)
        data.setdefault("groups", {})
        data.setdefault("pending_gaps", [])
        data.setdefault("recent_gaps", [])
        for name in self.groups:
            data["groups"].setdefault(name, {"first_seen": self._created})
        self._state = data
        self._stamp = stamp

    @contextlib.contextmanager
    def _mutating(self) -> Iterator[dict[str, Any]]:
        lock = self._lock.hold() if self._lock is not None else contextlib.nullcontext()
        # The data lock first, then the mutex: a cycle holding the data lock (its ingest)
        # calls in here, so the other order deadlocks two groups running in parallel.
        with lock, self._mutex:
            self._reload(force=True)
            before = self._encode()
            yield self._state
            after = self._encode()
            # find_gaps runs every tick; skip the fsync when nothing changed.
            if after != before or self._stamp is None:
                atomic_write_bytes(self.state_path, after)
                self._stamp = self._file_stamp()

    def _encode(self) -> bytes:
        return json.dumps(self._state, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def _view(self) -> dict[str, Any]:
        with self._mutex:
            self._reload()
            return self._state

    def _check_group(self, group: str) -> None:
        if group not in self.groups:
            known = ", ".join(sorted(self.groups)) or "none configured"
            raise NotFoundError(f"unknown group {group!r}: known groups are {known}")

    # -- timing --------------------------------------------------------------------------

    def _due_at(self, name: str, record: Mapping[str, Any]) -> datetime:
        timing = self.groups[name]
        last = _when(record.get("last_started"))
        stored = _when(record.get("next_due"))
        if last is None:
            return stored or parse_iso(str(record.get("first_seen") or self._created))
        # A shortened interval in the config takes effect without waiting out the old one.
        ceiling = last + timedelta(seconds=timing.interval + timing.jitter)
        return min(stored, ceiling) if stored else ceiling

    def _deadline(self, name: str, record: Mapping[str, Any]) -> datetime:
        timing = self.groups[name]
        last = _when(record.get("last_started"))
        if last is None:
            first = parse_iso(str(record.get("first_seen") or self._created))
            return first + timedelta(seconds=timing.jitter) + self.grace
        return last + timedelta(seconds=timing.interval + timing.jitter) + self.grace

    def due(self, now: datetime | None = None) -> list[str]:
        """Groups due at `now`: requested ones first, then by how long they have waited."""
        moment = now or self.now()
        state = self._view()
        ready: list[tuple[int, datetime, str]] = []
        for name in self.groups:
            record = state["groups"][name]
            requested = _when(record.get("requested_at"))
            due_at = self._due_at(name, record)
            if requested is not None:
                ready.append((0, requested, name))
            elif due_at <= moment:
                ready.append((1, due_at, name))
        return [name for _, _, name in sorted(ready)]

    def next_due(self) -> tuple[str, datetime] | None:
        """The group due soonest and when (a requested scan is due at its request time)."""
        state = self._view()
        best: tuple[datetime, str] | None = None
        for name in self.groups:
            record = state["groups"][name]
            requested = _when(record.get("requested_at"))
            due_at = self._due_at(name, record)
            when = min(requested, due_at) if requested else due_at
            if best is None or (when, name) < best:
                best = (when, name)
        return (best[1], best[0]) if best else None

    def scan_now(self, group: str | None = None) -> list[str]:
        """Ask for a scan of `group` (or every group) at the leader's next tick."""
        names = list(self.groups) if group is None else [group]
        for name in names:
            self._check_group(name)
        moment = iso(self.now())
        with self._mutating() as state:
            for name in names:
                record = state["groups"][name]
                if not record.get("requested_at"):
                    record["requested_at"] = moment
        return names

    def status(self) -> list[GroupStatus]:
        """Every configured group's schedule, by name."""
        return [self.group_status(name) for name in sorted(self.groups)]

    def cycle_timeout(self, group: str) -> float:
        """Seconds one run of `group` may take before it is cancelled: the group's
        `timeout`, else interval + jitter + grace (longer, and its next run is late anyway)."""
        self._check_group(group)
        timing = self.groups[group]
        chosen = getattr(timing, "timeout", None)
        if chosen:
            return float(chosen)
        return timing.interval + timing.jitter + self.grace.total_seconds()

    def group_status(self, group: str) -> GroupStatus:
        self._check_group(group)
        record = self._view()["groups"][group]
        return GroupStatus(
            group=group,
            interval=self.groups[group].interval,
            jitter=self.groups[group].jitter,
            next_due=self._due_at(group, record),
            last_started=_when(record.get("last_started")),
            last_finished=_when(record.get("last_finished")),
            last_outcome=record.get("last_outcome"),
            running_since=_when(record.get("running_since")),
            requested_at=_when(record.get("requested_at")),
        )

    # -- runs ----------------------------------------------------------------------------

    def mark_started(self, group: str, at: datetime | None = None) -> None:
        """Record that a run of `group` started; schedules the next one from `at`."""
        self._check_group(group)
        moment = at or self.now()
        timing = self.groups[group]
        with self._mutating() as state:
            record = state["groups"][group]
            unfinished = _when(record.get("running_since"))
            if unfinished is not None and not _runner_alive(record):
                self._queue(
                    state,
                    Gap(
                        group,
                        unfinished,
                        moment,
                        "failed",
                        details={
                            "outcome": "interrupted",
                            "error": "the run never finished (its process stopped or died)",
                        },
                    ),
                )
            due_at = self._due_at(group, record)
            deadline = self._deadline(group, record)
            if moment > deadline:
                self._queue(
                    state,
                    Gap(
                        group,
                        due_at,
                        moment,
                        "late",
                        details={
                            "due": iso(due_at),
                            "deadline": iso(deadline),
                            "interval": timing.interval,
                            "last_started": record.get("last_started"),
                        },
                    ),
                )
            jitter = self.rng.uniform(0, timing.jitter) if timing.jitter else 0.0
            record.update(
                previous_started=record.get("last_started"),
                last_started=iso(moment),
                running_since=iso(moment),
                requested_at=None,
                overdue_reported=None,
                runner={"pid": os.getpid(), "host": os.uname().nodename},
                next_due=iso(moment + timedelta(seconds=timing.interval + jitter)),
            )

    def mark_finished(
        self,
        group: str,
        at: datetime | None,
        outcome: str,
        hosts_planned: int,
        hosts_covered: int,
        *,
        error: str = "",
    ) -> None:
        """Record how a run ended; a failed, cancelled or partial run queues a gap."""
        self._check_group(group)
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        moment = at or self.now()
        with self._mutating() as state:
            record = state["groups"][group]
            start = (
                _when(record.get("running_since")) or _when(record.get("last_started")) or moment
            )
            details: dict[str, Any] = {
                "outcome": outcome,
                "hosts_planned": hosts_planned,
                "hosts_covered": hosts_covered,
            }
            if error:
                details["error"] = error[:500]
            if outcome in ("failed", "cancelled"):
                self._queue(state, Gap(group, start, moment, "failed", details=details))
            elif outcome == "partial" or hosts_covered < hosts_planned:
                self._queue(state, Gap(group, start, moment, "partial", details=details))
            record.update(
                running_since=None,
                runner=None,
                last_finished=iso(moment),
                last_outcome=outcome,
                hosts_planned=hosts_planned,
                hosts_covered=hosts_covered,
            )

    def hand_back(self, group: str, at: datetime | None = None) -> None:
        """A run stopped because its process quit leading: not a failure of monitoring.

        The group is due again at once (for whoever leads next), and its deadline counts
        from the start before this run, so a gap is raised only if the next run is late.
        """
        self._check_group(group)
        moment = at or self.now()
        with self._mutating() as state:
            record = state["groups"][group]
            record.update(
                running_since=None,
                runner=None,
                last_started=record.get("previous_started"),
                next_due=None,
                requested_at=record.get("requested_at") or iso(moment),
                handed_over_at=iso(moment),
            )

    def hand_back_unfinished(self, at: datetime | None = None) -> list[str]:
        """Hand back every run this process marked started and never finished (a quit
        that did not wait for its scan thread); returns those groups."""
        mine = {"pid": os.getpid(), "host": os.uname().nodename}
        groups = [
            name
            for name in self.groups
            if self._view()["groups"][name].get("running_since")
            and self._view()["groups"][name].get("runner") == mine
        ]
        for name in groups:
            self.hand_back(name, at)
        return groups

    @staticmethod
    def _queue(state: dict[str, Any], gap: Gap) -> None:
        state["pending_gaps"].append(gap.to_json())

    # -- gaps ----------------------------------------------------------------------------

    def overdue(self, now: datetime | None = None) -> list[Gap]:
        """Open "late" gaps at `now` (end = now, ongoing), without recording anything."""
        moment = now or self.now()
        state = self._view()
        return [gap for gap, _ in self._overdue(state, moment)]

    def _overdue(self, state: Mapping[str, Any], moment: datetime) -> list[tuple[Gap, str]]:
        found: list[tuple[Gap, str]] = []
        for name in self.groups:
            record = state["groups"][name]
            if record.get("running_since") and _runner_alive(record):
                continue
            deadline = self._deadline(name, record)
            if moment <= deadline:
                continue
            due_at = self._due_at(name, record)
            details = {
                "due": iso(due_at),
                "deadline": iso(deadline),
                "interval": self.groups[name].interval,
                "last_started": record.get("last_started"),
            }
            found.append((Gap(name, due_at, moment, "late", True, details), iso(due_at)))
        return found

    def find_gaps(self, now: datetime | None = None) -> list[Gap]:
        """New gaps since the last call, each returned once, and recorded as returned.

        Closed gaps (late runs, failed or partial runs) come once; an open "late" gap comes
        once as ongoing, then once closed when the run starts (same `id`).
        """
        moment = now or self.now()
        with self._mutating() as state:
            gaps = [Gap.from_json(item) for item in state["pending_gaps"]]
            state["pending_gaps"] = []
            for gap, due_key in self._overdue(state, moment):
                record = state["groups"][gap.group]
                if record.get("overdue_reported") != due_key:
                    record["overdue_reported"] = due_key
                    gaps.append(gap)
            recent = state["recent_gaps"] + [gap.to_json() for gap in gaps]
            state["recent_gaps"] = recent[-RECENT_GAPS_KEPT:]
        return gaps

    def recent_gaps(self) -> list[Gap]:
        """The last gaps `find_gaps` returned (up to 500), oldest first."""
        return [Gap.from_json(item) for item in self._view()["recent_gaps"]]
