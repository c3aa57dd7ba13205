"""Sites when their broker misbehaves, with real parts (a real redis-server on a free
loopback port, real `portconsole worker --site` processes, real nmap, the central Monitor):
a stopped site or a stopped or password-refusing Redis is a gap reported within seconds on
every cycle, and the site scans again by itself once Redis is back; a short Redis blip
during a scan loses nothing (the worker waits to store its result, the central waits for it).

The fixtures and helpers are tests/test_sites.py's.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portconsole.core.errors import UserError
from portconsole.core.settings import load_settings
from tests.test_sites import (  # noqa: F401 - redis and two_sites are fixtures
    REPO,
    CycleInThread,
    Sites,
    _scanning_worker,
    needs_redis,
    redis,
    site_up,
    start_redis,
    two_sites,
    wait_ready,
)


@pytest.mark.nmap
@needs_redis
def test_stopped_site_is_a_gap_for_that_site_only_and_a_broker_down_too(
    two_sites: Sites,  # noqa: F811 - the fixture imported above
) -> None:
    two_sites.write(interval=10)  # the deadline of a job is its group's interval
    for name in two_sites.sites:
        two_sites.start_worker(name, f"{name}-1")
    for name in two_sites.sites:
        two_sites.wait_ready(name, 1)
    two_sites.stop_workers("south")
    monitor = two_sites.monitor()
    try:
        assert monitor.run_cycle("g-north").scan.outcome == "success"
        started = time.monotonic()
        with pytest.raises(UserError, match="site south.*no answer within the deadline"):
            monitor.run_cycle("g-south")
        assert 9 <= time.monotonic() - started < 20
        gaps = [f for f in monitor.findings_book.all() if f.kind == "monitoring_gap"]
        assert [f.host for f in gaps] == ["g-south"]
        assert site_up(monitor) == {"north": 1.0, "south": 0.0}
        # The console's header says so too.
        from portconsole.tui.widgets.status import HeaderState, monitoring_line

        assert monitor.overview().sites_down == ("south",)
        header = monitoring_line(HeaderState("PortConsole", monitor.overview(), None, False))
        assert "site down: south" in header.plain
        # The broker going away is a gap too, reported at once, never a crash: every cycle
        # gives up within a second or so (the central tries Redis twice, 0.2 s apart, and a
        # refused loopback connection fails at once), not after Celery's 20 tries (~19 s).
        # 5 s leaves room for a loaded CI machine.
        two_sites.redis.stop()
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(UserError, match="site north.*broker.*cannot be reached"):
                monitor.run_cycle("g-north")
            assert time.monotonic() - started < 5
        gaps = [f for f in monitor.findings_book.all() if f.kind == "monitoring_gap"]
        assert sorted(f.host for f in gaps) == ["g-north", "g-south"]
        assert site_up(monitor) == {"north": 0.0, "south": 0.0}
        assert monitor.overview().sites_down == ("north", "south")
        # Redis back (same port): the same central, not restarted, scans the site again.
        two_sites.redis = start_redis(two_sites.tmp, port=two_sites.redis.port)
        two_sites.wait_ready("north", 1)  # the worker reconnected (Celery's own backoff)
        assert monitor.run_cycle("g-north").scan.outcome == "success"
        assert site_up(monitor) == {"north": 1.0, "south": 0.0}
        assert monitor.overview().sites_down == ("south",)
    finally:
        monitor.close()


@pytest.mark.nmap
@needs_redis
def test_a_redis_blip_during_a_scan_loses_nothing(
    two_sites: Sites,  # noqa: F811 - the fixture imported above
) -> None:
    """Redis goes away for ~3 s while the worker scans: the worker keeps trying to store
    its result (site_celery.WORKER_RETRY) and the central keeps polling for it
    (site_scanner.LOST_BROKER_GRACE), so the scan is taken, not a gap."""
    two_sites.write(timing=2, interval=60)  # nmap -T2: a scan of a few seconds
    north = two_sites.sites["north"]
    worker = two_sites.start_worker("north", "north-1")
    two_sites.wait_ready("north", 1)
    monitor = two_sites.monitor()
    runner = CycleInThread(monitor, "g-north")
    try:
        deadline = time.monotonic() + 20
        while _scanning_worker([worker]) is None:
            assert time.monotonic() < deadline, "the worker did not start nmap"
            time.sleep(0.02)
        port = two_sites.redis.port
        two_sites.redis.stop()
        time.sleep(3)
        two_sites.redis = start_redis(two_sites.tmp, port=port)
        result = runner.finished(timeout=60)
        assert result.scan.outcome == "success"
        assert [h.address for h in result.scan.hosts] == [north.address]
        assert not [f for f in monitor.findings_book.all() if f.kind == "monitoring_gap"]
        # The worker did meet the blip when storing its result (Celery's own log line).
        log = (two_sites.tmp / "worker-north-1.log").read_text()
        assert "Failed operation _store_result. Retrying" in log, log[-2000:]
    finally:
        runner.thread.join(timeout=1)
        monitor.close()


@needs_redis
def test_the_broker_password_is_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broker URL's password (Redis `requirepass`) is used, and shown only as ****: in
    the worker's start line, in a broker error, and in any log line that echoes it."""
    import logging

    from portconsole.cli import main
    from portconsole.core.secrets import config_secrets

    password = "s3cretpass"
    server = start_redis(tmp_path, "--requirepass", password)
    key = tmp_path / "north.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(
        f'scope = ["127.0.0.0/8"]\n[sites.north]\nbroker = "redis://:{password}@127.0.0.1:'
        f'{server.port}/0"\nkey_file = "{key}"\n[groups.g-north]\ntargets = ["127.88.250.2"]\n'
        'ports = "22"\ninterval = 10\nsite = "north"\n'
    )
    shown = f"redis://:****@127.0.0.1:{server.port}/0"
    settings, _ = load_settings(config)
    assert password in config_secrets(settings)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "portconsole", "--log-level", "debug", "worker", "--site",
             "north", "--config", str(config), "--name", "north-1@test"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_ready(config, "north", 1)  # it connected: the password was used
        # A wrong password is a gap said as such, at once, on every cycle (not ~20 s each).
        wrong = tmp_path / "wrong.toml"
        wrong.write_text(config.read_text().replace(password, "wr0ngpass"))
        for _ in range(2):
            started = time.monotonic()
            code = main(["--config", str(wrong), "--data-dir", str(tmp_path / "central-wrong"),
                         "scan", "--group", "g-north"])  # fmt: skip
            assert time.monotonic() - started < 5
            out, err = capsys.readouterr()
            assert code != 0
            assert f"the broker {shown} refused the password" in err, err[-2000:]
            assert "wr0ngpass" not in out + err
    finally:
        worker.terminate()
        worker.wait(timeout=15)
        server.stop()
    text = log.read_text()
    assert f"queue portconsole.site.north at {shown}" in text, text[-2000:]
    assert password not in text
    # The broker is down now: the central's error names it, masked.
    code = main(["--config", str(config), "--data-dir", str(tmp_path / "central"),
                 "--log-level", "debug", "scan", "--group", "g-north"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code != 0
    assert f"the broker {shown} cannot be reached" in err, err[-2000:]
    # A client library's log line carrying the bare password (as a Redis AUTH error might).
    logging.getLogger("redis.connection").error("AUTH %s refused", password)
    err += capsys.readouterr().err
    assert "AUTH **** refused" in err
    assert password not in out + err
