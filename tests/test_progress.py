"""Scan progress by default: nmap's own progress read live, one figure over concurrent
batches, a bar on a terminal and plain lines in a pipe (stderr only), and the console's
header.

Real parts: the real nmap against real loopback listeners (127.88.x.y, see tests/fleet.py),
the real CLI in a subprocess with stderr on a pipe or on a pseudo-terminal, and the real
console under Textual's Pilot. `-T2` (nmap's polite timing: 0.4 s between probes) makes a
one-host scan last a few seconds, long enough for nmap's `--stats-every` reports.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from portconsole.core.adapters.nmap_parse import ReportStream
from portconsole.core.adapters.scan_batches import nmap_hostgroup, tcp_port_count
from portconsole.core.adapters.scanner import Scanner
from portconsole.core.adapters.scanning import ScanProgress
from portconsole.core.domain.model import Progress
from portconsole.core.domain.targets import PortSpec, Scope, expand_targets
from portconsole.core.settings import ScanSettings
from tests.fleet import TestFleet

LOOPBACK = Scope(["127.0.0.0/8"])
needs_nmap = pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
REPO = Path(__file__).resolve().parents[1]

# Two <taskprogress> elements as nmap 7.93 writes them with --stats-every, around a host.
LIVE_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE nmaprun>
<nmaprun scanner="nmap" args="nmap -Pn -sS -p 1-8 --stats-every 1s -oX - 127.88.1.2" \
start="1796080635" version="7.93" xmloutputversion="1.05">
<scaninfo type="syn" protocol="tcp" numservices="8" services="1-8"/>
<taskprogress task="SYN Stealth Scan" time="1796080636" percent="50.00" remaining="2" \
etc="1796080638"/>
"""
LIVE_HOST = b"""<host starttime="1796080635" endtime="1796080638"><status state="up" \
reason="user-set" reason_ttl="0"/>
<address addr="127.88.1.2" addrtype="ipv4"/>
<ports><extraports state="closed" count="7"><extrareasons reason="reset" count="7"/>\
</extraports>
<port protocol="tcp" portid="5"><state state="open" reason="syn-ack" reason_ttl="64"/></port>
</ports>
</host>
"""


def test_stream_reads_nmap_progress_before_the_run_ends() -> None:
    stream = ReportStream(open_only=True)
    stream.feed(LIVE_XML)
    assert stream.live.percent is None  # below the feed size: not parsed yet
    stream.poke()
    assert (stream.live.hosts, stream.live.percent, stream.live.task) == (
        0,
        50.0,
        "SYN Stealth Scan",
    )
    stream.feed(LIVE_HOST)
    stream.poke()
    # A finished host is counted, with its open port; the group's percent is spent.
    assert (stream.live.hosts, stream.live.open_ports, stream.live.percent) == (1, 1, None)
    stream.feed(b"</nmaprun>\n")
    assert list(stream.close().hosts) == ["127.88.1.2"]


def test_progress_combines_batches_and_never_goes_back() -> None:
    now = [0.0]
    seen: list[Progress] = []
    state = ScanProgress(total=200, progress=seen.append, clock=lambda: now[0])
    state.begin(0, 100, nmap_hostgroup(tcp_port_count("T:1-16"), udp=False))
    state.begin(1, 100, 64)
    now[0] = 2.0
    state.live(0, 0, 0, 50.0)  # half of batch 0's first group of 64 hosts
    assert seen[-1].percent == 16.0 and seen[-1].hosts_done == 0
    assert seen[-1].eta_seconds == pytest.approx(2.0 * 84 / 16)
    now[0] = 2.1
    state.live(1, 64, 3, 10.0)  # within LIVE_REPORT_SECONDS of the last report: held back
    assert len(seen) == 1
    now[0] = 3.0
    state.live(0, 0, 0, 20.0)  # a new group's lower percent never moves the figure back
    state.live(1, 64, 3, 10.0)
    # Batch 0: 32 of 100 (held); batch 1: 64 done + 10% of its next 36 = 67.6; of 200.
    assert [p.percent for p in seen] == [16.0, 49.8]
    assert seen[-1].hosts_done == 64 and seen[-1].open_ports == 3
    state.done(100, 1, 0)
    state.done(100, 3, 1)
    assert (seen[-1].hosts_done, seen[-1].open_ports, seen[-1].percent) == (200, 4, 100.0)
    assert seen[-1].eta_seconds == 0.0
    percents = [p.percent or 0.0 for p in seen]
    assert percents == sorted(percents)
    # A replay reports whole hosts (`done` without a batch): the same figure.
    state.start_phase("fingerprint", 2)
    state.done(1, 0)
    assert (seen[-1].phase, seen[-1].hosts_done, seen[-1].percent) == ("fingerprint", 1, 50.0)


@needs_nmap
def test_nmap_progress_moves_the_figure_inside_one_run() -> None:
    """One host, ten closed ports at -T2 (~4 s): the percent moves before the host ends."""
    with TestFleet() as fleet:
        host = fleet.new_address()
        ports = PortSpec.of([fleet.closed_port(host) for _ in range(10)])
        seen: list[Progress] = []
        scanner = Scanner(ScanSettings(timing=2, workers=1), LOOPBACK)
        result = scanner.scan([host], ports, fingerprint="none", progress=seen.append)
    assert result.outcome == "success", result.error
    assert "stats-every" in result.raw_xml[0].decode()  # nmap writes it -&#45;stats-every
    sweep = [p for p in seen if p.phase == "sweep"]
    inside = [p for p in sweep if p.hosts_done == 0 and 0 < (p.percent or 0) < 100]
    assert inside, sweep
    assert any(p.eta_seconds is not None for p in inside)
    assert [p.percent for p in sweep] == sorted(p.percent or 0.0 for p in sweep)
    assert sweep[-1].hosts_done == 1 and sweep[-1].percent == 100.0


