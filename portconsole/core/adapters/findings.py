"""Findings and their lifecycle: detected, triaged by people, resolved by later scans.

A finding is one problem on one host[:port/proto] (its key is kind + host + port + proto).
Raising the same problem again refreshes the open finding instead of adding another, and a
problem that comes back soon after it was resolved reopens the old finding ("a port that
flaps within a window is one finding"). Every step lands on the finding's timeline in UTC
with who took it.

Status:
    new ─► acknowledged ─► approved | flagged | risk_accepted | resolved | closed
    (flagged and risk_accepted may still be approved; any open status may be resolved by a
    later scan; resolved reopens within the flap window; a lapsed risk acceptance reopens;
    closed, with a root cause: the same problem again is a new finding; a person may
    reopen a flagged or closed finding, and a revoked approval reopens the one it approved)

The book lives in the `findings` table of the hot TinyDB file. It writes no audit events:
each method returns the finding it changed and the caller audits the transition.

A finding is written only when it changes: a scan that sees an open problem again and
changes nothing else leaves its document as it was (a cycle's journal transaction does not
grow with the queue). Its stored `last_seen`/`last_scan_id` name the scan that last changed
it; when a port or host was last seen is the scan state's (`portconsole state`).

Reads outside a transaction share parsed findings by shard file (findings_reads.py); a
read-modify-write touches only the shards of the findings it reads or writes, found
through a key index (findings_docs.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from tinydb import TinyDB

from portconsole.core.adapters.findings_docs import (
    IDS,
    FindingDocs,
    KeyIndex,
    ShardDocs,
    TableDocs,
    approved_under,
    resolvable_on,
)
from portconsole.core.adapters.findings_reads import TABLE, SharedReads, queue_of
from portconsole.core.adapters.findings_rules import (
    absorb,
    new_finding,
    notification_change,
    required_text,
    resolve_by_scan,
    written_form,
)
from portconsole.core.adapters.hot_storage import ShardedStorage
from portconsole.core.adapters.shards import Projection
from portconsole.core.adapters.storage import DataLock
from portconsole.core.domain.finding import (
    ACKNOWLEDGED,
    APPROVED,
    CLOSED,
    DECISION_STATUSES,
    FLAGGED,
    NEW,
    OPEN_STATUSES,
    RESOLVABLE_STATUSES,
    RESOLVED,
    RISK_ACCEPTED,
    SCAN_KINDS,
    STATUSES,
    SYSTEM_ACTOR,
    Finding,
    FindingCandidate,
    RaiseOutcome,
    TimelineEntry,
    refusal,
)
from portconsole.core.domain.model import port_key, severity_rank
from portconsole.core.errors import NotFoundError, UserError
from portconsole.core.timeutil import iso, utcnow


class FindingBook:
    """The findings table. Every read-modify-write holds the data lock."""

    def __init__(self, db: TinyDB, lock: DataLock) -> None:
        self.db = db
        self.lock = lock
        # cache_size=0: another process may write the file between our reads.
        self.table = db.table(TABLE, cache_size=0)
        self._reads = SharedReads(db)
        self._index = KeyIndex()

    def _docs(self) -> FindingDocs:
        """The documents for a read-modify-write (the data lock held): a transaction's
        shards, or (a plain TinyDB file) the table."""
        storage = self.db.storage
        if isinstance(storage, ShardedStorage) and storage.memory is None:
            data = storage.read()
            if isinstance(data, Projection) and not data.shared:
                return ShardDocs(data, storage, self._index, self._reads.parsed)
        return TableDocs(self.table)

    # -- reading -------------------------------------------------------------------------

    def shared_all(self) -> list[Finding]:
        """Every finding, oldest id first: objects shared with later reads, never to be
        changed (`Finding.sighted` and `copy` make changed ones)."""
        shared = self._reads.all()
        return self.all() if shared is None else shared

    def shared_open(self) -> list[Finding]:
        """The queue (see `open`), of objects shared with later reads: never change them."""
        shared = self._reads.open()
        return self.open() if shared is None else shared

    def all(self) -> list[Finding]:
        """Every finding, oldest id first (copies: the caller may change them)."""
        shared = self._reads.all()
        if shared is not None:
            return [f.copy() for f in shared]
        docs = sorted(self.table.all(), key=lambda d: d.doc_id)
        return [Finding.from_json(d) for d in docs]

    def open(self) -> list[Finding]:
        """The queue: new, acknowledged and flagged findings, most severe first, then oldest."""
        shared = self._reads.open()
        if shared is not None:
            return [f.copy() for f in shared]
        return queue_of(self.all())

    def get(self, finding_id: str) -> Finding:
        """A finding by id (`F-000123`, `f-123` or `123`); NotFoundError if there is none."""
        return self._get(finding_id, None)

    def _get(self, finding_id: str, docs: FindingDocs | None) -> Finding:
        number = IDS.number(finding_id)
        finding = None
        if number is not None:
            shared, finding = (False, None) if docs is not None else self._reads.find(number)
            if shared:
                finding = finding.copy() if finding is not None else None
            else:
                finding = (docs or self._docs()).find(number)
        if finding is None:
            raise NotFoundError(
                f"no finding {finding_id!r}; list them with `portconsole findings --all`"
            )
        return finding

    def approved_under(self, approval_id: str) -> list[Finding]:
        """The findings approved under an approval, oldest first (copies; the lock held)."""
        return approved_under(self._docs(), approval_id)

    def resolvable_on(
        self, kind: str, host: str, port: int | None, proto: str | None
    ) -> list[Finding]:
        """Findings of `kind` there a scan or decision may resolve (copies; the lock held)."""
        return resolvable_on(self._docs(), kind, host, port, proto)

    def open_on(self, places: Collection[str]) -> list[Finding]:
        """The open findings on these ports (`port_key`s), in queue order, as they stand
        (copies); inside a transaction, only their shards are read."""

        def on(port: int | None, host: str, proto: str | None) -> bool:
            return port is not None and port_key(host, port, proto or "") in places

        if not self.lock.in_transaction:
            return [f.copy() for f in self.shared_open() if on(f.port, f.host, f.proto)]
        docs = self._docs()
        found = [
            docs.find(number)
            for keys in docs.keys()
            for number, _, _, host, port, proto, status in keys.resolvable
            if status in OPEN_STATUSES and on(port, host, proto)
        ]
        return queue_of(f for f in found if f is not None)

    # -- detection -----------------------------------------------------------------------

    def raise_candidates(
        self,
        candidates: Iterable[FindingCandidate],
        now: datetime | None = None,
        flap_window: float | timedelta = 3600,
    ) -> list[Finding]:
        """Record one scan's candidates; return only the genuinely new findings."""
        return self.ingest_candidates(candidates, now, flap_window).new

    def ingest_candidates(
        self,
        candidates: Iterable[FindingCandidate],
        now: datetime | None = None,
        flap_window: float | timedelta = 3600,
        actor: str = SYSTEM_ACTOR,
    ) -> RaiseOutcome:
        """Record one scan's candidates and say what happened to each (see RaiseOutcome).

        A candidate matching an open finding refreshes it; one matching a finding resolved
        within `flap_window` (seconds) reopens it with its earlier triage status and counts
        a flap; one matching a risk acceptance still in force refreshes it; anything else
        (including a problem that comes back after it was approved) is a new finding.
        """
        moment = now or utcnow()
        window = (
            flap_window if isinstance(flap_window, timedelta) else timedelta(seconds=flap_window)
        )
        outcome = RaiseOutcome()
        with self.lock.hold():
            docs = self._docs()
            latest: dict[str, int] = {}  # the newest finding's number per key
            next_number = 1
            for keys in docs.keys():
                latest.update(keys.latest)
                next_number = max(next_number, keys.top + 1)
            seen: dict[str, Finding] = {}  # every finding a candidate matched or created
            changed: dict[str, Finding] = {}  # those whose document must be written
            created: list[Finding] = []
            for candidate in candidates:
                key = candidate.key
                if key in seen:
                    continue  # the same problem twice in one scan is one finding
                number = latest.get(key)
                current = docs.find(number) if number is not None else None
                if current is not None:
                    before = written_form(current)
                    if absorb(current, candidate, moment, window, actor, outcome):
                        seen[key] = current
                        if written_form(current) != before:
                            changed[key] = current
                        continue
                finding = new_finding(candidate, IDS.make(next_number), moment, actor)
                next_number += 1
                created.append(finding)
                seen[key] = finding
                changed[key] = finding
                outcome.new.append(finding)
            created_ids = {f.id for f in created}
            docs.write([f for f in changed.values() if f.id not in created_ids], created)
        return outcome

    def resolve_missing(
        self,
        still_true_keys: Collection[str],
        covered: Callable[[str, int | None, str | None], bool],
        now: datetime | None = None,
        scan_id: str = "",
        kinds: Collection[str] = SCAN_KINDS,
        actor: str = SYSTEM_ACTOR,
    ) -> list[Finding]:
        """Resolve findings whose condition this scan no longer saw, where the scan looked.

        `still_true_keys` are the candidate keys this scan raised; `covered(host, port,
        proto)` says whether the scan covered that place (port and proto are None for
        host-level findings). Not scanned is not closed: uncovered findings stay as they are.
        Only `kinds` are touched (monitoring gaps and other manual kinds are not).
        """
        moment = now or utcnow()
        resolved: list[Finding] = []
        with self.lock.hold():
            docs = self._docs()
            for keys in docs.keys():
                for number, key, kind, host, port, proto, _ in keys.resolvable:
                    if kind in kinds and key not in still_true_keys and covered(host, port, proto):
                        finding = docs.find(number)
                        if finding is not None and finding.status in RESOLVABLE_STATUSES:
                            resolved.append(finding)
            for finding in resolved:
                resolve_by_scan(finding, moment, actor, scan_id)
            docs.write(resolved)
        return resolved

    def escalate(
        self,
        finding_id: str,
        severity: str,
        details: dict[str, Any],
        text: str,
        now: datetime | None = None,
    ) -> Finding:
        """Raise an open finding's severity (never lower it) because a later detection shows
        it worse (detect.escalation); `details` are merged, `text` lands on the timeline."""
        moment = now or utcnow()

        def change(f: Finding) -> None:
            if severity_rank(severity) > severity_rank(f.severity):
                f.severity = severity
            f.details = {**f.details, **details}
            f.timeline.append(TimelineEntry("escalated", moment, SYSTEM_ACTOR, text))

        return self._transition(finding_id, OPEN_STATUSES, "escalate", change)

    # -- people --------------------------------------------------------------------------

    def _transition(
        self,
        finding_id: str,
        allowed: Collection[str] | None,
        action: str,
        change: Callable[[Finding], None],
    ) -> Finding:
        """Apply `change` if the finding's status allows `action` (by DECISION_STATUSES
        when `allowed` is None)."""
        with self.lock.hold():
            docs = self._docs()
            finding = self._get(finding_id, docs)
            if allowed is None:
                refused = refusal(finding, action)
                if refused:
                    raise UserError(refused)
            elif finding.status not in allowed:
                raise UserError(
                    f"cannot {action} {finding.id}: it is {finding.status.replace('_', ' ')} "
                    f"(allowed when {', '.join(s.replace('_', ' ') for s in sorted(allowed))})"
                )
            change(finding)
            docs.write([finding])
            return finding

    def ack(self, finding_id: str, actor: str, now: datetime | None = None) -> Finding:
        """Someone has seen it and is on it (the time-to-respond clock stops here)."""
        moment = now or utcnow()

        def change(f: Finding) -> None:
            f.status = ACKNOWLEDGED
            f.timeline.append(TimelineEntry("acknowledged", moment, actor))

        return self._transition(finding_id, None, "acknowledge", change)

    def note(self, finding_id: str, actor: str, text: str, now: datetime | None = None) -> Finding:
        """Add a note to the timeline; allowed in every status, never changes it."""
        cleaned = text.strip()
        if not cleaned:
            raise UserError("a note needs text: say what you found or did")
        moment = now or utcnow()

        def change(f: Finding) -> None:
            f.timeline.append(TimelineEntry("noted", moment, actor, cleaned))

        return self._transition(finding_id, None, "note", change)

    def approve(
        self,
        finding_id: str,
        actor: str,
        approval_id: str,
        justification: str,
        ticket: str = "",
        now: datetime | None = None,
    ) -> Finding:
        """Close it as approved, pointing at the approval record the caller created."""
        cleaned = required_text(
            justification, "justification", "say what business need this port serves"
        )
        moment = now or utcnow()

        def change(f: Finding) -> None:
            f.status = APPROVED
            f.justification = cleaned
            f.approval_id = approval_id
            f.ticket = ticket.strip() or f.ticket
            text = f"approved: {cleaned}" + (f" (approval {approval_id})" if approval_id else "")
            f.timeline.append(TimelineEntry("decided", moment, actor, text))

        return self._transition(finding_id, DECISION_STATUSES["approve"], "approve", change)

    def close(
        self, finding_id: str, actor: str, cause: str, now: datetime | None = None
    ) -> Finding:
        """Close it with its root cause (a monitoring gap explained, a false alarm); final."""
        cleaned = required_text(cause, "cause", "say what caused it (e.g. 'scanner host rebooted')")
        moment = now or utcnow()

        def change(f: Finding) -> None:
            f.status = CLOSED
            f.details = {**f.details, "cause": cleaned}
            f.timeline.append(TimelineEntry("closed", moment, actor, cleaned))

        return self._transition(finding_id, None, "close", change)

    def reopen(
        self,
        finding_id: str,
        actor: str,
        reason: str,
        now: datetime | None = None,
        *,
        revoked: bool = False,
    ) -> Finding:
        """Back to new, wanting attention again: a flag or a close undone (`revoked`: an
        approval revoked, the finding it approved). The reason lands on the timeline; a
        finding whose problem was raised again since (a newer finding) is not reopened."""
        cleaned = required_text(reason, "reason", "say why it needs attention again")
        moment = now or utcnow()

        def change(f: Finding) -> None:
            f.status = NEW
            f.reason = ""
            if revoked:
                f.approval_id = ""
                f.justification = ""
            f.details = {k: v for k, v in f.details.items() if k != "cause"}
            f.timeline.append(TimelineEntry("reopened", moment, actor, cleaned))

        with self.lock.hold():
            docs = self._docs()
            current = self._get(finding_id, docs)
            latest = max(
                (keys.latest.get(current.key, 0) for keys in docs.keys()),
                default=0,
            )
            newer = docs.find(latest) if latest > (IDS.number(current.id) or 0) else None
            if newer is not None:
                raise UserError(
                    f"cannot reopen {current.id}: the same problem was raised again as "
                    f"{newer.id} ({newer.status}); work on that one"
                )
            return self._transition(current.id, {APPROVED} if revoked else None, "reopen", change)

    def resolve_by_decision(
        self, finding_id: str, actor: str, text: str, now: datetime | None = None
    ) -> Finding:
        """Resolve it because a person removed its cause (a review renewed the approval)."""
        moment = now or utcnow()

        def change(f: Finding) -> None:
            f.resolved_from = f.status
            f.status = RESOLVED
            f.resolved_at = moment
            f.timeline.append(TimelineEntry("remediated", moment, actor, text))

        return self._transition(finding_id, RESOLVABLE_STATUSES, "resolve", change)

    def flag(
        self, finding_id: str, actor: str, reason: str, now: datetime | None = None
    ) -> Finding:
        """Mark it unauthorized: it stays in the queue until a scan shows it remediated."""
        cleaned = required_text(reason, "reason", "say why this is unauthorized")
        moment = now or utcnow()

        def change(f: Finding) -> None:
            f.status = FLAGGED
            f.reason = cleaned
            f.timeline.append(TimelineEntry("decided", moment, actor, f"flagged: {cleaned}"))

        return self._transition(finding_id, None, "flag", change)

    def risk_accept(
        self,
        finding_id: str,
        actor: str,
        until: datetime,
        reason: str,
        now: datetime | None = None,
    ) -> Finding:
        """Accept the risk until a date; the finding reopens if still true after it."""
        cleaned = required_text(reason, "reason", "say why the risk is acceptable until then")
        moment = now or utcnow()
        if until <= moment:
            raise UserError(f"risk acceptance must end in the future, not {iso(until)}")

        def change(f: Finding) -> None:
            f.status = RISK_ACCEPTED
            f.reason = cleaned
            f.risk_until = until
            f.timeline.append(
                TimelineEntry(
                    "decided", moment, actor, f"risk accepted until {iso(until)}: {cleaned}"
                )
            )

        return self._transition(finding_id, None, "accept the risk of", change)

    def record_notification(
        self, finding_id: str, result: dict[str, Any], now: datetime | None = None
    ) -> Finding:
        """Append a delivery attempt (from the notifier); a success adds a `notified` step.

        `result` is kept as given; it counts as delivered when `ok` is true or `outcome`
        (or `status`) is success/delivered/sent. `target` (e.g. a redacted URL) names where.
        """
        change = notification_change(result, now or utcnow())
        return self._transition(finding_id, set(STATUSES), "record a notification for", change)

    def record_notifications(
        self, finding_ids: Iterable[str], result: dict[str, Any], now: datetime | None = None
    ) -> list[Finding]:
        """Append one delivery attempt to every finding its message reports, in one read and
        one write (a digest's N findings: one file write, not N). Ids with no finding (a test
        message, a finding archived since) are skipped; returns the findings recorded."""
        change = notification_change(result, now or utcnow())
        with self.lock.hold():
            docs = self._docs()
            changed = []
            for finding_id in dict.fromkeys(finding_ids):
                try:
                    finding = self._get(finding_id, docs)
                except NotFoundError:
                    continue
                change(finding)
                changed.append(finding)
            docs.write(changed)
            return changed
