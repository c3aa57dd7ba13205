"""Prometheus metrics: scraped from a real daemon over HTTP and read from the textfile, both
parsed with prometheus_client's own parser, and checked against the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from portconsole.cli import main
from portconsole.core.monitor import Monitor
from tests.conftest import write_config
from tests.replay import replay_monitor
from tests.servers import free_port

SAMPLE_XML = Path(__file__).resolve().parent / "data" / "nmap_loopback.xml"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}; parsing fails on a malformed text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def open_findings_by_kind(monitor: Monitor) -> Counter[tuple[str, str]]:
    return Counter((f.kind, f.severity) for f in monitor.findings())


def metric_findings(values: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> Counter:
    counts: Counter[tuple[str, str]] = Counter()
    for (name, labels), value in values.items():
        if name == "portconsole_findings_open":
            label = dict(labels)
            counts[(label["kind"], label["severity"])] = int(value)
    return counts


def test_textfile_for_node_exporter_matches_the_store(tmp_path: Path) -> None:
    monitor, network = replay_monitor(
        tmp_path,
        {"127.0.0.2": {22: "ssh"}},
        groups={"web": (["127.0.0.2"], "22,8080")},
    )
    monitor.run_cycle(group="web").settle_fingerprint(30)
    network.open_port("127.0.0.2", 8080, "http")
    second = monitor.run_cycle(group="web")
    # Its -sV of 8080 is a later transaction: landed before the metrics are read, not during.
    second.settle_fingerprint(30)
    path = tmp_path / "textfile" / "portconsole.prom"
    path.parent.mkdir()
    config = ["--config", str(tmp_path / "config.toml"), "--data-dir", str(tmp_path / "data")]
    assert main([*config, "metrics", "--textfile", str(path)]) == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["portconsole.prom"]  # no temp left
    values = samples(path.read_text())
    web = (("group", "web"),)
    assert values[("portconsole_scans_total", (("group", "web"), ("outcome", "success")))] == 2
    assert values[("portconsole_scan_duration_seconds_count", web)] == 2
    assert values[("portconsole_scan_duration_seconds_sum", web)] >= 0
    finished = second.scan.finished_at.timestamp()
    assert values[("portconsole_last_successful_scan_timestamp_seconds", web)] == pytest.approx(
        finished, abs=1e-3
    )
    assert metric_findings(values) == open_findings_by_kind(monitor)
    assert sum(metric_findings(values).values()) == len(monitor.findings()) >= 2
    assert values[("portconsole_journal_events", ())] == monitor.audit.tip().seq
    assert values[("portconsole_outbox_messages", (("status", "pending"),))] == 0
    assert values[("portconsole_monitoring_overdue", web)] == 0
    assert values[("portconsole_monitoring_paused", ())] == 0
    # Only *.prom files are read by node_exporter: another name is refused, nothing written.
    assert main([*config, "metrics", "--textfile", str(tmp_path / "textfile" / "m.txt")]) == 2
    assert not (tmp_path / "textfile" / "m.txt").exists()


def _env(tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")} | {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "PYTHONUNBUFFERED": "1",
    }


def _scrape(url: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.read().decode("utf-8")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_daemon_serves_metrics_over_http(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {"web": (["127.0.0.2"], "22")})
    data = tmp_path / "data"
    args = ["--config", str(config), "--data-dir", str(data)]
    assert main([*args, "import", str(SAMPLE_XML), "--notify-wait", "0"]) == 0
    monitor = Monitor.open(config, data)
    monitor.pause()  # the daemon schedules nothing: what it serves is what the test wrote
    port = free_port()
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "portconsole.cli", *args, "daemon", "--metrics"]
        + [f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=_env(tmp_path),
    )
    try:
        deadline = time.monotonic() + 20
        while "daemon.start" not in {e.action for e in monitor.audit_events()}:
            assert daemon.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        values = samples(_scrape(f"http://127.0.0.1:{port}/metrics", 20))
        imported = (("group", "-"), ("outcome", "success"))
        assert values[("portconsole_scans_total", imported)] == 1
        assert (
            values[("portconsole_last_successful_scan_timestamp_seconds", (("group", "web"),))] == 0
        )
        assert metric_findings(values) == open_findings_by_kind(monitor)
        assert sum(metric_findings(values).values()) >= 3
        assert values[("portconsole_journal_events", ())] == monitor.audit.tip().seq
        assert values[("portconsole_monitoring_paused", ())] == 1
        # A second scrape reads the journal from where the first stopped: same figures.
        monitor.ack(monitor.findings()[0].id)
        again = samples(_scrape(f"http://127.0.0.1:{port}/metrics", 5))
        assert again[("portconsole_journal_events", ())] == monitor.audit.tip().seq
        assert again[("portconsole_scans_total", imported)] == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(15)
    assert code == 0, log.read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_bad_metrics_address_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(tmp_path / "config.toml", {"web": (["127.0.0.2"], "22")})
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(tmp_path / "config.toml"), "daemon", "--metrics", "9464"])
    assert exited.value.code == 2
    assert "ADDR:PORT" in capsys.readouterr().err
