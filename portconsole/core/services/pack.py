"""What makes an evidence pack checkable without PortConsole: sums, the journal, a checker.

A pack folder (`report ... -o DIR`) holds, besides the report and its manifest:

- `journal/*.jsonl`: the journal's events from the last anchor published before the period
  (or from the first event) to the newest, each line byte for byte as recorded;
- `pack.json`: where that excerpt starts (the anchor's seq and hash) and the head it ends at;
- `raw_xml_sha256.txt`: the sha256 of every raw nmap report of the period (and, with
  `--with-raw`, the reports themselves under `raw/`);
- `anchors.txt`: the anchors published during the period;
- `verify_pack.py`: a standard-library-only checker (the journal's own chain rules,
  domain/chain.py, copied in) that checks the sums and the chain; exit 0 or 1;
- `SHA256SUMS`: every file above, in the format `sha256sum -c` reads; with `--sign-key`,
  `SHA256SUMS.sig` made by `ssh-keygen -Y sign -n portconsole`.
"""

from __future__ import annotations

import hashlib
import json
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
from portconsole.core.errors import UserError
from portconsole.core.timeutil import iso

SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
SIGN_NAMESPACE = "portconsole"
CHECKER = "verify_pack.py"

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


def _check_chain(folder: Path) -> list[str]:
    try:
        pack = json.loads((folder / "pack.json").read_bytes())
        start = (int(pack["journal_starts_after"]["seq"]), str(pack["journal_starts_after"]["hash"]))
        head = canonical_json(pack["journal_head"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return [f"pack.json is unreadable ({error})"]
    segments = sorted((folder / "journal").glob("*.jsonl"))
    raw = [(p.name, p.read_bytes()) for p in segments]
    result = verify_chain(raw, head, {}, start=start)
    return list(result.problems)


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    problems = _check_sums(folder) + _check_chain(folder)
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print("OK: every file matches SHA256SUMS and the journal excerpt is an unbroken chain")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
"""


def checker_source() -> str:
    """verify_pack.py: the chain rules module verbatim, plus the checker's main."""
    rules = resources.files("portconsole.core.domain").joinpath("chain.py").read_text("utf-8")
    header = (
        "#!/usr/bin/env python3\n"
        '"""Check a PortConsole evidence pack without PortConsole (Python 3.11+, standard '
        "library only).\n\n    python3 verify_pack.py [PACK_DIR]\n\nExit 0 when every file matches "
        "SHA256SUMS and the journal excerpt is an unbroken hash chain\nfrom the anchor named in "
        'pack.json to the head it names; else exit 1, one line per problem.\n"""\n'
    )
    body = rules.split('"""', 2)[2]  # drop the module docstring, keep the rules
    body = body.replace("from __future__ import annotations\n", "", 1)
    imports = "\nfrom __future__ import annotations\n\nimport sys\nfrom pathlib import Path\n"
    return header + imports + body + _CHECKER_MAIN


def write_pack(
    folder: Path,
    *,
    store: Store,
    audit: AuditLog,
    start: datetime | None,
    end: datetime | None,
    with_raw: bool = False,
    sign_key: Path | None = None,
) -> list[Path]:
    """Write the pack's own files into `folder` (which already holds the report and its
    manifest); returns every file written, SHA256SUMS (and its signature) last."""
    written: list[Path] = []
    records = list(audit.records())
    anchor = _anchor_before(records, start)
    journal_dir = folder / "journal"
    if journal_dir.exists():
        shutil.rmtree(journal_dir)
    for segment in audit.segments():
        # Each event's line byte for byte, in the journal's own files and order.
        kept = [
            line + b"\n"
            for line in segment.read_bytes().splitlines()
            if line.strip() and _seq_of(line) > anchor[0]
        ]
        if kept:
            path = journal_dir / segment.name
            atomic_write_bytes(path, b"".join(kept))
            written.append(path)
    last = records[-1] if records else None
    pack = {
        "journal_starts_after": {"seq": anchor[0], "hash": anchor[1]},
        "journal_head": {
            "format": 1,
            "seq": int(last["seq"]) if last else 0,
            "hash": str(last["hash"]) if last else GENESIS_HASH,
            "segment": "",
        },
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
    anchors = [
        f"{r['details'].get('seq')}:{r['details'].get('hash')}  {r['details'].get('recorded_at')}\n"
        for r in records
        if r.get("action") == "audit.anchor" and _in_period(r, start, end)
    ]
    written.append(_write(folder / "anchors.txt", "".join(anchors).encode()))
    written.append(_write(folder / CHECKER, checker_source().encode()))
    sums = _sums(folder)
    written.append(_write(folder / SUMS, sums))
    if sign_key is not None:
        written.append(_sign(folder / SUMS, sign_key))
    return written


def _seq_of(line: bytes) -> int:
    try:
        return int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn line: kept, so the checker reports it


def _write(path: Path, data: bytes) -> Path:
    ensure_private_dir(path.parent)
    atomic_write_bytes(path, data)
    return path


def _anchor_before(records: list[dict[str, Any]], start: datetime | None) -> tuple[int, str]:
    """The newest anchor published before the period: the excerpt continues from it."""
    chosen = (0, GENESIS_HASH)
    if start is None:
        return chosen
    start_text = iso(start)
    for record in records:
        if record.get("action") != "audit.anchor" or str(record.get("at")) >= start_text:
            continue
        details = record.get("details") or {}
        if isinstance(details.get("seq"), int) and isinstance(details.get("hash"), str):
            chosen = (details["seq"], details["hash"])
    return chosen


def _in_period(record: dict[str, Any], start: datetime | None, end: datetime | None) -> bool:
    at = str(record.get("at"))
    return (start is None or at >= iso(start)) and (end is None or at <= iso(end))


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
