"""The notification outbox: messages are stored before any delivery is tried, then delivered.

The Notifier ties the pieces together: messages are composed from findings (templates and
routes: domain/notify_messages.py), numbered per target and written to the outbox (its
records, claims and outcomes: adapters/outbox.py), and each is sent through apprise
(adapters/apprise_delivery.py) with retries and backoff.

A notification is written to the `outbox` table of the hot store file *before* any delivery is
tried, so a crash, a slow target or a target that is down delays a message and never drops it.
`deliver_due` sends what is due, target by target in sequence order, each target in its own
thread and bounded by its own timeout, and writes every outcome back (attempts, backoff, dead
after `max_attempts`). The store lock is never held while talking to the network: due messages
are *claimed* under the lock (a lease, so a second process or thread skips them), sent without
it, and their results written under it, many in one transaction (WRITE_EVERY_SECONDS).

Secrets: URLs live only in the settings. The outbox, results, status and errors name a target by
its masked URL (see `secrets.py`); error texts are masked because apprise's log lines may echo
the URL.

Delivery is at least once: a result that is lost after the server took the message (timeout
after the request was received, crash before the result was written) means a second delivery.
Every payload carries a stable `message_id` so a receiver can drop the duplicate.

Webhook targets (json://, form://) are signed when `[notify] webhook_secret` (or the variable
named by `webhook_secret_env`) is set: the key is read at each send, and a key that is named
but missing fails the send (it is retried) rather than sending unsigned.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from msgspec.structs import replace
from tinydb import Query, TinyDB
from tinydb.table import Table

from portconsole.core.adapters.apprise_delivery import mask_apprise_logs, send
from portconsole.core.adapters.delivery_worker import DeliveryWorker
from portconsole.core.adapters.outbox import (
    OUTBOX_TABLE,
    append_numbered,
    claim_due,
    record_attempt,
    release_claims,
    write_outcomes,
)
from portconsole.core.adapters.storage import DataLock
from portconsole.core.domain.model import port_key
from portconsole.core.domain.notification import (
    DEAD,
    PENDING,
    DeliveryResult,
    DeliveryTarget,
    NotifiableFinding,
    OutboxMessage,
    delivery_targets,
    from_finding,
    outbox_status,
)
from portconsole.core.domain.notify_messages import (
    anchor_messages,
    check_template,
    compose_messages,
    message_document,
    route,
)
from portconsole.core.secrets import config_secrets, mask_text, url_secrets
from portconsole.core.settings import NotifySettings
from portconsole.core.timeutil import iso, utcnow

log = logging.getLogger(__name__)

ANCHOR_TAG = "anchor"
ANCHOR_TIMEOUT = 10.0
MAX_PARALLEL_TARGETS = 8
# Outcomes are written (outbox, findings, audit) at least this often while a target's batch is
# sent, and never more often than writing takes: one write per message rewrote the whole
# store each time (1,000 messages: 289 s). A crash loses at most this much of outcomes:
# those messages are sent again (at least once; receivers drop duplicates by message_id).
WRITE_EVERY_SECONDS = 1.0

OnResult = Callable[[OutboxMessage, DeliveryResult], None]


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
        self.console_host = console_host or os.uname().nodename
        check_template("title_template", settings.title_template)
        check_template("body_template", settings.body_template)
        webhook_key = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        self._secrets = sorted(
            set(config_secrets(settings))
            | {s for url in anchor_urls for s in url_secrets(url)}
            | ({webhook_key} if webhook_key else set()),
            key=len,
            reverse=True,
        )
        mask_apprise_logs(self._secrets)
        self._targets = delivery_targets(settings)
        # Anchor targets receive only the journal's head ([audit] anchor_urls), never findings.
        # Named like the finding targets (numbered when two mask alike), marked "(anchor)".
        self._anchor_targets = [
            replace(
                target,
                target_id=f"{target.target_id} (anchor)",
                tags=frozenset({ANCHOR_TAG}),
                timeout=ANCHOR_TIMEOUT,
            )
            for target in delivery_targets(NotifySettings(urls=list(anchor_urls)))
        ]

        self._by_id = {t.target_id: t for t in [*self._targets, *self._anchor_targets]}
        # Callbacks write to the store and the audit chain: one at a time, in result order.
        self._callback_lock = threading.Lock()

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

    def route(self, finding: NotifiableFinding) -> list[str]:
        """The targets (masked) a finding goes to."""
        return [t.target_id for t in route(self.settings, self._targets, finding)]

    # ----- enqueue ------------------------------------------------------------------------
    def enqueue(
        self,
        findings: Iterable[Any],
        scan_id: str,
        observed: Mapping[str, tuple[str, str]] | None = None,
    ) -> list[OutboxMessage]:
        """Route, render and write messages to the outbox (pending, due now). No delivery.

        `observed` maps "host:port/proto" to the (product, version) the scan saw there: a
        finding does not keep them, and a receiver wants to know what answered.
        """
        items = []
        for obj in findings:
            finding = from_finding(obj)
            if not finding.scan_id:
                finding = replace(finding, scan_id=scan_id)
            seen = (
                observed.get(port_key(finding.host, finding.port, finding.proto or ""))
                if observed and finding.port is not None
                else None
            )
            if seen and not (finding.product or finding.version):
                finding = replace(finding, product=seen[0], version=seen[1])
            items.append(finding)
        if not items or not self._targets:
            return []
        messages = compose_messages(
            self.settings, self._targets, items, scan_id, self._clock(), self.console_host
        )
        return self._insert(messages)

    def enqueue_anchor(self, anchor: Mapping[str, Any]) -> list[OutboxMessage]:
        """Queue the journal's head for every anchor target (delivered like any message)."""
        if not self._anchor_targets:
            return []
        return self._insert(
            anchor_messages(self._anchor_targets, anchor, self._clock(), self.console_host)
        )

    def _insert(self, messages: list[OutboxMessage]) -> list[OutboxMessage]:
        """Write messages to the outbox, numbered per target after what it already holds."""
        if not messages:
            return []
        with self._lock.hold():
            append_numbered(self._table(), messages)
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

    def _claim_due(self, token: str) -> dict[DeliveryTarget, list[OutboxMessage]]:
        now = self._clock()
        with self._lock.hold():
            return claim_due(
                self._table(), self._by_id, self.settings.rate_limit_per_minute, now, token
            )

    def _deliver_target(
        self, target: DeliveryTarget, batch: list[OutboxMessage], token: str, deadline: float | None
    ) -> list[DeliveryResult]:
        results: list[DeliveryResult] = []
        unwritten: list[tuple[OutboxMessage, DeliveryResult]] = []
        attempted = 0
        write_at = time.monotonic() + WRITE_EVERY_SECONDS
        try:
            for message in batch:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                attempted += 1
                started = time.monotonic()
                error = self._send(
                    target, message.title, self._body_for(target, message), message.severity
                )
                result = record_attempt(
                    message, error, time.monotonic() - started, self._clock(), self.settings
                )
                results.append(result)
                unwritten.append((message, result))
                if not result.ok:
                    break
                if time.monotonic() >= write_at:
                    spent = self._write_outcomes(unwritten)
                    write_at = time.monotonic() + max(WRITE_EVERY_SECONDS, spent)
        finally:
            self._write_outcomes(unwritten)
            unsent = [m.id for m in batch[attempted:]]
            if unsent:
                with self._lock.hold():
                    release_claims(self._table(), token, unsent)
        return results

    @staticmethod
    def _body_for(target: DeliveryTarget, message: OutboxMessage) -> str:
        if target.wants_document:
            return json.dumps(message.document, sort_keys=True, ensure_ascii=False, default=str)
        return message.text

    def _send(self, target: DeliveryTarget, title: str, body: str, severity: str) -> str | None:
        """Send through apprise, bounded by the target's timeout; None, or a masked error."""
        key: bytes | None = None
        if target.wants_document:
            key, error = self._signing_key()
            if error:
                return error
        return send(target, title, body, severity, self.mask, signing_key=key)

    def _signing_key(self) -> tuple[bytes | None, str | None]:
        """The webhook key (None: not signing), or the reason there is none to sign with."""
        if self.settings.webhook_secret is not None:
            return self.settings.webhook_secret.get_secret_value().encode("utf-8"), None
        name = self.settings.webhook_secret_env
        if not name:
            return None, None
        value = os.environ.get(name, "")
        if not value:
            return None, f"[notify] webhook_secret_env names {name}, which is not set: not sent"
        return value.encode("utf-8"), None

    def _write_outcomes(self, unwritten: list[tuple[OutboxMessage, DeliveryResult]]) -> float:
        """Write the outcomes sent since the last write, and hand each to `on_result`, in one
        transaction (one file write for many messages: linear, not one rewrite per message).
        Empties `unwritten`; returns the seconds spent.

        A failing `on_result` must not lose the outcomes: the outbox is then written alone and
        each result recorded in its own transaction (a failure logged and skipped).
        """
        if not unwritten:
            return 0.0
        started = time.monotonic()
        done = list(unwritten)
        unwritten.clear()
        messages = [message for message, _ in done]
        with self._callback_lock:
            try:
                with self._lock.hold():
                    write_outcomes(self._table(), messages)
                    for message, result in done:
                        if self._on_result is not None:
                            self._on_result(message, result)
            except Exception:
                log.exception("recording %d notification results at once failed", len(done))
                with self._lock.hold():
                    write_outcomes(self._table(), messages)
                for message, result in done:
                    self._report(message, result)
        return time.monotonic() - started

    def _report(self, message: OutboxMessage, result: DeliveryResult) -> None:
        """Hand one result to `on_result` on its own (the caller holds the callback lock)."""
        if self._on_result is None:
            return
        try:
            with self._lock.hold():
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
        return outbox_status(self.messages(), self.targets, now)

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

        def one(target: DeliveryTarget) -> tuple[str, bool, str | None]:
            document = message_document(
                uuid.uuid4().hex, "test", "", iso(now), title, text, [], self.console_host
            )
            body = json.dumps(document, sort_keys=True) if target.wants_document else text
            error = self._send(target, title, body, "low")
            return (target.target_id, error is None, error)

        with ThreadPoolExecutor(min(MAX_PARALLEL_TARGETS, len(chosen))) as pool:
            return list(pool.map(one, chosen))


__all__ = ["OUTBOX_TABLE", "DeliveryWorker", "Notifier", "OnResult"]
