"""What was configured, and when: the non-secret settings each settings event carries.

Every `settings.recorded` / `settings.changed` journal event holds, beside the fingerprint,
the definitions a report needs to say what was monitored (`definitions_of`): the scope,
each target group (targets, ports, protocols, interval, jitter, fingerprint mode), the
retention and the gap grace. Replaying those events (`settings_records`) tells a report when
each group was configured and what changed in a period. Events written before the
definitions were added carry none (`SettingsRecord.groups is None`): a report then says so
and falls back on the first scan of each group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from msgspec import Struct

from portconsole.core.settings import Settings

SETTINGS_ACTIONS = ("settings.recorded", "settings.changed")


class GroupDefinition(Struct, frozen=True):
    """One target group as configured: what it scans and how often."""

    name: str
    targets: tuple[str, ...]
    ports: str
    protocols: tuple[str, ...]
    interval: int
    jitter: int
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "targets": list(self.targets),
            "ports": self.ports,
            "protocols": list(self.protocols),
            "interval_seconds": self.interval,
            "jitter_seconds": self.jitter,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroupDefinition:
        return cls(
            name=str(data["name"]),
            targets=tuple(str(t) for t in data.get("targets") or ()),
            ports=str(data.get("ports", "")),
            protocols=tuple(str(p) for p in data.get("protocols") or ("tcp",)),
            interval=int(data["interval_seconds"]),
            jitter=int(data.get("jitter_seconds", 0)),
            fingerprint=str(data.get("fingerprint", "")),
        )


def definitions_of(settings: Settings) -> dict[str, Any]:
    """The non-secret settings a report shows (and a settings event records)."""
    groups = []
    for name, conf in sorted(settings.groups.items()):
        udp = settings.scan.udp if conf.udp is None else conf.udp
        groups.append(
            GroupDefinition(
                name=name,
                targets=tuple(conf.targets),
                ports=settings.group_ports(name),
                protocols=("tcp", "udp") if udp else ("tcp",),
                interval=conf.interval,
                jitter=conf.jitter,
                fingerprint=settings.scan.fingerprint,
            ).to_json()
        )
    return {
        "scope": list(settings.scope),
        "groups": groups,
        "retention": {
            "scan_months": settings.retention.scan_months,
            "raw_xml_months": settings.retention.raw_xml_months,
        },
        "gap_grace_seconds": settings.daemon.gap_grace_seconds,
    }


class SettingsRecord(Struct, frozen=True):
    """One settings event, read back. `groups` is None for an event without definitions."""

    at: datetime
    actor: str
    sha256: str
    previous: str | None
    groups: dict[str, GroupDefinition] | None
    scope: tuple[str, ...] | None
    gap_grace: int | None


def _record(event: Any, actor: str) -> SettingsRecord:
    details: Mapping[str, Any] = event.details or {}
    groups: dict[str, GroupDefinition] | None = None
    raw = details.get("groups")
    if isinstance(raw, list):
        try:
            groups = {g.name: g for g in (GroupDefinition.from_json(item) for item in raw)}
        except (KeyError, TypeError, ValueError):
            groups = None
    scope = details.get("scope")
    grace = details.get("gap_grace_seconds")
    return SettingsRecord(
        at=event.at,
        actor=actor,
        sha256=str(details.get("sha256", "")),
        previous=str(details["previous"]) if details.get("previous") else None,
        groups=groups,
        scope=tuple(str(s) for s in scope) if isinstance(scope, list) else None,
        gap_grace=int(grace) if isinstance(grace, int) else None,
    )


def settings_records(events: Iterable[Any], who: Any = None) -> list[SettingsRecord]:
    """The settings events among `events` (journal events, chain order), read back.

    `who(event)` names the actor (the journal's display form); by default its user.
    """
    found = []
    for event in events:
        if event.action not in SETTINGS_ACTIONS:
            continue
        actor = who(event) if who is not None else str((event.actor or {}).get("user", ""))
        found.append(_record(event, actor))
    return found


def in_force(records: Iterable[SettingsRecord], at: datetime) -> SettingsRecord | None:
    """The newest settings record at or before `at`."""
    chosen = None
    for record in records:
        if record.at <= at:
            chosen = record
    return chosen


def what_changed(before: SettingsRecord | None, after: SettingsRecord) -> list[str]:
    """The changes of group definitions and scope between two records, in words."""
    if after.groups is None:
        return ["settings changed (this event predates recorded group definitions)"]
    if before is None:
        return [f"group {name} configured" for name in sorted(after.groups)] or [
            "settings recorded (no target group)"
        ]
    if before.groups is None:
        return [f"group definitions recorded: {', '.join(sorted(after.groups)) or 'none'}"]
    changes = []
    if before.scope is not None and after.scope is not None and before.scope != after.scope:
        changes.append(f"scope {', '.join(before.scope)} -> {', '.join(after.scope)}")
    for name in sorted(set(before.groups) | set(after.groups)):
        old, new = before.groups.get(name), after.groups.get(name)
        if old is None:
            changes.append(f"group {name} configured")
        elif new is None:
            changes.append(f"group {name} removed")
        elif old != new:
            fields = [
                f"{label} {a} -> {b}"
                for label, a, b in (
                    ("targets", ",".join(old.targets), ",".join(new.targets)),
                    ("ports", old.ports, new.ports),
                    ("protocols", ",".join(old.protocols), ",".join(new.protocols)),
                    ("interval", old.interval, new.interval),
                    ("jitter", old.jitter, new.jitter),
                    ("fingerprint", old.fingerprint, new.fingerprint),
                )
                if a != b
            ]
            changes.append(f"group {name}: {'; '.join(fields)}")
    return changes or ["other settings changed (no group or scope change)"]
