"""Which findings a console has not shown its operator yet: the alert logic, without Textual.

Every console (leading or following) hands each snapshot's open findings to one
`AlertTracker`. The first snapshot is the baseline: what was open when the console started
is not news. After that, a finding that is open now and was not open in the previous
snapshot is an alert: *new* when this console never showed it, *reopened* when it did (or
its timeline says a scan or a lapsed risk acceptance reopened it). A finding that flapped
between two snapshots (resolved and reopened) is caught by its count of `reopened` steps.

Alerts stay *unseen* until the operator says so (`mark_seen`), or until the finding leaves
the open queue (approved, resolved, closed): there is then nothing left to look at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text

from portconsole.core.domain.finding import Finding
from portconsole.core.domain.model import SEVERITIES, severity_rank
from portconsole.tui.safe import age, clean

BELL_OFF = "off"
BELL_LEVELS = (BELL_OFF, *SEVERITIES)
NEW_MARK = "●"


@dataclass(frozen=True, slots=True)
class Alert:
    """One new or reopened finding, as the banner shows it."""

    finding_id: str
    kind: str
    severity: str
    host: str
    port: int | None
    proto: str | None
    service: str
    reopened: bool
    since: datetime  # first seen, or when it was reopened or escalated
    escalated: bool = False  # a later look (-sV) showed it worse: its severity rose

    @property
    def target(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}/{self.proto}"


# Timeline steps after which an open finding is news again.
_NEWS_STEPS = ("reopened", "escalated")


def _episode(finding: Finding) -> int:
    """How many times the finding was reopened or escalated: a change means it came back,
    or turned out worse than first told (its severity rose)."""
    return sum(1 for entry in finding.timeline if entry.step in _NEWS_STEPS)


def open_episodes(findings: Iterable[Finding]) -> dict[str, int]:
    """Each open finding's id -> its episode: what `AlertTracker` compares between snapshots."""
    return {finding.id: _episode(finding) for finding in findings if finding.is_open}


def _alert(finding: Finding, reopened: bool) -> Alert:
    since = finding.first_seen
    last = finding.timeline[-1] if finding.timeline else None
    escalated = False
    if last is not None and last.step == "escalated":  # news again, not back again
        since, reopened, escalated = last.at, False, True
    elif reopened:
        for entry in reversed(finding.timeline):
            if entry.step == "reopened":
                since = entry.at
                break
    return Alert(
        finding_id=finding.id,
        kind=finding.kind,
        severity=finding.severity,
        host=finding.host,
        port=finding.port,
        proto=finding.proto,
        service=finding.service,
        reopened=reopened,
        since=since,
        escalated=escalated,
    )


def most_severe_first(alerts: Iterable[Alert]) -> list[Alert]:
    """Worst severity first; among equals the newest first (it is the news)."""
    return sorted(
        alerts, key=lambda a: (-severity_rank(a.severity), -a.since.timestamp(), a.finding_id)
    )


def rings_bell(alerts: Iterable[Alert], threshold: str) -> bool:
    """True when any alert is at least `threshold` severe; `"off"` never rings."""
    if threshold == BELL_OFF:
        return False
    floor = severity_rank(threshold)
    return any(severity_rank(a.severity) >= floor for a in alerts)


