"""An index of approval records by host:port/proto, built once per cycle or console snapshot.

Classifying each port by scanning every approval is quadratic (4,000 ports x 4,000
approvals took 7.7 s). The index groups the records by key once; each question then looks
at the few records for that key only, through the one rule for "approved at T"
(domain/approval.py: approval_in_force, approvals_in_force, approval_status).

Pure: no I/O. The index is a snapshot of the records it was given; build a new one when
they change (adapters/approvals.py: ApprovalRegistry.index).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from portconsole.core.domain.approval import (
    Approval,
    approval_in_force,
    approval_status,
    approvals_in_force,
)

Key = tuple[str, int, str]


class ApprovalIndex:
    """Approval records (active and retired) grouped by (host, port, proto)."""

    __slots__ = ("_by_key", "_records")

    def __init__(self, approvals: Iterable[Approval]) -> None:
        self._records = list(approvals)
        self._by_key: dict[Key, list[Approval]] = {}
        for approval in self._records:
            self._by_key.setdefault(approval.key, []).append(approval)

    def __iter__(self) -> Iterator[Approval]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def candidates(self, host: str, port: int, proto: str) -> list[Approval]:
        """Every record for host:port/proto, in force or not."""
        return self._by_key.get((host, port, proto), [])

    def in_force(self, host: str, port: int, proto: str, at: datetime) -> Approval | None:
        """The approval in force for host:port/proto at `at` (approval_in_force)."""
        return approval_in_force(self.candidates(host, port, proto), host, port, proto, at)

    def status(self, host: str, port: int, proto: str, at: datetime) -> str:
        """`approved`, `unapproved` or `expired` at `at` (approval_status)."""
        return approval_status(self.in_force(host, port, proto, at), at)

    def all_in_force(self, at: datetime) -> dict[Key, Approval]:
        """Per key, the approval in force at `at` (approvals_in_force)."""
        return approvals_in_force(self._records, at)


def as_index(approvals: ApprovalIndex | Iterable[Approval]) -> ApprovalIndex:
    """`approvals` as an index: itself when it is one, else indexed now (once per call)."""
    return approvals if isinstance(approvals, ApprovalIndex) else ApprovalIndex(approvals)
