"""Journal events for a SIEM: JSON Lines as recorded, ArcSight CEF, or RFC 5424 syslog.

`portconsole events` streams the journal (docs/journal.md) one event a line. JSON Lines is
the event exactly as recorded (with its hash, so a receiver can check the chain). CEF and
syslog map the event field by field (the table is in the README's SIEM section) and escape
per their specs: every value that came from the network (service banners, host names, free
text in details) can only ever land inside an escaped field, never break a line or a header.

`follow_records` polls the journal's tip: the journal is append-only and every writer is
another process, so there is nothing to subscribe to, and the tip is one read of the newest
segment's end.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from portconsole import __version__
from portconsole.core.timeutil import iso, parse_iso

if TYPE_CHECKING:  # the CLI's parser reads FORMATS; the journal is not needed for that
    from portconsole.core.adapters.journal import AuditLog

EventFormat = Literal["jsonl", "cef", "syslog"]
FORMATS: tuple[EventFormat, ...] = ("jsonl", "cef", "syslog")

VENDOR = "PortConsole"
PRODUCT = "PortConsole"
APP_NAME = "portconsole"
# RFC 5424 structured data needs an enterprise number; 32473 is the one RFC 5612 reserves
# for documentation and examples (PortConsole has none of its own).
SD_ID = "portconsole@32473"
# Facility 13, "log audit": the journal is an audit trail.
SYSLOG_FACILITY = 13

_CEF_SEVERITY = {"low": 3, "medium": 5, "high": 8, "critical": 10}
# RFC 5424 severities: 2 critical, 3 error, 4 warning, 5 notice, 6 informational.
_SYSLOG_SEVERITY = {"low": 5, "medium": 4, "high": 3, "critical": 2}


# ----- reading -------------------------------------------------------------------------------


def _after(record: Mapping[str, Any], since: datetime | None) -> bool:
    return since is None or parse_iso(str(record["at"])) >= since


def journal_records(audit: AuditLog, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Every event with `at` >= since, in chain order, as recorded."""
    for record in audit.records():
        if _after(record, since):
            yield record


def follow_records(
    audit: AuditLog,
    since: datetime | None = None,
    *,
    poll_seconds: float = 1.0,
    stop: threading.Event | None = None,
) -> Iterator[dict[str, Any]]:
    """Each new event as it is appended, until `stop` is set; with `since`, the events from
    then first (without it, following starts at the head, as `tail -f -n 0`)."""
    stop = stop or threading.Event()
    seq = audit.tip().seq
    if since is not None:
        seq = 0
        for record in audit.records():
            seq = int(record["seq"])
            if _after(record, since):
                yield record
    while not stop.wait(poll_seconds):
        if audit.tip().seq <= seq:
            continue
        for record in audit.records_after(seq):
            seq = int(record["seq"])
            yield record


# ----- the mapping ---------------------------------------------------------------------------


def _severity_of(record: Mapping[str, Any]) -> str | None:
    details = record.get("details") or {}
    value = details.get("severity") if isinstance(details, Mapping) else None
    return str(value) if value in _CEF_SEVERITY else None


def _compact(value: Any) -> str:
    # ASCII only: every control, bidi or invisible character arrives as a \uXXXX escape.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _printable(value: object) -> str:
    """Text for a SIEM field: control and invisible format characters (bidi overrides,
    zero-width) become U+FFFD, so network text cannot reorder or hide what is shown."""
    return "".join(
        "\ufffd" if unicodedata.category(c) in ("Cc", "Cf") and c not in "\r\n" else c
        for c in str(value)
    )


def _fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The event's fields every format maps (absent ones are None)."""
    actor = record.get("actor") or {}
    resource = record.get("resource") or {}
    details = record.get("details") or {}
    return {
        "seq": record.get("seq"),
        "id": record.get("id"),
        "at": parse_iso(str(record["at"])),
        "recorded_at": parse_iso(str(record.get("recorded_at") or record["at"])),
        "action": str(record.get("action", "")),
        "outcome": str(record.get("outcome", "")),
        "origin": record.get("origin"),
        "user": actor.get("user"),
        "sudo_user": actor.get("sudo_user"),
        "ssh_client": actor.get("ssh_client"),
        "actor_host": actor.get("host"),
        "host": resource.get("host"),
        "port": resource.get("port"),
        "proto": resource.get("proto"),
        "finding_id": resource.get("finding_id"),
        "scan_id": resource.get("scan_id"),
        "group": resource.get("group") or details.get("group"),
        "severity": _severity_of(record),
        "hash": record.get("hash"),
        "details": _compact(details) if details else None,
    }


# ----- CEF -----------------------------------------------------------------------------------


def cef_header_escape(value: object) -> str:
    """A CEF header field: backslash and pipe escaped; line breaks become spaces."""
    text = _printable(value).replace("\\", "\\\\").replace("|", "\\|")
    return re.sub(r"[\r\n]+", " ", text)


