"""The first section of every report: scope and parameters, then the limits of the evidence.

Laid out from the document's "scope" block (services/report_scope.py): what was monitored
(scope, groups with targets, ports, protocols, interval and fingerprint mode), retention, the
settings fingerprint and every settings change in the period, when history starts, the
clock, the generator, the period and when it was generated, and what the evidence does not
cover. Shown first in the evidence pack and in the point-in-time report alike.
"""

from __future__ import annotations

from typing import Any

from portconsole.core.domain.report_layout import Duration, Prose, Section, Table


def _clock_text(clock: dict[str, Any]) -> str:
    synced = clock.get("ntp_synchronized")
    state = {
        True: "NTP synchronised",
        False: "NOT NTP synchronised",
        None: "synchronisation not known",
    }
    return f"{clock.get('source', '')}: {state.get(synced, 'synchronisation not known')}"


def scope_section(doc: dict[str, Any]) -> Section:
    """Scope and parameters (the document's "scope" block)."""
    scope = doc["scope"]
    section = Section("scope", "Scope and parameters")
    period = scope["period"]
    when = f"at {period['at']}" if "at" in period else f"from {period['from']} to {period['to']}"
    section.paragraphs.append(
        Prose(
            f"This report covers {when}, generated at {scope['generated_at']} by "
            f"{scope['generator']['name']} {scope['generator']['version']}. History starts at "
            f"{scope['history_starts'] or '(no scan on record)'}, the first scan on record."
        )
    )
    for limit in scope["limits"]:
        section.paragraphs.append(Prose(limit))
    about = Table("scope", "Scope and parameters", ["Item", "Value"])
    about.add([Prose("Scope (CIDR)"), ", ".join(scope["scope"])])
    about.add([Prose("Period"), Prose(when)])
    about.add([Prose("Generated at (UTC)"), Prose(scope["generated_at"])])
    about.add([Prose("History starts (first scan)"), Prose(scope["history_starts"] or "none")])
    clock = scope["clock"]
    about.add(
        [Prose("Clock"), _clock_text(clock)],
        "CLOCK NOT SYNCHRONISED" if clock.get("ntp_synchronized") is False else "",
    )
    generator = scope["generator"]
    about.add([Prose("Generator"), f"{generator['name']} {generator['version']}"])
    about.add([Prose("Settings fingerprint (sha256)"), scope["settings_sha256"] or "none recorded"])
    about.add([Prose("Groups read from"), Prose(scope["groups_source"])])
    retention = scope["retention"]
    about.add([Prose("Retention: scan records"), f"{retention['scan_months']} months"])
    about.add([Prose("Retention: raw nmap XML"), f"{retention['raw_xml_months']} months"])
    about.add([Prose("Retention: journal"), Prose(retention["journal"])])
    section.tables.append(about)
    groups = Table(
        "scope_groups",
        "Target groups",
        ["Group", "Targets", "Ports", "Protocols", "Interval", "Jitter", "Window", "Fingerprint"],
        empty="No target group configured.",
    )
    for g in scope["groups"]:
        groups.add(
            [
                g["name"],
                ", ".join(g["targets"]),
                g["ports"],
                ", ".join(g["protocols"]),
                Duration(g["interval_seconds"]),
                Duration(g["jitter_seconds"]),
                Duration(g["window_seconds"]),
                g["fingerprint"],
            ]
        )
    section.tables.append(groups)
    changes = Table(
        "settings_changes",
        "Settings changes in the period",
        ["At", "By", "sha256", "Previous sha256", "What changed"],
        empty="No settings change in the period.",
    )
    for change in scope["settings_changes"]:
        changes.add(
            [
                change["at"],
                change["actor"],
                change["sha256"],
                change["previous_sha256"],
                "; ".join(change.get("changes", [])),
            ],
            "SETTINGS CHANGED" if change["previous_sha256"] else "",
        )
    section.tables.append(changes)
    outside = Table("out_of_scope", "Not covered by this evidence", ["What"])
    for text in scope["out_of_scope"]:
        outside.add([Prose(text)])
    section.tables.append(outside)
    return section
