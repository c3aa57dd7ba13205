"""An assessor's first reading of a pack: three months of history, checked and sampled
without PortConsole.

The history (tests/assessor_history.py) has backfilled reports, live scans, three people
(alice requests, bob approves, carol triages and reviews), a six-day outage closed with its
cause, and reviews. The pack is checked by `sha256sum -c`, its own `verify_pack.py` and
`ssh-keygen -Y verify` in a clean environment, then five samples an assessor draws are
answered by a script that reads only the pack's files (tests/data/assessor_samples.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import assessor_history
from tests.assessor_history import END, START, AssessorHistory, day

SAMPLES = Path(__file__).parent / "data" / "assessor_samples.py"
CLEAN = [sys.executable, "-I", "-S"]  # no site-packages, no PYTHONPATH, no current dir


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AssessorHistory]:
    built = assessor_history.build(tmp_path_factory.mktemp("history"))
    yield built
    built.monitor.close()


@pytest.fixture(scope="module")
def pack(history: AssessorHistory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signed CSV pack for Sep 1 - Nov 30, with a sample on Nov 20, as the assessor has it:
    copied into a folder of their own, with the checker script beside it."""
    made = tmp_path_factory.mktemp("made")
    key = made / "signing_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "compliance@example", "-f", str(key)],
        check=True,
    )
    history.monitor.export_report(
        made / "pack",
        start=START,
        end=END,
        fmt="csv",
        samples=[day(11, 20, 12)],
        sign_key=key,
    )
    assessor = tmp_path_factory.mktemp("assessor")
    copy = assessor / "pack"
    shutil.copytree(made / "pack", copy)
    public = key.with_suffix(".pub").read_text().split()
    (assessor / "allowed_signers").write_text(f"compliance@example {public[0]} {public[1]}\n")
    shutil.copy(SAMPLES, assessor / "samples.py")
    return copy


def published_anchor(history: AssessorHistory) -> str:
    """The newest anchor published before the period's end, as the assessor holds it."""
    lines = (history.root / "published" / "anchors.txt").read_text().splitlines()
    before = [line.split() for line in lines if line.split()[1] < "2026-11-30"]
    return before[-1][0]


def run(command: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env={}, input=stdin, capture_output=True, timeout=120, check=False
    )


def test_the_pack_checks_out_without_portconsole(pack: Path) -> None:
    sums = run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], pack)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    checked = run([*CLEAN, "verify_pack.py"], pack)
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.decode().startswith("OK: ")
    signature = run(
        ["ssh-keygen", "-Y", "verify", "-f", "../allowed_signers", "-I", "compliance@example",
         "-n", "portconsole", "-s", "SHA256SUMS.sig"],
        pack,
        stdin=(pack / "SHA256SUMS").read_bytes(),
    )  # fmt: skip
    assert signature.returncode == 0, signature.stderr
    assert b"Good" in signature.stdout


def test_five_samples_answered_from_the_packs_files_alone(
    pack: Path, history: AssessorHistory
) -> None:
    anchor = published_anchor(history)
    done = run([*CLEAN, "../samples.py", ".", anchor], pack)
    assert done.returncode == 0, done.stderr
    answers: dict[str, Any] = json.loads(done.stdout)

    # 1. Who asked for 127.0.0.3:6379, who approved it, why; two people; reviewed.
    approval = answers["approval"]
    assert approval["justification"] == "Session cache for the card portal"
    assert approval["ticket"] == "CHG-231"
    assert approval["requested_by"].startswith("alice@ops1")
    assert approval["requested_at"] == "2026-09-15T14:00:00Z"
    assert approval["approved_by"].startswith("bob@ops2")
    assert approval["recorded_at"] == "2026-09-16T10:00:00Z"
    assert approval["four_eyes"] is True
    assert approval["last_review"]["outcome"] == "keep"
    assert approval["last_review"]["reviewer"].startswith("carol@ops3")

    # 2. The change on Oct 10: mysql opened after the Oct 9 scan, seen by the Oct 10 scan,
    # flagged by carol three hours later, gone by the next scan; no SLA breach.
    (change,) = answers["change"]
    assert (change["host"], change["port"], change["kind"]) == (
        "127.0.0.4",
        3306,
        "unapproved_port",
    )
    assert change["detected"] == "2026-10-10T06:00:00Z"
    assert change["time_to_detect_seconds"] == 86400
    assert change["responded"] == "2026-10-10T09:00:00Z"
    assert change["time_to_respond_seconds"] == 3 * 3600
    assert change["decided_by"].startswith("carol@ops3")
    assert change["status_at_end"] == "resolved" and change["sla_breach"] == ""

    # 3. No gap in September; October's outage, with its cause and how it was closed.
    assert answers["gaps_september"] == []
    (gap,) = answers["gaps_october"]
    assert (gap["start"], gap["end"]) == ("2026-10-20T06:00:00Z", "2026-10-26T06:00:00Z")
    assert gap["closed_cause"].startswith("Scanner VM down for hypervisor patching")
    assert gap["finding_id"] == history.ids["gap"]

    # 4. The log is unaltered since the anchor the assessor holds.
    assert answers["log"]["checker_exit"] == 0, answers["log"]
    assert answers["log"]["anchor_on_chain"] is True

    # 5. Every port open on Nov 20 had an approval in force then (8080 opened on Nov 19 12:00
    # is the exception: open, unapproved, with its finding).
    ports = {(p["host"], p["port"]): p for p in answers["population"]["ports"]}
    assert len(ports) == 8
    unapproved = [key for key, p in ports.items() if p["approval_id"] is None]
    assert unapproved == [("127.0.0.2", 8080)]
    assert ports[("127.0.0.2", 8080)]["finding_id"] == history.ids["proxy"]
    for key, port in ports.items():
        if key != ("127.0.0.2", 8080):
            assert port["approval_recorded_at"] <= answers["population"]["at"]
            assert port["approved_by"].startswith("bob@ops2")


def test_a_byte_changed_in_a_csv_or_a_segment_is_caught(pack: Path, tmp_path: Path) -> None:
    for name in (
        "approvals.csv",
        f"journal/{sorted(p.name for p in (pack / 'journal').iterdir())[0]}",
    ):
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(pack, copy)
        target = copy / name
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        assert run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], copy).returncode != 0
        checked = run([*CLEAN, "verify_pack.py"], copy)
        assert checked.returncode == 1
        assert name in checked.stdout.decode()
