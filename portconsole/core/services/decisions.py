"""Decisions on findings and approvals: acknowledge, note, flag, accept a risk, close with a
cause, reopen; request, approve, review and revoke (services/approval_decisions.py);
baselines in and out. Each is one journal transaction with its events; a decision on
several findings at once (`ack_many`...) is one transaction with one event per finding,
refused whole (naming every finding that cannot take it) before anything is written."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from portconsole.core.domain.approval import Approval
from portconsole.core.domain.finding import Finding, refusal
from portconsole.core.errors import UserError
from portconsole.core.services.approval_decisions import ApprovalDecisions, review_datetime
from portconsole.core.services.base import finding_resource, refusal_recorded


class Decisions(ApprovalDecisions):
    """Triage decisions and baselines, for the Monitor."""

    @refusal_recorded("finding.ack")
    def ack(self, finding_id: str) -> Finding:
        self._require_write("acknowledge findings")
        with self.store.lock.hold():
            finding = self.findings_book.ack(
                self.finding(finding_id).id, str(self.actor), now=self.clock()
            )
            self._audit("finding.ack", resource=finding_resource(finding))
        return finding

    @refusal_recorded("finding.note")
    def note(self, finding_id: str, text: str) -> Finding:
        self._require_write("add notes")
        with self.store.lock.hold():
            finding = self.findings_book.note(
                self.finding(finding_id).id, str(self.actor), text, now=self.clock()
            )
            self._audit("finding.note", resource=finding_resource(finding), details={"text": text})
        return finding

    @refusal_recorded("finding.risk_accept")
    def risk_accept(self, finding_id: str, *, until: date, reason: str) -> Finding:
        self._require_write("accept risks")
        with self.store.lock.hold():
            finding = self.findings_book.risk_accept(
                self.finding(finding_id).id,
                str(self.actor),
                review_datetime(until),
                reason,
                now=self.clock(),
            )
            self._audit(
                "finding.risk_accepted",
                resource=finding_resource(finding),
                details={"until": until.isoformat(), "reason": reason},
            )
        return finding

    @refusal_recorded("finding.flag")
    def flag(self, finding_id: str, *, reason: str) -> Finding:
        self._require_write("flag findings")
        with self.store.lock.hold():
            finding = self.findings_book.flag(
                self.finding(finding_id).id, str(self.actor), reason, now=self.clock()
            )
            self._audit(
                "finding.flagged", resource=finding_resource(finding), details={"reason": reason}
            )
        return finding

    @refusal_recorded("finding.close")
    def close_finding(self, finding_id: str, *, cause: str) -> Finding:
        """Close a finding with its root cause (meant for monitoring gaps; any open finding)."""
        self._require_write("close findings")
        with self.store.lock.hold():
            finding = self.findings_book.close(
                self.finding(finding_id).id, str(self.actor), cause, now=self.clock()
            )
            self._audit(
                "finding.closed",
                resource=finding_resource(finding),
                details={"cause": finding.details["cause"], "kind": finding.kind},
            )
        return finding

    @refusal_recorded("finding.reopen")
    def reopen(self, finding_id: str, *, reason: str) -> Finding:
        """Undo a flag or a close: the finding is new again, with the reason on its timeline."""
        self._require_write("reopen findings")
        with self.store.lock.hold():
            before = self.finding(finding_id)
            finding = self.findings_book.reopen(
                before.id, str(self.actor), reason, now=self.clock()
            )
            self._audit(
                "finding.reopened",
                resource=finding_resource(finding),
                details={
                    "kind": finding.kind,
                    "severity": finding.severity,
                    "from": before.status,
                    "reason": finding.timeline[-1].text,
                },
            )
        return finding

    def _each(
        self, finding_ids: Sequence[str], decision: str, decide: Callable[[str], Finding]
    ) -> list[Finding]:
        """One decision on several findings: one transaction, or nothing if any refuses."""
        self._require_write(f"{decision} findings")
        wanted = list(dict.fromkeys(i.strip() for i in finding_ids if i.strip()))
        if not wanted:
            raise UserError(f"name the findings to {decision} (F-000123 ...)")
        with self.store.lock.hold():
            findings = [self.finding(i) for i in wanted]
            refused = [r for r in (refusal(f, decision) for f in findings) if r]
            if refused:
                whole = f" (nothing done to the {len(findings)})" if len(findings) > 1 else ""
                raise UserError("; ".join(refused) + whole)
            return [decide(f.id) for f in findings]

    @refusal_recorded("finding.ack")
    def ack_many(self, finding_ids: Sequence[str]) -> list[Finding]:
        """Acknowledge several findings at once (one `finding.ack` event each)."""
        return self._each(finding_ids, "acknowledge", self.ack)

    @refusal_recorded("finding.note")
    def note_many(self, finding_ids: Sequence[str], text: str) -> list[Finding]:
        """The same note on several findings at once (one `finding.note` event each)."""
        return self._each(finding_ids, "note", lambda i: self.note(i, text))

    @refusal_recorded("finding.close")
    def close_many(self, finding_ids: Sequence[str], *, cause: str) -> list[Finding]:
        """Close several findings with one root cause (one `finding.closed` event each)."""
        return self._each(finding_ids, "close", lambda i: self.close_finding(i, cause=cause))

    def approvals_list(self, include_retired: bool = False) -> list[Approval]:
        return self.approvals.all() if include_retired else self.approvals.active()

    def baseline_lint(self, path: Path) -> list[Any]:
        from portconsole.core.adapters.baseline import lint_baseline

        return lint_baseline(path, self.settings)

    def baseline_import(self, path: Path) -> tuple[int, int]:
        """Turn a baseline file's rules into approval records; every change is audited."""
        from portconsole.core.adapters.baseline import load_baseline

        self._require_write("import baselines")
        specs = load_baseline(path, self.settings)
        with self.store.lock.hold():
            result = self.approvals.import_specs(specs, str(self.actor), now=self.clock())
            for approval in result.added:
                self._audit(
                    "approval.added",
                    resource={
                        "host": approval.host,
                        "port": approval.port,
                        "proto": approval.proto,
                        "approval_id": approval.id,
                    },
                    details={"source": approval.source, "justification": approval.justification},
                )
            for approval in result.retired:
                self._audit("approval.retired", resource={"approval_id": approval.id})
            self._audit(
                "baseline.import",
                details={
                    "file": str(path),
                    "added": len(result.added),
                    "unchanged": len(result.unchanged),
                    "retired": len(result.retired),
                },
            )
        return len(result.added), len(result.unchanged)

    def baseline_export(self) -> str:
        from portconsole.core.domain.baseline_export import export_baseline

        self._require_write("export baselines")
        return export_baseline(self.approvals.active())

    def baseline_exported(self, destination: str, approvals: int) -> None:
        """Audit an export once its file is written (a failed write is not an export)."""
        self._audit("baseline.export", details={"file": destination, "approvals": approvals})

    def prune(self) -> dict[str, int]:
        self._require_write("prune")
        counts = self.store.prune()
        self._audit("retention.prune", details=counts)
        return counts
