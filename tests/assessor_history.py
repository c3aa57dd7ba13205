"""Three months of monitoring, as an assessor finds it: the history behind tests/test_assessor.py.

Group "cde" (127.0.0.2-4, daily scans from 2026-09-01), three people, an outage, reviews:

    Aug 20        an nmap report from before monitoring, imported later (backfilled)
    Sep 1  06:00  monitoring starts: 22 and 443 on each host, approved (alice asks, bob approves)
    Sep 15 06:00  .3 6379 opens      -> finding; carol acknowledges 08:00; alice requests,
                                        bob approves on Sep 16 10:00
    Oct 10 06:00  .4 3306 opens      -> finding; carol flags it 09:00; gone at Oct 12's scan
    Oct 20-25     no scan (the scanner VM was down) -> a gap, closed by carol with its cause
    Nov 1  12:00  carol reviews every approval (keep)
    Nov 20 06:00  .2 8080 opens      -> finding, still open at the period's end
    Nov 29 06:00  last scan; the pack covers Sep 1 to Nov 30

Every step goes through the Monitor (a real store, real journal, the replayed scanner at a
pinned clock), with the identity of whoever does it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from portconsole.core.adapters.replay import ReplayScanner
from portconsole.core.identity import Actor
from portconsole.core.monitor import Monitor
from portconsole.core.settings import load_settings

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
PORTS = "22,80,443,3306,6379,8080"
START = datetime(2026, 9, 1, tzinfo=UTC)
END = datetime(2026, 11, 30, tzinfo=UTC)
OUTAGE = (datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 10, 26, tzinfo=UTC))
ALICE = Actor(user="alice", host="ops1", origin="cli", ssh_client="127.0.0.51")
BOB = Actor(user="bob", host="ops2", origin="cli", ssh_client="127.0.0.52")
CAROL = Actor(user="carol", host="ops3", origin="tui", ssh_client="127.0.0.53")


def config_text(anchor_file: Path) -> str:
    return f"""scope = ["127.0.0.0/8"]

[scan]
timing = 4
confirm_probes = 1

[groups.cde]
targets = ["127.0.0.2-4"]
ports = "{PORTS}"
interval = 86400
jitter = 0

[audit]
anchor_file = "{anchor_file}"
anchor_interval = 604800

