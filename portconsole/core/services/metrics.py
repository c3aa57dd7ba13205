"""Prometheus metrics: what an operations team graphs and alerts on, read on each scrape.

One custom collector serves both ways out: `daemon --metrics ADDR:PORT` (an HTTP endpoint)
and `portconsole metrics --textfile PATH` (node_exporter's textfile collector). Nothing is
counted in memory as it happens: every scrape reads the Monitor's current state (findings,
outbox, schedule: small tables), and the counters come from the journal, which is the record,
so a restarted daemon, a scan run from the console or an import are all counted alike.

The journal is read incrementally: a `JournalTally` remembers the last event it saw and
reads only what was appended since (from the end of the journal), so a scrape costs about
the events of the last interval. Every metric is described in docs/metrics.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from msgspec import Struct, field
from prometheus_client import start_http_server, write_to_textfile
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from portconsole import __version__
from portconsole.core.adapters.journal import AuditLog
from portconsole.core.services.base import ServiceBase
from portconsole.core.timeutil import parse_iso

# An ad-hoc scan (targets on the command line, an import without a group) has no group.
NO_GROUP = "-"
PREFIX = "portconsole"


class _Totals(Struct):
    """What the journal says so far (up to `seq`)."""

    seq: int = 0
    scans: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, outcome)
    duration_sum: dict[str, float] = field(default_factory=dict)
    duration_count: dict[str, int] = field(default_factory=dict)
    last_success: dict[str, float] = field(default_factory=dict)  # group -> epoch seconds
    started: dict[str, datetime] = field(default_factory=dict)  # group -> open scan.start
    gaps: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, reason)
    gap_ids: set[str] = field(default_factory=set)
    last_anchor: float | None = None  # epoch seconds of the newest audit.anchor
    site_up: dict[str, int] = field(default_factory=dict)  # site -> 1: its last answer taken


class JournalTally:
    """Counters from the journal, advanced to its head on each `update` (thread-safe)."""

    def __init__(self) -> None:
        self._totals = _Totals()
        self._lock = threading.Lock()

    def update(self, audit: AuditLog) -> _Totals:
        with self._lock:
            totals = self._totals
            for record in audit.records_after(totals.seq):
                _count(totals, record)
                totals.seq = int(record["seq"])
            return totals


def _count(totals: _Totals, record: Mapping[str, Any]) -> None:
    action = str(record.get("action", ""))
    details: Mapping[str, Any] = record.get("details") or {}
    if action == "scan.start":
        totals.started[str(details.get("group") or NO_GROUP)] = parse_iso(str(record["at"]))
    elif action == "scan.end":
        group = str(details.get("group") or NO_GROUP)
        # A scan that raised before it finished records only its error: it failed.
        outcome = str(details.get("outcome") or "failed")
        totals.scans[(group, outcome)] = totals.scans.get((group, outcome), 0) + 1
        finished = parse_iso(str(record["at"]))
        # An import has no start of its own: it must not close a running scan's start.
        started = None if details.get("imported") else totals.started.pop(group, None)
        if started is not None and finished >= started:
            seconds = (finished - started).total_seconds()
            totals.duration_sum[group] = totals.duration_sum.get(group, 0.0) + seconds
            totals.duration_count[group] = totals.duration_count.get(group, 0) + 1
        if outcome == "success":
            stamp = finished.timestamp()
            totals.last_success[group] = max(totals.last_success.get(group, 0.0), stamp)
    elif action == "monitoring.gap":
        # A late run is reported twice (ongoing, then closed) under one id: count it once.
        gap_id = str(details.get("id") or record.get("id"))
        if gap_id not in totals.gap_ids:
            totals.gap_ids.add(gap_id)
            key = (str(details.get("group") or NO_GROUP), str(details.get("reason") or ""))
            totals.gaps[key] = totals.gaps.get(key, 0) + 1
    elif action in ("site.result.accepted", "site.result.refused", "site.unavailable"):
        site = str((record.get("resource") or {}).get("site") or "")
        totals.site_up[site] = 1 if action == "site.result.accepted" else 0
    elif action == "audit.anchor":
        recorded = record.get("recorded_at") or record["at"]
        totals.last_anchor = parse_iso(str(recorded)).timestamp()


MonitorSource = ServiceBase | Callable[[], ServiceBase]


class MonitorCollector(Collector):
    """Reads the Monitor on every `collect()` (each scrape, or one textfile write).

    `source` is the Monitor, or a function returning the current one (a daemon replaces
    its Monitor when SIGHUP reloads the settings).
    """

    def __init__(self, source: MonitorSource) -> None:
        self._source = source
        self.tally = JournalTally()

    @property
    def monitor(self) -> ServiceBase:
        return self._source if isinstance(self._source, ServiceBase) else self._source()

    def describe(self) -> Iterable[Metric]:
        # Nothing to check at registration: collecting reads the data dir.
        return []

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        now = monitor.clock()
        totals = self.tally.update(monitor.audit)
        groups = sorted(monitor.settings.groups)

        info = GaugeMetricFamily(
            f"{PREFIX}_build_info", "PortConsole's version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info

        scans = CounterMetricFamily(
            f"{PREFIX}_scans",
            "Scan cycles finished, by target group and outcome (from the journal).",
            labels=["group", "outcome"],
        )
        for (group, outcome), count in sorted(totals.scans.items()):
            scans.add_metric([group, outcome], count)
        yield scans

        duration = SummaryMetricFamily(
            f"{PREFIX}_scan_duration_seconds",
            "Time from a scan cycle's start to its end, by target group.",
            labels=["group"],
        )
        for group in sorted(totals.duration_count):
            duration.add_metric([group], totals.duration_count[group], totals.duration_sum[group])
        yield duration

        last = GaugeMetricFamily(
            f"{PREFIX}_last_successful_scan_timestamp_seconds",
            "When the group's last successful scan finished (Unix time; 0: never).",
            labels=["group"],
        )
        for group in sorted(set(groups) | set(totals.last_success)):
            last.add_metric([group], totals.last_success.get(group, 0.0))
        yield last

        findings = GaugeMetricFamily(
            f"{PREFIX}_findings_open",
            "Findings waiting for a person (new, acknowledged, flagged), by kind and severity.",
            labels=["kind", "severity"],
        )
        open_counts: dict[tuple[str, str], int] = {}
        for finding in monitor.findings_book.open():
            key = (finding.kind, finding.severity)
            open_counts[key] = open_counts.get(key, 0) + 1
        for (kind, severity), count in sorted(open_counts.items()):
            findings.add_metric([kind, severity], count)
        yield findings

        status = monitor.notifier.status()
        outbox = GaugeMetricFamily(
            f"{PREFIX}_outbox_messages",
            "Notification outbox messages by status (delivered ones are kept 24 h).",
            labels=["status"],
        )
        for name, count in sorted(status.get("counts", {}).items()):
            outbox.add_metric([name], count)
        yield outbox
        yield GaugeMetricFamily(
            f"{PREFIX}_outbox_oldest_pending_age_seconds",
            "Age of the oldest message still waiting for delivery (0: none waiting).",
            value=float(status.get("oldest_pending_age_seconds") or 0.0),
        )

        yield GaugeMetricFamily(
            f"{PREFIX}_journal_events",
            "Events in the audit journal (the sequence number of its head).",
            value=totals.seq,
        )
        if totals.last_anchor is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_journal_last_anchor_age_seconds",
                "Seconds since the journal's head was last published as an anchor "
                "(absent: never anchored).",
                value=max(0.0, now.timestamp() - totals.last_anchor),
            )

        gaps = CounterMetricFamily(
            f"{PREFIX}_monitoring_gaps",
            "Monitoring gaps recorded (a group scanned late, or a run failed or partial), "
            "by group and reason.",
            labels=["group", "reason"],
        )
        for (group, reason), count in sorted(totals.gaps.items()):
            gaps.add_metric([group, reason], count)
        yield gaps

        overdue = {gap.group for gap in monitor.scheduler.overdue(now)}
        late = GaugeMetricFamily(
            f"{PREFIX}_monitoring_overdue",
            "1 while the group's scheduled scan is later than interval + jitter + grace.",
            labels=["group"],
        )
        for group in groups:
            late.add_metric([group], 1 if group in overdue else 0)
        yield late
        sites = GaugeMetricFamily(
            f"{PREFIX}_site_up",
            "1 while the site's last answer was taken; 0 after a job it did not answer in time, "
            "a broker it could not be reached through, or a refused result (absent: no job yet).",
            labels=["site"],
        )
        for site, up in sorted(totals.site_up.items()):
            sites.add_metric([site], up)
        yield sites
        yield GaugeMetricFamily(
            f"{PREFIX}_monitoring_paused",
            "1 while scheduled monitoring is paused.",
            value=1 if monitor.paused else 0,
        )


def metrics_registry(monitor: MonitorSource) -> CollectorRegistry:
    """A registry holding only PortConsole's collector (no process or Python metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(monitor))
    return registry


def write_textfile(monitor: ServiceBase, path: Path) -> None:
    """Write the metrics for node_exporter's textfile collector, atomically (temp + rename).

    The file keeps the umask's mode (not 0600 like the data dir's files): node_exporter
    runs as its own user and must read it.
    """
    write_to_textfile(str(path), metrics_registry(monitor))


def serve_metrics(monitor: MonitorSource, host: str, port: int) -> Callable[[], None]:
    """Serve /metrics over HTTP on host:port in a background thread; returns the stopper."""
    server, thread = start_http_server(port, addr=host, registry=metrics_registry(monitor))

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


__all__ = [
    "NO_GROUP",
    "JournalTally",
    "MonitorCollector",
    "metrics_registry",
    "serve_metrics",
    "write_textfile",
]
