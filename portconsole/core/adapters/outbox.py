"""The outbox table's records: numbering, claims, and what one delivery attempt changes.

The Notifier (adapters/notify.py) decides what to send and sends it; this module keeps the
`outbox` table of the hot store file consistent while it does. Every function here works on
the table under the store lock, which the caller holds, and never talks to the network.

- Messages are numbered per target after what the table already holds (`append_numbered`),
  so a target's messages are delivered in the order they were written.
- Due messages are *claimed* with a lease (`claim_due`): a second process or thread skips a
  claimed message and every later one of its target, so no message is sent twice at once and
  none overtakes another. A target's rate limit and backoff stop its batch the same way.
  Delivered messages older than DELIVERED_KEEP are dropped here.
- An attempt's outcome (`record_attempt`) is applied in memory, then written with the claim
  released (`write_outcomes`); messages claimed but never tried are released
  (`release_claims`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tinydb import Query
from tinydb.table import Document, Table

from portconsole.core.adapters.apprise_delivery import SEND_GRACE_SECONDS
from portconsole.core.domain.notification import (
    DEAD,
    DELIVERED,
    PENDING,
    DeliveryResult,
    DeliveryTarget,
    OutboxMessage,
)
from portconsole.core.settings import NotifySettings
from portconsole.core.timeutil import iso, parse_iso

OUTBOX_TABLE = "outbox"

# Delivered messages are kept a day for `notify status` and the rate limit, then dropped: the
# finding record and the audit chain keep the outcome, and the hot file must stay small.
DELIVERED_KEEP = timedelta(hours=24)
RATE_WINDOW = timedelta(seconds=60)
# Added to a claim's lease beyond the targets' timeouts, so a live sender never loses its claim.
LEASE_SLACK_SECONDS = 5.0


def append_numbered(table: Table, messages: Sequence[OutboxMessage]) -> None:
    """Write messages to the outbox, numbered per target after what it already holds."""
    last_seq: dict[str, int] = {}
    for doc in table.all():
        target_id = str(doc.get("target"))
        last_seq[target_id] = max(last_seq.get(target_id, 0), int(doc.get("seq", 0)))
    for message in messages:
        message.seq = last_seq.get(message.target, 0) + 1
        last_seq[message.target] = message.seq
    table.insert_multiple([m.to_json() for m in messages])


def claim_due(
    table: Table,
    targets: Mapping[str, DeliveryTarget],
    rate_limit_per_minute: int,
    now: datetime,
    token: str,
) -> dict[DeliveryTarget, list[OutboxMessage]]:
    """Claim each target's due messages for `token`, in sequence order: a batch a target.

    A target's batch stops at its rate limit, at a message another sender holds, or at one
    backing off, so its later messages never overtake it. Messages of a target that is no
    longer configured are kept (and shown by the status) but not claimed.
    """
    batches: dict[DeliveryTarget, list[OutboxMessage]] = {}
    docs = table.all()
    _purge_delivered(table, docs, now)
    per_target: dict[str, list[OutboxMessage]] = {}
    recent: dict[str, int] = {}
    for doc in docs:
        message = OutboxMessage.from_json(doc)
        if message.last_attempt_at and parse_iso(message.last_attempt_at) > now - RATE_WINDOW:
            recent[message.target] = recent.get(message.target, 0) + 1
        if message.status == PENDING:
            per_target.setdefault(message.target, []).append(message)
    claims: dict[str, tuple[str, str]] = {}
    for target_id, messages in per_target.items():
        target = targets.get(target_id)
        if target is None:
            continue  # no longer configured: kept, and shown by status()
        budget = rate_limit_per_minute - recent.get(target_id, 0)
        batch: list[OutboxMessage] = []
        for message in sorted(messages, key=lambda m: m.seq):
            if len(batch) >= budget:
                break
            if message.claim and message.claim_until and parse_iso(message.claim_until) > now:
                break  # another sender has it: its successors must wait for it
            if parse_iso(message.next_attempt_at) > now:
                break  # backing off: later messages wait so order is kept
            batch.append(message)
        if not batch:
            continue
        lease = len(batch) * (target.timeout + SEND_GRACE_SECONDS) + LEASE_SLACK_SECONDS
        until = iso(now + timedelta(seconds=lease))
        for message in batch:
            message.claim, message.claim_until = token, until
            claims[message.id] = (token, until)
        batches[target] = batch
    if claims:
        table.update(_set_claims(claims), Query().id.one_of(list(claims)))
    return batches


def _purge_delivered(table: Table, docs: list[Document], now: datetime) -> None:
    cutoff = now - DELIVERED_KEEP
    old = [
        doc.doc_id
        for doc in docs
        if doc.get("status") == DELIVERED
        and doc.get("delivered_at")
        and parse_iso(str(doc["delivered_at"])) < cutoff
    ]
    if old:
        table.remove(doc_ids=old)
        docs[:] = [doc for doc in docs if doc.doc_id not in set(old)]


def record_attempt(
    message: OutboxMessage,
    error: str | None,
    duration: float,
    now: datetime,
    settings: NotifySettings,
) -> DeliveryResult:
    """Apply one attempt's outcome to `message` (not yet written) and describe it: delivered,
    pending again after a backoff that doubles per attempt, or dead after `max_attempts`."""
    message.attempts += 1
    message.last_attempt_at = iso(now)
    message.claim = message.claim_until = None
    if error is None:
        message.status = DELIVERED
        message.delivered_at = iso(now)
        message.last_error = None
    else:
        message.last_error = error
        if message.attempts >= settings.max_attempts:
            message.status = DEAD
        else:
            delay = min(
                settings.backoff_seconds * 2 ** (message.attempts - 1),
                settings.backoff_max_seconds,
            )
            message.next_attempt_at = iso(now + timedelta(seconds=delay))
    return DeliveryResult(
        message_id=message.id,
        target=message.target,
        finding_ids=tuple(message.finding_ids),
        ok=error is None,
        status=message.status,
        attempts=message.attempts,
        error=error,
        at=message.last_attempt_at,
        duration_seconds=duration,
        next_attempt_at=message.next_attempt_at if message.status == PENDING else None,
    )


def write_outcomes(table: Table, messages: Iterable[OutboxMessage]) -> None:
    """Write the fields the attempts changed, releasing each message's claim, in one update."""
    changes = {message.id: _outcome_fields(message) for message in messages}
    table.update(_set_fields(changes), Query().id.one_of(list(changes)))


