"""A pack folder is checkable without PortConsole: sha256sum, verify_pack.py, ssh-keygen."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from portconsole.core.domain.model import HostObservation, PortObservation, ScanResult
from portconsole.core.monitor import Monitor
from portconsole.core.timeutil import utcnow

HOST = "127.0.0.2"


def scan(scan_id: str, ports: list[int], ago: timedelta) -> ScanResult:
    finished = utcnow() - ago
    return ScanResult(
        scan_id, finished - timedelta(seconds=3), finished, "7.93", "connect", False,
        [HOST], [HOST], "22,80,8080", ["tcp"],
        [HostObservation(HOST, "up", "", [PortObservation(p, "tcp", "open", "http") for p in ports])],
        raw_xml=[f"<nmaprun id='{scan_id}'/>".encode()],
    )  # fmt: skip


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    anchors = tmp_path / "elsewhere" / "anchors.log"
    config.write_text(
        'scope = ["127.0.0.0/8"]\n[approval]\nseparation_of_duties = false\n'
        f'[audit]\nanchor_file = "{anchors}"\n'
    )
    monitor = Monitor.open(config, tmp_path / "data")
    monitor._ingest_and_detect(scan("s1", [22], timedelta(hours=5)), "", 1)
    monitor.publish_anchor(force=True)  # an anchor before the period
    start = utcnow()
    monitor._ingest_and_detect(scan("s2", [22, 8080], timedelta(hours=0)), "", 1)
    finding = next(f for f in monitor.findings() if f.port == 8080)
    monitor.approve(finding.id, justification="admin UI, CHG-7", owner="ops")
    folder = tmp_path / "pack"
    monitor.export_report(folder, start=start, end=utcnow(), fmt="html", with_raw=True)
    monitor.close()
    return folder


def checker(folder: Path) -> subprocess.CompletedProcess[str]:
    # -I -S: no site-packages, no PYTHONPATH, no current dir: PortConsole is not importable.
    return subprocess.run(
        [sys.executable, "-I", "-S", str(folder / "verify_pack.py"), str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder.parent,
    )


def sha256sum(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )


def test_a_pack_verifies_without_portconsole_and_catches_one_changed_byte(pack: Path) -> None:
    names = {p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file()}
    assert {"report.html", "report.html.manifest.json", "SHA256SUMS", "verify_pack.py"} <= names
    assert {"pack.json", "raw_xml_sha256.txt", "anchors.txt"} <= names
    assert any(n.startswith("journal/") for n in names) and any(n.startswith("raw/") for n in names)
    assert sha256sum(pack).returncode == 0
    ok = checker(pack)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout
    # The whole journal from event 1 (the replay needs it); the anchor published before the
    # period is named in pack.json, and the checker found it on the chain.
    first = (pack / "journal").glob("*.jsonl").__next__().read_text().splitlines()[0]
    assert '"seq":1,' in first
    previous = json.loads((pack / "pack.json").read_text())["previous_anchor"]
    assert previous is not None and previous["seq"] >= 1
    assert "figures.json" in names

    report = pack / "report.html"
    good = report.read_bytes()
    report.write_bytes(good.replace(b"CHG-7", b"CHG-8", 1))
    assert sha256sum(pack).returncode != 0
    broken = checker(pack)
    assert broken.returncode == 1 and "report.html" in broken.stdout
    report.write_bytes(good)

    (segment,) = (pack / "journal").glob("*.jsonl")
    raw = segment.read_bytes()
    segment.write_bytes(raw.replace(b"CHG-7", b"CHG-9", 1))
    assert sha256sum(pack).returncode != 0
    broken = checker(pack)
    assert broken.returncode == 1 and segment.name in broken.stdout
    # Even with SHA256SUMS recomputed, the chain itself fails.
    import hashlib

    sums = (pack / "SHA256SUMS").read_text().splitlines()
    fixed = [
        f"{hashlib.sha256(segment.read_bytes()).hexdigest()}  {line.split('  ', 1)[1]}"
        if line.endswith(f"journal/{segment.name}")
        else line
        for line in sums
    ]
    (pack / "SHA256SUMS").write_text("\n".join(fixed) + "\n")
    rechained = checker(pack)
    assert rechained.returncode == 1 and "altered" in rechained.stdout


def test_a_signed_pack_verifies_with_ssh_keygen(tmp_path: Path, pack: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    key = tmp_path / "assessor_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pc@test", "-f", str(key)], check=True
    )
    sign = subprocess.run(
        [sys.executable, "-m", "portconsole.cli", "--config", str(tmp_path / "config.toml"),
         "--data-dir", str(tmp_path / "data"), "report", "--from", "2026-01-01", "--format", "md",
         "-o", str(tmp_path / "signed"), "--sign-key", str(key)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sign.returncode == 0, sign.stderr
    folder = tmp_path / "signed"
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"pc@test {(tmp_path / 'assessor_key.pub').read_text().split(' ', 2)[0]} "
                       f"{(tmp_path / 'assessor_key.pub').read_text().split(' ', 2)[1]}\n")  # fmt: skip
    with (folder / "SHA256SUMS").open("rb") as sums:
        verified = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "pc@test", "-n",
             "portconsole", "-s", str(folder / "SHA256SUMS.sig")],
            stdin=sums, capture_output=True, text=True,
        )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert checker(folder).returncode == 0


def test_a_period_that_ends_in_the_future_is_refused(tmp_path: Path) -> None:
    from portconsole.core.errors import UserError

    config = tmp_path / "config.toml"
    config.write_text('scope = ["127.0.0.0/8"]\n')
    monitor = Monitor.open(config, tmp_path / "data")
    monitor._ingest_and_detect(scan("s1", [22], timedelta(hours=1)), "", 1)
    start = utcnow() - timedelta(days=2)
    with pytest.raises(UserError, match="in the future"):
        monitor.export_report(
            tmp_path / "p.json", start=start, end=utcnow() + timedelta(days=3), fmt="json"
        )
    # A date alone that includes today ends the period now.
    tomorrow = (utcnow() + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    monitor.export_report(tmp_path / "p.json", start=start, end=tomorrow, fmt="json")
    monitor.close()