@needs_nmap
def test_batches_running_at_once_report_one_figure() -> None:
    """4 batches of 256 hosts, 2 at a time, 16 ports: nmap scans 64 hosts at a time, so
    hosts are counted as each group ends, inside a batch, and the runs add up to one figure."""
    hosts = expand_targets(["127.89.8.0/22"], LOOPBACK)
    seen: list[Progress] = []
    scanner = Scanner(ScanSettings(workers=2, batch_size=256), LOOPBACK)
    result = scanner.scan(
        hosts, PortSpec.of(range(40001, 40017)), fingerprint="none", progress=seen.append
    )
    assert result.outcome == "success", result.error
    sweep = [p for p in seen if p.phase == "sweep"]
    assert {p.hosts_total for p in sweep} == {len(hosts)}
    done = [p.hosts_done for p in sweep]
    assert done == sorted(done) and done[-1] == len(hosts)
    # Counted inside a batch, not only when one ends (sums of 256, 256, 256 and 254).
    batch_ends = {
        a + b + c + d for a in (0, 256) for b in (0, 256) for c in (0, 256) for d in (0, 254)
    }
    assert set(done) - batch_ends, done
    assert [p.percent for p in sweep] == sorted(p.percent or 0.0 for p in sweep)


def _config(tmp_path: Path, timing: int = 2) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""scope = ["127.0.0.0/8"]

[scan]
timing = {timing}
workers = 1
batch_timeout = 60.0
confirm_probes = 0
fingerprint = "none"
""",
        encoding="utf-8",
    )
    return config


def _scan_command(tmp_path: Path, host: str, ports: list[int], *extra: str) -> list[str]:
    config = _config(tmp_path)
    command = [sys.executable, "-m", "portconsole", "--config", str(config)]
    command += ["--data-dir", str(tmp_path / "data"), "scan", host]
    return [*command, "--ports", ",".join(map(str, ports)), "--json", *extra]


@needs_nmap
def test_cli_prints_plain_progress_lines_on_a_piped_stderr(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        ports = [fleet.listen(host, "tcp")] + [fleet.closed_port(host) for _ in range(9)]
        ran = subprocess.run(
            _scan_command(tmp_path, host, ports),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        quiet = subprocess.run(
            _scan_command(tmp_path, host, ports, "--no-progress"),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stderr.splitlines()
    live = [ln for ln in lines if ln.startswith("portconsole: sweep 0/1 hosts")]
    assert live and all("%" in ln and "ETA" in ln for ln in live), lines
    assert lines[-1] == "portconsole: scanned 1/1 hosts, 1 open, in " + lines[-1].split()[-2] + " s"
    assert "\x1b" not in ran.stderr  # no terminal codes in a pipe
    document = json.loads(ran.stdout)  # stdout is the result alone
    assert document["outcome"] == "success"
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["outcome"] == "success"


@needs_nmap
def test_cli_draws_a_bar_on_a_terminal_stderr(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        ports = [fleet.closed_port(host) for _ in range(10)]
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            _scan_command(tmp_path, host, ports),
            stdout=subprocess.PIPE,
            stderr=follower,
            cwd=REPO,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
        )
        os.close(follower)
        drawn: list[bytes] = []

        def drain() -> None:  # a full pty would block the CLI
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                drawn.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        stdout, _ = proc.communicate(timeout=120)
        reader.join(timeout=5)
        os.close(leader)
    screen = b"".join(drawn).decode("utf-8", "replace")
    assert proc.returncode == 0, screen
    assert "━" in screen and "0/1 hosts" in screen and "ETA" in screen and "\x1b[" in screen
    assert "portconsole: sweep" not in screen  # the bar, not the plain lines
    assert b"\x1b" not in stdout and json.loads(stdout)["outcome"] == "success"


@needs_nmap
async def test_console_header_shows_percent_and_eta(tmp_path: Path) -> None:
    from portconsole.core.monitor import Monitor
    from portconsole.tui.app import PortConsoleApp
    from tests.tui.conftest import screen_text, settle, wait_for

    with TestFleet() as fleet:
        host = fleet.new_address()
        ports = [fleet.closed_port(host) for _ in range(10)]
        config = _config(tmp_path)
        spec = ",".join(map(str, ports))
        with config.open("a", encoding="utf-8") as file:
            file.write(f'\n[groups.slow]\ntargets = ["{host}"]\nports = "{spec}"\n')
            file.write("interval = 3600\njitter = 0\n")
        monitor = Monitor.open(config, tmp_path / "data", origin="tui")
        app = PortConsoleApp(monitor, schedule=False)
        try:
            async with app.run_test(size=(100, 24)) as pilot:
                await settle(pilot)
                await pilot.press("s")

                def header_live() -> bool:
                    text = screen_text(app)
                    return "% · ETA" in text and "0/1 hosts" in text

                assert await wait_for(pilot, header_live, timeout=30), screen_text(app)
                text = screen_text(app)
                assert "▶ scanning all (sweep " in text and "[" in text
                assert await wait_for(pilot, lambda: app.scan is None, timeout=30)
        finally:
            monitor.close()
