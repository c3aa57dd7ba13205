"""What a notification says and where it goes: templates, routes and the composed messages.

Turning findings into outbox messages is pure: the operator's templates are filled with
escaped values, the routes pick targets by severity and kind, and each message carries the
JSON document of docs/notifications.md. The outbox (adapters/notify.py) only numbers, stores
and delivers what is composed here, so a template or route rule lives in one place.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from portconsole.core.domain.model import severity_rank
from portconsole.core.domain.notification import (
    PAYLOAD_SCHEMA,
    DeliveryTarget,
    NotifiableFinding,
    OutboxMessage,
)
from portconsole.core.errors import ConfigError
from portconsole.core.settings import NotifySettings
from portconsole.core.textsafe import terminal_safe
from portconsole.core.timeutil import iso

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


def check_template(name: str, template: str) -> None:
    """Refuse a template with an unknown field or bad braces (a ConfigError naming it)."""
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


# ----- routing and rendering -----------------------------------------------------------------


def route(
    settings: NotifySettings, targets: Sequence[DeliveryTarget], finding: NotifiableFinding
) -> list[DeliveryTarget]:
    """The targets a finding goes to: all of them without routes, else those a route tags."""
    if not settings.routes:
        return list(targets)
    rank = severity_rank(finding.severity)
    tags: set[str] = set()
    for rule in settings.routes:
        if rank >= severity_rank(rule.min_severity) and (
            not rule.kinds or finding.kind in rule.kinds
        ):
            tags.update(rule.tags)
    return [t for t in targets if t.tags & tags]


def _render(
    settings: NotifySettings, finding: NotifiableFinding, console_host: str
) -> tuple[str, str]:
    values = _template_values(finding, console_host)
    return (
        _FORMATTER.format(settings.title_template, **values),
        _FORMATTER.format(settings.body_template, **values),
    )


def message_document(
    message_id: str,
    kind: str,
    scan_id: str,
    created_at: str,
    title: str,
    text: str,
    findings: Sequence[NotifiableFinding],
    console_host: str,
) -> dict[str, Any]:
    """The JSON document a message carries (docs/notifications.md)."""
    severity = max((f.severity for f in findings), key=severity_rank, default="low")
    return {
        "schema": PAYLOAD_SCHEMA,
        "message_id": message_id,
        "type": kind,
        "console_host": console_host,
        "scan_id": scan_id,
        "created_at": created_at,
        "severity": severity,
        "title": title,
        "text": text,
        "findings": [f.to_json() for f in findings],
    }


# ----- composing messages --------------------------------------------------------------------


def compose_messages(
    settings: NotifySettings,
    targets: Sequence[DeliveryTarget],
    findings: Sequence[NotifiableFinding],
    scan_id: str,
    now: datetime,
    console_host: str,
) -> list[OutboxMessage]:
    """One message per finding and target, or in digest mode one per target (unnumbered)."""
    messages: list[OutboxMessage] = []
    if settings.mode == "digest":
        per_target: dict[str, list[NotifiableFinding]] = {}
        for finding in findings:
            for target in route(settings, targets, finding):
                per_target.setdefault(target.target_id, []).append(finding)
        for target in targets:
            if target.target_id in per_target:
                messages.append(
                    _message(
                        settings, target, per_target[target.target_id], scan_id, now, console_host
                    )
                )
    else:
        for finding in findings:
            for target in route(settings, targets, finding):
                messages.append(_message(settings, target, [finding], scan_id, now, console_host))
    return messages


def _message(
    settings: NotifySettings,
    target: DeliveryTarget,
    findings: Sequence[NotifiableFinding],
    scan_id: str,
    now: datetime,
    console_host: str,
) -> OutboxMessage:
    message_id = uuid.uuid4().hex
    created = iso(now)
    if settings.mode == "digest":
        kind = "digest"
        severity = max((f.severity for f in findings), key=severity_rank)
        rendered = [_render(settings, f, console_host) for f in findings]
        count = len(findings)
        title = terminal_safe(
            f"[PortConsole] {count} new finding{'s' if count != 1 else ''}, highest "
            f"{severity}, scan {scan_id}"
        )
        text = "\n".join(f"- {body}" for _, body in rendered)
    else:
        kind = "finding"
        severity = findings[0].severity
        title, text = _render(settings, findings[0], console_host)
    document = message_document(
        message_id, kind, scan_id, created, title, text, findings, console_host
    )
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


def anchor_messages(
    targets: Iterable[DeliveryTarget], anchor: Mapping[str, Any], now: datetime, console_host: str
) -> list[OutboxMessage]:
    """One message per anchor target with the journal's head (unnumbered)."""
    created = iso(now)
    title = f"[PortConsole] journal anchor {anchor['seq']}:{anchor['hash']}"
    text = (
        f"PortConsole journal head on {console_host}: {anchor['seq']}:{anchor['hash']} "
        f"(recorded {anchor.get('recorded_at')}). Keep this line: `portconsole audit verify "
        f"--anchor {anchor['seq']}:{anchor['hash']}` proves the journal up to it unchanged."
    )
    messages = []
    for target in targets:
        message_id = uuid.uuid4().hex
        document = {
            "schema": PAYLOAD_SCHEMA,
            "message_id": message_id,
            "type": "anchor",
            "console_host": console_host,
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
    return messages
