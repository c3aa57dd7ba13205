"""Typed messages from worker threads to the UI (results never come back as return values
that the event loop would have to wait for)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual.message import Message

from portconsole.core.domain.model import Progress

if TYPE_CHECKING:
    from portconsole.core.domain.finding import Finding
    from portconsole.core.monitor import HostRow, Overview


@dataclass(slots=True)
class FleetSnapshot:
    """Everything the header, the hosts table and the triage queue show, read in one go."""

    version: str
    overview: Overview
    hosts: list[HostRow]
    findings: list[Finding]
    request: int = 0

    def finding(self, finding_id: str) -> Finding | None:
        for finding in self.findings:
            if finding.id == finding_id:
                return finding
        return None


@dataclass
class SnapshotLoaded(Message):
    """A fresh read of the store (posted by the poll and after every write)."""

    snapshot: FleetSnapshot


@dataclass
class RefreshWanted(Message):
    """The store changed: re-read it (coalesced with any read already running)."""


@dataclass
class PollFinished(Message):
    """The data-version poll ended; the next one may be scheduled (polls never overlap)."""

    error: str = ""


@dataclass
class ScheduleChecked(Message):
    """The scheduler tick ended: whether this console leads, and anything that went wrong."""

    leading: bool
    error: str = ""


@dataclass
class ScanStarted(Message):
    label: str


@dataclass
class ScanProgress(Message):
    """Scan progress from the scanner's threads; only the newest queued one is drawn."""

    label: str
    progress: Progress

    def can_replace(self, message: Message) -> bool:
        # Textual asks the queued message whether the next one may supersede it.
        return isinstance(message, ScanProgress)


@dataclass
class ScanFinished(Message):
    """A cycle ended: a one-line summary, or the user-facing error that stopped it."""

    label: str
    summary: str = ""
    error: str = ""
    cancelled: bool = False


@dataclass
class ActionDone(Message):
    """A decision (ack, approve, flag, note, pause...) was written."""

    text: str
    finding_id: str = ""


@dataclass
class ActionFailed(Message):
    """A decision was refused; `text` is the one-line message to show."""

    text: str
    details: dict[str, Any] = field(default_factory=dict)