class AlertTracker:
    """Compares each snapshot's open findings with the previous one; keeps the unseen."""

    def __init__(self) -> None:
        self._shown: dict[str, int] | None = None  # finding id -> episode, last snapshot
        self._ever: set[str] = set()
        self._unseen: dict[str, Alert] = {}

    @property
    def has_baseline(self) -> bool:
        return self._shown is not None

    def observe(self, findings: Iterable[Finding]) -> list[Alert]:
        """Take one snapshot; return the alerts it raised (most severe first)."""
        by_id = {finding.id: finding for finding in findings}
        return self.observe_episodes(by_id, open_episodes(by_id.values()))

    def observe_episodes(
        self,
        by_id: Mapping[str, Finding],
        current: dict[str, int],
        *,
        changed: Iterable[str] | None = None,
        base: dict[str, int] | None = None,
    ) -> list[Alert]:
        """`observe` with the snapshot's `open_episodes` computed beforehand (in the
        reader's thread): only what changed since the last snapshot is walked here.
        `changed`: the ids whose episode differs from `base`, used when `base` is what this
        tracker saw last (else the difference is computed here)."""
        raised: list[Alert] = []
        baseline = self._shown is None
        previous = self._shown or {}
        # Only the findings new or reopened since the last snapshot: a console over
        # 100,000 findings must not walk them all on the UI thread.
        if baseline:
            keys: Iterable[str] = ()
        elif changed is not None and base is self._shown:
            keys = list(changed)
        elif current == previous:  # one C-level compare when nothing moved
            keys = ()
        else:
            keys = [key for key, _ in current.items() - previous.items()]
        for key in keys:
            finding = by_id[key]
            before = previous.get(key)
            reopened = (
                before is not None
                or finding.id in self._ever
                or (bool(finding.timeline) and finding.timeline[-1].step == "reopened")
            )
            alert = _alert(finding, reopened)
            self._unseen[finding.id] = alert
            raised.append(alert)
        for gone in [key for key in self._unseen if key not in current]:
            del self._unseen[gone]
        self._shown = current
        if baseline:
            self._ever.update(current)
        else:
            self._ever.update(keys)
        return most_severe_first(raised)

    def unseen(self) -> list[Alert]:
        """The alerts not yet seen, most severe first."""
        return most_severe_first(self._unseen.values())

    def unseen_count(self) -> int:
        return len(self._unseen)

    def is_unseen(self, finding_id: str) -> bool:
        return finding_id in self._unseen

    def unseen_hosts(self) -> set[str]:
        return {alert.host for alert in self._unseen.values()}

    def mark_seen(self, finding_ids: Iterable[str] | None = None) -> int:
        """Mark these findings (all when None) seen; returns how many were unseen."""
        if finding_ids is None:
            count = len(self._unseen)
            self._unseen.clear()
            return count
        count = 0
        for finding_id in finding_ids:
            if self._unseen.pop(finding_id, None) is not None:
                count += 1
        return count


# The banner's last words: the key that opens the alerts (kept on any width).
HINT = " · ! to view"


def banner_text(alerts: list[Alert], now: datetime, width: int | None = None) -> str:
    """One line for the banner: the most severe alert, and how many more there are.

    `alerts` must be most severe first (as `AlertTracker.unseen` returns them). Host,
    service and kind come from the network or the store: they are cleaned to one line.
    Given a `width`, a longer line gives up first the service and kind, then the age,
    then the end of the target: `! to view`, the key that opens the alerts, always shows.
    """
    if not alerts:
        return ""
    first = alerts[0]
    what = "ESCALATED" if first.escalated else "REOPENED" if first.reopened else "NEW"
    count = f"{len(alerts)} new findings · " if len(alerts) > 1 else f"{what} · "
    service = f" {clean(first.service, 20)}" if first.service else ""
    kind = "" if first.kind == "unapproved_port" else f" ({clean(first.kind, 24)})"
    head = f"{count}{first.severity.upper()} {clean(first.target, 50)}"
    tail = f" · {age(first.since, now)} ago{HINT}"
    text = head + service + kind + tail
    if width is None or len(text) <= width:
        return text
    room = width - len(head) - len(tail)
    if room >= 4:  # room for a word of the details at least
        return head + _cut(service + kind, room) + tail
    if len(head) + len(tail) <= width:
        return head + tail
    return _cut(head, max(width - len(HINT), 1)) + HINT


def _cut(text: str, room: int) -> str:
    """`text` in at most `room` characters, `…` marking a cut."""
    return text if len(text) <= room else text[: room - 1] + "…"


def new_mark(text: str) -> Text:
    """A table cell marked as not seen yet: `● new`, bold and reversed (no colour needed)."""
    return Text(f"{NEW_MARK} {text}", style="bold reverse", no_wrap=True)
