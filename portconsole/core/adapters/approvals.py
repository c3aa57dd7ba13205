"""Approval records: which host:port/proto may be open, why, who asked, who approved.

Approvals are records, not flags (PCI DSS 1.2.5 and 1.2.7): each names the expected service,
the business justification, the owner, the requester and the approver, a ticket, when it was
approved and when it must be reviewed. Insecure services need a mitigation note. Records are
retired, never deleted, so the history of what was allowed stays answerable.

The registry lives in the `approvals` table of the hot TinyDB file shared with the store.
It writes no audit events: every method returns what changed and the caller audits it.
Requests (the first of the four eyes) are kept beside it, in adapters/approval_requests.py;
reviews are kept on the approval they review.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from datetime import datetime
from typing import Any

from msgspec.structs import replace
from tinydb import TinyDB
from tinydb.table import Document, Table

from portconsole.core.adapters.approval_requests import RequestBook
from portconsole.core.adapters.storage import DataLock
from portconsole.core.domain.approval import (
    PROTOCOLS,
    RETIRED,
    Approval,
    ApprovalSpec,
    ImportResult,
    Review,
    approval_in_force,
    is_insecure,
    is_placeholder,
    normalise_host,
    person_of,
)
from portconsole.core.domain.approval_index import ApprovalIndex
from portconsole.core.domain.approval_terms import REVIEW_OUTCOMES
from portconsole.core.domain.record_ids import RecordIds
from portconsole.core.errors import NotFoundError, PermissionRefused, UserError
from portconsole.core.settings import ApprovalSettings, Settings
from portconsole.core.timeutil import add_months, iso, utcnow

TABLE = "approvals"
IDS = RecordIds("A-")


def _replace_docs(table: Table, new_docs: dict[int, dict[str, Any]]) -> None:
    """Rewrite several documents in one file write (TinyDB writes the whole file per call)."""
    if not new_docs:
        return
    by_id = {doc["id"]: doc for doc in new_docs.values()}

    def rewrite(doc: MutableMapping[str, Any]) -> None:
        fresh = by_id[doc["id"]]
        doc.clear()
        doc.update(fresh)

    updater: Callable[[MutableMapping[str, Any]], None] = rewrite
    table.update(updater, doc_ids=list(new_docs))


class ApprovalRegistry:
    """Approval records in the hot TinyDB file. Every read-modify-write holds the data lock.

    `settings` supplies the policy (insecure services, separation of duties, review months)
    and the scan scope; without it the defaults apply and any address is accepted.
    """

    def __init__(self, db: TinyDB, lock: DataLock, settings: Settings | None = None) -> None:
        self.db = db
        self.lock = lock
        self.settings = settings
        # cache_size=0: another process may write the file between our reads.
        self.table = db.table(TABLE, cache_size=0)
        self.requests = RequestBook(db, lock)

    @property
    def policy(self) -> ApprovalSettings:
        return self.settings.approval if self.settings else ApprovalSettings()

    # -- reading -------------------------------------------------------------------------

    def all(self) -> list[Approval]:
        """Every record, active and retired, oldest first."""
        docs = sorted(self.table.all(), key=lambda d: d.doc_id)
        return [Approval.from_json(dict(d)) for d in docs]

    def active(self) -> list[Approval]:
        return [a for a in self.all() if a.active]

    def index(self) -> ApprovalIndex:
        """Every record (active and retired), read once and indexed by host:port/proto: build
        one per cycle or console snapshot and ask it about each port."""
        return ApprovalIndex(self.all())

    def get(self, approval_id: str) -> Approval:
        number = IDS.number(approval_id)
        doc = self.table.get(doc_id=number) if number is not None else None
        if doc is None or isinstance(doc, list):
            raise NotFoundError(
                f"no approval {approval_id!r}; list them with `portconsole approvals`"
            )
        return Approval.from_json(dict(doc))

    def match(
        self, host: str, port: int, proto: str, at: datetime | None = None
    ) -> Approval | None:
        """The approval in force for host:port/proto at `at` (default: now), expired or not.

        Check `approval.is_expired(at)` to tell approved from due-for-review.
        """
        moment = at or utcnow()
        return approval_in_force(self.all(), host, port, proto, moment)

    def expired(self, at: datetime | None = None) -> list[Approval]:
        """Active approvals past their review date."""
        moment = at or utcnow()
        return [a for a in self.active() if a.is_expired(moment)]

    # -- validation ----------------------------------------------------------------------

    def validate(self, spec: ApprovalSpec) -> ApprovalSpec:
        """Check a spec against policy; return it with normalised host/proto/text.

        Raises UserError (PermissionRefused for separation of duties) with what to fix.
        """
        policy = self.policy
        host = normalise_host(spec.host)
        if self.settings is not None and not self.settings.scope_obj().contains_address(host):
            raise UserError(
                f"{host} is outside the configured scope ({', '.join(self.settings.scope)}); "
                "approvals are only recorded for hosts PortConsole may scan"
            )
        if not 1 <= spec.port <= 65535:
            raise UserError(f"port {spec.port} must lie within 1-65535")
        proto = spec.proto.strip().lower()
        if proto not in PROTOCOLS:
            raise UserError(f"protocol {spec.proto!r} must be one of {', '.join(PROTOCOLS)}")
        self.check_terms(spec.service, spec.justification, spec.owner, spec.mitigation)
        if not spec.approver.strip():
            raise UserError("an approver is required: name who approved this port")
        if policy.separation_of_duties:
            if not spec.requester.strip():
                raise PermissionRefused(
                    "separation of duties is on: name the requester (who asked for this port) "
                    "so the approval can be checked against the approver"
                )
            if person_of(spec.requester) == person_of(spec.approver):
                raise PermissionRefused(
                    f"separation of duties: {person_of(spec.approver)} requested this approval "
                    "and cannot also approve it; ask another approver "
                    "(or set approval.separation_of_duties = false)"
                )
        self.check_review_by(spec.review_by, spec.approved_at, "approval")
        return replace(
            spec,
            host=host,
            proto=proto,
            service=spec.service.strip(),
            justification=spec.justification.strip(),
            owner=spec.owner.strip(),
            requester=spec.requester.strip(),
            approver=spec.approver.strip(),
            ticket=spec.ticket.strip(),
            mitigation=spec.mitigation.strip(),
            product_pattern=spec.product_pattern.strip(),
        )

    def check_terms(self, service: str, justification: str, owner: str, mitigation: str) -> None:
        """What an approval (or a request for one) must say: UserError naming what is missing."""
        text = justification.strip()
        if not text or is_placeholder(text):
            raise UserError("a justification is required: say what business need this port serves")
        if not owner.strip():
            raise UserError("an owner is required: name the team or person responsible")
        name = service.strip()
        if is_insecure(name, self.policy.insecure_services) and not mitigation.strip():
            raise UserError(
                f"{name} is an insecure service: give a mitigation (e.g. --mitigation "
                "'reachable only from the jump host VLAN; replacement in CHG-123')"
            )

    def check_review_by(self, review_by: datetime, start: datetime, what: str) -> None:
        """A review date lies after `start` and within approval.review_months of it."""
        months = self.policy.review_months
        if review_by <= start:
            raise UserError(f"review date {iso(review_by)} must be after the {what} ({iso(start)})")
        latest = add_months(start, months)
        if review_by > latest:
            raise UserError(
                f"review date {iso(review_by)} is more than {months} months after the {what}; "
                f"set it on or before {iso(latest)} (approval.review_months)"
            )

    # -- writing -------------------------------------------------------------------------

    def add(
        self,
        *,
        host: str,
        port: int,
        proto: str,
        service: str,
        justification: str,
        owner: str,
        requester: str,
        approver: str,
        actor: str,
        ticket: str = "",
        approved_at: datetime | None = None,
        review_by: datetime | None = None,
        mitigation: str = "",
        product_pattern: str = "",
        source: str = "console",
        now: datetime | None = None,
        request_id: str = "",
        requested_by: str = "",
        requested_at: datetime | None = None,
        on_behalf_of: str = "",
        four_eyes: bool = False,
        four_eyes_basis: str = "",
        service_basis: str = "",
    ) -> Approval:
        """Record a new approval, retiring any active one for the same host:port/proto.

        `approver` is the person approving (in the console, usually the actor's person);
        `actor` is who recorded it. The returned record's `supersedes` names the ids it
        retired, so the caller can audit those too. `service_basis`: see Approval.
        """
        moment = now or utcnow()
        approved = approved_at or moment
        spec = ApprovalSpec(
            host=host,
            port=port,
            proto=proto,
            service=service,
            justification=justification,
            owner=owner,
            requester=requester,
            approver=approver,
            approved_at=approved,
            review_by=review_by or add_months(approved, self.policy.review_months),
            product_pattern=product_pattern,
            ticket=ticket,
            mitigation=mitigation,
            source=source,
            request_id=request_id,
            requested_by=requested_by,
            requested_at=requested_at,
            on_behalf_of=on_behalf_of.strip(),
            four_eyes=four_eyes,
            four_eyes_basis=four_eyes_basis,
            service_basis=service_basis,
        )
        result = self._apply([self.validate(spec)], actor, moment, prune_source=None)
        return result.added[0]

    def retire(
        self, approval_id: str, actor: str, reason: str, now: datetime | None = None
    ) -> Approval:
        """Mark an approval retired (never deleted); a reason is required."""
        if not reason.strip() or is_placeholder(reason):
            raise UserError("a reason is required to retire an approval")
        with self.lock.hold():
            current = self.get(approval_id)
            if not current.active:
                raise UserError(
                    f"approval {current.id} was already retired at "
                    f"{iso(current.retired_at) if current.retired_at else '?'}"
                )
            retired = replace(
                current,
                status=RETIRED,
                retired_at=now or utcnow(),
                retired_by=actor,
                retire_reason=reason.strip(),
            )
            number = IDS.number(current.id)
            assert number is not None
            _replace_docs(self.table, {number: retired.to_json()})
            return retired

    def adopt_service(self, approval_id: str, service: str) -> Approval:
        """An approval awaiting -sV takes the service -sV named (its product pattern stays):
        the guess it was given is replaced, and it no longer awaits anything."""
        with self.lock.hold():
            current = self.get(approval_id)
            if not current.awaits_identification:
                raise UserError(f"approval {current.id} expects a stated service; it adopts none")
            adopted = replace(current, service=service.strip(), service_basis="")
            number = IDS.number(current.id)
            assert number is not None
            _replace_docs(self.table, {number: adopted.to_json()})
            return adopted

    def review(
        self,
        approval_id: str,
        *,
        reviewer: str,
        reviewer_person: str,
        outcome: str,
        note: str,
        next_review_by: datetime | None,
        now: datetime | None = None,
    ) -> Approval:
        """Record a review (PCI DSS 1.2.7) on an active approval.

        keep and change move the review date to `next_review_by` (default: review_months
        from now); retire retires the approval, with the note as its reason.
        """
        moment = now or utcnow()
        if outcome not in REVIEW_OUTCOMES:
            raise UserError(
                f"a review's outcome is one of {', '.join(REVIEW_OUTCOMES)}, not {outcome!r}"
            )
        text = note.strip()
        if not text or is_placeholder(text):
            raise UserError("a review needs a note: say what was checked and what was concluded")
        if outcome == "retire":
            if next_review_by is not None:
                raise UserError("a review that retires the approval sets no next review date")
            nxt = None
        else:
            nxt = next_review_by or add_months(moment, self.policy.review_months)
            self.check_review_by(nxt, moment, "review")
        with self.lock.hold():
            current = self.get(approval_id)
            if not current.active:
                raise UserError(
                    f"approval {current.id} is retired; only approvals in force are reviewed"
                )
            done = Review(
                at=moment,
                reviewer=reviewer,
                reviewer_person=reviewer_person,
                outcome=outcome,
                note=text,
                next_review_by=nxt,
                previous_review_by=current.review_by,
            )
            reviewed = replace(current, reviews=[*current.reviews, done])
            if nxt is not None:
                reviewed.review_by = nxt
            else:
                reviewed.status = RETIRED
                reviewed.retired_at = moment
                reviewed.retired_by = reviewer
                reviewed.retire_reason = f"retired by review: {text}"
            number = IDS.number(current.id)
            assert number is not None
            _replace_docs(self.table, {number: reviewed.to_json()})
            return reviewed

    def import_specs(
        self,
        specs: Iterable[ApprovalSpec],
        actor: str,
        *,
        prune: bool = False,
        now: datetime | None = None,
    ) -> ImportResult:
        """Turn specs (from a baseline file) into records, idempotently.

        A spec whose content equals an active record is unchanged; one that differs
        supersedes the active record for that host:port/proto (which is retired). With
        `prune`, active records that came from the same source file but are no longer in
        it are retired too. Everything is validated before anything is written.
        """
        checked = [self.validate(spec) for spec in specs]
        sources = {spec.source for spec in checked}
        prune_source = sources.pop() if prune and len(sources) == 1 else None
        if prune and prune_source is None and checked:
            raise UserError("prune needs specs from exactly one baseline file")
        return self._apply(checked, actor, now or utcnow(), prune_source=prune_source)

    def _apply(
        self,
        specs: list[ApprovalSpec],
        actor: str,
        moment: datetime,
        prune_source: str | None,
    ) -> ImportResult:
        with self.lock.hold():
            docs = self.table.all()
            existing = [Approval.from_json(dict(d)) for d in docs]
            next_number = max((d.doc_id for d in docs), default=0) + 1
            active_by_key: dict[tuple[str, int, str], Approval] = {}
            for approval in existing:
                if approval.active:
                    active_by_key[approval.key] = approval
            added: list[Approval] = []
            unchanged: list[Approval] = []
            retiring: dict[str, Approval] = {}
            seen_keys: set[tuple[str, int, str]] = set()
            new_docs: list[Document] = []
            for spec in specs:
                key = (spec.host, spec.port, spec.proto)
                if key in seen_keys:
                    raise UserError(
                        f"{spec.host}:{spec.port}/{spec.proto} is approved twice in one import"
                        + (f" ({spec.file}:{spec.line})" if spec.file else "")
                    )
                seen_keys.add(key)
                current = active_by_key.get(key)
                if current is not None and current.content() == spec.content():
                    unchanged.append(current)
                    continue
                record = Approval(
                    id=IDS.make(next_number),
                    host=spec.host,
                    port=spec.port,
                    proto=spec.proto,
                    service=spec.service,
                    product_pattern=spec.product_pattern,
                    justification=spec.justification,
                    owner=spec.owner,
                    requester=spec.requester,
                    approver=spec.approver,
                    ticket=spec.ticket,
                    approved_at=spec.approved_at,
                    review_by=spec.review_by,
                    mitigation=spec.mitigation,
                    source=spec.source,
                    created_at=moment,
                    created_by=actor,
                    request_id=spec.request_id,
                    requested_by=spec.requested_by,
                    requested_at=spec.requested_at,
                    on_behalf_of=spec.on_behalf_of,
                    four_eyes=spec.four_eyes,
                    four_eyes_basis=spec.four_eyes_basis,
                    service_basis=spec.service_basis,
                )
                if current is not None:
                    record.supersedes.append(current.id)
                    retiring[current.id] = replace(
                        current,
                        status=RETIRED,
                        retired_at=moment,
                        retired_by=actor,
                        retire_reason=f"superseded by {record.id} ({spec.source})",
                    )
                new_docs.append(Document(record.to_json(), doc_id=next_number))
                added.append(record)
                next_number += 1
            if prune_source is not None:
                for approval in active_by_key.values():
                    if approval.source == prune_source and approval.key not in seen_keys:
                        retiring[approval.id] = replace(
                            approval,
                            status=RETIRED,
                            retired_at=moment,
                            retired_by=actor,
                            retire_reason=f"no longer in {prune_source}",
                        )
            if retiring:
                _replace_docs(
                    self.table,
                    {IDS.number(a.id) or 0: a.to_json() for a in retiring.values()},
                )
            if new_docs:
                self.table.insert_multiple(new_docs)
            return ImportResult(added, unchanged, list(retiring.values()))
