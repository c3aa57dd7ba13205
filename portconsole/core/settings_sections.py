"""The settings sections beside scanning, groups and sites: notifications, the console,
reports, the daemon, the store, the audit trail, logging, retention, approvals and severity.
settings.py composes them into `Settings` and loads the file; every section is a `Strict`
record (core/strict.py: unknown keys refused, fields by name).
"""

# Annotations stay objects here (no `from __future__ import annotations`): msgspec would
# evaluate each string annotation when the settings are first converted (~4 ms a start).

from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta, field

from portconsole.core.strict import Secret, Strict

Severity = Literal["low", "medium", "high", "critical"]


class NotifyTarget(Strict):
    url: Annotated[
        str, Meta(description="An apprise URL, e.g. json://127.0.0.1:8099/ or mailto://...")
    ]
    tags: Annotated[list[str], Meta(description="Tags used to route findings here.")] = field(
        default_factory=list
    )
    timeout: Annotated[
        float, Meta(gt=0, le=120, description="Seconds before this target is given up on.")
    ] = 5.0


class NotifyRoute(Strict):
    tags: Annotated[
        list[str], Meta(description="Send matching findings to targets with these tags.")
    ]
    min_severity: Annotated[Severity, Meta(description="Lowest severity this route carries.")] = (
        "low"
    )
    kinds: Annotated[list[str], Meta(description="Finding kinds; empty means all.")] = field(
        default_factory=list
    )


class NotifySettings(Strict):
    urls: Annotated[
        list[NotifyTarget | str], Meta(description="Notification targets: apprise URLs or tables.")
    ] = field(default_factory=list)
    routes: Annotated[
        list[NotifyRoute],
        Meta(description="Routing by severity and kind; none sends everything to all."),
    ] = field(default_factory=list)
    mode: Annotated[
        Literal["per_finding", "digest"],
        Meta(description="One message per finding, or one digest per scan cycle."),
    ] = "per_finding"
    title_template: Annotated[
        str,
        Meta(
            description="Title; fields: host port proto service severity kind first_seen finding_id scan_id."
        ),
    ] = "[PortConsole] {severity} {kind}: {host}:{port}/{proto}"
    body_template: Annotated[str, Meta(description="Body; same fields as the title.")] = (
        "{kind} on {host}:{port}/{proto} ({service}), severity {severity}, first seen "
        "{first_seen}, finding {finding_id}, scan {scan_id}"
    )
    rate_limit_per_minute: Annotated[
        int, Meta(ge=1, description="Messages per minute per target, at most.")
    ] = 30
    max_attempts: Annotated[
        int, Meta(ge=1, description="Delivery attempts before a message is marked dead.")
    ] = 20
    backoff_seconds: Annotated[
        float, Meta(gt=0, description="First retry delay; doubles per attempt.")
    ] = 5.0
    backoff_max_seconds: Annotated[float, Meta(gt=0, description="Longest retry delay.")] = 900.0
    webhook_secret: Annotated[
        Secret | None,
        Meta(
            description=(
                "Key for the X-PortConsole-Signature header (HMAC-SHA256 of the body) on "
                "json:// and form:// targets; see docs/notifications.md."
            )
        ),
    ] = None
    webhook_secret_env: Annotated[
        str | None,
        Meta(
            description=(
                "Name of an environment variable holding the webhook key instead "
                "(keeps it out of the config file); unset at send time, nothing is sent unsigned."
            )
        ),
    ] = None

    def targets(self) -> list[NotifyTarget]:
        return [t if isinstance(t, NotifyTarget) else NotifyTarget(url=t) for t in self.urls]


class TuiSettings(Strict):
    theme: Annotated[str, Meta(description="Theme name (a file in themes/).")] = "portconsole-dark"
    refresh_seconds: Annotated[
        float, Meta(gt=0, le=60, description="How often the console re-reads the store.")
    ] = 2.0
    bell: Annotated[
        Literal["off", "low", "medium", "high", "critical"],
        Meta(description='Ring the terminal bell for new findings this severe or worse; "off".'),
    ] = "high"


_DEFAULT_SLA: dict[Severity, float] = {"critical": 4.0, "high": 24.0, "medium": 72.0, "low": 168.0}


class ReportSettings(Strict):
    sla_hours: Annotated[
        dict[Severity, float], Meta(description="Time-to-respond target per severity, in hours.")
    ] = field(default_factory=lambda: dict(_DEFAULT_SLA))


