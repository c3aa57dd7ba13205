"""How a scan's hosts are cut into nmap runs, how long each run may take, and how many
hosts nmap scans at once inside one run.

Why its own module: these are sizing rules, measured and tuned on their own (a /16 is
16 nmap runs of 4,096 hosts, not 4,096 runs of 16), and the progress figure needs the
same numbers the runs are planned with. `Scanner` (scanner.py) applies them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from portconsole.core.domain.targets import PortSpec
from portconsole.core.settings import ScanSettings

# Auto batches: a small target set is spread evenly over the workers, at most
# AUTO_BATCH_SMALL hosts per nmap; a large one grows to about AUTO_BATCH_ROUNDS nmap runs
# per worker, at most AUTO_BATCH_MAX hosts each. A /16 at 4 workers is 16 runs of 4,096
# hosts, not 4,096 runs of 16 (each start costs ~0.1 s and nmap schedules a big host group
# itself).
AUTO_BATCH_SMALL = 16
AUTO_BATCH_ROUNDS = 4
AUTO_BATCH_MAX = 4096
# A grown batch may take at most this many times scan.batch_timeout.
BATCH_TIMEOUT_MAX_FACTOR = 8
# And a sweep of little work is cut into fewer runs: each run gets at least this many
# probes (hosts x ports), and there are never more runs than CPUs. An nmap run costs a
# fixed ~75 ms even for one port (its start, and setting up and closing its packet
# capture), and on loopback each run's capture sees every other run's packets. Raw nmap
# over 40 hosts on a 2-core machine (-T4 -sS, median of 5):
#     30 ports: 1 run 0.09 s, 2 runs 0.09 s, 4 runs 0.13 s
#    100 ports: 1 run 0.13 s, 2 runs 0.10 s, 4 runs 0.15 s
#  1,000 ports: 1 run 0.39 s, 2 runs 0.25 s, 4 runs 0.30 s
#  3,000 ports: 1 run 0.93 s, 2 runs 0.59 s, 4 runs 0.59 s
PROBES_PER_RUN = 2048


def batch_size_for(settings: ScanSettings, hosts: int, ports: int, cpus: int | None = None) -> int:
    """Hosts per nmap process, for `hosts` hosts asked `ports` ports each (TCP and UDP
    counted apart). Auto (scan.batch_size 0): each nmap start costs a fixed ~0.1 s, so
    one process per host wasted a quarter of a 40-host sweep (4.8 s vs 3.6 s with 10 per
    process); spread the hosts evenly over the workers (at most AUTO_BATCH_SMALL each),
    let a large target set grow its batches (AUTO_BATCH_MAX), and give a sweep of little
    work fewer, bigger runs (PROBES_PER_RUN; never more runs than `cpus`, by default the
    CPU count). A 40-host sweep of 30 ports is one run."""
    if settings.batch_size:
        return settings.batch_size
    workers = settings.workers
    even = min(AUTO_BATCH_SMALL, -(-hosts // workers))
    grown = min(AUTO_BATCH_MAX, -(-hosts // (workers * AUTO_BATCH_ROUNDS)))
    runs = min(-(-hosts * ports // PROBES_PER_RUN), cpus or os.cpu_count() or 1)
    fewer = min(AUTO_BATCH_MAX, -(-hosts // max(1, runs)))
    return max(1, even, grown, fewer)


def batch_timeout_for(settings: ScanSettings, hosts: int) -> float:
    """Seconds one nmap run over `hosts` hosts may take: scan.batch_timeout for each
    AUTO_BATCH_SMALL hosts (a grown batch does the work of several small ones), at most
    BATCH_TIMEOUT_MAX_FACTOR times scan.batch_timeout, so that a hung run is still killed
    within the hour at the defaults (nmap scans a batch's hosts in parallel)."""
    factor = min(max(1, -(-hosts // AUTO_BATCH_SMALL)), BATCH_TIMEOUT_MAX_FACTOR)
    return settings.batch_timeout * factor


def timeout_note(timeout: float) -> str:
    """The error of a run killed at its timeout, naming the setting that decides it."""
    return f"nmap timed out after {timeout:g} s (scan.batch_timeout per {AUTO_BATCH_SMALL} hosts)"


def split_batches(addresses: list[str], size: int) -> list[list[str]]:
    """Host batches of `size`, never mixing IPv4 and IPv6 (nmap needs -6 for v6)."""
    # The addresses are checked already (scanning.checked_addresses): only IPv6 has a ':'.
    # Parsing each again cost 1.3 s on a /16.
    out: list[list[str]] = []
    for v6 in (False, True):
        family = [a for a in addresses if (":" in a) == v6]
        out += [family[i : i + size] for i in range(0, len(family), size)]
    return out


def plan_batches(
    planned: list[str], known: Iterable[str] | None, size: int
) -> list[tuple[list[str], bool]]:
    """(batch, discover) pairs: known hosts first, swept with -Pn (discover False), then
    the others with nmap's host discovery. `known` None: every host is known."""
    known_set = set(planned) if known is None else set(known)
    batches = [(b, False) for b in split_batches([a for a in planned if a in known_set], size)]
    batches += [(b, True) for b in split_batches([a for a in planned if a not in known_set], size)]
    return batches


# A re-probe asks a few ports of each host, but nmap asks every host of a run every port
# of the run: hosts share a run while the run's ports stay within this many. Measured on a
# 2-core machine: a re-probe of 40 hosts x 30 ports in one nmap run took 0.08 s, in four
# runs 0.13 s (each start costs CPU, and each run's capture sees the others' packets).
PROBE_BATCH_PORTS = 64


def probe_batches(wanted: dict[str, set[tuple[int, str]]]) -> list[list[str]]:
    """Host batches for a re-probe of `wanted` (address -> its asked ports): as few runs as
    keep each run's ports within PROBE_BATCH_PORTS (or one host's own, if more) and its
    hosts within AUTO_BATCH_MAX; hosts asked the same ports go together. IPv4 and IPv6
    never share a run."""
    out: list[list[str]] = []
    for v6 in (False, True):
        family = sorted((a for a in wanted if (":" in a) == v6), key=lambda a: sorted(wanted[a]))
        batch: list[str] = []
        ports: set[tuple[int, str]] = set()
        for address in family:
            grown = ports | wanted[address]
            fits = len(grown) <= max(PROBE_BATCH_PORTS, len(wanted[address]))
            if batch and (not fits or len(batch) >= AUTO_BATCH_MAX):
                out.append(batch)
                batch, grown = [], set(wanted[address])
            batch.append(address)
            ports = grown
        if batch:
            out.append(batch)
    return out


def port_argument(ports: Iterable[tuple[int, str]]) -> str:
    """`T:22,80,U:53` from (port, proto) pairs, ranges merged."""
    by_proto: dict[str, list[int]] = {"tcp": [], "udp": []}
    for port, proto in ports:
        by_proto[proto].append(port)
    parts = []
    for proto, prefix in (("tcp", "T:"), ("udp", "U:")):
        if by_proto[proto]:
            parts.append(prefix + str(PortSpec.of(by_proto[proto])))
    return ",".join(parts)


def nmap_hostgroup(tcp_ports: int, udp: bool) -> int:
    """How many hosts nmap scans at once in one run (its `determineScanGroupSize`): 128
    with UDP, else 1,024 / the TCP ports, at least 64. Its `<taskprogress>` percent is of
    that group; the progress figure weighs it with this size."""
    if udp:
        return 128
    return max(1024 // max(1, tcp_ports), 64)


def tcp_port_count(ports: str) -> int:
    """TCP ports in an nmap -p argument such as `T:22,80-90,U:53` (nmap's host group)."""
    count = 0
    proto = "T"
    for part in ports.split(","):
        if part[:2] in ("T:", "U:"):
            proto, part = part[0], part[2:]
        if proto != "T" or not part:
            continue
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1 if low.isdigit() else 1
    return count
