"""Notifications through apprise: routed, templated, written to an outbox, delivered with retries.

A notification is written to the `outbox` table of the hot store file *before* any delivery is
tried, so a crash, a slow target or a target that is down delays a message and never drops it.
`deliver_due` sends what is due, target by target in sequence order, each target in its own
thread and bounded by its own timeout, and writes every outcome back (attempts, backoff, dead
after `max_attempts`). The store lock is never held while talking to the network: due messages
are *claimed* under the lock (a lease, so a second process or thread skips them), sent without
it, and each result is written under it.

Secrets: URLs live only in the settings. The outbox, results, status and errors name a target by
its masked URL (see `secrets.py`); error texts are masked because apprise's log lines may echo
the URL.

Delivery is at least once: a result that is lost after the server took the message (timeout
after the request was received, crash before the result was written) means a second delivery.
Every payload carries a stable `message_id` so a receiver can drop the duplicate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from tinydb import Query, TinyDB
from tinydb.table import Document, Table

from portconsole.core.adapters.storage import DataLock
from portconsole.core.errors import ConfigError
from portconsole.core.secrets import config_secrets, mask_text, mask_url, url_secrets
from portconsole.core.settings import SEVERITIES, NotifySettings
from portconsole.core.textsafe import terminal_safe
from portconsole.core.timeutil import iso, parse_iso, utcnow

log = logging.getLogger(__name__)

OUTBOX_TABLE = "outbox"
ANCHOR_TAG = "anchor"
ANCHOR_TIMEOUT = 10.0
PAYLOAD_SCHEMA = "portconsole.notification/1"
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATUSES = (PENDING, DELIVERED, DEAD)

# Delivered messages are kept a day for `notify status` and the rate limit, then dropped: the
# finding record and the audit chain keep the outcome, and the hot file must stay small.
DELIVERED_KEEP = timedelta(hours=24)
RATE_WINDOW = timedelta(seconds=60)
# Added to a claim's lease beyond the targets' timeouts, so a live sender never loses its claim.
LEASE_SLACK_SECONDS = 5.0
# A send is abandoned this long after its target's timeout even if apprise has not returned
# (a server that trickles bytes resets socket read timeouts forever).
SEND_GRACE_SECONDS = 0.5
MAX_PARALLEL_TARGETS = 8

TEMPLATE_FIELDS = (
    "host",
    "port",
    "proto",
    "service",
    "product",
    "version",
    "severity",
    "kind",
    "first_seen",
    "finding_id",
    "scan_id",
    "status",
    "console_host",
)
# Targets that receive the JSON document (docs/notifications.md) as their message text.
DOCUMENT_SCHEMES = frozenset({"json", "jsons", "form", "forms"})
_APPRISE_TYPE = {"critical": "failure", "high": "failure", "medium": "warning", "low": "info"}


def _severity_rank(severity: str) -> int:
    # An unknown severity ranks highest: better one message too many than a silent finding.
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


# ----- findings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotifiableFinding:
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
        names = {f.name for f in fields(cls)}
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
        f.name: getattr(obj, f.name)
        for f in fields(NotifiableFinding)
        if f.name != "finding_id" and hasattr(obj, f.name)
    }
    return NotifiableFinding.from_mapping({"finding_id": finding_id, **values})


# ----- messages and results ------------------------------------------------------------------


@dataclass(slots=True)
class OutboxMessage:
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
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class DeliveryResult:
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


OnResult = Callable[[OutboxMessage, DeliveryResult], None]


@dataclass(frozen=True, slots=True)
class _Target:
    target_id: str  # masked URL, made unique among targets that mask alike
    url: str
    tags: frozenset[str]
    timeout: float

    @property
    def wants_document(self) -> bool:
        return self.url.split("://", 1)[0].lower() in DOCUMENT_SCHEMES


# ----- templates -----------------------------------------------------------------------------


class _FieldsOnly(string.Formatter):
    """str.format restricted to plain named fields: no attribute or index access."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if "." in field_name or "[" in field_name or field_name not in kwargs:
            raise KeyError(field_name)
        return kwargs[field_name], field_name


_FORMATTER = _FieldsOnly()


def _template_values(finding: NotifiableFinding, console_host: str) -> dict[str, str]:
    raw = {
        "host": finding.host,
        "port": "-" if finding.port is None else str(finding.port),
        "proto": finding.proto or "-",
        "service": finding.service or "-",
        "product": finding.product,
        "version": finding.version,
        "severity": finding.severity,
        "kind": finding.kind,
        "first_seen": finding.first_seen,
        "finding_id": finding.finding_id,
        "scan_id": finding.scan_id,
        "status": finding.status,
        "console_host": console_host,
    }
    # Banners and names come from the network: one printable line each, bounded.
    return {key: terminal_safe(value) for key, value in raw.items()}


def _check_template(name: str, template: str) -> None:
    sample = NotifiableFinding(
        finding_id="f-1",
        kind="unapproved_port",
        severity="high",
        host="127.0.0.2",
        port=22,
        proto="tcp",
        first_seen="2026-01-01T00:00:00Z",
        scan_id="s-1",
    )
    try:
        _FORMATTER.format(template, **_template_values(sample, "console"))
    except KeyError as error:
        field_name = error.args[0] if error.args else "?"
        raise ConfigError(
            f"notify.{name}: unknown field {{{field_name}}}; use {', '.join(TEMPLATE_FIELDS)}"
        ) from None
    except (ValueError, IndexError) as error:
        raise ConfigError(
            f"notify.{name}: {error}; write fields as {{host}} and literal braces as {{{{ }}}}"
        ) from None


# ----- apprise -------------------------------------------------------------------------------


class _ThreadLogCapture(logging.Handler):
    """Collects apprise's warnings logged by one thread (they explain a failure)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.thread_id = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            try:
                self.lines.append(record.getMessage())
            except Exception:  # a broken log call must not break a delivery
                self.lines.append(str(record.msg))


class _MaskingFilter(logging.Filter):
    """Masks configured secrets in every record of the apprise logger, wherever it goes.

    Apprise's messages may carry URL parts; the application's log handlers must not see them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        record.msg = mask_text(text, self.secrets)
        record.args = None
        return True


_APPRISE_LOG_MASK = _MaskingFilter()


def _mask_apprise_logs(secrets: Iterable[str]) -> None:
    _APPRISE_LOG_MASK.secrets.update(secrets)
    apprise_logger = logging.getLogger("apprise")
    if _APPRISE_LOG_MASK not in apprise_logger.filters:
        apprise_logger.addFilter(_APPRISE_LOG_MASK)


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    apprise_logger = logging.getLogger("apprise")
    capture = _ThreadLogCapture()
    apprise_logger.addHandler(capture)
    try:
        yield capture.lines
    finally:
        apprise_logger.removeHandler(capture)


def _apprise_plugin(url: str, timeout: float) -> tuple[Any, str | None]:
    """Build the apprise plugin for one URL (no network); (plugin, None) or (None, error)."""
    import apprise  # lazily: 140 ms import, and most commands never notify

    with _captured_warnings() as lines:
        try:
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=False)
        except Exception as error:
            return None, f"bad notification URL: {error.__class__.__name__}: {error}"
    if plugin is None:
        reason = "; ".join(dict.fromkeys(lines)) or "unknown scheme or bad syntax"
        return None, f"not a valid apprise URL ({reason})"
    # Per target: connect and read timeouts (what the ?cto=&rto= URL parameters set) ...
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    # ... and no throttle: apprise sleeps 5.5 s between two sends of one mailto object.
    plugin.request_rate_per_sec = 0
    return plugin, None


