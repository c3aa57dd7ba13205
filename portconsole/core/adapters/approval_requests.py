"""Approval requests: the first of the four eyes, recorded as its own step.

A request names the finding whose port someone wants approved, the terms they ask for
(justification, owner, ticket, review date, mitigation) and who asked, as a recorded
identity. It stays pending until an approver (another person, when separation of duties
is on) approves it; the approval then names the request.

The requests live in the `requests` table of the hot TinyDB file shared with the store, so
each change rides on its transaction's journal event like every other projection. Like the
registry, this writes no audit events: the caller audits what changed.
"""

from __future__ import annotations

from datetime import datetime

from msgspec.structs import replace
from tinydb import TinyDB
from tinydb.table import Document

from portconsole.core.adapters.storage import DataLock
from portconsole.core.domain.approval import PENDING, REQUEST_APPROVED, ApprovalRequest
from portconsole.core.domain.record_ids import RecordIds
from portconsole.core.errors import NotFoundError, UserError

TABLE = "requests"
PREFIX = "R-"
IDS = RecordIds(PREFIX)


def is_request_id(text: str) -> bool:
    """Whether `text` names a request (`R-000001`, `r-1`) rather than a finding."""
    rest = text.strip().upper()
    return rest.startswith(PREFIX) and rest[len(PREFIX) :].isdigit()


class RequestBook:
    """The approval requests. Every read-modify-write holds the data lock."""

    def __init__(self, db: TinyDB, lock: DataLock) -> None:
        self.lock = lock
        # cache_size=0: another process may write the file between our reads.
        self.table = db.table(TABLE, cache_size=0)

    def all(self) -> list[ApprovalRequest]:
        """Every request, oldest first."""
        docs = sorted(self.table.all(), key=lambda d: d.doc_id)
        return [ApprovalRequest.from_json(dict(d)) for d in docs]

    def pending(self) -> list[ApprovalRequest]:
        return [r for r in self.all() if r.status == PENDING]

    def get(self, request_id: str) -> ApprovalRequest:
        number = IDS.number(request_id)
        doc = self.table.get(doc_id=number) if number is not None else None
        if doc is None or isinstance(doc, list):
            raise NotFoundError(f"no request {request_id!r}; list them with `portconsole requests`")
        return ApprovalRequest.from_json(dict(doc))

    def pending_for(self, finding_id: str) -> ApprovalRequest | None:
        """The pending request on a finding, if any (there is at most one)."""
        return next((r for r in self.pending() if r.finding_id == finding_id), None)

    def add(self, request: ApprovalRequest) -> ApprovalRequest:
        """Record a new request (its id is assigned here); one pending request per finding."""
        with self.lock.hold():
            current = self.pending_for(request.finding_id)
            if current is not None:
                raise UserError(
                    f"{request.finding_id} already has a pending request {current.id} by "
                    f"{current.requester_person}: approve it (`portconsole approve {current.id}`)"
                )
            number = max((d.doc_id for d in self.table.all()), default=0) + 1
            made = replace(request, id=IDS.make(number), status=PENDING)
            self.table.insert(Document(made.to_json(), doc_id=number))
            return made

    def mark_approved(self, request_id: str, approval_id: str, at: datetime) -> ApprovalRequest:
        with self.lock.hold():
            current = self.get(request_id)
            if current.status != PENDING:
                raise UserError(
                    f"request {current.id} is already {current.status}"
                    + (f" ({current.approval_id})" if current.approval_id else "")
                )
            done = replace(
                current, status=REQUEST_APPROVED, approval_id=approval_id, approved_at=at
            )
            number = IDS.number(current.id)
            assert number is not None
            self.table.update(done.to_json(), doc_ids=[number])
            return done
