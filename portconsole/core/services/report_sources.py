"""What a report reads, and the blocks every report document carries.

A point-in-time report (services/point_in_time.py) and an evidence pack
(services/evidence_pack.py) read the same records and open with the same generation block
and audit-chain verification; both are built only here so the two documents agree. Nothing
here writes: the renderers (domain/report_render.py) only lay the figures out, so every
format of one export shows the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from msgspec import Struct, field

from portconsole import __version__
from portconsole.core.adapters.approvals import ApprovalRegistry
from portconsole.core.adapters.findings import FindingBook
from portconsole.core.adapters.journal import AuditLog
from portconsole.core.adapters.store import Store
from portconsole.core.domain.schedule import Gap
from portconsole.core.identity import Actor
from portconsole.core.settings import Settings
from portconsole.core.timeutil import iso

DOCUMENT_FORMAT = 1

Progress = Callable[[str, float], None]


class ReportSources(Struct):
    """Everything a report reads, and who is generating it."""

    store: Store
    findings: FindingBook
    approvals: ApprovalRegistry
    audit: AuditLog
    settings: Settings
    actor: Actor
    generated_at: datetime
    extra_gaps: list[Gap] = field(default_factory=list)
    # Per host: how long a scan covers it (its group's interval + jitter + grace); a host
    # not listed uses the point-in-time report's default window.
    coverage_windows: dict[str, timedelta] = field(default_factory=dict)


def report_progress(progress: Progress | None, stage: str, fraction: float) -> None:
    """Tell `progress` (if any) which stage the build has reached."""
    if progress is not None:
        progress(stage, fraction)


def generated(sources: ReportSources) -> dict[str, Any]:
    """When, by whom and with what the document was generated."""
    return {
        "at": iso(sources.generated_at),
        "by": str(sources.actor),
        "actor": sources.actor.to_json(),
        "tool": f"portconsole {__version__}",
    }


def audit_chain(audit: AuditLog) -> dict[str, Any]:
    """The audit chain's verification, as it stands at generation time."""
    result = audit.verify()
    head = result.head
    return {
        "ok": result.ok,
        "events": result.count,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "head": {"seq": head.seq, "hash": head.hash, "segment": head.segment} if head else None,
    }
