"""One nmap run's stdout: parsed once as it arrives, and kept as the raw report, compressed.

Why its own piece: a sweep of a /16 writes ~110 MB of XML. Fed to `NmapOutput.take` as the
pipe delivers it, the XML goes through the one report reader (`nmap_parse.ReportStream`,
defusedxml, bounded) and into a gzip member (`raw_xml.GzipMember`) at once, so it is never
held whole, parsed twice, or compressed again by the store.

A watcher (`on_progress`) is told the run's `LiveCounts` whenever a piece changed them:
hosts completed, open ports in them, and nmap's own percent (`--stats-every`), which is
how a scan shows progress inside one long nmap run.
"""

from __future__ import annotations

from collections.abc import Callable

from portconsole.core.adapters.nmap_parse import LiveCounts, ReportRefused, ReportStream
from portconsole.core.domain.model import HostObservation
from portconsole.core.domain.raw_xml import GzipMember


class NmapOutput:
    """One nmap run's stdout: parsed once as it arrives, and kept as the raw report.

    A refusal (not nmap XML, over the size cap) stops the parse, not nmap; it is raised
    by `hosts` once the run is over, so the run ends the ordinary way.
    """

    def __init__(
        self, open_only: bool, on_progress: Callable[[LiveCounts], None] | None = None
    ) -> None:
        self._stream = ReportStream(open_only=open_only)
        self._raw = GzipMember.writer()  # the raw report, compressed as it arrives
        self._refused: ReportRefused | None = None
        self._on_progress = on_progress
        self._seen: tuple[int, int, float | None] = (0, 0, None)
        self.version = ""  # the nmap version the report names, once `hosts` has read it

    def take(self, data: bytes) -> None:
        self._raw.feed(data)
        if self._refused is None:
            try:
                self._stream.feed(data)
                if self._on_progress is not None:
                    self._stream.poke()
            except ReportRefused as error:
                self._refused = error
                return
            self._report()

    def _report(self) -> None:
        if self._on_progress is None:
            return
        live = self._stream.live
        now = (live.hosts, live.open_ports, live.percent)
        if now != self._seen:
            self._seen = now
            self._on_progress(live)

    def hosts(self) -> dict[str, HostObservation]:
        """The hosts nmap reported (and `version`, the nmap it names). Raises ReportRefused."""
        if self._refused is not None:
            raise self._refused
        report = self._stream.close()
        self.version = report.version
        return report.hosts

    def xml(self) -> GzipMember:
        return self._raw.finish()