class DaemonSettings(Strict):
    lease_seconds: Annotated[
        float,
        Meta(
            ge=1,
            le=3600,
            description=(
                "The scan leader renews its lease every third of this; one that stops "
                "renewing (stopped, hung, killed) is replaced by a follower after this many seconds."
            ),
        ),
    ] = 15.0
    leader_stale_seconds: Annotated[
        float,
        Meta(
            gt=0,
            description=(
                "Unused since lease_seconds replaced it; still accepted so that older configs load."
            ),
        ),
    ] = 30.0
    gap_grace_seconds: Annotated[
        int,
        Meta(ge=0, description="A scheduled scan later than interval + jitter + this is a gap."),
    ] = 120


class StoreSettings(Strict):
    future_skew: Annotated[
        int,
        Meta(
            ge=0,
            le=86400,
            description=(
                "Seconds an observation may lie ahead of this machine's clock. An imported "
                "report further ahead is refused; a live scan is recorded at the clock's time, with a "
                "warning."
            ),
        ),
    ] = 300


class AuditSettings(Strict):
    anchor_interval: Annotated[
        int,
        Meta(
            ge=60,
            description=(
                "Seconds between anchors: the journal's head (SEQ:HASH) published outside "
                "the data dir, so a rewrite of the whole chain is caught by `audit verify --anchor`."
            ),
        ),
    ] = 3600
    anchor_urls: Annotated[
        list[str],
        Meta(description="apprise URLs each anchor is sent to (through the notification outbox)."),
    ] = field(default_factory=list)
    anchor_file: Annotated[
        Path | None,
        Meta(
            description="A file outside the data dir that each anchor is appended to, one line each."
        ),
    ] = None


class LogSettings(Strict):
    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"] | None,
        Meta(
            description=(
                "Least severe log record written to stderr (unset: info for the daemon, "
                "warning for other commands); debug adds every nmap command line."
            )
        ),
    ] = None
    format: Annotated[
        Literal["text", "json"],
        Meta(description="text: one readable line per record; json: one JSON object per line."),
    ] = "text"


class RetentionSettings(Strict):
    scan_months: Annotated[
        int, Meta(ge=1, description="Months scan records and change events are kept.")
    ] = 12
    raw_xml_months: Annotated[int, Meta(ge=1, description="Months raw nmap XML is kept.")] = 12


class ApprovalSettings(Strict):
    separation_of_duties: Annotated[
        bool, Meta(description="Refuse an approval by the person who requested it.")
    ] = True
    review_months: Annotated[
        int, Meta(ge=1, le=36, description="Default months until an approval's review.")
    ] = 6
    insecure_services: Annotated[
        list[str], Meta(description="Service names that need a mitigation note to be approved.")
    ] = field(
        default_factory=(
            lambda: [
                "telnet",
                "ftp",
                "rsh",
                "rlogin",
                "rexec",
                "shell",
                "login",
                "exec",
                "tftp",
                "snmp",
                "vnc",
                "x11",
                "pop3",
                "imap",
                "http-proxy-plain",
                "netbios-ssn",
                "smb1",
            ]
        )
    )


_DEFAULT_KIND_SEVERITY: dict[str, Severity] = {
    "insecure_service": "high",
    "monitoring_gap": "high",
    "approved_port_gone": "medium",
    "service_changed": "medium",
    "host_gone": "medium",
    "unknown_host": "medium",
    "approval_expired": "medium",
}


class SeveritySettings(Strict):
    default: Annotated[Severity, Meta(description="Severity of a finding no rule matches.")] = (
        "medium"
    )
    high_ports: Annotated[
        list[int],
        Meta(description="Databases and remote administration: findings on these are high."),
    ] = field(
        default_factory=(
            lambda: [
                21,
                22,
                23,
                135,
                139,
                445,
                1433,
                1521,
                2375,
                3306,
                3389,
                5432,
                5900,
                5984,
                6379,
                9200,
                11211,
                27017,
            ]
        )
    )
    by_kind: Annotated[
        dict[str, Severity],
        Meta(description="Severity per finding kind (unapproved_port uses the port rules)."),
    ] = field(default_factory=lambda: dict(_DEFAULT_KIND_SEVERITY))
    by_port: Annotated[
        dict[str, Severity], Meta(description='Severity per port, e.g. {"8080" = "low"}.')
    ] = field(default_factory=dict)