def cef_value_escape(value: object) -> str:
    """A CEF extension value: backslash and equals escaped, line breaks as \\n and \\r."""
    text = _printable(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _ipv4(value: object) -> bool:
    try:
        return isinstance(ipaddress.ip_address(str(value)), ipaddress.IPv4Address)
    except ValueError:
        return False


def to_cef(record: Mapping[str, Any]) -> str:
    """`CEF:0|PortConsole|PortConsole|VERSION|ACTION|NAME|SEVERITY|key=value ...`."""
    f = _fields(record)
    severity = _CEF_SEVERITY.get(f["severity"] or "", 5 if f["outcome"] == "failure" else 1)
    name = f"{f['action']} {f['outcome']}".strip()
    header = "|".join(
        cef_header_escape(part)
        for part in ("CEF:0", VENDOR, PRODUCT, __version__, f["action"], name, severity)
    )
    ext: list[tuple[str, object]] = [
        ("rt", int(f["recorded_at"].timestamp() * 1000)),
        ("end", int(f["at"].timestamp() * 1000)),
        ("act", f["action"]),
        ("outcome", f["outcome"]),
        ("externalId", f["id"]),
        ("suser", f["user"]),
        ("dvchost", f["actor_host"]),
        ("src" if _ipv4(f["ssh_client"]) else "shost", f["ssh_client"]),
        ("dst" if _ipv4(f["host"]) else "dhost", f["host"]),
        ("dpt", f["port"]),
        ("proto", str(f["proto"]).upper() if f["proto"] else None),
        ("cn1Label", "seq"),
        ("cn1", f["seq"]),
        ("cs1Label", "findingId"),
        ("cs1", f["finding_id"]),
        ("cs2Label", "scanId"),
        ("cs2", f["scan_id"]),
        ("cs3Label", "origin"),
        ("cs3", f["origin"]),
        ("cs4Label", "group"),
        ("cs4", f["group"]),
        ("cs5Label", "sudoUser"),
        ("cs5", f["sudo_user"]),
        ("cs6Label", "eventHash"),
        ("cs6", f["hash"]),
        ("msg", f["details"]),
    ]
    present = [(k, v) for k, v in ext if v not in (None, "")]
    # A label without its value says nothing: drop labels whose field is absent.
    keys = {k for k, _ in present}
    present = [(k, v) for k, v in present if not k.endswith("Label") or k[:-5] in keys]
    return header + "|" + " ".join(f"{k}={cef_value_escape(v)}" for k, v in present)


# ----- syslog (RFC 5424) ---------------------------------------------------------------------


def sd_value_escape(value: object) -> str:
    """An SD-PARAM value: `"`, `\\` and `]` escaped with a backslash (RFC 5424 6.3.3)."""
    text = re.sub(r"[\r\n]+", " ", _printable(value))
    return re.sub(r'(["\\\]])', r"\\\1", text)


def _header_token(value: object, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, bounded; `-` when empty."""
    text = "".join(c for c in str(value or "") if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def to_syslog(record: Mapping[str, Any]) -> str:
    """`<PRI>1 TIMESTAMP HOST portconsole - ACTION [portconsole@32473 ...] DETAILS-JSON`."""
    f = _fields(record)
    severity = _SYSLOG_SEVERITY.get(f["severity"] or "", 4 if f["outcome"] == "failure" else 6)
    timestamp = iso(f["at"])
    params = [
        ("seq", f["seq"]),
        ("id", f["id"]),
        ("action", f["action"]),
        ("outcome", f["outcome"]),
        ("origin", f["origin"]),
        ("user", f["user"]),
        ("sudoUser", f["sudo_user"]),
        ("sshClient", f["ssh_client"]),
        ("host", f["host"]),
        ("port", f["port"]),
        ("proto", f["proto"]),
        ("findingId", f["finding_id"]),
        ("scanId", f["scan_id"]),
        ("group", f["group"]),
        ("severity", f["severity"]),
        ("recordedAt", iso(f["recorded_at"])),
        ("hash", f["hash"]),
    ]
    data = " ".join(f'{k}="{sd_value_escape(v)}"' for k, v in params if v not in (None, ""))
    # MSG: the details as JSON, ASCII only (so no BOM) and on one line.
    message = f["details"] or ""
    parts = [
        f"<{SYSLOG_FACILITY * 8 + severity}>1",
        timestamp,
        _header_token(f["actor_host"], 255),
        APP_NAME,
        "-",
        _header_token(f["action"], 32),
        f"[{SD_ID} {data}]",
    ]
    return " ".join(parts) + (f" {message}" if message else "")


# ----- JSON Lines ----------------------------------------------------------------------------


def to_jsonl(record: Mapping[str, Any]) -> str:
    """The event as recorded, one line; ASCII only (every line break, control and bidi
    character inside a string is a JSON escape), the same values the hash covers."""
    return json.dumps(dict(record), separators=(",", ":"))


FORMATTERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "jsonl": to_jsonl,
    "cef": to_cef,
    "syslog": to_syslog,
}

__all__ = [
    "FORMATS",
    "FORMATTERS",
    "EventFormat",
    "cef_header_escape",
    "cef_value_escape",
    "follow_records",
    "journal_records",
    "sd_value_escape",
    "to_cef",
    "to_jsonl",
    "to_syslog",
]
