"""What the schedule records: monitoring gaps and each group's run status, as plain values.

These types are shared by the scheduler that finds gaps (services/schedule.py), the scan
cycle that turns them into findings and audit events, and the evidence pack that reports
them; they hold no file and no clock, so they live in the domain.

Monitoring gaps (PCI DSS 10.7: failures of the monitor are themselves on record):

- "late": a scan did not start by last start + interval + jitter + grace. The gap runs from
  when the scan was due to when it finally started. While it is still open it is reported
  once with `ongoing=True` and end = now; when the run starts it is reported once more,
  closed, with the same `id`. Consumers upsert by `Gap.id`.
- "failed": a run ended failed or cancelled, or never ended (the process died mid-run; found
  when the group next starts). The gap is the run's own window.
- "partial": a run covered fewer hosts than planned (or ended "partial").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from msgspec import Struct, field

from portconsole.core.domain.model import ScanOutcome
from portconsole.core.timeutil import iso, parse_iso

GAP_REASONS = ("late", "failed", "partial")
OUTCOMES: tuple[str, ...] = tuple(ScanOutcome)


class Gap(Struct, frozen=True):
    """A stretch of time in which a group was not (fully) monitored as scheduled."""

    group: str
    start: datetime
    end: datetime
    reason: str  # "late" | "failed" | "partial"
    ongoing: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable across the ongoing and closed reports of one gap."""
        key = f"{self.group}\0{self.reason}\0{iso(self.start)}".encode()
        return "gap-" + hashlib.sha256(key).hexdigest()[:16]

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "start": iso(self.start),
            "end": iso(self.end),
            "reason": self.reason,
            "ongoing": self.ongoing,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Gap:
        return cls(
            group=str(data["group"]),
            start=parse_iso(str(data["start"])),
            end=parse_iso(str(data["end"])),
            reason=str(data["reason"]),
            ongoing=bool(data.get("ongoing", False)),
            details=dict(data.get("details") or {}),
        )


class GroupStatus(Struct, frozen=True):
    """One group's schedule, as `Scheduler.status` reports it."""

    group: str
    interval: int
    jitter: int
    next_due: datetime
    last_started: datetime | None
    last_finished: datetime | None
    last_outcome: str | None
    running_since: datetime | None
    requested_at: datetime | None
