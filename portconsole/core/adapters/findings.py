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

Reads outside a transaction keep the parsed findings by shard file (the findings table is
sharded by id range, shards.py; a file never changes while it exists): after a cycle that
changed a few findings, a read parses only their shard. `shared_all`/`shared_open` hand
out those objects themselves, for readers that do not change them; `all`/`open`/`get`
answer copies anyone may change.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Collection, Iterable, MutableMapping
from datetime import datetime, timedelta
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document, Table

from portconsole.core.adapters.shards import Projection
from portconsole.core.adapters.storage import DataLock
from portconsole.core.domain.approval import is_placeholder
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
from portconsole.core.domain.model import severity_rank
from portconsole.core.domain.record_ids import RecordIds
from portconsole.core.errors import NotFoundError, UserError
from portconsole.core.timeutil import iso, utcnow

TABLE = "findings"
IDS = RecordIds("F-")
# What a refresh moves on every sighting; a change to these alone is not written.
REFRESH_FIELDS = ("last_seen", "last_scan_id")


def _replace_docs(table: Table, findings: Iterable[Finding]) -> None:
    """Rewrite several findings in one file write (TinyDB rewrites the file per call)."""
    by_id = {f.id: f.to_json() for f in findings}
    if not by_id:
        return

    def rewrite(doc: MutableMapping[str, Any]) -> None:
        fresh = by_id[doc["id"]]
        doc.clear()
        doc.update(fresh)

    updater: Callable[[MutableMapping[str, Any]], None] = rewrite
    table.update(updater, doc_ids=[IDS.number(i) or 0 for i in by_id])


def _queue_key(finding: Finding) -> tuple[int, datetime, str]:
    """The queue's order: most severe first, then oldest."""
    return (-severity_rank(finding.severity), finding.first_seen, finding.id)


def _queue_of(findings: Iterable[Finding]) -> list[Finding]:
    """The open findings, most severe first, then oldest."""
    return sorted((f for f in findings if f.is_open), key=_queue_key)


class _Parsed:
    """One shard file's findings, parsed once: all of them by id, and its open ones in
    queue order (the queue merges these: no sort of 100,000 findings, which would hold
    the GIL the console's UI thread needs for a tenth of a second)."""

    __slots__ = ("doc_ids", "findings", "queue")

    def __init__(self, docs: dict[str, Any]) -> None:
        self.doc_ids = tuple(sorted(int(k) for k in docs))
        self.findings = tuple(Finding.from_json(docs[str(k)]) for k in self.doc_ids)
        self.queue = _queue_of(self.findings)

    def get(self, doc_id: int) -> Finding | None:
        at = bisect.bisect_left(self.doc_ids, doc_id)
        found = at < len(self.doc_ids) and self.doc_ids[at] == doc_id
        return self.findings[at] if found else None


def _written_form(finding: Finding) -> dict[str, Any]:
    """A finding's document without the fields a mere refresh moves (see REFRESH_FIELDS)."""
    data = finding.to_json()
    for name in REFRESH_FIELDS:
        data.pop(name, None)
    return data


def _notification_change(result: dict[str, Any], moment: datetime) -> Callable[[Finding], None]:
    """Append a delivery attempt to a finding; a success adds a `notified` step (see
    FindingBook.record_notification)."""
    entry = dict(result)
    entry.setdefault("at", iso(moment))
    delivered = bool(entry.get("ok")) or str(
        entry.get("outcome") or entry.get("status") or ""
    ).lower() in ("success", "delivered", "sent")
    target = str(entry.get("target") or "")

    def change(f: Finding) -> None:
        f.notifications.append(dict(entry))
        if delivered:
            f.timeline.append(
                TimelineEntry("notified", moment, SYSTEM_ACTOR, f"to {target}" if target else "")
            )

    return change


def _required(text: str, what: str, example: str) -> str:
    cleaned = text.strip()
    if not cleaned or is_placeholder(cleaned):
        raise UserError(f"a {what} is required: {example}")
    return cleaned


