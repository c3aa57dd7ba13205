"""A pack of three months of history verifies in a clean room, and its checker catches edits.

The history (tests/assessor_history.py) goes through the Monitor with a replayed scanner:
three people, requests and approvals, an acknowledgement, a flag, an outage closed with its
cause, reviews. Each pack is copied elsewhere and checked with `sha256sum -c` and
`python3 -I -S verify_pack.py` under an empty environment: PortConsole is not importable.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from portconsole.core.domain import compliance, pack_figures, report_figures
from portconsole.core.domain.finding import Finding
from tests import assessor_history
from tests.assessor_history import END, START, AssessorHistory, day


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AssessorHistory]:
    built = assessor_history.build(tmp_path_factory.mktemp("history"))
    yield built
    built.monitor.close()


def export(history: AssessorHistory, folder: Path, fmt: str = "html", **period: Any) -> Path:
    history.monitor.export_report(
        folder, start=period.get("start", START), end=period.get("end", END), fmt=fmt
    )
    return folder


def elsewhere(pack: Path, root: Path) -> Path:
    """The pack as an assessor has it: a copy in a folder of their own."""
    copy = root / "assessor" / pack.name
    shutil.copytree(pack, copy)
    return copy


def checker(folder: Path) -> subprocess.CompletedProcess[str]:
    # -I -S and an empty environment: no site-packages, no PYTHONPATH, no current dir.
    return subprocess.run(
        [sys.executable, "-I", "-S", "verify_pack.py"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
        env={},
    )


def sha256sum(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )


def reseal(folder: Path) -> None:
    """Recompute SHA256SUMS, as someone who edited a file would."""
    lines = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        name = line.split("  ", 1)[1]
        lines.append(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}")
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def html_pack(history: AssessorHistory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(history, tmp_path_factory.mktemp("packs") / "pack")


def test_three_months_verify_without_portconsole(html_pack: Path, tmp_path: Path) -> None:
    pack = elsewhere(html_pack, tmp_path)
    assert sha256sum(pack).returncode == 0
    done = checker(pack)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK: ") and "every figure in figures.json" in done.stdout
    # The whole journal from its first event, segments byte for byte.
    segments = sorted((pack / "journal").glob("*.jsonl"))
    first = json.loads(segments[0].read_bytes().splitlines()[0])
    assert first["seq"] == 1
    figures = json.loads((pack / "figures.json").read_bytes())
    assert figures["report"] == "evidence_pack" and figures["generated"]["format"] == "json"
    manifest = json.loads((pack / "report.html.manifest.json").read_bytes())
    assert manifest["figures_sha256"] == figures["figures_sha256"]
    anchors = (pack / "anchors.txt").read_text().splitlines()
    assert len(anchors) >= 10 and all(":" in line for line in anchors)


def test_the_anchor_before_the_period_is_on_the_chain(
    history: AssessorHistory, tmp_path: Path
) -> None:
    pack = elsewhere(export(history, tmp_path / "oct", start=day(10, 1, 0)), tmp_path)
    previous = json.loads((pack / "pack.json").read_bytes())["previous_anchor"]
    assert previous is not None and previous["published_at"] < "2026-10-01"
    assert checker(pack).returncode == 0
    # The anchor a third party holds differs from the chain: named.
    doc = json.loads((pack / "pack.json").read_bytes())
    doc["previous_anchor"]["hash"] = "f" * 64
    (pack / "pack.json").write_text(json.dumps(doc))
    reseal(pack)
    done = checker(pack)
    assert done.returncode == 1
    assert f"anchor {previous['seq']}: event {previous['seq']} no longer has" in done.stdout


def test_one_byte_changed_in_a_csv_or_a_segment_fails_both_checks(
    history: AssessorHistory, tmp_path: Path
) -> None:
    pack = elsewhere(export(history, tmp_path / "csv", fmt="csv"), tmp_path)
    assert sha256sum(pack).returncode == 0 and checker(pack).returncode == 0
    csv = pack / "findings.csv"
    good = csv.read_bytes()
    csv.write_bytes(good.replace(b"86400.0", b"86401.0", 1))  # one time to detect
    assert csv.read_bytes() != good
    assert sha256sum(pack).returncode != 0
    done = checker(pack)
    assert done.returncode == 1 and "findings.csv: sha256 differs" in done.stdout
    csv.write_bytes(good)

    (segment,) = (pack / "journal").glob("*.jsonl")
    raw = segment.read_bytes()
    at = raw.index(b"Session cache")
    segment.write_bytes(raw[:at] + b"s" + raw[at + 1 :])
    assert sha256sum(pack).returncode != 0
    done = checker(pack)
    assert done.returncode == 1 and f"journal/{segment.name}: sha256 differs" in done.stdout
    reseal(pack)  # even with the sums recomputed, the chain fails
    assert sha256sum(pack).returncode == 0
    done = checker(pack)
    assert done.returncode == 1 and "was altered" in done.stdout


def _finding(doc: dict[str, Any], finding_id: str) -> dict[str, Any]:
    return next(r for r in doc["findings"] if r["id"] == finding_id)


def _set(path: str, value: Any) -> Callable[[dict[str, Any], AssessorHistory], str]:
    def edit(doc: dict[str, Any], history: AssessorHistory) -> str:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[last] = value
        return path

    return edit


def _responded(doc: dict[str, Any], history: AssessorHistory) -> str:
    row = _finding(doc, history.ids["redis"])
    true, row["responded"] = row["responded"], "2026-09-20T08:00:00Z"
    return f"findings[{row['id']}].responded 2026-09-20T08:00:00Z, events say {true}"


def _status(doc: dict[str, Any], history: AssessorHistory) -> str:
    row = _finding(doc, history.ids["mysql"])
    row["status_at_end"] = "approved"
    return f"findings[{row['id']}].status_at_end approved, events say resolved"


def _dropped_row(doc: dict[str, Any], history: AssessorHistory) -> str:
    doc["findings"] = [r for r in doc["findings"] if r["id"] != history.ids["proxy"]]
    return f"{history.ids['proxy']} (unapproved_port, detected 2026-11-20T06:00:00Z) is missing"


def _approver(doc: dict[str, Any], history: AssessorHistory) -> str:
    doc["approvals"]["register"][0]["approver"] = "mallory"
    return f"approvals.register[{doc['approvals']['register'][0]['id']}].approver mallory"


def _scan(doc: dict[str, Any], history: AssessorHistory) -> str:
    row = doc["cadence"]["scans"][5]
    row["outcome"] = "failed"
    return f"cadence.scans[{row['scan_id']}].outcome failed, events say success"


def _closed_cause(doc: dict[str, Any], history: AssessorHistory) -> str:
    gap = next(e for e in doc["continuity"]["groups"][0]["entries"] if e["kind"] == "gap")
    gap["closed_cause"] = "none"
    return ".closed_cause none, events say Scanner VM down"


@pytest.mark.parametrize(
    "edit",
    [
        _responded,
        _status,
        _dropped_row,
        _approver,
        _scan,
        _closed_cause,
        _set("counts.audit_events", 1),
        _set("counts.sla_breaches", 0),
        _set("metrics.time_to_respond.all.median_seconds", 60.0),
        _set("metrics.time_to_detect.high.count", 0),
    ],
    ids=lambda e: getattr(e, "__name__", "set"),
)
def test_an_edited_figure_is_caught_by_the_recomputation_alone(
    html_pack: Path,
    history: AssessorHistory,
    tmp_path: Path,
    edit: Callable[[dict[str, Any], AssessorHistory], str],
) -> None:
    pack = elsewhere(html_pack, tmp_path)
    doc = json.loads((pack / "figures.json").read_bytes())
    named = edit(doc, history)
    (pack / "figures.json").write_text(json.dumps(doc, indent=2))
    reseal(pack)
    assert sha256sum(pack).returncode == 0  # the sums alone see nothing
    done = checker(pack)
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED: figures.json")]
    assert failed and any(named in line for line in failed), done.stdout


def test_the_contract_definitions_hold_in_the_pack(html_pack: Path) -> None:
    doc = json.loads((html_pack / "figures.json").read_bytes())
    for row in doc["findings"]:
        # Responded: the earliest of the response steps (an acknowledgement is one).
        steps = [s["at"] for s in row["timeline"] if s["step"] in pack_figures.RESPONSE_STEPS]
        assert row["responded"] == (min(steps) if steps else None)
    counted = [r for r in doc["findings"] if r["detected_in_period"]]
    assert {"monitoring_gap", "unapproved_port"} <= {r["kind"] for r in counted}
    ports = [r for r in counted if r["kind"] in pack_figures.PORT_KINDS]
    assert doc["metrics"]["time_to_respond"]["all"]["count"] == sum(
        1 for r in ports if r["time_to_respond_seconds"] is not None
    )


def test_an_acknowledgement_is_the_first_response() -> None:
    doc = {
        "id": "F-1", "kind": "unapproved_port", "severity": "high", "status": "approved",
        "host": "127.0.0.2", "port": 6379, "proto": "tcp", "first_seen": "2026-09-04T06:00:00Z",
        "timeline": [
            {"step": "detected", "at": "2026-09-04T06:00:00Z"},
            {"step": "acknowledged", "at": "2026-09-05T08:00:00Z"},
            {"step": "decided", "at": "2026-09-16T10:00:00Z", "text": "approved: cache"},
        ],
    }  # fmt: skip
    start, end = day(9, 1, 0), END
    row = pack_figures.finding_figures(doc, start, end, {"high": 24.0})
    assert row is not None
    assert pack_figures.parse_time("2026-09-05T08:00:00Z") == row["responded"]
    assert row["response_step"] == "acknowledged" and row["time_to_respond_seconds"] == 93600.0
    assert row["sla_breach"] == "responded after the SLA"
    # Before the deadline has passed nothing breaches; after it, no response is a breach.
    quiet = {**doc, "status": "new", "timeline": doc["timeline"][:1]}
    early = pack_figures.finding_figures(quiet, start, day(9, 4, 12), {"high": 24.0})
    late = pack_figures.finding_figures(quiet, start, day(9, 5, 7), {"high": 24.0})
    assert early is not None and early["sla_breach"] == ""
    assert late is not None and late["sla_breach"] == "no response by the period's end"


def test_no_breach_before_the_deadline_passes(history: AssessorHistory, tmp_path: Path) -> None:
    # Six hours after .2:8080 was detected (high: 24 h): no breach yet; checked by the pack.
    end = day(11, 20, 12)
    pack = elsewhere(export(history, tmp_path / "early", start=START, end=end), tmp_path)
    row = _finding(json.loads((pack / "figures.json").read_bytes()), history.ids["proxy"])
    assert row["responded"] is None and row["sla_breach"] == ""
    assert checker(pack).returncode == 0
    doc = json.loads((pack / "figures.json").read_bytes())
    _finding(doc, history.ids["proxy"])["sla_breach"] = "no response by the period's end"
    (pack / "figures.json").write_text(json.dumps(doc))
    reseal(pack)
    done = checker(pack)
    assert f"findings[{row['id']}].sla_breach no response by the period's end" in done.stdout


def test_the_checker_rules_are_the_products_rules(history: AssessorHistory) -> None:
    """pack_figures restates the contract in the standard library: it must not drift."""
    assert pack_figures.PORT_KINDS == compliance.PORT_KINDS
    assert pack_figures.RESPONSE_STEPS == compliance.RESPONSE_STEPS
    for values in ([], [5.0], [3.0, 1.0], [float(v) for v in range(1, 12)], [7.0, 7.0, 1.5]):
        assert pack_figures.summarise(values) == report_figures.summarise(values)
    findings: list[Finding] = history.monitor.findings(include_closed=True)
    for finding in findings:
        for moment in (day(9, 15, 12), day(10, 11), END):
            steps = report_figures.steps_until(finding, moment)
            doc = finding.to_json()
            assert pack_figures.status_after(
                doc, pack_figures.steps_until(doc, moment)
            ) == report_figures.status_from_steps(finding, steps)
