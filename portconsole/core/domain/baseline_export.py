"""Export the active approvals as a baseline file that imports back to the same approvals.

Writing YAML from approvals is pure; rules with identical content are merged so the file
stays readable, and values every rule shares go into `defaults`. The format is
domain/baseline_format.py (sample_baselines/README.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import yaml

from portconsole.core.domain.approval import Approval
from portconsole.core.domain.baseline_format import FORMAT_VERSION, shown_date
from portconsole.core.domain.targets import parse_ports
from portconsole.core.timeutil import iso, utcnow


def _date_text(moment: datetime) -> str:
    return shown_date(moment.astimezone(UTC))


def _rule_of(approval: Approval) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "proto": approval.proto,
        "service": approval.service,
        "product": approval.product_pattern,
        "justification": approval.justification,
        "owner": approval.owner,
        "requester": approval.requester,
        "approver": approval.approver,
        "ticket": approval.ticket,
        "approved_at": _date_text(approval.approved_at),
        "review_by": _date_text(approval.review_by),
        "mitigation": approval.mitigation,
    }
    return rule


def _ip_sort_key(host: str) -> tuple[int, int]:
    address = ipaddress.ip_address(host)
    return (address.version, int(address))


def export_baseline(approvals: Iterable[Approval], now: datetime | None = None) -> str:
    """YAML for the active approvals that imports back to the same set of approvals.

    Rules with identical content are merged: hosts with the same ports share a selector,
    and values every rule shares go into `defaults`.
    """
    active = [a for a in approvals if a.active]
    # rule content -> host -> ports
    by_content: dict[tuple[tuple[str, Any], ...], dict[str, list[int]]] = {}
    for approval in active:
        content = tuple(_rule_of(approval).items())
        by_content.setdefault(content, {}).setdefault(approval.host, []).append(approval.port)
    # (hosts, ports text, content) for each merged rule
    merged: list[tuple[tuple[str, ...], str, dict[str, Any]]] = []
    for content, hosts in by_content.items():
        by_ports: dict[str, list[str]] = {}
        for host, ports in hosts.items():
            spec = str(parse_ports(",".join(str(p) for p in sorted(set(ports)))))
            by_ports.setdefault(spec, []).append(host)
        for ports_text, host_list in by_ports.items():
            merged.append((tuple(sorted(host_list, key=_ip_sort_key)), ports_text, dict(content)))
    merged.sort(key=lambda m: (_ip_sort_key(m[0][0]), m[2]["proto"], parse_ports(m[1]).ranges))

    shared: dict[str, Any] = {}
    if merged:
        for name in ("proto", "owner", "requester", "approver", "approved_at", "review_by"):
            values = {m[2][name] for m in merged}
            if len(values) == 1:
                shared[name] = values.pop()
    entries: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for rule_hosts, ports_text, rule_content in merged:
        rule: dict[str, Any] = {"ports": ports_text}
        for name, value in rule_content.items():
            if name in shared or (value == "" and name in ("product", "ticket", "mitigation")):
                continue
            rule[name] = value
        entries.setdefault(rule_hosts, []).append(rule)

    document: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "description": f"Exported by PortConsole at {iso(now or utcnow())}: "
        f"{len(active)} active approvals",
    }
    if shared:
        document["defaults"] = shared
    document["hosts"] = [
        {"selector": list(entry_hosts), "rules": rules} for entry_hosts, rules in entries.items()
    ]
    header = (
        "# PortConsole baseline export. Import with `portconsole baseline import FILE`.\n"
        "# Format: sample_baselines/README.md\n"
    )
    return header + yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
