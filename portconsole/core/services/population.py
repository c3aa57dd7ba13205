"""The `population` of an evidence pack: open ports at the period's end and at each sample,
each with the approval in force then and the finding that covered it, and their counts over
the period (domain/population.py says what each row means).

Every moment is answered by the store's point-in-time query (Store.state_at), the same one
the point-in-time report reads, so a population row and that report agree for one moment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from portconsole.core.domain.approval import Approval
from portconsole.core.domain.finding import Finding
from portconsole.core.domain.population import (
    PortKey,
    findings_by_port,
    population_at,
    series_point,
    series_times,
)
from portconsole.core.domain.report_figures import utc
from portconsole.core.domain.state import PortAt
from portconsole.core.errors import UserError
from portconsole.core.services.report_sources import Progress, ReportSources, report_progress
from portconsole.core.timeutil import iso, parse_iso


class PopulationReader:
    """Populations at any moment, from one read of approvals, findings and scan records."""

    def __init__(self, sources: ReportSources, until: datetime) -> None:
        self.sources = sources
        self.approvals: list[Approval] = sources.approvals.all()
        self.findings: dict[PortKey, list[Finding]] = findings_by_port(sources.findings.all())
        self.records = sources.store.scans(None, until)
        self.backfilled = {str(r["scan_id"]) for r in self.records if r.get("backfill")}

    def open_ports(self, moment: datetime) -> list[PortAt]:
        """The ports open at `moment` (the store's point-in-time query)."""
        state = self.sources.store.state_at(moment, host_windows=self.sources.coverage_windows)
        return state.open_ports

    def at(self, moment: datetime) -> dict[str, Any]:
        """{"at", "ports": [ROW]} for the ports open at `moment`."""
        return population_at(
            self.open_ports(moment), self.approvals, self.findings, self.backfilled, moment
        )

    def counts(self, moment: datetime) -> dict[str, Any]:
        """The series point at `moment` (domain/population.py series_point)."""
        return series_point(self.open_ports(moment), self.approvals, moment)

    def scan_times(self) -> list[datetime]:
        return [parse_iso(str(r["finished_at"])) for r in self.records]


def check_samples(samples: Iterable[datetime], start: datetime, end: datetime) -> list[datetime]:
    """The sample times in order, each inside the period; UserError for one outside it."""
    checked = sorted({utc(s) for s in samples})
    for sample in checked:
        if not start <= sample <= end:
            raise UserError(
                f"--sample {iso(sample)} lies outside the period {iso(start)} to {iso(end)}: "
                "sample a time inside --from/--to"
            )
    return checked


def build_population(
    sources: ReportSources,
    start: datetime,
    end: datetime,
    samples: Sequence[datetime] = (),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The pack's `population`: {"at_end", "samples", "series"} (see the module docstring)."""
    start, end = utc(start), utc(end)
    moments = check_samples(samples, start, end)
    report_progress(progress, "open-port populations", 0.88)
    reader = PopulationReader(sources, end)
    series = [reader.counts(moment) for moment in series_times(start, end, reader.scan_times())]
    return {
        "at_end": reader.at(end),
        "samples": [reader.at(moment) for moment in moments],
        "series": series,
    }
