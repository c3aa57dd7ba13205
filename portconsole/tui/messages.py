"""Typed messages from worker threads to the UI (results never come back as return values
that the event loop would have to wait for)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from textual.message import Message

from portconsole.core.domain.model import Progress
from portconsole.core.services.queries import Sightings, later_sighting
from portconsole.tui.alerts import open_episodes

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
    # The open ports' sightings (Queries.snapshot): when each finding was last seen.
    seen: Sightings = field(default_factory=dict)
    # The header and hosts only, the findings still being read (a console's first read
    # shows its hosts table first: at 100,000 findings they take as long again).
    partial: bool = False
    # Indexes built once per snapshot, where it is constructed (the reader's thread), so
    # the UI thread never walks 100,000 findings to find one.
    hosts_by_address: dict[str, HostRow] = field(default_factory=dict)
    findings_by_id: dict[str, Finding] = field(default_factory=dict)
    open_episodes: dict[str, int] = field(default_factory=dict)  # for the AlertTracker
    # Set by `diff_episodes`: the open findings whose episode differs from `episodes_base`.
    episodes_base: dict[str, int] | None = None
    changed_episodes: list[str] | None = None

    def __post_init__(self) -> None:
        self.hosts_by_address = {host.address: host for host in self.hosts}
        self.findings_by_id = {finding.id: finding for finding in self.findings}
        self.open_episodes = open_episodes(self.findings)

    def diff_episodes(self, base: dict[str, int] | None) -> None:
        """Note which open findings are new or reopened compared with `base` (the previous
        read's `open_episodes`), so the AlertTracker need not compare every finding."""
        if base is None:
            return
        self.episodes_base = base
        self.changed_episodes = [
            key for key, episode in self.open_episodes.items() if base.get(key) != episode
        ]

    def finding(self, finding_id: str) -> Finding | None:
        return self.findings_by_id.get(finding_id)

    def last_seen(self, finding: Finding) -> datetime:
        """When the finding's problem was last seen: its record's time, or a later
        sighting (an open port's, an unknown host's last time up) of this read."""
        host = self.hosts_by_address.get(finding.host)
        up = {host.address: (host.last_seen, "")} if host and host.status == "up" else {}
        later = later_sighting(finding, self.seen, up)
        return later[0] if later is not None else finding.last_seen


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