class FindingBook:
    """The findings table. Every read-modify-write holds the data lock."""

    def __init__(self, db: TinyDB, lock: DataLock) -> None:
        self.db = db
        self.lock = lock
        # cache_size=0: another process may write the file between our reads.
        self.table = db.table(TABLE, cache_size=0)
        # Parsed findings by shard file name, and the last queue with the files it came from.
        self._parsed: dict[str, _Parsed] = {}
        self._queue: tuple[tuple[str, ...], list[Finding]] = ((), [])

    # -- reading -------------------------------------------------------------------------

    def _shared(self) -> tuple[tuple[str, ...], dict[str, _Parsed]] | None:
        """The parsed findings by shard file, in id order, from the parsed-shard cache
        (only files not met before are parsed); None inside a transaction (or a store
        rebuilt in memory)."""
        data = self.db.storage.read()
        if not isinstance(data, Projection) or not data.shared:
            return None
        known = self._parsed
        parsed: dict[str, _Parsed] = {}
        for name, docs in data.table_shards(TABLE, known):
            found = known.get(name) if docs is None else None
            parsed[name] = found if found is not None else _Parsed(docs or {})
        self._parsed = parsed
        return tuple(parsed), parsed

    def shared_all(self) -> list[Finding]:
        """Every finding, oldest id first: objects shared with later reads, never to be
        changed (`Finding.sighted` and `copy` make changed ones)."""
        shared = self._shared()
        if shared is None:
            return self.all()
        return [f for shard in shared[1].values() for f in shard.findings]

    def shared_open(self) -> list[Finding]:
        """The queue (see `open`), of objects shared with later reads: never change them.
        Merged from the shards' own queues, again only when a shard file changed."""
        shared = self._shared()
        if shared is None:
            return self.open()
        names, parsed = shared
        known, queue = self._queue
        if names != known:
            queue = list(heapq.merge(*(p.queue for p in parsed.values()), key=_queue_key))
            self._queue = (names, queue)
        return list(queue)

    def all(self) -> list[Finding]:
        """Every finding, oldest id first (copies: the caller may change them)."""
        if self._shared() is not None:
            return [f.copy() for f in self.shared_all()]
        docs = sorted(self.table.all(), key=lambda d: d.doc_id)
        return [Finding.from_json(d) for d in docs]

    def open(self) -> list[Finding]:
        """The queue: new, acknowledged and flagged findings, most severe first, then oldest."""
        if self._shared() is not None:
            return [f.copy() for f in self.shared_open()]
        return _queue_of(self.all())

    def get(self, finding_id: str) -> Finding:
        """A finding by id (`F-000123`, `f-123` or `123`); NotFoundError if there is none."""
        number = IDS.number(finding_id)
        shared = self._shared() if number is not None else None
        if shared is not None and number is not None:
            # The parsed shards, not the table: a table read would parse (and keep) the
            # documents of every shard again.
            for shard in shared[1].values():
                finding = shard.get(number)
                if finding is not None:
                    return finding.copy()
        doc = self.table.get(doc_id=number) if number is not None and shared is None else None
        if doc is None or isinstance(doc, list):
            raise NotFoundError(
                f"no finding {finding_id!r}; list them with `portconsole findings --all`"
            )
        return Finding.from_json(doc)

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
            docs = self.table.all()
            next_number = max((d.doc_id for d in docs), default=0) + 1
            latest: dict[str, Finding] = {}
            for doc in sorted(docs, key=lambda d: d.doc_id):
                finding = Finding.from_json(doc)
                latest[finding.key] = finding  # the newest finding per key decides
            seen: dict[str, Finding] = {}  # every finding a candidate matched or created
            changed: dict[str, Finding] = {}  # those whose document must be written
            created: list[Finding] = []
            for candidate in candidates:
                key = candidate.key
                if key in seen:
                    continue  # the same problem twice in one scan is one finding
                current = latest.get(key)
                if current is not None:
                    before = _written_form(current)
                    if self._absorb(current, candidate, moment, window, actor, outcome):
                        seen[key] = current
                        if _written_form(current) != before:
                            changed[key] = current
                        continue
                finding = Finding(
                    id=IDS.make(next_number),
                    kind=candidate.kind,
                    severity=candidate.severity,
                    host=candidate.host,
                    port=candidate.port,
                    proto=candidate.proto,
                    service=candidate.service,
                    status=NEW,
                    first_seen=moment,
                    last_seen=moment,
                    scan_id=candidate.scan_id,
                    last_scan_id=candidate.scan_id,
                    details=dict(candidate.details),
                    timeline=[
                        TimelineEntry("detected", moment, actor, f"scan {candidate.scan_id}")
                    ],
                )
                next_number += 1
                created.append(finding)
                seen[key] = finding
                changed[key] = finding
                outcome.new.append(finding)
            created_ids = {f.id for f in created}
            _replace_docs(self.table, [f for f in changed.values() if f.id not in created_ids])
            if created:
                self.table.insert_multiple(
                    [Document(f.to_json(), doc_id=IDS.number(f.id) or 0) for f in created]
                )
        return outcome

    @staticmethod
    def _absorb(
        finding: Finding,
        candidate: FindingCandidate,
        moment: datetime,
        window: timedelta,
        actor: str,
        outcome: RaiseOutcome,
    ) -> bool:
        """Fold a candidate into an existing finding if it is the same episode; True if so."""
        if finding.status in (APPROVED, CLOSED):
            return False
        if finding.status == RESOLVED:
            resolved_at = finding.resolved_at or finding.last_seen
            if moment - resolved_at > window:
                return False
            restored = finding.resolved_from if finding.resolved_from in OPEN_STATUSES else NEW
            if (
                finding.resolved_from == RISK_ACCEPTED
                and finding.risk_until
                and finding.risk_until > moment
            ):
                restored = RISK_ACCEPTED
            finding.status = restored
            finding.flap_count += 1
            finding.resolved_at = None
            finding.resolved_from = ""
            finding.timeline.append(
                TimelineEntry(
                    "reopened",
                    moment,
                    actor,
                    f"seen again by scan {candidate.scan_id} within the flap window "
                    f"(flap {finding.flap_count})",
                )
            )
            outcome.reopened.append(finding)
        elif finding.status == RISK_ACCEPTED and (
            finding.risk_until is None or finding.risk_until <= moment
        ):
            finding.status = NEW
            finding.timeline.append(
                TimelineEntry(
                    "reopened",
                    moment,
                    actor,
                    "risk acceptance lapsed"
                    + (f" on {iso(finding.risk_until)}" if finding.risk_until else ""),
                )
            )
            outcome.lapsed.append(finding)
        else:
            outcome.refreshed.append(finding)
            if candidate.details.get("backfilled"):
                # An older report (a backfill, see ScanCycle._backfilled) seeing an open
                # problem again tells nothing newer than the book: the finding stays as it is.
                return True
        finding.last_seen = moment
        finding.last_scan_id = candidate.scan_id
        finding.service = candidate.service or finding.service
        finding.details = {**finding.details, **candidate.details}
        return True

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
            for finding in self.all():
                if finding.status not in RESOLVABLE_STATUSES or finding.kind not in kinds:
                    continue
                if finding.key in still_true_keys:
                    continue
                if not covered(finding.host, finding.port, finding.proto):
                    continue
                where = f"scan {scan_id}" if scan_id else "a later scan"
                finding.resolved_from = finding.status
                finding.status = RESOLVED
                finding.resolved_at = moment
                finding.timeline.append(
                    TimelineEntry("remediated", moment, actor, f"no longer seen by {where}")
                )
                finding.timeline.append(
                    TimelineEntry("verified", moment, actor, f"condition confirmed gone by {where}")
                )
                resolved.append(finding)
            _replace_docs(self.table, resolved)
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
            finding = self.get(finding_id)
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
            _replace_docs(self.table, [finding])
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
        cleaned = _required(
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
        cleaned = _required(cause, "cause", "say what caused it (e.g. 'scanner host rebooted')")
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
        cleaned = _required(reason, "reason", "say why it needs attention again")
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
            current = self.get(finding_id)
            newer = [f for f in self.all() if f.key == current.key and f.id > current.id]
            if newer:
                raise UserError(
                    f"cannot reopen {current.id}: the same problem was raised again as "
                    f"{newer[-1].id} ({newer[-1].status}); work on that one"
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
        cleaned = _required(reason, "reason", "say why this is unauthorized")
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
        cleaned = _required(reason, "reason", "say why the risk is acceptable until then")
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
        change = _notification_change(result, now or utcnow())
        return self._transition(finding_id, set(STATUSES), "record a notification for", change)

    def record_notifications(
        self, finding_ids: Iterable[str], result: dict[str, Any], now: datetime | None = None
    ) -> list[Finding]:
        """Append one delivery attempt to every finding its message reports, in one read and
        one write (a digest's N findings: one file write, not N). Ids with no finding (a test
        message, a finding archived since) are skipped; returns the findings recorded."""
        change = _notification_change(result, now or utcnow())
        with self.lock.hold():
            changed = []
            for finding_id in dict.fromkeys(finding_ids):
                try:
                    finding = self.get(finding_id)
                except NotFoundError:
                    continue
                change(finding)
                changed.append(finding)
            _replace_docs(self.table, changed)
            return changed
