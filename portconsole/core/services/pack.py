"""What makes an evidence pack checkable without PortConsole: sums, the journal, a checker.

A pack folder (`report ... -o DIR`) holds, besides the report and its manifest:

- `figures.json`: the report's document as `--format json` renders it, whatever the format
  of the pack's report: the figures the checker recomputes;
- `journal/*.jsonl`: the whole journal from its first event to the head, each segment byte
  for byte as recorded (replaying every event's effects rebuilds the findings and approvals
  the figures come from, so the excerpt must start at the genesis);
- `pack.json`: the head the journal ends at, the newest anchor published before the period
  (`previous_anchor`, the one a third party compares with the copy they hold) and the period;
- `raw_xml_sha256.txt`: the sha256 of every raw nmap report of the period (and, with
  `--with-raw`, the reports themselves under `raw/`);
- `anchors.txt`: the anchors published during the period (`SEQ:HASH  PUBLISHED_AT`);
- `verify_pack.py`: a standard-library-only checker: the journal's chain rules
  (domain/chain.py) and the figures' recomputation (domain/pack_figures.py), both copied in
  verbatim, and a main that checks the sums, the chain from the genesis, that every anchor
  is on the chain and that every figure follows from the events; exit 0 or 1;
- `SHA256SUMS`: every file above, in the format `sha256sum -c` reads; with `--sign-key`,
  `SHA256SUMS.sig` made by `ssh-keygen -Y sign -n portconsole`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from portconsole.core.adapters.journal import AuditLog
from portconsole.core.adapters.storage import atomic_write_bytes, ensure_private_dir
from portconsole.core.adapters.store import Store
from portconsole.core.domain.chain import GENESIS_HASH
from portconsole.core.domain.report_figures import utc
from portconsole.core.errors import UserError
from portconsole.core.timeutil import iso, parse_iso

SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
SIGN_NAMESPACE = "portconsole"
CHECKER = "verify_pack.py"
FIGURES = "figures.json"
# The domain modules verify_pack.py is made of, in this order, each copied verbatim.
_CHECKER_MODULES = ("chain.py", "pack_figures.py", "pack_checks.py")
# pack_checks.py imports pack_figures.py by name: in the checker they are one file.
_SIBLING_IMPORT = re.compile(r"^from portconsole\.core\.domain\.\w+ import \([^)]*\)\n", re.M)

_CHECKER_MAIN = """

# ----------------------------------------------------------------------------- the checker


def _check_sums(folder: Path) -> list[str]:
    problems = []
    sums = folder / "SHA256SUMS"
    if not sums.exists():
        return ["SHA256SUMS is missing"]
    for number, line in enumerate(sums.read_text("utf-8").splitlines(), start=1):
        digest, _, name = line.partition("  ")
        if not name:
            problems.append(f"SHA256SUMS line {number} is malformed")
            continue
        path = folder / name
        if ".." in Path(name).parts or not path.is_file():
            problems.append(f"{name}: listed in SHA256SUMS but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{name}: sha256 differs from SHA256SUMS (altered)")
    listed = {line.partition("  ")[2] for line in sums.read_text("utf-8").splitlines()}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name not in listed and name not in ("SHA256SUMS", "SHA256SUMS.sig"):
            problems.append(f"{name}: in the pack but not in SHA256SUMS")
    return problems


def _anchors(folder: Path, pack: dict) -> tuple[dict[int, str], list[str]]:
    \"\"\"The anchors to find on the chain: pack.json's previous anchor and anchors.txt.\"\"\"
    found: dict[int, str] = {}
    problems = []
    previous = pack.get("previous_anchor")
    if previous is not None:
        try:
            found[int(previous["seq"])] = str(previous["hash"])
        except (KeyError, TypeError, ValueError):
            problems.append("pack.json: previous_anchor is malformed")
    path = folder / "anchors.txt"
    text = path.read_text("utf-8") if path.exists() else ""
    for number, line in enumerate(text.splitlines(), start=1):
        seq, _, rest = line.partition(":")
        digest = rest.split()[0] if rest.split() else ""
        if not seq.isdigit() or len(digest) != 64:
            problems.append(f"anchors.txt line {number} is malformed")
        elif found.get(int(seq), digest) != digest:
            problems.append(f"anchors.txt line {number}: anchor {seq} has two hashes")
        else:
            found[int(seq)] = digest
    return found, problems


