"""Running one nmap for a scanner: the base `Scanner` builds on (scanner.py says why we run
nmap ourselves and what each scan asks of it).

`NmapRunner._run` starts one nmap from a fixed argument vector (`scan_command`), waits for
it to end, time out or be cancelled (`nmap_process.run_process`), and parses its XML as it
arrives (`nmap_output.NmapOutput`); what it produced is a `RunOutcome`. The scope gate
(`_checked`) and the run sizes (`scan_batches`) are here too, so every kind of question a
scanner asks passes through the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from msgspec import Struct, field

from portconsole.core.adapters.nmap_output import NmapOutput
from portconsole.core.adapters.nmap_parse import LiveCounts, ReportRefused
from portconsole.core.adapters.nmap_process import Cancellable, raw_sockets_allowed, run_process
from portconsole.core.adapters.scan_batches import batch_size_for, batch_timeout_for, timeout_note
from portconsole.core.adapters.scan_command import NMAP_MISSING, NmapCommand, raise_if_user_fixable
from portconsole.core.adapters.scanning import checked_addresses
from portconsole.core.domain.model import HostObservation
from portconsole.core.domain.raw_xml import GzipMember
from portconsole.core.domain.targets import Scope
from portconsole.core.errors import ScannerError
from portconsole.core.settings import ScanSettings


class RunOutcome(Struct):
    """What one nmap process produced: parsed hosts, or why there are none."""

    addresses: list[str]
    xml: GzipMember | None = None
    hosts: dict[str, HostObservation] = field(default_factory=dict)
    error: str = ""
    cancelled: bool = False
    version: str = ""  # the nmap version its report names


class NmapRunner:
    """nmap as a scanner runs it: the binary, its version, run sizes, the scope gate and
    one run to its end. `Scanner` (scanner.py) decides what to ask. Thread-safe."""

    def __init__(self, settings: ScanSettings, scope: Scope, nmap_path: str | None = None) -> None:
        self.settings = settings
        self.scope = scope
        self.privileged = raw_sockets_allowed() and not settings.force_unprivileged
        self.scan_type = "syn" if self.privileged else "connect"
        self._command = NmapCommand(settings, self.privileged, nmap_path)

    # -- nmap and sizing --------------------------------------------------------------

    def nmap_path(self) -> str:
        """The nmap binary in use, looked up once. Raises ScannerError when there is none."""
        return self._command.path()

    def nmap_version(self) -> str:
        """nmap's version, e.g. `7.93`. Raises ScannerError when nmap is missing."""
        return self._command.version()

    def batch_size_for(self, hosts: int, ports: int) -> int:
        """Hosts per nmap process, for hosts asked `ports` ports each (see
        scan_batches.batch_size_for)."""
        return batch_size_for(self.settings, hosts, ports)

    def batch_timeout_for(self, hosts: int) -> float:
        """Seconds one nmap run over `hosts` hosts may take (see scan_batches)."""
        return batch_timeout_for(self.settings, hosts)

    # -- checks -------------------------------------------------------------------------

    def _checked(self, addresses: Iterable[str]) -> list[str]:
        # The last gate before nmap: a caller that skipped target parsing is still refused.
        return checked_addresses(addresses, self.scope)

    def _require_udp_privilege(self) -> None:
        self._command.require_udp_privilege()

    # -- running nmap -------------------------------------------------------------------

    def _run(
        self,
        args: list[str],
        addresses: list[str],
        cancel: Cancellable | None,
        timeout: float,
        *,
        open_only: bool = True,
        on_progress: Callable[[LiveCounts], None] | None = None,
    ) -> RunOutcome:
        """Run one nmap to completion, timeout or cancel, parsing its XML as it arrives.

        `open_only`: keep only open ports (a sweep or probe); a -sV run keeps every port.
        `on_progress`: told what the run has written so far, as it arrives.
        """
        outcome = RunOutcome(addresses=addresses)
        reading = NmapOutput(open_only, on_progress)
        try:
            ran = run_process(args, cancel, timeout, reading.take)
        except FileNotFoundError:
            raise ScannerError(NMAP_MISSING) from None
        except PermissionError:
            raise ScannerError(f"cannot execute {args[0]}: check its permissions") from None
        if ran.cancelled:
            outcome.cancelled = True
            return outcome
        if ran.timed_out:
            outcome.error = timeout_note(timeout)
            return outcome
        stderr = ran.stderr.decode("utf-8", "replace")
        if ran.returncode != 0:
            raise_if_user_fixable(stderr)
            first = next((ln for ln in stderr.splitlines() if ln.strip()), "no message")
            outcome.error = f"nmap exited with status {ran.returncode}: {first.strip()[:200]}"
            return outcome
        try:
            outcome.hosts = reading.hosts()
            outcome.version = reading.version
        except ReportRefused as error:
            outcome.error = f"nmap output could not be read: not usable nmap XML ({error})"
            return outcome
        outcome.xml = reading.xml()
        return outcome
