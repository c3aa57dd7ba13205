"""The two-line monitoring header shown on every main screen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from portconsole.core.domain.model import Progress
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


def monitoring_line(state: HeaderState) -> Text:
    line = Text()
    line.append(state.title, style="bold")
    line.append("  ")
    overview = state.overview
    if overview is None:
        line.append("loading…", style="italic")
        return line
    if state.scan is not None:
        phase = state.scan.progress.phase if state.scan.progress else "starting"
        line.append(f"▶ scanning {clean(state.scan.label or 'all', 20)} ({phase})", style="bold")
    elif overview.paused:
        line.append("‖ PAUSED", style="bold reverse")
    elif overview.is_leader:
        line.append("● leading")
    elif overview.leader is not None:
        leader = overview.leader
        who = clean(f"{leader.user}@{leader.host}", 28)
        line.append(f"○ {who} ({clean(leader.origin, 8)}) leads")
    else:
        line.append("○ no scan leader")
    if state.readonly:
        line.append("  [read-only]", style="bold")
    last = overview.last_scan
    if last:
        line.append(
            f"  last {short_time(last.get('finished_at'))} {clean(last.get('outcome', ''), 10)}"
        )
    return line


def counts_line(state: HeaderState) -> Text:
    overview = state.overview
    line = Text()
    if overview is None:
        return line
    # While a scan's progress bar shares the line, the counts use short labels so that
    # all four still fit at 80 columns.
    short = state.scan is not None
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
    line.append(
        f" · {overview.open_findings} open" if short else f" · findings {overview.open_findings}"
    )
    if state.scan is None and overview.next_scan is not None:
        group = f" {clean(overview.next_group, 16)}" if overview.next_group else ""
        line.append(f" · next {short_time(overview.next_scan)[11:]}{group}")
    return line


def progress_bar(scan: ScanState, width: int = 14) -> Text:
    """A text bar: `[███████░░░░░░░] 12/40 sweep`.

    Drawn as text rather than with Textual's ProgressBar, whose animation timers keep
    repainting (CPU over SSH, and screenshots that never settle) even while hidden.
    """
    progress = scan.progress
    bar = Text()
    if progress is None or not progress.hosts_total:
        bar.append("[" + "·" * width + "] starting")
        return bar
    done = min(progress.hosts_done, progress.hosts_total)
    filled = round(width * done / progress.hosts_total)
    bar.append("[")
    bar.append("█" * filled, style="bold")
    bar.append("░" * (width - filled))
    bar.append(f"] {done}/{progress.hosts_total} {progress.phase}")
    return bar


class StatusHeader(Widget):
    """Who leads, last and next scan, paused or not, the counts, and scan progress."""

    DEFAULT_CSS = """
    StatusHeader { height: 2; }
    StatusHeader > Horizontal { height: 1; }
    StatusHeader #status-line { width: 1fr; height: 1; }
    StatusHeader #status-counts { width: 1fr; height: 1; }
    StatusHeader #status-progress { width: auto; height: 1; display: none; }
    StatusHeader.-scanning #status-progress { display: block; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="status-line")
        with Horizontal():
            yield Static(id="status-counts")
            yield Static(id="status-progress")

    def show(self, state: HeaderState) -> None:
        # A snapshot can land before this header has composed its lines or after they were
        # removed (a screen opening or the app closing): there is nothing to draw yet.
        if not self.is_mounted or not self.query("#status-line"):
            return
        self.query_one("#status-line", Static).update(monitoring_line(state))
        self.query_one("#status-counts", Static).update(counts_line(state))
        self.set_class(state.scan is not None, "-scanning")
        if state.scan is not None:
            self.query_one("#status-progress", Static).update(progress_bar(state.scan))
