"""Safe text and files: invisible characters from the network never reach a reader as they
are, and files root writes into someone's data dir stay theirs."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from portconsole.core.textsafe import csv_safe, html_safe, markdown_safe, terminal_safe
from tests.test_cli import run_cli

DATA = Path(__file__).resolve().parent / "data"
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "evil\u202egnp.exe" reads as "evilexe.png"
INVISIBLE = [
    "\u202a",
    "\u202e",
    "\u2066",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
    "\u200b",
    "\ufeff",
]


@pytest.mark.parametrize("char", INVISIBLE)
def test_every_output_shows_invisible_characters_as_escapes(char: str) -> None:
    escape = f"\\u{ord(char):04x}"
    for safe in (terminal_safe, html_safe, csv_safe):
        shown = safe(f"ssh{char}d")
        assert char not in shown and escape in shown, safe.__name__
    assert char not in markdown_safe(f"x{char}") and "u" + escape[2:] in markdown_safe(f"x{char}")
    assert terminal_safe("café ünïcode") == "café ünïcode"  # visible non-ASCII is kept


def _hostile_report(tmp_path: Path) -> Path:
    xml = (DATA / "nmap_loopback.xml").read_text()
    xml = xml.replace('product="OpenSSH"', f'product="Open{RLO}HSS"', 1)
    xml = xml.replace('service name="ssh" product', f'service name="ss{RLO}h" product', 1)
    xml = xml.replace("web-1.example.internal", f"web-1{RLO}lanretni.example", 1)
    assert xml.count(RLO) == 3
    path = tmp_path / "hostile.xml"
    path.write_text(xml, encoding="utf-8")
    return path


def test_a_bidi_override_from_a_scan_reaches_no_output(tmp_path: Path) -> None:
    imported = run_cli(tmp_path, "import", str(_hostile_report(tmp_path)))
    assert imported.returncode == 0, imported.stderr
    assert RLO not in imported.stdout and "ss\\u202eh" in imported.stdout

    state = run_cli(tmp_path, "state")
    assert RLO not in state.stdout and "ss\\u202eh" in state.stdout

    findings = run_cli(tmp_path, "findings", "--json")
    assert RLO not in findings.stdout
    services = {f["service"] for f in json.loads(findings.stdout)["findings"]}
    assert "ss\u202eh" in services  # the data keeps the value; the output escapes it

    report = tmp_path / "report.html"
    made = run_cli(tmp_path, "report", "--at", "2026-05-28", "-o", str(report))
    assert made.returncode == 0, made.stderr
    html = report.read_text(encoding="utf-8")
    assert RLO not in html and "\\u202e" in html


@pytest.mark.skipif(os.geteuid() != 0, reason="only root writes as another user")
def test_files_root_writes_keep_the_data_dir_owner(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    imported = run_cli(tmp_path, "import", str(DATA / "nmap_loopback.xml"))
    assert imported.returncode == 0, imported.stderr
    assert run_cli(tmp_path, "ack", "F-0001").returncode in (0, 2)
    written = [data, *data.rglob("*")]
    assert len(written) > 5  # journal, projections, scans, lock: a real write happened
    foreign = [
        str(p.relative_to(tmp_path))
        for p in written
        if (p.lstat().st_uid, p.lstat().st_gid) != (nobody.pw_uid, nobody.pw_gid)
    ]
    assert foreign == []
