"""Point-in-time reports and evidence packs for auditors, written with a manifest.

`export_report` is the one entry point (Monitor.export_report calls it):

- `at=T`: the exposure of every host at T (point_in_time.build_point_in_time);
- `start=D1, end=D2`: the evidence pack for the period (evidence_pack.build_evidence_pack),
  with the open-port population at its end and at each of `samples` (population.py).

Output layout, decided here so every caller gets the same:

- html, md, json: `out` is a file; the manifest is written beside it as
  `<out>.manifest.json` (`-o pack.html` gives pack.html and pack.html.manifest.json).
- csv: `out` is a folder; it receives one CSV per table and `manifest.json`.
- `out` a folder (existing, or a name without a suffix) for html, md or json: the report is
  `out/report.<fmt>` with its manifest beside it.

A folder is a verifiable pack: pack.py adds the journal excerpt, the raw-report hashes, the
anchors, a standard-library checker and SHA256SUMS (optionally signed).

Every file is written atomically (temp file, fsync, rename; mode 0600). The manifest names
each file with its sha256 and size, the parameters, generation time (UTC), who generated
it, the record counts and `figures_sha256` — a hash of the figures alone, equal for every
format and every regeneration of the same period from the same records. The export is
then an audit event (`export`) carrying the parameters, files and the manifest's sha256;
a failed export is audited as a failure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from portconsole.core.adapters.approvals import ApprovalRegistry
from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.journal import AuditLog
from portconsole.core.adapters.storage import atomic_write_bytes, ensure_private_dir
from portconsole.core.adapters.store import Store
from portconsole.core.domain.compliance import NOT_VULNERABILITY_SCANNING
from portconsole.core.domain.report_figures import figures_sha256, utc
from portconsole.core.domain.report_render import render_csv, render_html, render_markdown
from portconsole.core.domain.schedule import Gap
from portconsole.core.errors import UserError
from portconsole.core.identity import Actor
from portconsole.core.services.evidence_pack import build_evidence_pack
from portconsole.core.services.pack import write_pack
from portconsole.core.services.point_in_time import build_point_in_time
from portconsole.core.services.report_sources import ReportSources
from portconsole.core.settings import Settings
from portconsole.core.timeutil import iso, utcnow

FORMATS = ("html", "md", "csv", "json")
MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".manifest.json"
CSV_MANIFEST = "manifest.json"

__all__ = [
    "FORMATS",
    "build_report",
    "export_report",
    "manifest_path",
    "render_report",
    "verify_manifest",
]


def _check_parameters(
    fmt: str, at: datetime | None, start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime | None, datetime | None, datetime | None]:
    if fmt not in FORMATS:
        raise UserError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    if at is not None and (start is not None or end is not None):
        raise UserError(
            "give either --at T (point in time) or --from/--to (evidence pack), not both"
        )
    if at is None and start is None:
        raise UserError(
            "say what to report: --at 2026-05-01T00:00:00Z for the exposure at a time, or "
            "--from 2026-01-01 --to 2026-03-31 for an evidence pack"
        )
    if at is not None:
        at = utc(at)
        if at > now:
            raise UserError(f"--at {iso(at)} is in the future; give a time up to now")
        return at, None, None
    assert start is not None
    start = utc(start)
    end = utc(end) if end is not None else now
    if end > now:
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        if end != midnight:
            # Findings minutes old would read as SLA breaches of a period not yet over.
            raise UserError(
                f"--to {iso(end)} is in the future; give a time up to now (a date alone, "
                "such as today's, ends the period now)"
            )
        end = now  # `--to TODAY`: the period ends now
    if end <= start:
        raise UserError(f"--to {iso(end)} must be after --from {iso(start)}")
    if start > now:
        raise UserError(f"--from {iso(start)} is in the future; give a period that has begun")
    return None, start, end


def build_report(
    sources: ReportSources,
    *,
    at: datetime | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    coverage_window: timedelta | None = None,
    progress: Callable[[str, float], None] | None = None,
    samples: Sequence[datetime] = (),
) -> dict[str, Any]:
    """The report's document (figures), with its `figures_sha256`."""
    at, start, end = _check_parameters("json", at, start, end, sources.generated_at)
    if at is not None and samples:
        raise UserError(
            "--sample goes with --from/--to (an evidence pack); a point-in-time report "
            "(--at) is itself the population at one time"
        )
    if at is not None:
        document = build_point_in_time(sources, at, coverage_window, progress)
    else:
        assert start is not None and end is not None
        document = build_evidence_pack(sources, start, end, progress, samples)
    document["figures_sha256"] = figures_sha256(document)
    return document


