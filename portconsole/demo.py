"""The loopback demo fleet: a dozen "hosts" on 127.77.0.x whose listeners answer like the
real services, so nmap's version detection names them (OpenSSH, nginx, PostgreSQL, ...).

Every address in 127.0.0.0/8 is the local machine on Linux, so a listener bound to
127.77.0.10 acts as a distinct host without touching any network. The demo never listens
on, or scans, anything outside 127.77.0.0/24.

Well-known ports and the offset fallback: the demo uses the real ports (22, 80, 443,
5432, ...) because that is what a baseline and an auditor expect to see. Two things can
stop that on a development box: binding below 1024 needs root, and a process listening on
0.0.0.0:22 (sshd) also owns 127.77.0.40:22, so our bind fails. When any demo port cannot be
bound, the whole fleet moves by DEMO_PORT_OFFSET (22 -> 10022, 80 -> 10080, ...), the
generated config follows, and `DemoRun.notice` says which ports were taken. One uniform
offset keeps the mapping obvious; `port_offset=0` insists on the real ports instead.

HTTPS on 443 is served as plain HTTP (no TLS): generating certificates is not worth it
for a demo, and nmap then reports `http nginx 1.22.1` on 443, which is still a useful
(if slightly alarming) finding.

The listeners themselves (the protocol behaviours and ListenerFleet) are in
portconsole.demo_protocols.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from portconsole.core.adapters.storage import atomic_write_bytes, ensure_private_dir
from portconsole.core.errors import UserError
from portconsole.demo_protocols import ListenerFleet, bind_listener_socket

DEMO_NETWORK = "127.77.0.0/24"
DEMO_PORT_OFFSET = 10000
# Short enough that a port opened by the drift reaches every console (the leader scans,
# a follower re-reads) within interval + 10 s: up to 1 s of jitter and 1 s until the
# leader's next scheduler tick, nmap's 6 s wait for a banner while fingerprinting the new
# port, and up to 1 s until a follower's next look at the store (`[tui] refresh_seconds`).
DEMO_INTERVAL_SECONDS = 15
DEMO_JITTER_SECONDS = 1
DEMO_REFRESH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class DemoService:
    """One listener of the demo fleet, and what a monitor should make of it.

    `service` is the name nmap's -sV reports for it. `expected` is False for the drift a
    baseline should not approve (the legacy host's telnet and stray Redis, the drift port).
    """

    address: str
    port: int
    kind: str  # a ListenerFleet behaviour, see KINDS
    group: str
    role: str
    service: str
    product: str = ""
    version: str = ""
    expected: bool = True
    proto: str = "tcp"

    def shifted(self, offset: int) -> DemoService:
        return replace(self, port=self.port + offset) if offset else self


def _svc(
    address: str,
    port: int,
    kind: str,
    group: str,
    role: str,
    *,
    expected: bool = True,
) -> DemoService:
    service, product, version = _KIND_IDENTITY[kind]
    return DemoService(address, port, kind, group, role, service, product, version, expected)


# What nmap -sV calls each behaviour (service, product, version), as checked by the tests.
_KIND_IDENTITY: dict[str, tuple[str, str, str]] = {
    "ssh": ("ssh", "OpenSSH", "9.2p1 Debian 2+deb12u3"),
    "http": ("http", "nginx", "1.22.1"),
    "https": ("http", "nginx", "1.22.1"),
    "tomcat": ("http", "Apache Tomcat/Coyote JSP engine", "1.1"),
    "werkzeug": ("http", "Werkzeug httpd", "2.2.2"),
    "postgresql": ("postgresql", "PostgreSQL DB", "15"),
    "mysql": ("mysql", "MySQL", "8.0.36"),
    "redis": ("redis", "Redis key-value store", "7.0.15"),
    "telnet": ("telnet", "Linux telnetd", ""),
    "tcp": ("", "", ""),
}
KINDS: tuple[str, ...] = tuple(_KIND_IDENTITY)

DEMO_FLEET: tuple[DemoService, ...] = (
    _svc("127.77.0.10", 80, "http", "web-tier", "web server"),
    _svc("127.77.0.10", 443, "https", "web-tier", "web server"),
    _svc("127.77.0.11", 80, "http", "web-tier", "web server"),
    _svc("127.77.0.11", 443, "https", "web-tier", "web server"),
    _svc("127.77.0.12", 80, "http", "web-tier", "web server"),
    _svc("127.77.0.12", 443, "https", "web-tier", "web server"),
    _svc("127.77.0.13", 80, "http", "web-tier", "web server"),
    _svc("127.77.0.13", 443, "https", "web-tier", "web server"),
    _svc("127.77.0.20", 8080, "tomcat", "app-tier", "application server"),
    _svc("127.77.0.21", 8080, "tomcat", "app-tier", "application server"),
    _svc("127.77.0.22", 8080, "tomcat", "app-tier", "application server"),
    _svc("127.77.0.30", 5432, "postgresql", "db-tier", "PostgreSQL primary"),
    _svc("127.77.0.31", 5432, "postgresql", "db-tier", "PostgreSQL replica"),
    _svc("127.77.0.32", 3306, "mysql", "db-tier", "MySQL (billing)"),
    _svc("127.77.0.40", 22, "ssh", "bastion", "SSH bastion"),
    _svc("127.77.0.50", 22, "ssh", "legacy", "legacy host (drifted)"),
    _svc("127.77.0.50", 23, "telnet", "legacy", "legacy host (drifted)", expected=False),
    _svc("127.77.0.50", 6379, "redis", "legacy", "legacy host (drifted)", expected=False),
)

# What `--drift SECONDS` opens later: a debug web server left running on an app server.
DRIFT: DemoService = _svc(
    "127.77.0.21", 8081, "werkzeug", "app-tier", "debug server left running", expected=False
)

DEMO_GROUPS: dict[str, tuple[str, str]] = {
    # group: (targets, description)
    "web-tier": ("127.77.0.10-13", "Public web servers (nginx on 80/443)"),
    "app-tier": ("127.77.0.20-22", "Application servers (Tomcat on 8080)"),
    "db-tier": ("127.77.0.30-32", "Databases (PostgreSQL 5432, MySQL 3306)"),
    "bastion": ("127.77.0.40", "SSH bastion, the only way in"),
    "legacy": ("127.77.0.50", "Legacy host that has drifted from its baseline"),
}


def demo_services(port_offset: int = 0, *, include_drift: bool = False) -> list[DemoService]:
    """The fleet with ports moved by `port_offset` (0 = the real well-known ports)."""
    services = [s.shifted(port_offset) for s in DEMO_FLEET]
    if include_drift:
        services.append(DRIFT.shifted(port_offset))
    return services


def demo_ports(port_offset: int = 0) -> str:
    """Every port the demo uses, drift included, as a port spec."""
    ports = sorted({s.port for s in demo_services(port_offset, include_drift=True)})
    return ",".join(str(p) for p in ports)


def _toml_str(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(text)


def demo_config_toml(data_dir: Path | str, port_offset: int = 0) -> str:
    """A config for the demo: loopback scope, the five groups, a 15-second interval.

    Every group watches the same ports (all the demo uses, drift included) so that a port
    opened on any host is seen, which is also how a real baseline scan is usually set up.
    Nothing else is scanned: other programs listen on 0.0.0.0, which answers on 127.77.x.
    """
    ports = demo_ports(port_offset)
    lines = [
        "# PortConsole demo configuration (generated by portconsole.demo).",
        "# The demo fleet listens on 127.77.0.0/24; only loopback may be scanned.",
        'scope = ["127.0.0.0/8"]',
        f"data_dir = {_toml_str(str(data_dir))}",
        "",
        "[scan]",
        f"ports = {_toml_str(ports)}",
        "timing = 4",
        "workers = 4",
        "batch_size = 0",
        "batch_timeout = 120.0",
        'fingerprint = "changed"',
        "",
        "# One person runs the demo, so an approval cannot have a second person's request:",
        "# approvals are allowed and recorded with four eyes not met. Keep this on in",
        "# production (the default), where a request and its approval are two people.",
        "[approval]",
        "separation_of_duties = false",
        "",
        "# Every console looks for new data each second, so alerts reach them all promptly.",
        "[tui]",
        f"refresh_seconds = {DEMO_REFRESH_SECONDS}",
        "",
    ]
    for name, (targets, description) in DEMO_GROUPS.items():
        lines += [
            f"[groups.{name}]",
            f"targets = [{_toml_str(targets)}]",
            f"ports = {_toml_str(ports)}",
            f"interval = {DEMO_INTERVAL_SECONDS}",
            f"jitter = {DEMO_JITTER_SECONDS}",
            f"description = {_toml_str(description)}",
            "",
        ]
    return "\n".join(lines)


# -- the demo as the CLI runs it ----------------------------------------------------------


@dataclass(slots=True)
class DemoRun:
    """A running demo: its fleet, files and the drift timer. `stop()` ends it all."""

    fleet: ListenerFleet
    data_dir: Path
    config_path: Path
    port_offset: int
    services: list[DemoService]
    drift: DemoService
    notice: str = ""
    drift_timer: threading.Timer | None = None
    drift_opened: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        if self.drift_timer is not None:
            self.drift_timer.cancel()
        self.fleet.stop()

    def open_drift(self) -> None:
        """Open the unapproved drift port now (the timer calls this)."""
        if self.drift_opened.is_set() or not self.fleet.running:
            return
        self.fleet.add(self.drift.address, self.drift.port, self.drift.kind)
        self.drift_opened.set()


def _start_fleet(services: list[DemoService], drift: DemoService) -> ListenerFleet:
    # Check the drift port first so a demo never fails halfway through its story.
    bind_listener_socket(drift.address, drift.port).close()
    return ListenerFleet((s.address, s.port, s.kind) for s in services).start()


def run_demo_fleet(
    data_dir: Path,
    *,
    drift_after: float | None = None,
    port_offset: int | None = None,
) -> DemoRun:
    """Start the demo fleet, write its config into `data_dir`, schedule the drift.

    `port_offset=None` tries the real ports and falls back to DEMO_PORT_OFFSET when any is
    taken (the notice says which); an explicit offset is used as given. Raises UserError
    naming address:port when the fleet cannot start.
    """
    notice = ""
    if port_offset is None:
        try:
            fleet = _start_fleet(demo_services(0), DRIFT)
            offset = 0
        except UserError as error:
            offset = DEMO_PORT_OFFSET
            try:
                fleet = _start_fleet(demo_services(offset), DRIFT.shifted(offset))
            except UserError as second:
                raise UserError(
                    f"demo ports are taken: {error} -- and with offset +{offset}: {second}"
                ) from None
            notice = (
                f"{error}. Using the demo's offset ports instead "
                f"(+{offset}: 22->{22 + offset}, 80->{80 + offset}, ...)."
            )
    else:
        offset = port_offset
        fleet = _start_fleet(demo_services(offset), DRIFT.shifted(offset))
    try:
        data_dir = ensure_private_dir(Path(data_dir))
        config_path = data_dir / "demo-config.toml"
        atomic_write_bytes(config_path, demo_config_toml(data_dir, offset).encode("utf-8"))
    except BaseException:
        fleet.stop()
        raise
    run = DemoRun(
        fleet=fleet,
        data_dir=data_dir,
        config_path=config_path,
        port_offset=offset,
        services=demo_services(offset),
        drift=DRIFT.shifted(offset),
        notice=notice,
    )
    if drift_after is not None:
        timer = threading.Timer(max(0.0, drift_after), _open_drift_quietly, args=(run,))
        timer.daemon = True
        run.drift_timer = timer
        timer.start()
    return run


def _open_drift_quietly(run: DemoRun) -> None:
    try:
        run.open_drift()
    except UserError:
        # Checked free at start; if something grabbed it since, the demo goes on without.
        pass