def _check_chain(folder: Path) -> tuple[list[str], list[dict], int]:
    \"\"\"The chain from the genesis to pack.json's head, every anchor on it; the events.\"\"\"
    try:
        pack = json.loads((folder / "pack.json").read_bytes())
        head = canonical_json(pack["journal_head"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return [f"pack.json is unreadable ({error})"], [], 0
    anchors, problems = _anchors(folder, pack)
    raw = [(p.name, p.read_bytes()) for p in sorted((folder / "journal").glob("*.jsonl"))]
    result = verify_chain(raw, head, anchors)
    events = []
    for _, data in raw:
        for line in data.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return problems + list(result.problems), events, len(anchors)


def _check_figures(folder: Path, events: list[dict]) -> list[str]:
    try:
        figures = json.loads((folder / "figures.json").read_bytes())
    except (OSError, ValueError) as error:
        return [f"figures.json is unreadable ({error})"]
    problems = []
    for manifest in sorted(folder.glob("*manifest.json")):
        try:
            claimed = json.loads(manifest.read_bytes()).get("figures_sha256")
        except (OSError, ValueError, AttributeError):
            problems.append(f"{manifest.name} is unreadable")
            continue
        if claimed != figures.get("figures_sha256"):
            problems.append(
                f"{manifest.name}: figures_sha256 {claimed}, figures.json says "
                f"{figures.get('figures_sha256')} (the report is not these figures)"
            )
    return problems + check_figures(figures, events)


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    chain_problems, events, anchors = _check_chain(folder)
    problems = _check_sums(folder) + chain_problems + _check_figures(folder, events)
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print(
            f"OK: every file matches SHA256SUMS; the journal is an unbroken chain of "
            f"{len(events)} events from the genesis to the head with every anchor "
            f"({anchors}) on it; every figure in figures.json follows from the events"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
"""


def checker_source() -> str:
    """verify_pack.py: the chain rules and the figures' recomputation and checks verbatim
    (less pack_checks' import of pack_figures, defined just above it), plus a main."""
    header = (
        "#!/usr/bin/env python3\n"
        '"""Check a PortConsole evidence pack without PortConsole (Python 3.11+, standard '
        "library only).\n\n    python3 verify_pack.py [PACK_DIR]\n\nExit 0 when every file "
        "matches SHA256SUMS, the journal is an unbroken hash chain from\nits first event to "
        "the head named in pack.json, every anchor (pack.json's previous\nanchor, anchors.txt) "
        "is on that chain, and every figure in figures.json follows from\nthe journal's "
        'events; else exit 1, one line per problem.\n"""\n'
        "\nfrom __future__ import annotations\n\nimport sys\nfrom pathlib import Path\n"
    )
    bodies = []
    package = resources.files("portconsole.core.domain")
    for name in _CHECKER_MODULES:
        text = package.joinpath(name).read_text("utf-8")
        body = text.split('"""', 2)[2]  # drop the module docstring, keep the rules
        body = body.replace("from __future__ import annotations\n", "", 1)
        body = _SIBLING_IMPORT.sub("", body)
        bodies.append(f"\n# {'-' * 60} {name}, verbatim\n{body}")
    return header + "".join(bodies) + _CHECKER_MAIN


def write_pack(
    folder: Path,
    *,
    store: Store,
    audit: AuditLog,
    start: datetime | None,
    end: datetime | None,
    figures: bytes,
    with_raw: bool = False,
    sign_key: Path | None = None,
) -> list[Path]:
    """Write the pack's own files into `folder` (which already holds the report and its
    manifest); `figures` is the document rendered as JSON. Returns every file written,
    SHA256SUMS (and its signature) last."""
    start, end = (utc(start) if start else None), (utc(end) if end else None)
    written = [_write(folder / FIGURES, figures)]
    journal_dir = folder / "journal"
    if journal_dir.exists():
        shutil.rmtree(journal_dir)
    # Read under the lock, as `audit verify` does: no transaction is half written.
    with audit.lock.hold(transaction=False):
        segments = [(path.name, path.read_bytes()) for path in audit.segments()]
    head: tuple[int, str, str] = (0, GENESIS_HASH, "")
    records: list[dict[str, Any]] = []
    for name, data in segments:
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]  # a torn last line: the next write cuts it
        if not data:
            continue
        written.append(_write(journal_dir / name, data))  # byte for byte
        for line in data.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # kept in the segment: the checker names it
        if records:
            head = (int(records[-1]["seq"]), str(records[-1]["hash"]), name)
    anchors = _anchors(records)
    previous = _anchor_before(anchors, start)
    pack = {
        "journal": {
            "from": "genesis",
            "segments": [f"journal/{name}" for name, data in segments if data],
        },
        "journal_head": {"format": 1, "seq": head[0], "hash": head[1], "segment": head[2]},
        "previous_anchor": previous,
        "period": {"from": iso(start) if start else None, "to": iso(end) if end else None},
    }
    written.append(_write(folder / "pack.json", json.dumps(pack, indent=2).encode() + b"\n"))
    scans = store.scans(since=start, until=end)
    lines = []
    for scan in scans:
        for digest in scan.get("xml_sha256") or [scan.get("raw_xml_sha256") or ""]:
            if digest:
                lines.append(f"{digest}  {scan['scan_id']}  {scan.get('finished_at')}\n")
        if with_raw and scan.get("xml"):
            source = store.data_dir / str(scan["xml"])
            if source.exists():
                written.append(_write(folder / "raw" / source.name, source.read_bytes()))
    written.append(_write(folder / "raw_xml_sha256.txt", "".join(lines).encode()))
    in_period = [
        f"{a['seq']}:{a['hash']}  {a['published_at']}\n"
        for a in anchors
        if (start is None or parse_iso(a["published_at"]) >= start)
        and (end is None or parse_iso(a["published_at"]) <= end)
    ]
    written.append(_write(folder / "anchors.txt", "".join(in_period).encode()))
    written.append(_write(folder / CHECKER, checker_source().encode()))
    sums = _sums(folder)
    written.append(_write(folder / SUMS, sums))
    if sign_key is not None:
        written.append(_sign(folder / SUMS, sign_key))
    return written


def _anchors(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every anchor the journal records publishing: {"seq", "hash", "published_at"}.

    Published at the anchor's own `recorded_at` (the clock that published it), else the
    event's time."""
    found = []
    for record in records:
        if record.get("action") != "audit.anchor":
            continue
        details = record.get("details") or {}
        if isinstance(details.get("seq"), int) and isinstance(details.get("hash"), str):
            published = details.get("recorded_at") or record.get("at")
            try:
                stamp = iso(parse_iso(str(published)))
            except ValueError:
                continue  # no time it was published: not an anchor of any period
            found.append({"seq": details["seq"], "hash": details["hash"], "published_at": stamp})
    return found


def _write(path: Path, data: bytes) -> Path:
    ensure_private_dir(path.parent)
    atomic_write_bytes(path, data)
    return path


def _anchor_before(anchors: list[dict[str, Any]], start: datetime | None) -> dict[str, Any] | None:
    """The newest anchor published before the period (what a third party holds from then)."""
    if start is None:
        return None
    before = [a for a in anchors if parse_iso(a["published_at"]) < start]
    return before[-1] if before else None


def _sums(folder: Path) -> bytes:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name in (SUMS, SIGNATURE) or name.startswith("."):
            continue
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n")
    return "".join(lines).encode()


def _sign(sums: Path, key: Path) -> Path:
    if not key.is_file():
        raise UserError(f"--sign-key {key}: no such key file")
    signature = sums.with_name(SIGNATURE)
    signature.unlink(missing_ok=True)
    try:
        done = subprocess.run(
            ["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", SIGN_NAMESPACE, str(sums)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise UserError("ssh-keygen is not installed: apt-get install openssh-client") from None
    if done.returncode != 0:
        raise UserError(f"ssh-keygen could not sign with {key}: {done.stderr.strip()[:300]}")
    return signature