def render_report(document: dict[str, Any], fmt: str) -> dict[str, bytes]:
    """File name (relative to the output) -> bytes. One entry except for CSV."""
    if fmt == "html":
        return {"": render_html(document, fmt)}
    if fmt == "md":
        return {"": render_markdown(document, fmt)}
    if fmt == "json":
        body = {**document, "generated": {**document["generated"], "format": fmt}}
        text = json.dumps(body, indent=2, sort_keys=False, ensure_ascii=False)
        return {"": (text + "\n").encode("utf-8")}
    if fmt == "csv":
        return render_csv(document, fmt)
    raise UserError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")


def notices(document: dict[str, Any]) -> list[str]:
    """The scope's limits particular to this report (not the standing statement)."""
    scope = document.get("scope") or {}
    return [text for text in scope.get("limits", []) if text != NOT_VULNERABILITY_SCANNING]


def manifest_path(out: Path, fmt: str) -> Path:
    """Where the manifest of an export to `out` lives."""
    return out / CSV_MANIFEST if fmt == "csv" else out.with_name(out.name + MANIFEST_SUFFIX)


def is_pack_folder(out: Path, fmt: str) -> bool:
    """`-o DIR` (an existing folder, or a name without a suffix) makes a verifiable pack."""
    return fmt == "csv" or out.is_dir() or not out.suffix


def _targets(out: Path, fmt: str, rendered: dict[str, bytes]) -> list[tuple[Path, bytes]]:
    if fmt != "csv" and is_pack_folder(out, fmt):
        ensure_private_dir(out)
        return [(out / f"report.{fmt}", rendered[""])]
    if fmt == "csv":
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} is a file: CSV exports write a folder of files; name a folder")
        ensure_private_dir(out)
        return [(out / name, data) for name, data in rendered.items()]
    if out.is_dir():
        raise UserError(f"{out} is a folder: name the {fmt} file to write, e.g. {out}/report.{fmt}")
    return [(out, rendered[""])]


def _manifest(
    document: dict[str, Any], fmt: str, files: Iterable[tuple[Path, bytes]], base: Path
) -> dict[str, Any]:
    return {
        "manifest_format": MANIFEST_FORMAT,
        "report": document["report"],
        "title": document["title"],
        "format": fmt,
        "generated_at": document["generated"]["at"],
        "generated_by": document["generated"]["by"],
        "actor": document["generated"]["actor"],
        "tool": document["generated"]["tool"],
        "parameters": document["parameters"],
        "counts": document["counts"],
        "figures_sha256": document["figures_sha256"],
        # What the CLI says beside the files (e.g. a time before history starts).
        "notices": notices(document),
        "audit_chain": {
            "ok": document["audit_chain"]["ok"],
            "head": document["audit_chain"].get("head"),
        },
        "files": [
            {
                "name": path.relative_to(base).as_posix(),
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            }
            for path, data in files
        ],
    }


def verify_manifest(manifest: Path) -> list[str]:
    """Problems with the files a manifest lists (empty when every hash matches)."""
    data = json.loads(manifest.read_bytes())
    problems = []
    for entry in data.get("files", []):
        path = manifest.parent / entry["name"]
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            problems.append(f"{entry['name']}: missing")
            continue
        if digest != entry["sha256"]:
            problems.append(f"{entry['name']}: sha256 differs (altered)")
    return problems