def _apprise_notify(plugin: Any, title: str, body: str, notify_type: str) -> str | None:
    """Send one notification; None on success, else what went wrong (unmasked)."""
    import apprise

    with _captured_warnings() as lines:
        try:
            ok = plugin.notify(body=body, title=title, notify_type=apprise.NotifyType(notify_type))
        except Exception as error:  # apprise plugins raise freely; one bad target must not stop us
            return f"{error.__class__.__name__}: {error}"
    if ok:
        return None
    return "; ".join(dict.fromkeys(lines)) or "delivery failed"


# ----- the notifier --------------------------------------------------------------------------


class Notifier:
    """Routes findings to targets, keeps the outbox, and delivers it."""

    def __init__(
        self,
        settings: NotifySettings,
        db: TinyDB,
        lock: DataLock,
        on_result: OnResult | None = None,
        clock: Callable[[], datetime] = utcnow,
        console_host: str | None = None,
        anchor_urls: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self._db = db
        self._lock = lock
        self._on_result = on_result
        self._clock = clock
        self.console_host = console_host or socket.gethostname()
        _check_template("title_template", settings.title_template)
        _check_template("body_template", settings.body_template)
        self._secrets = sorted(
            set(config_secrets(settings)) | {s for url in anchor_urls for s in url_secrets(url)},
            key=len,
            reverse=True,
        )
        _mask_apprise_logs(self._secrets)
        self._targets = self._build_targets(settings)
        # Anchor targets receive only the journal's head ([audit] anchor_urls), never findings.
        self._anchor_targets = [
            _Target(f"{mask_url(url)} (anchor)", url, frozenset({ANCHOR_TAG}), ANCHOR_TIMEOUT)
            for url in anchor_urls
        ]
        self._by_id = {t.target_id: t for t in [*self._targets, *self._anchor_targets]}
        # Callbacks write to the store and the audit chain: one at a time, in result order.
        self._callback_lock = threading.Lock()

    @staticmethod
    def _build_targets(settings: NotifySettings) -> list[_Target]:
        targets: list[_Target] = []
        seen: dict[str, int] = {}
        for target in settings.targets():
            masked = mask_url(target.url)
            seen[masked] = seen.get(masked, 0) + 1
            # Two targets that differ only in their secrets mask alike: number the later ones.
            target_id = masked if seen[masked] == 1 else f"{masked} #{seen[masked]}"
            targets.append(_Target(target_id, target.url, frozenset(target.tags), target.timeout))
        return targets

    @property
    def targets(self) -> list[str]:
        """The configured targets, masked, in config order."""
        return [t.target_id for t in self._targets]

    def mask(self, text: str) -> str:
        """Mask every configured secret (and any URL) in `text`."""
        return mask_text(text, self._secrets)

    def _table(self) -> Table:
        # No query cache: other processes write this file, and a cached query would miss it.
        return self._db.table(OUTBOX_TABLE, cache_size=0)

    # ----- routing and rendering ----------------------------------------------------------
    def route(self, finding: NotifiableFinding) -> list[str]:
        """The targets (masked) a finding goes to."""
        return [t.target_id for t in self._route(finding)]

    def _route(self, finding: NotifiableFinding) -> list[_Target]:
        if not self.settings.routes:
            return list(self._targets)
        rank = _severity_rank(finding.severity)
        tags: set[str] = set()
        for route in self.settings.routes:
            if rank >= _severity_rank(route.min_severity) and (
                not route.kinds or finding.kind in route.kinds
            ):
                tags.update(route.tags)
        return [t for t in self._targets if t.tags & tags]

    def _render(self, finding: NotifiableFinding) -> tuple[str, str]:
        values = _template_values(finding, self.console_host)
        return (
            _FORMATTER.format(self.settings.title_template, **values),
            _FORMATTER.format(self.settings.body_template, **values),
        )

    def _document(
        self,
        message_id: str,
        kind: str,
        scan_id: str,
        created_at: str,
        title: str,
        text: str,
        findings: Sequence[NotifiableFinding],
    ) -> dict[str, Any]:
        severity = max((f.severity for f in findings), key=_severity_rank, default="low")
        return {
            "schema": PAYLOAD_SCHEMA,
            "message_id": message_id,
            "type": kind,
            "console_host": self.console_host,
            "scan_id": scan_id,
            "created_at": created_at,
            "severity": severity,
            "title": title,
            "text": text,
            "findings": [f.to_json() for f in findings],
        }

    def _message(
        self, target: _Target, findings: Sequence[NotifiableFinding], scan_id: str, now: datetime
    ) -> OutboxMessage:
        message_id = uuid.uuid4().hex
        created = iso(now)
        if self.settings.mode == "digest":
            kind = "digest"
            severity = max((f.severity for f in findings), key=_severity_rank)
            rendered = [self._render(f) for f in findings]
            count = len(findings)
            title = terminal_safe(
                f"[PortConsole] {count} new finding{'s' if count != 1 else ''}, highest "
                f"{severity}, scan {scan_id}"
            )
            text = "\n".join(f"- {body}" for _, body in rendered)
        else:
            kind = "finding"
            severity = findings[0].severity
            title, text = self._render(findings[0])
        document = self._document(message_id, kind, scan_id, created, title, text, findings)
        return OutboxMessage(
            id=message_id,
            target=target.target_id,
            seq=0,
            kind=kind,
            scan_id=scan_id,
            finding_ids=[f.finding_id for f in findings],
            severity=severity,
            title=title,
            text=text,
            document=document,
            created_at=created,
            next_attempt_at=created,
        )

    # ----- enqueue ------------------------------------------------------------------------
    def enqueue(self, findings: Iterable[Any], scan_id: str) -> list[OutboxMessage]:
        """Route, render and write messages to the outbox (pending, due now). No delivery."""
        items = []
        for obj in findings:
            finding = from_finding(obj)
            if not finding.scan_id:
                finding = replace(finding, scan_id=scan_id)
            items.append(finding)
        if not items or not self._targets:
            return []
        now = self._clock()
        messages: list[OutboxMessage] = []
        if self.settings.mode == "digest":
            per_target: dict[str, list[NotifiableFinding]] = {}
            for finding in items:
                for target in self._route(finding):
                    per_target.setdefault(target.target_id, []).append(finding)
            for target in self._targets:
                if target.target_id in per_target:
                    messages.append(
                        self._message(target, per_target[target.target_id], scan_id, now)
                    )
        else:
            for finding in items:
                for target in self._route(finding):
                    messages.append(self._message(target, [finding], scan_id, now))
        if not messages:
            return []
        with self._lock.hold():
            table = self._table()
            last_seq: dict[str, int] = {}
            for doc in table.all():
                target_id = str(doc.get("target"))
                last_seq[target_id] = max(last_seq.get(target_id, 0), int(doc.get("seq", 0)))
            for message in messages:
                message.seq = last_seq.get(message.target, 0) + 1
                last_seq[message.target] = message.seq
            table.insert_multiple([m.to_json() for m in messages])
        return messages

    def enqueue_anchor(self, anchor: Mapping[str, Any]) -> list[OutboxMessage]:
        """Queue the journal's head for every anchor target (delivered like any message)."""
        if not self._anchor_targets:
            return []
        now = self._clock()
        created = iso(now)
        title = f"[PortConsole] journal anchor {anchor['seq']}:{anchor['hash']}"
        text = (
            f"PortConsole journal head on {self.console_host}: {anchor['seq']}:{anchor['hash']} "
            f"(recorded {anchor.get('recorded_at')}). Keep this line: `portconsole audit verify "
            f"--anchor {anchor['seq']}:{anchor['hash']}` proves the journal up to it unchanged."
        )
        messages = []
        for target in self._anchor_targets:
            message_id = uuid.uuid4().hex
            document = {
                "schema": PAYLOAD_SCHEMA,
                "message_id": message_id,
                "type": "anchor",
                "console_host": self.console_host,
                "created_at": created,
                "title": title,
                "text": text,
                "anchor": dict(anchor),
            }
            messages.append(
                OutboxMessage(
                    id=message_id,
                    target=target.target_id,
                    seq=0,
                    kind="anchor",
                    scan_id="",
                    finding_ids=[],
                    severity="low",
                    title=title,
                    text=text,
                    document=document,
                    created_at=created,
                    next_attempt_at=created,
                )
            )
        with self._lock.hold():
            table = self._table()
            last_seq: dict[str, int] = {}
            for doc in table.all():
                target_id = str(doc.get("target"))
                last_seq[target_id] = max(last_seq.get(target_id, 0), int(doc.get("seq", 0)))
            for message in messages:
                message.seq = last_seq.get(message.target, 0) + 1
            table.insert_multiple([m.to_json() for m in messages])
        return messages

    # ----- delivery -----------------------------------------------------------------------
    def deliver_due(self, deadline: float | None = None) -> list[DeliveryResult]:
        """Deliver every due message, in order per target, targets in parallel.

        No send starts after `deadline` (a `time.monotonic()` value); a send already started
        ends within its target's timeout. A failure stops that target until its backoff ends,
        so its later messages never overtake the failed one.
        """
        if not self._by_id:
            return []
        token = uuid.uuid4().hex
        batches = self._claim_due(token)
        if not batches:
            return []
        if len(batches) == 1:
            ((target, batch),) = batches.items()
            return self._deliver_target(target, batch, token, deadline)
        results: list[DeliveryResult] = []
        workers = min(MAX_PARALLEL_TARGETS, len(batches))
        with ThreadPoolExecutor(workers, thread_name_prefix="portconsole-notify") as pool:
            futures = [
                pool.submit(self._deliver_target, target, batch, token, deadline)
                for target, batch in batches.items()
            ]
            for future in futures:
                results.extend(future.result())
        return results

    def _claim_due(self, token: str) -> dict[_Target, list[OutboxMessage]]:
        now = self._clock()
        batches: dict[_Target, list[OutboxMessage]] = {}
        with self._lock.hold():
            table = self._table()
            docs = table.all()
            self._purge_delivered(table, docs, now)
            per_target: dict[str, list[OutboxMessage]] = {}
            recent: dict[str, int] = {}
            for doc in docs:
                message = OutboxMessage.from_json(doc)
                if (
                    message.last_attempt_at
                    and parse_iso(message.last_attempt_at) > now - RATE_WINDOW
                ):
                    recent[message.target] = recent.get(message.target, 0) + 1
                if message.status == PENDING:
                    per_target.setdefault(message.target, []).append(message)
            claims: dict[str, tuple[str, str]] = {}
            for target_id, messages in per_target.items():
                target = self._by_id.get(target_id)
                if target is None:
                    continue  # no longer configured: kept, and shown by status()
                budget = self.settings.rate_limit_per_minute - recent.get(target_id, 0)
                batch: list[OutboxMessage] = []
                for message in sorted(messages, key=lambda m: m.seq):
                    if len(batch) >= budget:
                        break
                    if (
                        message.claim
                        and message.claim_until
                        and parse_iso(message.claim_until) > now
                    ):
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

    def _purge_delivered(self, table: Table, docs: list[Document], now: datetime) -> None:
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

    def _deliver_target(
        self, target: _Target, batch: list[OutboxMessage], token: str, deadline: float | None
    ) -> list[DeliveryResult]:
        results: list[DeliveryResult] = []
        attempted = 0
        try:
            for message in batch:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                attempted += 1
                started = time.monotonic()
                error = self._send(
                    target, message.title, self._body_for(target, message), message.severity
                )
                result = self._record(message, error, time.monotonic() - started)
                results.append(result)
                self._report(message, result)
                if not result.ok:
                    break
        finally:
            unsent = [m.id for m in batch[attempted:]]
            if unsent:
                with self._lock.hold():
                    self._table().update(_release_claim(token), Query().id.one_of(unsent))
        return results

    @staticmethod
    def _body_for(target: _Target, message: OutboxMessage) -> str:
        if target.wants_document:
            return json.dumps(message.document, sort_keys=True, ensure_ascii=False, default=str)
        return message.text

    def _send(self, target: _Target, title: str, body: str, severity: str) -> str | None:
        """Send through apprise in a helper thread bounded by the target's timeout.

        Returns None on success, else a masked error text.
        """
        # Built here, outside the timed part: the first build loads apprise's plugins (~0.4 s).
        plugin, error = _apprise_plugin(target.url, target.timeout)
        if plugin is None:
            return self.mask(error or "not a valid apprise URL")
        outcome: list[str | None] = []
        notify_type = _APPRISE_TYPE.get(severity, "failure")

        def run() -> None:
            outcome.append(_apprise_notify(plugin, title, body, notify_type))

        sender = threading.Thread(target=run, name="portconsole-send", daemon=True)
        sender.start()
        sender.join(target.timeout + SEND_GRACE_SECONDS)
        if sender.is_alive():
            # Left to finish on its own (daemon thread); it may still deliver: at least once.
            return f"no answer within {target.timeout:g} s"
        error = outcome[0] if outcome else "delivery failed"
        return None if error is None else self.mask(error)

    def _record(self, message: OutboxMessage, error: str | None, duration: float) -> DeliveryResult:
        now = self._clock()
        message.attempts += 1
        message.last_attempt_at = iso(now)
        message.claim = message.claim_until = None
        if error is None:
            message.status = DELIVERED
            message.delivered_at = iso(now)
            message.last_error = None
        else:
            message.last_error = error
            if message.attempts >= self.settings.max_attempts:
                message.status = DEAD
            else:
                delay = min(
                    self.settings.backoff_seconds * 2 ** (message.attempts - 1),
                    self.settings.backoff_max_seconds,
                )
                message.next_attempt_at = iso(now + timedelta(seconds=delay))
        changes = {
            "attempts": message.attempts,
            "last_attempt_at": message.last_attempt_at,
            "status": message.status,
            "delivered_at": message.delivered_at,
            "last_error": message.last_error,
            "next_attempt_at": message.next_attempt_at,
            "claim": None,
            "claim_until": None,
        }
        with self._lock.hold():
            self._table().update(changes, Query().id == message.id)
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

    def _report(self, message: OutboxMessage, result: DeliveryResult) -> None:
        if self._on_result is None:
            return
        with self._callback_lock:
            try:
                self._on_result(message, result)
            except Exception:
                # The outcome is already in the outbox; a failing recorder must not stop delivery.
                log.exception("recording the result of notification %s failed", message.id)

    def flush(self, deadline: float | None = None, retry_dead: bool = True) -> list[DeliveryResult]:
        """Make every pending message due now (and dead ones pending again), then deliver.

        A revived dead message gets one more attempt before it is dead again.
        """
        now = iso(self._clock())
        with self._lock.hold():
            table = self._table()
            table.update({"next_attempt_at": now}, Query().status == PENDING)
            if retry_dead:
                table.update({"status": PENDING, "next_attempt_at": now}, Query().status == DEAD)
        return self.deliver_due(deadline)

    # ----- status and test ----------------------------------------------------------------
    def messages(self, status: str | None = None) -> list[OutboxMessage]:
        """Outbox messages (optionally of one status), oldest first."""
        with self._lock.hold():
            docs = self._table().all()
        found = [OutboxMessage.from_json(d) for d in docs]
        if status is not None:
            found = [m for m in found if m.status == status]
        return sorted(found, key=lambda m: (m.created_at, m.target, m.seq))

    def status(self) -> dict[str, Any]:
        """Counts per status and per target (masked), the oldest pending age, dead messages."""
        now = self._clock()
        messages = self.messages()
        counts = dict.fromkeys(STATUSES, 0)
        per_target: dict[str, dict[str, Any]] = {
            t.target_id: {**dict.fromkeys(STATUSES, 0), "configured": True, "last_error": None}
            for t in self._targets
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

    def test(self, tag: str | None = None) -> list[tuple[str, bool, str | None]]:
        """Send a test message to each target (with `tag`, if given), bypassing the outbox.

        Returns (masked target, ok, masked error) per target, in config order.
        """
        chosen = [t for t in self._targets if tag is None or tag in t.tags]
        if not chosen:
            return []
        now = self._clock()
        title = "[PortConsole] test notification"
        text = f"Test notification from PortConsole on {self.console_host} at {iso(now)}."

        def one(target: _Target) -> tuple[str, bool, str | None]:
            document = self._document(uuid.uuid4().hex, "test", "", iso(now), title, text, [])
            body = json.dumps(document, sort_keys=True) if target.wants_document else text
            error = self._send(target, title, body, "low")
            return (target.target_id, error is None, error)

        with ThreadPoolExecutor(min(MAX_PARALLEL_TARGETS, len(chosen))) as pool:
            return list(pool.map(one, chosen))


def _set_claims(
    claims: Mapping[str, tuple[str, str]],
) -> Callable[[MutableMapping[Any, Any]], None]:
    def apply(doc: MutableMapping[Any, Any]) -> None:
        doc["claim"], doc["claim_until"] = claims[doc["id"]]

    return apply


def _release_claim(token: str) -> Callable[[MutableMapping[Any, Any]], None]:
    def apply(doc: MutableMapping[Any, Any]) -> None:
        if doc.get("claim") == token:
            doc["claim"] = doc["claim_until"] = None

    return apply


# ----- background delivery -------------------------------------------------------------------


class DeliveryWorker(threading.Thread):
    """Calls `deliver_due` every `interval` seconds until `stop_event` is set.

    `wake()` delivers at once (after a scan has enqueued messages). Errors are logged (masked)
    and kept in `last_error`; the loop goes on.
    """

    def __init__(
        self, notifier: Notifier, stop_event: threading.Event, interval: float = 5.0
    ) -> None:
        super().__init__(name="portconsole-delivery", daemon=True)
        self.notifier = notifier
        self.stop_event = stop_event
        self.interval = interval
        self.last_error: str | None = None
        self.rounds = 0
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self._wake.clear()
            try:
                self.notifier.deliver_due(deadline=time.monotonic() + self.interval)
                self.last_error = None
            except Exception as error:
                self.last_error = self.notifier.mask(f"{error.__class__.__name__}: {error}")
                log.warning("notification delivery failed: %s", self.last_error)
            self.rounds += 1
            waited = 0.0
            # Poll the stop event too: it belongs to the caller, so it cannot wake us itself.
            while waited < self.interval and not self.stop_event.is_set():
                if self._wake.wait(min(0.1, self.interval - waited)):
                    break
                waited += 0.1


__all__ = [
    "DEAD",
    "DELIVERED",
    "OUTBOX_TABLE",
    "PAYLOAD_SCHEMA",
    "PENDING",
    "DeliveryResult",
    "DeliveryWorker",
    "NotifiableFinding",
    "Notifier",
    "OutboxMessage",
    "from_finding",
]
