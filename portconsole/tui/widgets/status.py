"""The monitoring header shown on every main screen: two lines, and an alert banner.

The first line says who scans (this console, the leader), whether service detection
(-sV) left running after a cycle (by any process on the data dir) is still identifying
ports, and the last scan; the second the counts (and this console's scan progress).

The banner (a third line) shows only while this console has unseen alerts
(tui/alerts.py): the most severe first, styled by its severity with the theme's colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from portconsole.core.domain.model import SEVERITIES, Progress
from portconsole.tui.alerts import Alert, banner_text
from portconsole.tui.safe import clean, short_time

if TYPE_CHECKING:
    from portconsole.core.monitor import Overview


@dataclass(slots=True)
class ScanState:
    """A scan this console is running: which group, and the newest progress report."""

    label: str
    progress: Progress | None = None


@dataclass(slots=True)
class HeaderState:
    title: str
    overview: Overview | None
    scan: ScanState | None
    readonly: bool
    # Unseen alerts, most severe first, and the time their ages are counted to.
    alerts: list[Alert] = field(default_factory=list)
    now: datetime | None = None


def monitoring_line(state: HeaderState) -> Text:
    line = Text()
    line.append(state.title, style="bold")
    line.append("  ")
    overview = state.overview
    if overview is None:
        line.append("loading…", style="italic")
        return line
    if state.scan is not None:
        line.append(
            f"▶ scanning {clean(state.scan.label or 'all', 20)} ({scan_phase(state.scan)})",
            style="bold",
        )
    elif overview.paused:
        line.append("‖ PAUSED", style="bold reverse")
    elif overview.is_leader:
        line.append("● leading")
    elif overview.follow_reason:
        line.append(f"○ following: {clean(overview.follow_reason, 62)}", style="bold")
    elif overview.leader is not None:
        # user@host pid N tty T: enough to find the leader's terminal and ask.
        leader = overview.leader
        who = clean(leader.who(), 48)
        if not leader.alive:
            line.append(f"○ no leader: {who} stopped renewing", style="bold")
        else:
            line.append(f"○ {who} leads" + (" (late renewing)" if leader.stale else ""))
    else:
        line.append("○ no scan leader")
    if state.readonly:
        line.append("  [read-only]", style="bold")
    if overview.sites_down:
        line.append(f"  ✖ site down: {clean(', '.join(overview.sites_down), 30)}", style="bold")
    if overview.identifying:
        # Detection is done; -sV still runs in the background (services/fingerprint_after.py).
        count = overview.identifying
        line.append(f"  ◌ identifying {count:,} port{'s' if count != 1 else ''}")
    last = overview.last_scan
    if last:
        line.append(
            f"  last {short_time(last.get('finished_at'))} {clean(last.get('outcome', ''), 10)}"
        )
    return line


def counts_line(state: HeaderState, width: int = 78) -> Text:
    overview = state.overview
    if overview is None:
        return Text()
    # While a scan's progress bar shares the line, or the unseen counter would push the
    # counts past `width`, they use short labels so that all of them still fit.
    line = _counts(state, short=state.scan is not None)
    if not state.alerts:
        return line
    counter = Text(f"▲ {len(state.alerts)} unseen", style="bold reverse")
    counter.append(" · ")
    if state.scan is None and len(counter) + len(line) > width:
        line = _counts(state, short=True)
    return counter + line


def _counts(state: HeaderState, *, short: bool) -> Text:
    overview = state.overview
    line = Text()
    if overview is None:
        return line
    line.append(
        f"{overview.hosts} hosts · {overview.open_ports} ports · "
        if short
        else f"hosts {overview.hosts} · ports {overview.open_ports} · "
    )
    unapproved = f"{overview.unapproved} unappr" if short else f"unapproved {overview.unapproved}"
    if overview.unapproved:
        line.append("! " + unapproved, style="bold")
    else:
        line.append(unapproved)
    count = "…" if overview.open_findings is None else overview.open_findings  # being read
    line.append(f" · {count} open" if short else f" · findings {count}")
    if state.scan is None and overview.next_scan is not None:
        group = f" {clean(overview.next_group, 16)}" if overview.next_group else ""
        line.append(f" · next {short_time(overview.next_scan)[11:]}{group}")
    return line


def scan_phase(scan: ScanState) -> str:
    """`sweep 31% · ETA 0:05` while nmap runs (the scanner reports both), else the phase."""
    progress = scan.progress
    if progress is None:
        return "starting"
    if progress.phase in ("sweep", "fingerprint") and progress.hosts_total:
        return f"{progress.phase} {100 * progress.fraction:.0f}% · {progress.eta_text()}"
    return progress.phase


def progress_bar(scan: ScanState, width: int = 14) -> Text:
    """A text bar: `[███████░░░░░░░] 12/40 hosts`, filled by the work done (nmap's own
    percent inside a running batch, see adapters/scanning.ScanProgress).

    Drawn as text rather than with Textual's ProgressBar, whose animation timers keep
    repainting (CPU over SSH, and screenshots that never settle) even while hidden.
    """
    progress = scan.progress
    bar = Text()
    if progress is None or not progress.hosts_total:
        bar.append("[" + "·" * width + "] starting")
        return bar
    done = min(progress.hosts_done, progress.hosts_total)
    filled = round(width * progress.fraction)
    bar.append("[")
    bar.append("█" * filled, style="bold")
    bar.append("░" * (width - filled))
    bar.append(f"] {done:,}/{progress.hosts_total:,} hosts")
    return bar


def alert_line(state: HeaderState, width: int | None = None) -> Text:
    """The banner: `▲ 3 new findings · HIGH 127.0.0.5:23/tcp telnet · 12s ago · ! to view`,
    shortened to `width` columns keeping `! to view` (see banner_text)."""
    if not state.alerts or state.now is None:
        return Text()
    text = banner_text(state.alerts, state.now, None if width is None else width - 2)
    return Text("▲ " + text, style="bold", no_wrap=True)


SEVERITY_CLASSES = tuple(f"-alert-{name}" for name in SEVERITIES)


class StatusHeader(Widget):
    """Who leads, last and next scan, paused or not, the counts, scan progress, alerts."""

    # Severity decides the banner's colours, from the theme: critical and high on the
    # theme's error colour, medium on its warning colour, low on its accent. The mono
    # theme maps them all to white: the banner still says the severity in words.
    DEFAULT_CSS = """
    StatusHeader { height: auto; }
    StatusHeader > Horizontal { height: 1; }
    StatusHeader #status-line { width: 1fr; height: 1; }
    StatusHeader #status-counts { width: 1fr; height: 1; }
    StatusHeader #status-progress { width: auto; height: 1; display: none; }
    StatusHeader.-scanning #status-progress { display: block; }
    StatusHeader #status-alert { height: 1; display: none; padding: 0 1; margin: 0 -1; }
    StatusHeader.-alerting #status-alert { display: block; }
    StatusHeader #status-alert.-alert-critical { background: $error; color: auto; }
    StatusHeader #status-alert.-alert-high { background: $error; color: auto; }
    StatusHeader #status-alert.-alert-medium { background: $warning; color: auto; }
    StatusHeader #status-alert.-alert-low { background: $accent; color: auto; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="status-line")
        with Horizontal():
            yield Static(id="status-counts")
            yield Static(id="status-progress")
        yield Static(id="status-alert")

    def show(self, state: HeaderState) -> None:
        # A snapshot can land before this header has composed its lines or after they were
        # removed (a screen opening or the app closing): there is nothing to draw yet.
        if not self.is_mounted or not self.query("#status-line"):
            return
        self.query_one("#status-line", Static).update(monitoring_line(state))
        width = self.content_size.width or 78
        self.query_one("#status-counts", Static).update(counts_line(state, width))
        self.set_class(state.scan is not None, "-scanning")
        if state.scan is not None:
            self.query_one("#status-progress", Static).update(progress_bar(state.scan))
        self.set_class(bool(state.alerts), "-alerting")
        banner = self.query_one("#status-alert", Static)
        if state.alerts:
            banner.update(alert_line(state, width))
            severity = f"-alert-{state.alerts[0].severity}"
            for name in SEVERITY_CLASSES:
                banner.set_class(name == severity, name)
