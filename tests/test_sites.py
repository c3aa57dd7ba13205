"""Sites through Celery and Redis, with real parts: a real redis-server on a free loopback
port, real `portconsole worker --site` processes (two sites, each with its own loopback
fleet and scope), real nmap, and the central Monitor over a temporary data dir.

Skipped only when redis-server is not installed (the Makefile's `apt-test` installs it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portconsole.core.errors import UserError
from portconsole.core.monitor import Monitor
from portconsole.core.services.cycle_result import CycleResult
from portconsole.core.settings import load_settings
from tests.fleet import TestFleet, is_listening

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("nmap") is None,
    reason="redis-server or nmap is not installed (make test installs both: apt-test)",
)
REPO = Path(__file__).resolve().parent.parent


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Redis:
    port: int
    process: subprocess.Popen[bytes]

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def start_redis(tmp_path: Path, *options: str, port: int = 0) -> Redis:
    """A redis-server on a loopback port (a free one unless `port`; `options`: more of its
    command line)."""
    port = port or free_tcp_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not is_listening("127.0.0.1", port):
        assert process.poll() is None, "redis-server exited at start"
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    return Redis(port, process)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = start_redis(tmp_path)
    yield server
    server.stop()


@dataclass
class Site:
    name: str
    address: str
    ports: list[int]
    key_file: Path
    db: int
    scope: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)


@dataclass
class Sites:
    """Two sites, each with its own fleet address, scope, key and Redis database."""

    tmp: Path
    redis: Redis
    fleet: TestFleet
    sites: dict[str, Site]
    config: Path = Path()

    def write(
        self,
        redeliver_after: int = 600,
        timing: int = 4,
        interval: int = 60,
        fingerprint: str = "none",
    ) -> Path:
        lines = ['scope = ["127.0.0.0/8"]', "", "[scan]", f"timing = {timing}", "workers = 2",
                 "batch_timeout = 60.0", "confirm_probes = 1", f'fingerprint = "{fingerprint}"', ""]  # fmt: skip
        for site in self.sites.values():
            lines += [
                f"[sites.{site.name}]",
                f'broker = "{self.redis.url(site.db)}"',
                f'key_file = "{site.key_file}"',
                f'scope = ["{site.scope}"]',
                f"redeliver_after = {redeliver_after}",
                "",
                f"[groups.g-{site.name}]",
                f'targets = ["{site.address}"]',
                f'ports = "{",".join(str(p) for p in site.ports)}"',
                f"interval = {interval}",
                "jitter = 0",
                f'site = "{site.name}"',
                "",
            ]
        self.config = self.tmp / "config.toml"
        self.config.write_text("\n".join(lines))
        return self.config

    def start_worker(
        self, name: str, node: str, *rogue: str, config: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker-{node}.log").open("wb")
        if rogue:
            command = [sys.executable, "-m", "tests.site_rogue", rogue[0], str(self.config), name, *rogue[1:]]  # fmt: skip
        else:
            command = [sys.executable, "-m", "portconsole", "worker", "--site", name,
                       "--config", str(config or self.config), "--name", f"{node}@test"]  # fmt: skip
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.sites[name].workers.append(process)
        return process

    def wait_ready(self, name: str, count: int) -> None:
        wait_ready(self.config, name, count)

    def stop_workers(self, name: str) -> None:
        for process in self.sites[name].workers:
            if process.poll() is None:
                process.terminate()
        for process in self.sites[name].workers:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.sites[name].workers.clear()

    def monitor(self) -> Monitor:
        settings, paths = load_settings(self.config, self.tmp / "central")
        return Monitor(settings, paths, origin="daemon")


def wait_ready(config: Path, name: str, count: int) -> None:
    """Until `count` workers answer a ping on the site's broker (Celery's own control)."""
    from portconsole.core.adapters.site_celery import site_app

    settings, _ = load_settings(config)
    app = site_app(name, settings.sites[name])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        replies = app.control.inspect(timeout=0.5).ping() or {}
        if len(replies) >= count:
            return
    raise AssertionError(f"site {name}: {count} workers did not start; see {config.parent}")


@pytest.fixture
def two_sites(tmp_path: Path, redis: Redis) -> Iterator[Sites]:
    with TestFleet() as fleet:
        sites: dict[str, Site] = {}
        for db, name in enumerate(("north", "south")):
            address = fleet.new_address()
            ports = [fleet.listen(address, "ssh"), fleet.closed_port(address)]
            key_file = tmp_path / f"{name}.key"
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
            sites[name] = Site(name, address, ports, key_file, db, scope=f"{address}/32")
        setup = Sites(tmp_path, redis, fleet, sites)
        setup.write()
        try:
            yield setup
        finally:
            for name in sites:
                setup.stop_workers(name)
            setup.redis.stop()  # a test may have restarted it (a new process)


def site_up(monitor: Monitor) -> dict[str, float]:
    """`portconsole_site_up` per site, as Prometheus scrapes it."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from portconsole.core.services.metrics import metrics_registry

    text = generate_latest(metrics_registry(monitor)).decode()
    return {
        sample.labels["site"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "portconsole_site_up"
        for sample in family.samples
    }


def events(monitor: Monitor, action: str) -> list[dict[str, object]]:
    return [e.to_json() for e in monitor.audit_events() if e.action == action]


@pytest.mark.nmap
@needs_redis
def test_two_sites_scan_their_groups_and_changes_become_findings(two_sites: Sites) -> None:
    # New ports are re-probed and fingerprinted (-sV) at their site too.
    two_sites.write(fingerprint="changed")
    for name in two_sites.sites:
        two_sites.start_worker(name, f"{name}-1")
    for name in two_sites.sites:
        two_sites.wait_ready(name, 1)
    monitor = two_sites.monitor()
    try:
        for name, site in two_sites.sites.items():
            result = monitor.run_cycle(f"g-{name}")
            assert result.scan.outcome == "success", result.scan.error
            assert [h.address for h in result.scan.hosts] == [site.address]
            assert {p.port for p in result.scan.hosts[0].open_ports()} == {site.ports[0]}
            monitor.wait_fingerprints(timeout=60)  # -sV runs after detection, at the site too
            kinds = {e["details"]["kind"] for e in events(monitor, "site.result.accepted")}  # type: ignore[index]
            assert kinds == {"scan", "probe", "fingerprint"}
            ports = [p for p in monitor.store.current_ports() if p.host == site.address]
            assert [(p.port, p.service) for p in ports] == [(site.ports[0], "ssh")]
            assert any(
                f.kind == "unapproved_port" and f.host == site.address and f.port == site.ports[0]
                for f in result.findings
            )
        accepted = events(monitor, "site.result.accepted")
        assert {(e["resource"]["site"], e["details"]["worker"]) for e in accepted} >= {  # type: ignore[index]
            ("north", "north-1@test"),
            ("south", "south-1@test"),
        }
        # Each scan's own record names the site and the worker that ran it.
        ends = [e["details"] for e in events(monitor, "scan.end")]
        assert [(d["group"], d["site"], d["worker"]) for d in ends] == [  # type: ignore[index]
            ("g-north", "north", "north-1@test"),
            ("g-south", "south", "south-1@test"),
        ]
        # A port opens at the south site: its next cycle reports it and raises a finding.
        south = two_sites.sites["south"]
        two_sites.fleet.fleet.add(south.address, south.ports[1], "http")
        result = monitor.run_cycle("g-south")
        assert [(c.kind, c.port) for c in result.changes] == [("port_opened", south.ports[1])]
        assert [(f.kind, f.port) for f in result.findings] == [("unapproved_port", south.ports[1])]
        assert monitor.audit_verify().ok
    finally:
        monitor.close()


@pytest.mark.nmap
@needs_redis
def test_the_daemon_scans_both_sites_on_schedule(two_sites: Sites) -> None:
    import threading

    from portconsole.daemon import run_daemon

    for name in two_sites.sites:
        two_sites.start_worker(name, f"{name}-1")
    for name in two_sites.sites:
        two_sites.wait_ready(name, 1)
    monitor = two_sites.monitor()
    stop = threading.Event()
    daemon = threading.Thread(target=run_daemon, args=(monitor, stop))
    daemon.start()
    try:
        wanted = {(s.address, s.ports[0]) for s in two_sites.sites.values()}
        deadline = time.monotonic() + 60
        raised: set[tuple[str, int | None]] = set()
        while raised != wanted and time.monotonic() < deadline:
            time.sleep(0.2)
            raised = {
                (f.host, f.port) for f in monitor.findings_book.all() if f.kind == "unapproved_port"
            }
        ends = [e.details for e in monitor.audit_events() if e.action == "scan.end"]
        waited = 60 - (deadline - time.monotonic())
        assert raised == wanted, (ends, waited)
    finally:
        stop.set()
        daemon.join(timeout=30)
        monitor.close()
    assert not daemon.is_alive()


@pytest.mark.nmap
@needs_redis
def test_forged_and_out_of_scope_results_are_refused(two_sites: Sites) -> None:
    north, south = two_sites.sites["north"], two_sites.sites["south"]
    two_sites.start_worker("north", "rogue-north", "forged")
    # South's rogue also scans north's address: outside south's scope and group.
    two_sites.start_worker("south", "rogue-south", "outside", north.address)
    two_sites.wait_ready("north", 1)
    two_sites.wait_ready("south", 1)
    monitor = two_sites.monitor()
    try:
        for name in ("north", "south"):
            with pytest.raises(UserError, match="result refused"):
                monitor.run_cycle(f"g-{name}")
        refused = {
            e["resource"]["site"]: e["details"]["reason"]  # type: ignore[index]
            for e in events(monitor, "site.result.refused")
        }
        assert refused == {"north": "mis-signed", "south": "out-of-scope"}
        kinds = {(f.kind, f.host) for f in monitor.findings_book.all()}
        assert {("site_result_refused", "north"), ("site_result_refused", "south")} <= kinds
        # Nothing from a refused result reached the state, and each group's run is a gap.
        assert not [h for h in monitor.store.hosts() if h.address in (north.address, south.address)]
        assert {("monitoring_gap", "g-north"), ("monitoring_gap", "g-south")} <= kinds
    finally:
        monitor.close()


@pytest.mark.nmap
@needs_redis
def test_a_worker_never_scans_outside_its_own_scope(two_sites: Sites) -> None:
    """The site's own copy of the settings gives it a narrower scope than the central's:
    the worker declines the job (nothing is scanned) and the group's run is a gap."""
    north = two_sites.sites["north"]
    # (Its copy's group names its own idea of the targets, or the copy would not load.)
    own = (
        two_sites.config.read_text()
        .replace(f'scope = ["{north.scope}"]', 'scope = ["127.88.250.250/32"]')
        .replace(f'targets = ["{north.address}"]', 'targets = ["127.88.250.250"]')
    )
    assert own != two_sites.config.read_text()
    (two_sites.tmp / "north-copy.toml").write_text(own)
    two_sites.start_worker("north", "north-1", config=two_sites.tmp / "north-copy.toml")
    two_sites.wait_ready("north", 1)
    monitor = two_sites.monitor()
    try:
        with pytest.raises(UserError, match="site north did not run the job: .*outside"):
            monitor.run_cycle("g-north")
        declined = events(monitor, "site.job.declined")
        assert [e["resource"]["site"] for e in declined] == ["north"]  # type: ignore[index]
        assert [f.host for f in monitor.findings_book.all() if f.kind == "monitoring_gap"] == [
            "g-north"
        ]
        assert not monitor.store.hosts()
    finally:
        monitor.close()


class CycleInThread:
    """A group's cycle run in a thread, so a test can act while the site's worker scans."""

    def __init__(self, monitor: Monitor, group: str) -> None:
        self.result: CycleResult | None = None
        self.error: UserError | None = None
        self.thread = threading.Thread(target=self._run, args=(monitor, group))
        self.thread.start()

    def _run(self, monitor: Monitor, group: str) -> None:
        try:
            self.result = monitor.run_cycle(group)
        except UserError as error:
            self.error = error

    def finished(self, timeout: float) -> CycleResult:
        """The cycle's result, once it ended within `timeout` seconds without an error."""
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the cycle did not end"
        assert self.error is None, self.error
        assert self.result is not None
        return self.result


def _scanning_worker(workers: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes] | None:
    """The worker with an nmap child right now (read from /proc)."""
    pids = {w.pid: w for w in workers}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        if comm == "nmap" and parent in pids:
            return pids[parent]
    return None


@pytest.mark.nmap
@needs_redis
def test_a_worker_killed_mid_scan_leaves_its_job_to_the_other(two_sites: Sites) -> None:
    # Slower scans (nmap -T2 waits 0.4 s between probes); a job whose worker died is
    # handed to the other worker 3 s later (redeliver_after).
    two_sites.write(redeliver_after=3, timing=2, interval=120)
    north = two_sites.sites["north"]
    first = two_sites.start_worker("north", "north-1")
    second = two_sites.start_worker("north", "north-2")
    two_sites.wait_ready("north", 2)
    monitor = two_sites.monitor()
    runner = CycleInThread(monitor, "g-north")
    try:
        deadline = time.monotonic() + 20
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = _scanning_worker([first, second])
            time.sleep(0.02)
        assert victim is not None, "no worker started nmap"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        survivor = "north-2@test" if victim is first else "north-1@test"
        result = runner.finished(timeout=90)
        assert result.scan.outcome == "success"
        assert [h.address for h in result.scan.hosts] == [north.address]
        workers = [e["details"]["worker"] for e in events(monitor, "site.result.accepted")]  # type: ignore[index]
        assert workers[0] == survivor
        ends = [e["details"] for e in events(monitor, "scan.end")]
        assert [(d["site"], d["worker"]) for d in ends] == [("north", survivor)]  # type: ignore[index]
    finally:
        runner.thread.join(timeout=1)
        monitor.close()


@pytest.mark.nmap
@needs_redis
def test_service_detection_runs_here_in_one_nmap_run_and_at_the_site_for_its_group(
    two_sites: Sites,
) -> None:
    """-sV after a sweep: a local group's ports get the local nmap's one run (its raw XML is
    kept), a site group's ports a fingerprint job at the site (the central never runs -sV
    on a site's addresses, which it may not reach)."""
    from portconsole.core.adapters.site_router import SiteRouter

    two_sites.write(fingerprint="changed")
    here = [two_sites.fleet.new_address() for _ in range(2)]
    ports = sorted({two_sites.fleet.listen(address, "ssh") for address in here})
    with two_sites.config.open("a") as config:
        config.write(
            f'[groups.g-here]\ntargets = ["{here[0]}", "{here[1]}"]\n'
            f'ports = "{",".join(map(str, ports))}"\ninterval = 60\njitter = 0\n'
        )
    north = two_sites.sites["north"]
    two_sites.start_worker("north", "north-1")
    two_sites.wait_ready("north", 1)
    monitor = two_sites.monitor()
    try:
        assert isinstance(monitor._scanner, SiteRouter)
        result = monitor.run_cycle("g-here")
        assert sorted(h.address for h in result.scan.hosts) == sorted(here)
        monitor.wait_fingerprints(timeout=90)
        [local] = [e.details for e in monitor.audit_events() if e.action == "scan.fingerprint"]
        assert (local["group"], local["identified"]) == ("g-here", 2), local
        assert local["raw_xml_sha256"], "not the nmap scanner's one run"
        assert not events(monitor, "site.result.accepted")  # nothing went to a site
        [end] = [e["details"] for e in events(monitor, "scan.end")]
        assert "site" not in end and "worker" not in end  # a local scan names no site
        services = {(p.host, p.service) for p in monitor.store.current_ports(hosts=here)}
        assert services == {(address, "ssh") for address in here}
        # The site's group: its -sV is a signed job its own worker answers.
        assert monitor.run_cycle("g-north").scan.outcome == "success"
        monitor.wait_fingerprints(timeout=90)
        accepted = [e["details"] for e in events(monitor, "site.result.accepted")]
        assert [(d["kind"], d["worker"]) for d in accepted] == [  # type: ignore[index]
            ("scan", "north-1@test"),
            ("probe", "north-1@test"),
            ("fingerprint", "north-1@test"),
        ]
        site_ports = monitor.store.current_ports(hosts=[north.address])
        assert [(p.port, p.service) for p in site_ports] == [(north.ports[0], "ssh")]
    finally:
        monitor.close()
