"""Scan progress for the CLI, on stderr: a bar on a terminal, plain lines otherwise.

Why stderr only: stdout carries the result (a table, or one JSON document with --json)
that scripts read; progress must never mix into it. Why two forms: a terminal gets a
live bar (rich, already installed with Textual, imported only when a terminal is there,
so a piped CLI does not pay for it); a log file or a pipe (cron, CI) gets a plain line
now and then, never a bar's control codes. A scan that ends within PLAIN_FIRST_SECONDS
writes no plain line at all, so short runs stay as quiet as they were.

Reports arrive from the scanner's worker threads (`Progress`, see adapters/scanning.py);
both forms take them under a lock and keep only the newest.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from portconsole.core.domain.model import Progress

# Plain lines: none before this many seconds, then one each time the work done passes
# another PLAIN_STEP_PERCENT, or after PLAIN_EVERY_SECONDS without one, or at a new phase
# (confirm, ingest: one line when it starts).
PLAIN_FIRST_SECONDS = 2.0
PLAIN_EVERY_SECONDS = 10.0
PLAIN_STEP_PERCENT = 10
# Phases the scanner reports live; the others (confirm, ingest, done) are short steps.
LIVE_PHASES = ("sweep", "fingerprint")


def progress_line(report: Progress) -> str:
    """`sweep 1,024/65,534 hosts  1.6%  12 open  ETA 0:31`: one plain line (a short step
    such as `ingest` has no percent or ETA of its own)."""
    counts = f"{report.phase} {report.hosts_done:,}/{report.hosts_total:,} hosts  "
    if report.phase not in LIVE_PHASES:
        return f"{counts}{report.open_ports:,} open"
    return f"{counts}{100 * report.fraction:.1f}%  {report.open_ports:,} open  {report.eta_text()}"


class PlainProgress:
    """Plain lines on a stream that is not a terminal (see the module docstring)."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_at = float("-inf")
        self._last_step = -1
        self._last_phase = ""
        self._newest: Progress | None = None
        self._written = 0

    def __call__(self, report: Progress) -> None:
        with self._lock:
            self._newest = report
            now = self._clock()
            if report.phase == "done" or now - self._started < PLAIN_FIRST_SECONDS:
                return
            if report.phase not in LIVE_PHASES:  # a short step: named once, when it starts
                if report.phase != self._last_phase:
                    self._write(report, now, -1)
                return
            step = int(100 * report.fraction) // PLAIN_STEP_PERCENT
            if (
                report.phase != self._last_phase
                or step > self._last_step
                or now - self._last_at >= PLAIN_EVERY_SECONDS
            ):
                self._write(report, now, step)

    def _write(self, report: Progress, now: float, step: int) -> None:
        self._last_at, self._last_step, self._last_phase = now, step, report.phase
        self._written += 1
        try:
            print(f"portconsole: {progress_line(report)}", file=self._stream, flush=True)
        except (OSError, ValueError):  # stderr closed: progress is not worth failing over
            pass

    def close(self) -> None:
        """A last line with the final figures, if any line was written."""
        with self._lock:
            newest = self._newest
            if self._written and newest is not None:
                elapsed = self._clock() - self._started
                try:
                    print(
                        f"portconsole: scanned {newest.hosts_done:,}/{newest.hosts_total:,} "
                        f"hosts, {newest.open_ports:,} open, in {elapsed:.0f} s",
                        file=self._stream,
                        flush=True,
                    )
                except (OSError, ValueError):
                    pass


class BarProgress:
    """A live bar on a terminal (rich), removed when the scan ends (the result follows)."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("{task.description:<11}"),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[hosts]}"),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[open]}"),
            TextColumn("{task.fields[eta]}"),
            console=Console(file=stream, stderr=stream is sys.stderr),
            transient=True,
            refresh_per_second=5,
        )
        self._task = self._bar.add_task("starting", total=100.0, **_fields(None))
        self._bar.start()

    def __call__(self, report: Progress) -> None:
        self._bar.update(
            self._task,
            description=report.phase,
            completed=100.0 * report.fraction,
            **_fields(report),
        )

    def close(self) -> None:
        self._bar.stop()


def _fields(report: Progress | None) -> dict[str, Any]:
    if report is None:
        return {"hosts": "", "open": "", "eta": ""}
    return {
        "hosts": f"{report.hosts_done:,}/{report.hosts_total:,} hosts",
        "open": f"{report.open_ports:,} open",
        "eta": report.eta_text() if report.phase in LIVE_PHASES else "",
    }


def stderr_progress(stream: TextIO | None = None) -> PlainProgress | BarProgress:
    """The form for this stream (stderr by default): a bar on a terminal, else lines."""
    stream = sys.stderr if stream is None else stream
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return BarProgress(stream) if terminal else PlainProgress(stream)