[report.sla_hours]
critical = 4
high = 24
medium = 72
low = 168
"""


def day(month: int, d: int, hour: int = 6, minute: int = 0) -> datetime:
    return datetime(2026, month, d, hour, minute, tzinfo=UTC)


@dataclass
class AssessorHistory:
    """The monitor, its network and clock, and what each step produced (ids by name)."""

    root: Path
    now: list[datetime] = field(default_factory=lambda: [day(8, 31, 12)])
    ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        anchors = self.root / "published" / "anchors.txt"
        anchors.parent.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.toml"
        config.write_text(config_text(anchors))
        self.settings, self.paths = load_settings(config, self.root / "data")
        network = {h: {22: "ssh", 443: "https"} for h in HOSTS}
        self.network = ReplayScanner(self.settings.scope_obj(), network, clock=self.clock)
        self.monitor = Monitor(
            self.settings, self.paths, origin="daemon", scanner=self.network, clock=self.clock
        )

    def clock(self) -> datetime:
        return self.now[0]

    def at(self, moment: datetime) -> None:
        self.now[0] = moment

    def as_(self, actor: Actor) -> Monitor:
        self.monitor.actor = actor
        self.monitor.origin = actor.origin
        return self.monitor

    def scan(self, moment: datetime) -> None:
        self.at(moment)
        self.monitor.actor = Actor(user="portconsole", host="scanner1", origin="daemon")
        self.monitor.record_gaps()
        self.monitor.run_cycle(group="cde")
        self.monitor.publish_anchor()

    def finding(self, host: str, port: int) -> str:
        found = [
            f
            for f in self.monitor.findings(include_closed=True)
            if f.host == host and f.port == port
        ]
        assert found, f"no finding for {host}:{port}"
        return found[-1].id

    def finding_of_kind(self, kind: str) -> str:
        found = [f for f in self.monitor.findings(include_closed=True) if f.kind == kind]
        assert found, f"no {kind} finding"
        return found[-1].id


def nmap_report(moment: datetime, open_ports: dict[str, dict[int, str]]) -> bytes:
    """An nmap XML report as `nmap -sS -oX` writes it, dated `moment` (for a backfill)."""
    stamp = int(moment.timestamp())
    hosts = []
    for address, ports in open_ports.items():
        rows = "".join(
            f'<port protocol="tcp" portid="{port}"><state state="open" reason="syn-ack" '
            f'reason_ttl="64"/><service name="{name}" method="table" conf="3"/></port>'
            for port, name in sorted(ports.items())
        )
        hosts.append(
            f'<host starttime="{stamp}" endtime="{stamp}"><status state="up" reason="echo-reply" '
            f'reason_ttl="64"/><address addr="{address}" addrtype="ipv4"/><hostnames/>'
            f"<ports>{rows}</ports></host>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n'
        f'<nmaprun scanner="nmap" args="nmap -sS -p {PORTS} -oX - 127.0.0.2-4" start="{stamp}" '
        f'version="7.93" xmloutputversion="1.05"><scaninfo type="syn" protocol="tcp" '
        f'services="{PORTS}"/>' + "".join(hosts) + f'<runstats><finished time="{stamp + 20}" '
        'exit="success"/><hosts up="3" down="0" total="3"/></runstats></nmaprun>\n'
    ).encode()


def build(root: Path) -> AssessorHistory:
    """Run the three months (see the module's docstring). The clock only moves forward."""
    h = AssessorHistory(root)
    net = h.network

    def scan_until(stop: datetime) -> None:
        """The daily 06:00 scans from now up to `stop` (none in the outage)."""
        moment = h.now[0].replace(hour=6, minute=0, second=0, microsecond=0)
        if moment < h.now[0]:
            moment += timedelta(days=1)
        while moment <= stop:
            if not (OUTAGE[0] <= moment < OUTAGE[1]):
                h.scan(moment)
            moment += timedelta(days=1)
        h.at(stop)

    scan_until(day(9, 1, 7))
    for host in HOSTS:
        for port in (22, 443):
            finding = h.finding(host, port)
            h.at(day(9, 1, 8))
            h.as_(ALICE).request(
                finding,
                justification="Admin SSH from the jump host" if port == 22 else "Card portal",
                owner="payments-team",
                ticket="CHG-100",
            )
            h.at(day(9, 1, 9))
            h.as_(BOB).approve(finding)
    scan_until(day(9, 3, 10))
    backfill = root / "aug20.xml"
    backfill.write_bytes(nmap_report(day(8, 20, 3), {a: {22: "ssh", 443: "https"} for a in HOSTS}))
    h.as_(CAROL).import_xml(backfill)

    scan_until(day(9, 14, 12))
    net.open_port("127.0.0.3", 6379, "redis")
    scan_until(day(9, 15, 7))
    f6379 = h.ids["redis"] = h.finding("127.0.0.3", 6379)
    h.at(day(9, 15, 8))
    h.as_(CAROL).ack(f6379)
    h.at(day(9, 15, 14))
    h.as_(ALICE).request(
        f6379,
        justification="Session cache for the card portal",
        owner="payments-team",
        ticket="CHG-231",
    )
    scan_until(day(9, 16, 10))
    h.as_(BOB).approve(f6379)

    scan_until(day(10, 9, 12))
    net.open_port("127.0.0.4", 3306, "mysql")
    scan_until(day(10, 10, 9))
    f3306 = h.ids["mysql"] = h.finding("127.0.0.4", 3306)
    h.as_(CAROL).flag(f3306, reason="No change ticket: the DBA opened it for a migration")
    net.close_port("127.0.0.4", 3306)

    scan_until(day(10, 26, 9))  # no scan from Oct 20 to Oct 25: the scanner VM was down
    h.ids["gap"] = h.finding_of_kind("monitoring_gap")
    h.as_(CAROL).close_finding(
        h.ids["gap"], cause="Scanner VM down for hypervisor patching (CHG-377); no scan ran"
    )

    scan_until(day(11, 1, 12))
    for approval in h.monitor.approvals_list():
        h.as_(CAROL).review(
            approval.id, outcome="keep", note="Still needed: checked with the owner"
        )

    scan_until(day(11, 19, 12))
    net.open_port("127.0.0.2", 8080, "http-proxy")
    scan_until(day(11, 29, 12))
    h.ids["proxy"] = h.finding("127.0.0.2", 8080)
    h.at(END)
    return h