def export_report(
    *,
    store: Store,
    findings: FindingBook,
    approvals: ApprovalRegistry,
    audit: AuditLog,
    settings: Settings,
    actor: Actor,
    out: Path,
    fmt: str,
    at: datetime | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Callable[[str, float], None] | None = None,
    coverage_window: timedelta | None = None,
    gaps: Iterable[Gap] = (),
    now: datetime | None = None,
    with_raw: bool = False,
    sign_key: Path | None = None,
    samples: Sequence[datetime] = (),
) -> list[Path]:
    """Write a point-in-time report (`at`) or an evidence pack (`start`..`end`, `end`
    defaulting to now) to `out` in `fmt`, plus its manifest; audit the export.

    Returns the files written, the manifest last. `gaps` adds gaps the caller knows of
    (e.g. `Scheduler.recent_gaps()`) to those recorded in the audit chain and findings.
    `now` is the generation time (tests pin it). Raises UserError for bad parameters.
    """
    moment = utc(now) if now is not None else utcnow()
    out = Path(out)
    # The period as reported (`--to TODAY` ends it now), for the pack's own files.
    period_at, period_start, period_end = _check_parameters(fmt, at, start, end, moment)
    sources = ReportSources(
        store=store,
        findings=findings,
        approvals=approvals,
        audit=audit,
        settings=settings,
        actor=actor,
        generated_at=moment,
        extra_gaps=list(gaps),
    )
    request = {
        "format": fmt,
        "output": str(out),
        "at": iso(utc(at)) if at else None,
        "from": iso(utc(start)) if start else None,
        "to": iso(utc(end)) if end else None,
        "samples": [iso(utc(s)) for s in samples],
    }
    try:
        # Figures and the journal copied into a pack are read under the data lock: a
        # transaction landing in between (a background fingerprint, another process
        # scanning) would give figures that the copied journal does not say.
        with store.lock.hold(transaction=False):
            document = build_report(
                sources,
                at=at,
                start=start,
                end=end,
                coverage_window=coverage_window,
                progress=progress,
                samples=samples,
            )
            if progress is not None:
                progress("rendering", 0.9)
            rendered = render_report(document, fmt)
            targets = _targets(out, fmt, rendered)
            if progress is not None:
                progress("writing", 0.95)
            for path, data in targets:
                atomic_write_bytes(path, data)
            report_file = targets[0][0] if fmt != "csv" else out
            manifest = manifest_path(report_file, fmt)
            manifest_doc = _manifest(document, fmt, targets, manifest.parent)
            manifest_bytes = (
                json.dumps(manifest_doc, indent=2, ensure_ascii=False) + "\n"
            ).encode()
            atomic_write_bytes(manifest, manifest_bytes)
            extras: list[Path] = []
            if is_pack_folder(out, fmt):
                extras = write_pack(
                    out,
                    store=store,
                    audit=audit,
                    start=period_start or period_at,
                    end=period_end or period_at,
                    figures=rendered[""] if fmt == "json" else render_report(document, "json")[""],
                    with_raw=with_raw,
                    sign_key=sign_key,
                )
    except Exception as error:
        with store.lock.hold():
            audit.append(
                "export",
                actor=actor,
                outcome="failure",
                resource={"path": str(out)},
                details={**request, "error": f"{error.__class__.__name__}: {error}"[:500]},
                at=moment,
            )
        raise
    with store.lock.hold():
        audit.append(
            "export",
            actor=actor,
            resource={"path": str(out), "report": document["report"]},
            details={
                **request,
                "parameters": document["parameters"],
                "counts": document["counts"],
                "figures_sha256": document["figures_sha256"],
                "files": manifest_doc["files"],
                "manifest": manifest.name,
                "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            },
            at=moment,
        )
    if progress is not None:
        progress("done", 1.0)
    return [path for path, _ in targets] + [manifest] + extras
