"""Where this machine's clock comes from, as far as the system says: for the report's scope.

Every time in a report is this machine's UTC clock, so an assessor asks whether it was
synchronised. systemd's `timedatectl` answers where it runs (NTP on or off, synchronised or
not); elsewhere (a container, no systemd, no D-Bus) the answer is "not known", never a guess.
Bounded: one short-lived process with a timeout, no shell.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from msgspec import Struct

TIMEOUT_SECONDS = 2.0
NOT_KNOWN = "not known (timedatectl gave no answer on this system)"


class ClockSource(Struct, frozen=True):
    """What the system said of its clock when the report was made."""

    source: str
    ntp_synchronized: bool | None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "ntp_synchronized": self.ntp_synchronized}


def _timedatectl(program: str, prop: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [program, "show", "-p", prop, "--value"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip().lower()
    return value if done.returncode == 0 and value in ("yes", "no") else None


def clock_source() -> ClockSource:
    """The system clock's source and NTP state, or "not known" where the system does not say."""
    program = shutil.which("timedatectl")
    if program is None:
        return ClockSource("system clock; synchronisation not known (no timedatectl)", None)
    ntp = _timedatectl(program, "NTP")
    synced = _timedatectl(program, "NTPSynchronized")
    if ntp is None and synced is None:
        return ClockSource(f"system clock; synchronisation {NOT_KNOWN}", None)
    service = {"yes": "NTP on", "no": "NTP off", None: "NTP setting not known"}[ntp]
    return ClockSource(
        f"system clock (timedatectl: {service})",
        None if synced is None else synced == "yes",
    )