def release_claims(table: Table, token: str, message_ids: Sequence[str]) -> None:
    """Release `token`'s claim on messages it never tried (a deadline stopped the batch)."""
    table.update(_release_claim(token), Query().id.one_of(list(message_ids)))


def _set_claims(
    claims: Mapping[str, tuple[str, str]],
) -> Callable[[MutableMapping[Any, Any]], None]:
    def apply(doc: MutableMapping[Any, Any]) -> None:
        doc["claim"], doc["claim_until"] = claims[doc["id"]]

    return apply


def _outcome_fields(message: OutboxMessage) -> dict[str, Any]:
    """The outbox fields one delivery attempt changes (the claim is released with them)."""
    return {
        "attempts": message.attempts,
        "last_attempt_at": message.last_attempt_at,
        "status": message.status,
        "delivered_at": message.delivered_at,
        "last_error": message.last_error,
        "next_attempt_at": message.next_attempt_at,
        "claim": None,
        "claim_until": None,
    }


def _set_fields(
    changes: Mapping[str, Mapping[str, Any]],
) -> Callable[[MutableMapping[Any, Any]], None]:
    def apply(doc: MutableMapping[Any, Any]) -> None:
        doc.update(changes[doc["id"]])

    return apply


def _release_claim(token: str) -> Callable[[MutableMapping[Any, Any]], None]:
    def apply(doc: MutableMapping[Any, Any]) -> None:
        if doc.get("claim") == token:
            doc["claim"] = doc["claim_until"] = None

    return apply
