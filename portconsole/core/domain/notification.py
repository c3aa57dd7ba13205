"""What a notification is: the finding it reports, the outbox message, the delivery result.

These are plain values shared by the composing of messages (domain/notify_messages.py), the
outbox and its delivery (adapters/notify.py) and the facade's callers, which show messages
and results; none of them touches the outbox file or the network.

Secrets: a `DeliveryTarget` holds its URL, but every message and result names a target only
by its masked URL, so what is stored and shown never carries one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from msgspec import Struct, field

from portconsole.core.domain.records import asdict
from portconsole.core.secrets import mask_url
from portconsole.core.settings import NotifySettings
from portconsole.core.timeutil import iso, parse_iso

# The version of the JSON document a message carries (docs/webhook.schema.json): a new key
# keeps it; a key removed, renamed or changed in meaning makes it 2.
PAYLOAD_SCHEMA = 1
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATUSES = (PENDING, DELIVERED, DEAD)
# Targets that receive the JSON document (docs/notifications.md) as their message text.
DOCUMENT_SCHEMES = frozenset({"json", "jsons", "form", "forms"})


# ----- findings ------------------------------------------------------------------------------


class NotifiableFinding(Struct, frozen=True):
    """What a notification says about one finding. Text fields may come from the network."""

    finding_id: str
    kind: str
    severity: str
    host: str
    port: int | None = None
    proto: str | None = None
    service: str = ""
    product: str = ""
    version: str = ""
    first_seen: str = ""
    scan_id: str = ""
    status: str = "open"
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> NotifiableFinding:
        values = dict(data)
        if "finding_id" not in values and "id" in values:
            values["finding_id"] = values["id"]
        names = set(cls.__struct_fields__)
        return _normalised(cls(**{k: v for k, v in values.items() if k in names}))


def _normalised(finding: NotifiableFinding) -> NotifiableFinding:
    first_seen: Any = finding.first_seen
    if isinstance(first_seen, datetime):
        first_seen = iso(first_seen)
    port = finding.port
    if port is not None and not isinstance(port, int):
        port = int(port) if str(port).isdigit() else None
    return NotifiableFinding(
        finding_id=str(finding.finding_id),
        kind=str(finding.kind),
        severity=str(finding.severity),
        host=str(finding.host),
        port=port,
        proto=None if finding.proto is None else str(finding.proto),
        service=str(finding.service or ""),
        product=str(finding.product or ""),
        version=str(finding.version or ""),
        first_seen=str(first_seen or ""),
        scan_id=str(finding.scan_id or ""),
        status=str(finding.status or ""),
        # Through JSON once: the outbox is a JSON file, and details may hold datetimes.
        details=json.loads(json.dumps(dict(finding.details or {}), default=str)),
    )


def from_finding(obj: Any) -> NotifiableFinding:
    """Read a finding object (the findings module's `Finding`) by attribute."""
    if isinstance(obj, NotifiableFinding):
        return _normalised(obj)
    if isinstance(obj, Mapping):
        return NotifiableFinding.from_mapping(obj)
    finding_id = getattr(obj, "finding_id", None) or getattr(obj, "id", None)
    values = {
        name: getattr(obj, name)
        for name in NotifiableFinding.__struct_fields__
        if name != "finding_id" and hasattr(obj, name)
    }
    return NotifiableFinding.from_mapping({"finding_id": finding_id, **values})


# ----- messages and results ------------------------------------------------------------------


class OutboxMessage(Struct):
    """One message to one target, as stored in the outbox table."""

    id: str
    target: str  # the target's masked URL (never the URL itself)
    seq: int  # order among this target's messages
    kind: str  # finding | digest
    scan_id: str
    finding_ids: list[str]
    severity: str
    title: str
    text: str
    document: dict[str, Any]
    created_at: str
    next_attempt_at: str
    attempts: int = 0
    status: str = PENDING
    last_error: str | None = None
    last_attempt_at: str | None = None
    delivered_at: str | None = None
    claim: str | None = None
    claim_until: str | None = None

    @property
    def finding_id(self) -> str:
        """The finding ids, comma-joined (one id unless this is a digest)."""
        return ",".join(self.finding_ids)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OutboxMessage:
        names = set(cls.__struct_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


class DeliveryResult(Struct, frozen=True):
    """The outcome of one delivery attempt. `target` is masked; `error` is masked."""

    message_id: str
    target: str
    finding_ids: tuple[str, ...]
    ok: bool
    status: str  # the message's status after this attempt
    attempts: int
    error: str | None
    at: str
    duration_seconds: float
    next_attempt_at: str | None

    @property
    def finding_id(self) -> str:
        return ",".join(self.finding_ids)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["finding_ids"] = list(self.finding_ids)
        data["duration_seconds"] = round(self.duration_seconds, 3)
        return data

    def finding_record(self) -> dict[str, Any]:
        """This attempt as kept on each finding its message reports: the message by its id and
        the number of findings it carried, never the whole id list (a digest of N findings
        would put N ids on each of N findings: quadratic in size and time)."""
        data = self.to_json()
        data["finding_count"] = len(data.pop("finding_ids"))
        return data


class DeliveryTarget(Struct, frozen=True):
    """A configured target: where messages go, and which routes (tags) reach it."""

    target_id: str  # masked URL, made unique among targets that mask alike
    url: str
    tags: frozenset[str]
    timeout: float

    @property
    def wants_document(self) -> bool:
        return self.url.split("://", 1)[0].lower() in DOCUMENT_SCHEMES


def delivery_targets(settings: NotifySettings) -> list[DeliveryTarget]:
    """The configured targets in config order, each named by its masked URL."""
    targets: list[DeliveryTarget] = []
    seen: dict[str, int] = {}
    for target in settings.targets():
        masked = mask_url(target.url)
        seen[masked] = seen.get(masked, 0) + 1
        # Two targets that differ only in their secrets mask alike: number the later ones.
        target_id = masked if seen[masked] == 1 else f"{masked} #{seen[masked]}"
        targets.append(
            DeliveryTarget(target_id, target.url, frozenset(target.tags), target.timeout)
        )
    return targets


# ----- the outbox at a glance ----------------------------------------------------------------


def outbox_status(
    messages: Sequence[OutboxMessage], target_ids: Sequence[str], now: datetime
) -> dict[str, Any]:
    """Counts per status and per target, the oldest pending age, and the dead messages.

    `target_ids` are the configured targets (masked); a target that only has messages left
    from an earlier configuration is listed with `configured: False`.
    """
    counts = dict.fromkeys(STATUSES, 0)
    per_target: dict[str, dict[str, Any]] = {
        target_id: {**dict.fromkeys(STATUSES, 0), "configured": True, "last_error": None}
        for target_id in target_ids
    }
    oldest: datetime | None = None
    for message in messages:
        counts[message.status] = counts.get(message.status, 0) + 1
        row = per_target.setdefault(
            message.target,
            {**dict.fromkeys(STATUSES, 0), "configured": False, "last_error": None},
        )
        row[message.status] = row.get(message.status, 0) + 1
        if message.last_error and message.status != DELIVERED:
            row["last_error"] = message.last_error
        if message.status == PENDING:
            created = parse_iso(message.created_at)
            oldest = created if oldest is None or created < oldest else oldest
    dead = [
        {
            "id": m.id,
            "target": m.target,
            "finding_ids": list(m.finding_ids),
            "title": m.title,
            "attempts": m.attempts,
            "last_error": m.last_error,
            "created_at": m.created_at,
            "last_attempt_at": m.last_attempt_at,
        }
        for m in messages
        if m.status == DEAD
    ]
    return {
        "counts": counts,
        "targets": per_target,
        "oldest_pending_age_seconds": (
            None if oldest is None else max(0.0, (now - oldest).total_seconds())
        ),
        "dead": dead,
    }
