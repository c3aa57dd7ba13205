"""The headless CLI, run as a real process: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from portconsole.core.monitor import Monitor
from tests.conftest import write_config
from tests.fleet import TestFleet


def run_cli(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")} | {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
    }
    config = tmp_path / "config.toml"
    if not config.exists():
        write_config(config)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "portconsole.cli",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


HOSTILE = [
    "127.0.0.2 --script x.nse",
    "-iL /etc/passwd",
    "127.0.0.2;id",
    "$(id)",
    "127.0.0.2 -oN /tmp/f",
    "`id`",
    "127.0.0.2|id",
]


@pytest.mark.parametrize("target", HOSTILE)
def test_hostile_targets_are_refused_before_nmap(tmp_path: Path, target: str) -> None:
    result = run_cli(tmp_path, "scan", "--ports", "22", "--", target)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("portconsole: ")
    # Nothing was scanned: no scan record and no scan.start in the audit chain (read in
    # this process: a second CLI run per case proved no more and cost as much again).
    assert not (tmp_path / "data" / "scans").exists()
    monitor = Monitor.open(tmp_path / "config.toml", tmp_path / "data", readonly=True)
    try:
        assert "scan.start" not in [e.action for e in monitor.audit_events()]
    finally:
        monitor.close()
    assert not Path("/tmp/f").exists() or target != "127.0.0.2 -oN /tmp/f"


def test_out_of_scope_target_is_refused(tmp_path: Path) -> None:
    for target in ("10.0.0.1", "192.0.2.0/24", "8.8.8.8"):
        result = run_cli(tmp_path, "scan", "--ports", "80", target)
        assert result.returncode == 2
        assert "outside the configured scope" in result.stderr


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('scope = ["127.0.0.0/8"]\n[scan]\nworkrs = 3\n')
    result = run_cli(tmp_path, "paths")
    assert result.returncode == 2
    assert "scan.workrs" in result.stderr and "unknown key" in result.stderr
    (tmp_path / "config.toml").write_text('[scan]\nports = "22,99999"\n')
    result = run_cli(tmp_path, "paths")
    assert result.returncode == 2 and "scan.ports" in result.stderr


def test_paths_prints_every_path(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "paths", "--json")
    assert result.returncode == 0
    paths = json.loads(result.stdout)
    assert paths["config file"].startswith(str(tmp_path / "config.toml"))
    assert paths["data dir"] == str(tmp_path / "data")
    assert "store lock" in paths and "themes dir (built in)" in paths
    # The JSON loses no row of the text output (two themes dirs once shared one key).
    text = run_cli(tmp_path, "paths")
    assert len(paths) == len(text.stdout.strip().splitlines())
    assert all(line.startswith(tuple(paths)) for line in text.stdout.splitlines())


@pytest.mark.nmap
def test_scan_text_counts_quiet_hosts_past_a_screenful(tmp_path: Path) -> None:
    """Over a range where most hosts answer with nothing open (every loopback address does),
    the text lists the open ports and counts the rest; --json still lists every host."""
    with TestFleet() as fleet:
        host = "127.89.20.5"
        port = fleet.listen(host, "ssh")  # greets first: its -sV is quick
        result = run_cli(tmp_path, "scan", "127.89.20.0/26", "--ports", str(port))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        [row] = [line for line in lines if line.startswith(host)]
        assert row.split()[:3] == [host, "up", f"{port}/tcp"]
        assert not [line for line in lines if line.startswith("127.89.20.") and line != row]
        assert "and 61 hosts up with no open port among those scanned (--json lists them)" in lines
        assert "63 change(s):" in lines  # each host up, and the port opened
        assert len([line for line in lines if line.split()[:1] == ["host_up"]]) == 21
        assert "  host_up          and 42 more (--json, or `history`)" in lines
        assert f"  port_opened      {host}:{port}/tcp" in lines
        # Findings are listed whole; a quiet host is in the inventory, not a finding.
        assert "2 new finding(s):" in lines
        assert any(line.endswith(f"unapproved_port      {host}:{port}/tcp") for line in lines)
        assert any(line.endswith(f"unknown_host         {host}") for line in lines)

        steady = run_cli(tmp_path, "scan", "127.89.20.0/26", "--ports", str(port), "--json")
        assert steady.returncode == 0, steady.stderr
        hosts = json.loads(steady.stdout)["hosts"]
        assert len(hosts) == 62 and sum(len(h["ports"]) for h in hosts) == 1


@pytest.mark.nmap
def test_scan_json_triage_and_audit(tmp_path: Path) -> None:
    with TestFleet() as fleet:
        host = fleet.new_address()
        # SSH greets first, so -sV names it at once (HTTP costs nmap's 6 s wait for a
        # banner; tests/test_scanner.py proves -sV on HTTP).
        ssh = fleet.listen(host, "ssh")
        closed = fleet.closed_port(host)
        result = run_cli(tmp_path, "scan", host, "--ports", f"{ssh},{closed}", "--json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)  # exactly one JSON object
        for key in (
            "scan_id",
            "started_at",
            "finished_at",
            "scan_type",
            "hosts",
            "changes",
            "findings",
        ):
            assert key in data
        assert data["started_at"].endswith("Z") and data["scan_type"] in ("syn", "connect")
        [observed] = data["hosts"]
        assert observed["address"] == host and observed["status"] == "up"
        [port] = observed["ports"]
        assert (port["port"], port["proto"], port["state"], port["approval"]) == (
            ssh,
            "tcp",
            "open",
            "unapproved",
        )
        assert port["service"] == "ssh" and "OpenSSH" in port["product"]
        assert {"kind": "port_opened", "host": host, "port": ssh, "proto": "tcp"}.items() <= next(
            c for c in data["changes"] if c["kind"] == "port_opened"
        ).items()
        kinds = sorted((f["kind"], f["port"]) for f in data["findings"])
        assert kinds == [("unapproved_port", ssh), ("unknown_host", None)]
        finding = next(f for f in data["findings"] if f["kind"] == "unapproved_port")

        empty = run_cli(tmp_path, "approve", finding["id"], "--justification", "", "--owner", "web")
        assert empty.returncode == 2 and "justification" in empty.stderr
        flagged = run_cli(tmp_path, "flag", finding["id"], "--reason", "not in any change request")
        assert flagged.returncode == 0, flagged.stderr
        listed = json.loads(run_cli(tmp_path, "findings", "--all", "--json").stdout)
        statuses = {f["id"]: f["status"] for f in listed["findings"]}
        assert statuses[finding["id"]] == "flagged"

        history = json.loads(run_cli(tmp_path, "history", f"{host}:{ssh}", "--json").stdout)
        assert [e["kind"] for e in history["events"]] == ["port_opened"]
        state = json.loads(run_cli(tmp_path, "state", "--at", data["finished_at"], "--json").stdout)
        assert any(p["host"] == host and p["port"] == ssh for p in state["open_ports"])

        day = data["finished_at"][:10]
        pack = run_cli(
            tmp_path,
            "report",
            "--from",
            day,
            "--to",
            day,
            "--format",
            "html",
            "-o",
            str(tmp_path / "pack.html"),
        )
        assert pack.returncode == 0, pack.stderr
        html = (tmp_path / "pack.html").read_text()
        assert host in html and "11.3" in html
        manifest = json.loads((tmp_path / "pack.html.manifest.json").read_text())
        assert "pack.html" in json.dumps(manifest)

        verify = run_cli(tmp_path, "audit", "verify")
        assert verify.returncode == 0 and verify.stdout.startswith("OK")
        # Tamper with one past event: verify must fail and name it.
        segment = sorted((tmp_path / "data" / "journal").glob("20*.jsonl"))[0]
        text = segment.read_text()
        assert "finding.flagged" in text
        segment.write_text(text.replace("not in any change request", "approved by the CISO"))
        broken = run_cli(tmp_path, "audit", "verify")
        assert broken.returncode == 1 and "BROKEN" in broken.stdout


def test_baseline_lint_reports_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'version: 1\nhosts:\n  - selector: [127.0.0.5]\n    rules:\n      - ports: "80x"\n'
        "        proto: tcp\n        service: http\n        owner: web\n"
    )
    result = run_cli(tmp_path, "baseline", "lint", str(bad))
    assert result.returncode == 1  # a check that found problems (2 is a usage error)
    assert f"{bad}:5" in result.stdout
    good = Path(__file__).resolve().parents[1] / "sample_baselines" / "pci-cde.yaml"
    assert run_cli(tmp_path, "baseline", "lint", str(good)).returncode == 0
