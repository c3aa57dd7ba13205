"""The settings sections beside scanning and approvals: notifications, the console, reports,
the daemon, the store, the audit trail and logging, and what every section model shares
(`_Strict`: unknown keys refused; factories of empty defaults). settings.py composes them
into `Settings` and loads the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Severity = Literal["low", "medium", "high", "critical"]


# The factories of empty defaults. Not the builtins `list` and `dict`: pydantic reads each
# factory's signature when it builds a model, and a builtin's signature is parsed from its
# text by the tokenizer, whose first use compiles a large regex (~5 ms at every start-up).
def _no_items() -> list[Any]:
    return []


def _no_entries() -> dict[str, Any]:
    return {}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=False)


class NotifyTarget(_Strict):
    url: str = Field(description="An apprise URL, e.g. json://127.0.0.1:8099/ or mailto://...")
    tags: list[str] = Field(
        default_factory=_no_items, description="Tags used to route findings here."
    )
    timeout: float = Field(
        5.0, gt=0, le=120, description="Seconds before this target is given up on."
    )


class NotifyRoute(_Strict):
    tags: list[str] = Field(description="Send matching findings to targets with these tags.")
    min_severity: Severity = Field("low", description="Lowest severity this route carries.")
    kinds: list[str] = Field(
        default_factory=_no_items, description="Finding kinds; empty means all."
    )


class NotifySettings(_Strict):
    urls: list[NotifyTarget | str] = Field(
        default_factory=_no_items, description="Notification targets: apprise URLs or tables."
    )
    routes: list[NotifyRoute] = Field(
        default_factory=_no_items,
        description="Routing by severity and kind; none sends everything to all.",
    )
    mode: Literal["per_finding", "digest"] = Field(
        "per_finding", description="One message per finding, or one digest per scan cycle."
    )
    title_template: str = Field(
        "[PortConsole] {severity} {kind}: {host}:{port}/{proto}",
        description="Title; fields: host port proto service severity kind first_seen finding_id scan_id.",
    )
    body_template: str = Field(
        "{kind} on {host}:{port}/{proto} ({service}), severity {severity}, first seen "
        "{first_seen}, finding {finding_id}, scan {scan_id}",
        description="Body; same fields as the title.",
    )
    rate_limit_per_minute: int = Field(
        30, ge=1, description="Messages per minute per target, at most."
    )
    max_attempts: int = Field(
        20, ge=1, description="Delivery attempts before a message is marked dead."
    )
    backoff_seconds: float = Field(5.0, gt=0, description="First retry delay; doubles per attempt.")
    backoff_max_seconds: float = Field(900.0, gt=0, description="Longest retry delay.")
    webhook_secret: SecretStr | None = Field(
        None,
        description="Key for the X-PortConsole-Signature header (HMAC-SHA256 of the body) on "
        "json:// and form:// targets; see docs/notifications.md.",
    )
    webhook_secret_env: str | None = Field(
        None,
        description="Name of an environment variable holding the webhook key instead "
        "(keeps it out of the config file); unset at send time, nothing is sent unsigned.",
    )

    def targets(self) -> list[NotifyTarget]:
        return [t if isinstance(t, NotifyTarget) else NotifyTarget(url=t) for t in self.urls]


class TuiSettings(_Strict):
    theme: str = Field("portconsole-dark", description="Theme name (a file in themes/).")
    refresh_seconds: float = Field(
        2.0, gt=0, le=60, description="How often the console re-reads the store."
    )
    bell: Literal["off", "low", "medium", "high", "critical"] = Field(
        "high", description='Ring the terminal bell for new findings this severe or worse; "off".'
    )


_DEFAULT_SLA: dict[Severity, float] = {"critical": 4.0, "high": 24.0, "medium": 72.0, "low": 168.0}


class ReportSettings(_Strict):
    sla_hours: dict[Severity, float] = Field(
        default_factory=lambda: dict(_DEFAULT_SLA),
        description="Time-to-respond target per severity, in hours.",
    )


class DaemonSettings(_Strict):
    lease_seconds: float = Field(
        15.0,
        ge=1,
        le=3600,
        description="The scan leader renews its lease every third of this; one that stops "
        "renewing (stopped, hung, killed) is replaced by a follower after this many seconds.",
    )
    leader_stale_seconds: float = Field(
        30.0,
        gt=0,
        description="Unused since lease_seconds replaced it; still accepted so that older "
        "configs load.",
    )
    gap_grace_seconds: int = Field(
        120, ge=0, description="A scheduled scan later than interval + jitter + this is a gap."
    )


class StoreSettings(_Strict):
    future_skew: int = Field(
        300,
        ge=0,
        le=86400,
        description="Seconds an observation may lie ahead of this machine's clock. An imported "
        "report further ahead is refused; a live scan is recorded at the clock's time, with a "
        "warning.",
    )


class AuditSettings(_Strict):
    anchor_interval: int = Field(
        3600,
        ge=60,
        description="Seconds between anchors: the journal's head (SEQ:HASH) published outside "
        "the data dir, so a rewrite of the whole chain is caught by `audit verify --anchor`.",
    )
    anchor_urls: list[str] = Field(
        default_factory=_no_items,
        description="apprise URLs each anchor is sent to (through the notification outbox).",
    )
    anchor_file: Path | None = Field(
        None,
        description="A file outside the data dir that each anchor is appended to, one line each.",
    )


class LogSettings(_Strict):
    level: Literal["debug", "info", "warning", "error", "critical"] | None = Field(
        None,
        description="Least severe log record written to stderr (unset: info for the daemon, "
        "warning for other commands); debug adds every nmap command line.",
    )
    format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per record; json: one JSON object per line."
    )
