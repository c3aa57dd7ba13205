"""Which nmap runs, and the argument vectors it is given: a fixed profile only.

Why its own module: nothing a user typed may ever become an nmap argument. The vectors
are built here from the settings, the privilege we have and validated IP addresses, in
one place that can be read whole; `Scanner` (scanner.py) decides when to run them.
python-nmap is only used to find nmap's version, when no report of a sweep has told it
(a sweep's XML names nmap's version: a steady scan runs no `nmap -V`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import threading
from collections.abc import Iterable, Sequence

from portconsole.core.adapters.scan_batches import port_argument
from portconsole.core.errors import ScannerError
from portconsole.core.settings import ScanSettings

# Loopback and LAN answer at once; a real but lossy network gets a few retries, and the
# confirm step (probe) absorbs the rest before anything becomes a finding.
MAX_RETRIES = 3
# nmap writes a <taskprogress> element this often (its own percent of the host group it
# is scanning), read live for the progress figure. Measured cost: see tests/test_progress.
STATS_EVERY = "2s"
NMAP_FALLBACK_PATHS = ("/usr/bin/nmap", "/usr/local/bin/nmap", "/opt/local/bin/nmap")
NMAP_MISSING = "nmap is not installed: run 'apt-get install nmap' (or make demo / make test)"


class NmapCommand:
    """The nmap binary (looked up once) and the argument vectors of our fixed profile."""

    def __init__(self, settings: ScanSettings, privileged: bool, path: str | None) -> None:
        self.settings = settings
        self.privileged = privileged
        self._path_hint = path
        self._found_path = ""
        self._version_lock = threading.Lock()
        self._version = ""

    def path(self) -> str:
        """The nmap binary in use, looked up once. Raises ScannerError when there is none.

        A binary removed later is caught when it is run (FileNotFoundError: NMAP_MISSING).
        """
        if not self._found_path:
            self._found_path = self._find()
        return self._found_path

    def _find(self) -> str:
        if self._path_hint:
            found = shutil.which(self._path_hint)
            if not found:
                raise ScannerError(f"nmap not found at {self._path_hint}: {NMAP_MISSING}")
            return found
        found = shutil.which("nmap")
        if found:
            return found
        # python-nmap does the same: PATH may lack /usr/bin when started from a service.
        for candidate in NMAP_FALLBACK_PATHS:
            if os.access(candidate, os.X_OK):
                return candidate
        raise ScannerError(NMAP_MISSING)

    def version(self) -> str:
        """nmap's version, e.g. `7.93`, asked once (python-nmap runs `nmap -V`) unless a
        report told it (`learned`). Raises ScannerError when nmap is missing."""
        with self._version_lock:
            if not self._version:
                import nmap  # python-nmap, only when no report has said which nmap ran

                path = self.path()
                try:
                    analyser = nmap.PortScanner(nmap_search_path=(path,))
                except nmap.PortScannerError:
                    raise ScannerError(f"{path} did not run as nmap: {NMAP_MISSING}") from None
                major, minor = analyser.nmap_version()
                self._version = f"{major}.{minor}"
            return self._version

    def learned(self, reported: str) -> str:
        """The version a report of this binary named (`7.93`, `7.94SVN`), as `version`
        says it (major.minor); remembered, so no `nmap -V` is needed. "" if it names none."""
        found = re.match(r"(\d+)\.(\d+)", reported)
        if found is None:
            return ""
        with self._version_lock:
            self._version = self._version or f"{int(found[1])}.{int(found[2])}"
            return self._version

    def require_udp_privilege(self) -> None:
        if not self.privileged:
            if os.geteuid() == 0:
                raise ScannerError(
                    "UDP scanning needs raw sockets: unset scan.force_unprivileged or turn UDP off"
                )
            raise ScannerError(
                "UDP scanning needs root: run PortConsole as root or set scan.udp = false"
            )

    def base_args(self, addresses: Sequence[str], discover: bool = False) -> list[str]:
        args = [
            self.path(),
            "-n",  # never resolve names: no DNS traffic, and no name-based surprises
            f"-T{self.settings.timing}",
            "--max-retries",
            str(MAX_RETRIES),
        ]
        if not discover:
            # -Pn: scan the host even if it ignores ping. A known host that drops ICMP
            # would otherwise be reported down and its ports never scanned, and for a
            # compliance monitor "not scanned" must never read as "nothing open". Hosts
            # never seen (a range's empty addresses) keep nmap's discovery: -Pn on them
            # probes every port of every empty address.
            args.insert(2, "-Pn")
        if not self.privileged:
            # Make nmap behave as an unprivileged user would (no raw sockets at all), so
            # force_unprivileged really exercises the connect-scan path.
            args.append("--unprivileged")
        elif os.geteuid() != 0:
            args.append("--privileged")  # not root, but allowed raw sockets (capabilities)
        if any(ipaddress.ip_address(a).version == 6 for a in addresses):
            args.append("-6")
        return args

    def sweep_args(
        self,
        addresses: Sequence[str],
        ports: str,
        udp: bool,
        discover: bool = False,
        *,
        stats: bool = False,
    ) -> list[str]:
        """A sweep of `ports` (an nmap -p argument); `stats`: with live progress."""
        args = self.base_args(addresses, discover)
        args.append("-sS" if self.privileged else "-sT")
        if udp:
            args.append("-sU")
        args += ["-p", ports, *_stats(stats), "-oX", "-", "--", *addresses]
        return args

    def version_args(
        self, address: str, ports: Iterable[tuple[int, str]], *, stats: bool = False
    ) -> list[str]:
        """Service detection (-sV) on these ports of one host."""
        pairs = list(ports)
        args = self.base_args([address])
        args.append("-sS" if self.privileged else "-sT")
        if any(proto == "udp" for _, proto in pairs):
            args.append("-sU")
        args += ["-sV", "-p", port_argument(pairs), *_stats(stats), "-oX", "-", "--", address]
        return args


def raise_if_user_fixable(stderr: str) -> None:
    """nmap's stderr naming a missing privilege, as the one-line error a user can act on."""
    lowered = stderr.lower()
    if "requires root privileges" in lowered or "operation not permitted" in lowered:
        raise ScannerError(
            "nmap lacks the privilege for a SYN scan (raw sockets): run as root with "
            "CAP_NET_RAW, or set scan.force_unprivileged = true for a connect scan"
        )


def _stats(stats: bool) -> list[str]:
    return ["--stats-every", STATS_EVERY] if stats else []
