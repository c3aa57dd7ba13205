"""Baseline files: YAML that says which ports may be open where, and why.

The format is documented in sample_baselines/README.md. Files are read with a SafeLoader
subclass (no Python objects, no code) that also keeps the line of every key and list item,
so `lint_baseline` can point at each broken field. Lint reports every problem it finds, not
just the first; `load_baseline` refuses a file with any problem.

Lint checks syntax and policy but not scope, so the sample files' documentation-range
examples pass; import also checks every address against the configured scope.
Host names are refused as selectors: an approval is for an address, and resolving names
while linting would make the result depend on DNS.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from portconsole.core.adapters.dns import resolve_host_name
from portconsole.core.domain.approval import (
    PROTOCOLS,
    Approval,
    ApprovalSpec,
    is_insecure,
    is_placeholder,
    person_of,
)
from portconsole.core.domain.targets import Scope, expand_targets, parse_ports, parse_target
from portconsole.core.errors import TargetError, UserError
from portconsole.core.settings import Settings
from portconsole.core.timeutil import add_months, iso, parse_iso, utcnow

FORMAT_VERSION = 1
MAX_FILE_BYTES = 1_000_000
# One approval per host and port: a rule for a /16 times ports 1-1024 is not a baseline.
MAX_APPROVALS = 20_000
# Past this, a file is too broken to be worth listing; also bounds work on alias bombs.
MAX_PROBLEMS = 500
# Addresses all selectors may name together (aliases can repeat one big selector).
MAX_SELECTED = 262_144

TOP_KEYS = ("version", "description", "defaults", "hosts")
HOST_KEYS = ("selector", "description", "defaults", "rules")
RULE_KEYS = (
    "ports",
    "proto",
    "service",
    "product",
    "justification",
    "owner",
    "requester",
    "approver",
    "ticket",
    "approved_at",
    "review_by",
    "mitigation",
    "description",
)
# Fields a `defaults` mapping may set for the rules below it.
DEFAULT_KEYS = tuple(k for k in RULE_KEYS if k not in ("ports", "description"))
TEXT_KEYS = ("service", "product", "justification", "owner", "requester", "approver", "mitigation")

_ANY_SCOPE = Scope(["0.0.0.0/0", "::/0"])
_HOST_RANGE = re.compile(r"^[\d.\-]+$")


@dataclass(frozen=True, slots=True)
class LintProblem:
    """One problem in a baseline file, with where it is."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class BaselineError(UserError):
    """A baseline file has problems; `problems` lists them all (the message names the first)."""

    def __init__(self, path: str, problems: Sequence[LintProblem]) -> None:
        self.path = path
        self.problems = list(problems)
        more = len(self.problems) - 1
        tail = f" (and {more} more problems)" if more else ""
        super().__init__(f"{self.problems[0]}{tail}")


# -- a YAML loader that remembers lines ------------------------------------------------------


class _Map(dict[Any, Any]):
    """A mapping from YAML with the line of the mapping and of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class _Seq(list[Any]):
    """A sequence from YAML with the line of the sequence and of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """yaml.SafeLoader that records node start lines and reports duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be plain text", key_node.start_mark
            ) from None
        line = key_node.start_mark.line + 1
        if key in result:
            loader.duplicates.append((line, str(key)))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq()
    result.line = node.start_mark.line + 1
    result.item_lines = []
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_lines.append(child.start_mark.line + 1)
    return result


def _construct_timestamp(loader: _LineLoader, node: yaml.ScalarNode) -> str:
    # PyYAML raises a bare ValueError (no line) on 2026-13-01; keep the text and let lint
    # parse it, so a bad date is one problem at its line like any other.
    return str(loader.construct_scalar(node))


_LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


# -- analysis ------------------------------------------------------------------------------


@dataclass(slots=True)
class Baseline:
    """The result of reading a baseline file: problems, or the specs it approves."""

    file: str
    problems: list[LintProblem] = field(default_factory=list)
    specs: list[ApprovalSpec] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # every address a selector names


@dataclass(slots=True)
class _Value:
    value: Any
    line: int
    where: str  # the field path shown in problems


class _Reader:
    def __init__(
        self,
        file: str,
        settings: Settings,
        groups: Mapping[str, Sequence[str]],
        scope: Scope | None,
    ) -> None:
        self.file = file
        self.settings = settings
        self.groups = groups
        self.scope = scope
        self.result = Baseline(file)
        # (host, port, proto) -> line of the rule that approved it first
        self.claimed: dict[tuple[str, int, str], int] = {}
        self.hosts: dict[str, None] = {}
        self.pairs = 0  # host:port pairs examined, duplicates included
        self.selected = 0  # addresses named by selectors, repeats included
        self.stopped = False
        self.expansions: dict[str, list[str]] = {}

    def problem(self, line: int, where: str, message: str) -> None:
        if self.stopped:
            return
        if len(self.result.problems) >= MAX_PROBLEMS:
            self.stop(line, where, f"more than {MAX_PROBLEMS} problems; fix these first")
            return
        self.result.problems.append(LintProblem(self.file, line, where, message))

    def stop(self, line: int, where: str, message: str) -> None:
        """Record a last problem and read no further (the file is too big or too broken)."""
        if not self.stopped:
            self.result.problems.append(LintProblem(self.file, line, where, message))
            self.stopped = True

    # ---- whole file

    def read_text(self, text: str) -> None:
        loader = _LineLoader(text)
        try:
            data = loader.get_single_data()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark is not None else 1
            self.problem(line, "(file)", f"not valid YAML: {error.problem or error}")
            return
        except (yaml.YAMLError, ValueError, TypeError, RecursionError) as error:
            self.problem(1, "(file)", f"not valid YAML: {error}")
            return
        finally:
            loader.dispose()
        for line, key in loader.duplicates:
            self.problem(line, key, "duplicate key: the earlier value would be silently lost")
        if not isinstance(data, _Map):
            self.problem(1, "(file)", "a baseline is a mapping with `version: 1` and `hosts:`")
            return
        self.read_top(data)
        self.result.hosts = list(self.hosts)

    def read_top(self, data: _Map) -> None:
        self.unknown_keys(data, TOP_KEYS, "")
        version = data.get("version")
        if "version" not in data:
            self.problem(data.line, "version", f"missing: add `version: {FORMAT_VERSION}`")
        elif version != FORMAT_VERSION or isinstance(version, bool):
            self.problem(
                data.key_lines["version"],
                "version",
                f"unsupported version {version!r}; this PortConsole reads version {FORMAT_VERSION}",
            )
        self.text_field(data, "description", "description")
        defaults = self.read_defaults(data, {}, "defaults")
        hosts = data.get("hosts")
        if "hosts" not in data:
            self.problem(data.line, "hosts", "missing: list the hosts and their rules")
            return
        if not isinstance(hosts, _Seq):
            self.problem(data.key_lines["hosts"], "hosts", "must be a list of host entries")
            return
        for index, (entry, line) in enumerate(zip(hosts, hosts.item_lines, strict=True)):
            if self.stopped:
                return
            self.read_host(entry, line, f"hosts[{index}]", defaults)

    def unknown_keys(self, data: _Map, allowed: Sequence[str], where: str) -> None:
        for key, line in data.key_lines.items():
            if key not in allowed:
                self.problem(
                    line,
                    f"{where}.{key}" if where else str(key),
                    f"unknown key; expected one of: {', '.join(allowed)}",
                )

    def text_field(self, data: _Map, key: str, where: str) -> str | None:
        if key not in data:
            return None
        value = data[key]
        if isinstance(value, str):
            return value
        self.problem(data.key_lines[key], where, "must be text (quote it)")
        return None

    def read_defaults(
        self, data: _Map, inherited: dict[str, _Value], where: str
    ) -> dict[str, _Value]:
        merged = dict(inherited)
        key = "defaults"
        if key not in data:
            return merged
        block = data[key]
        if not isinstance(block, _Map):
            self.problem(data.key_lines[key], where, "must be a mapping of rule fields")
            return merged
        self.unknown_keys(block, DEFAULT_KEYS, where)
        for name in DEFAULT_KEYS:
            if name in block:
                merged[name] = _Value(block[name], block.key_lines[name], f"{where}.{name}")
        return merged

    # ---- hosts and selectors

    def read_host(self, entry: Any, line: int, where: str, defaults: dict[str, _Value]) -> None:
        if not isinstance(entry, _Map):
            self.problem(line, where, "each host entry is a mapping with `selector:` and `rules:`")
            return
        self.unknown_keys(entry, HOST_KEYS, where)
        self.text_field(entry, "description", f"{where}.description")
        hosts = self.read_selector(entry, where)
        local = self.read_defaults(entry, defaults, f"{where}.defaults")
        rules = entry.get("rules")
        if "rules" not in entry:
            self.problem(entry.line, f"{where}.rules", "missing: give at least one rule")
            return
        if not isinstance(rules, _Seq) or not rules:
            self.problem(
                entry.key_lines["rules"], f"{where}.rules", "must be a non-empty list of rules"
            )
            return
        for index, (rule, rule_line) in enumerate(zip(rules, rules.item_lines, strict=True)):
            if self.stopped:
                return
            self.read_rule(rule, rule_line, f"{where}.rules[{index}]", hosts, local)

    def read_selector(self, entry: _Map, where: str) -> list[str] | None:
        """The addresses a selector names, or None when it has a problem."""
        key = f"{where}.selector"
        if "selector" not in entry:
            self.problem(entry.line, key, "missing: name addresses, CIDRs, ranges or group:NAME")
            return None
        raw = entry["selector"]
        line = entry.key_lines["selector"]
        if isinstance(raw, str):
            items, lines = [raw], [line]
        elif isinstance(raw, _Seq) and raw:
            items, lines = list(raw), raw.item_lines
        else:
            self.problem(line, key, "must be an address, CIDR, range, group:NAME or a list of them")
            return None
        addresses: dict[str, None] = {}
        ok = True
        for index, (item, item_line) in enumerate(zip(items, lines, strict=True)):
            found = self.read_selector_item(item, item_line, f"{key}[{index}]")
            if found is None:
                ok = False
                continue
            self.selected += len(found)
            if self.selected > MAX_SELECTED:
                self.stop(
                    item_line, key, f"selectors name more than {MAX_SELECTED} addresses in all"
                )
                return None
            addresses.update(dict.fromkeys(found))
        if not ok:
            return None
        self.hosts.update(dict.fromkeys(addresses))
        return list(addresses)

    def read_selector_item(self, item: Any, line: int, where: str) -> list[str] | None:
        if not isinstance(item, str) or not item.strip():
            self.problem(line, where, f"{item!r} is not an address, CIDR, range or group:NAME")
            return None
        text = item.strip()
        if text in self.expansions:
            return self.expansions[text]
        found = self.expand_selector_item(text, line, where)
        if found is not None:
            self.expansions[text] = found
        return found

    def expand_selector_item(self, text: str, line: int, where: str) -> list[str] | None:
        if text.startswith("group:"):
            return self.read_group(text[6:].strip(), line, where)
        try:
            if "/" in text:
                network = ipaddress.ip_network(text, strict=True)
                if network.num_addresses > 65536:
                    self.problem(
                        line,
                        where,
                        f"{text} has {network.num_addresses} addresses; the limit is 65536",
                    )
                    return None
            elif not (":" in text or _HOST_RANGE.match(text)):
                self.problem(
                    line,
                    where,
                    f"{text!r} is not an address, CIDR, range or group:NAME "
                    "(host names are not accepted: approvals are per address)",
                )
                return None
            addresses = list(parse_target(text, _ANY_SCOPE).addresses)
        except ValueError as error:
            hint = str(error)
            if "has host bits set" in hint:
                fixed = ipaddress.ip_network(text, strict=False)
                hint = f"{text} has host bits set; did you mean {fixed}?"
            self.problem(line, where, f"bad CIDR: {hint}")
            return None
        except TargetError as error:
            self.problem(line, where, str(error))
            return None
        return self.in_scope(addresses, line, where)

    def read_group(self, name: str, line: int, where: str) -> list[str] | None:
        if name not in self.groups:
            known = ", ".join(sorted(self.groups)) or "none are configured"
            self.problem(line, where, f"unknown group {name!r} (groups: {known})")
            return None
        targets = list(self.groups[name])
        try:
            if self.scope is not None:
                return expand_targets(targets, self.scope, resolve_host_name)
            # Lint does not resolve host names (no DNS while linting) and ignores scope.
            found: dict[str, None] = {}
            for target in targets:
                if ":" in target or _HOST_RANGE.match(target.split("/")[0]):
                    for address in parse_target(target, _ANY_SCOPE).addresses:
                        found.setdefault(address, None)
            return list(found)
        except TargetError as error:
            self.problem(line, where, f"group {name!r}: {error}")
            return None

    def in_scope(self, addresses: list[str], line: int, where: str) -> list[str] | None:
        if self.scope is None:
            return addresses
        outside = [a for a in addresses if not self.scope.contains_address(a)]
        if outside:
            self.problem(
                line,
                where,
                f"{outside[0]} is outside the configured scope "
                f"({', '.join(str(n) for n in self.scope.networks)}); a baseline can only be "
                "imported for hosts PortConsole may scan",
            )
            return None
        return addresses

    # ---- rules

    def read_rule(
        self,
        rule: Any,
        line: int,
        where: str,
        hosts: list[str] | None,
        defaults: dict[str, _Value],
    ) -> None:
        if not isinstance(rule, _Map):
            self.problem(
                line, where, "each rule is a mapping with ports, service, justification, ..."
            )
            return
        before = len(self.result.problems)
        self.unknown_keys(rule, RULE_KEYS, where)
        values = dict(defaults)
        for name in RULE_KEYS:
            if name in rule:
                values[name] = _Value(rule[name], rule.key_lines[name], f"{where}.{name}")
        policy = self.settings.approval

        def missing(name: str, what: str) -> None:
            self.problem(rule.line, f"{where}.{name}", f"missing: {what}")

        ports = None
        if "ports" not in values:
            missing("ports", "give ports or ranges such as 80,443 or 8000-8100")
        else:
            item = values["ports"]
            if isinstance(item.value, bool) or not isinstance(item.value, int | str):
                self.problem(item.line, item.where, "must be ports such as 80,443 or 8000-8100")
            else:
                try:
                    ports = parse_ports(str(item.value))
                except TargetError as error:
                    self.problem(item.line, item.where, str(error))

        proto = "tcp"
        if "proto" in values:
            item = values["proto"]
            if not isinstance(item.value, str) or item.value.strip().lower() not in PROTOCOLS:
                self.problem(item.line, item.where, f"must be one of {', '.join(PROTOCOLS)}")
            else:
                proto = item.value.strip().lower()

        text: dict[str, str] = {}
        for name in (*TEXT_KEYS, "ticket"):
            if name not in values:
                continue
            item = values[name]
            if (
                name == "ticket"
                and isinstance(item.value, int)
                and not isinstance(item.value, bool)
            ):
                text[name] = str(item.value)
            elif isinstance(item.value, str):
                text[name] = item.value.strip()
            else:
                self.problem(item.line, item.where, "must be text (quote it)")
                text[name] = ""

        def line_of(name: str) -> int:
            return values[name].line if name in values else rule.line

        def where_of(name: str) -> str:
            return values[name].where if name in values else f"{where}.{name}"

        service = text.get("service", "")
        if "service" not in values:
            missing("service", "name the expected service (e.g. ssh, http; `*` for any)")
        elif not service:
            self.problem(
                line_of("service"), where_of("service"), "is empty; name the expected service"
            )
        product = text.get("product", "")
        if product.startswith("re:"):
            try:
                re.compile(product[3:])
            except re.error as error:
                self.problem(
                    line_of("product"), where_of("product"), f"bad regular expression: {error}"
                )
        justification = text.get("justification", "")
        if "justification" not in values:
            missing("justification", "say what business need the port serves")
        elif not justification or is_placeholder(justification):
            self.problem(
                line_of("justification"),
                where_of("justification"),
                f"{justification!r} justifies nothing; say what business need the port serves",
            )
        for name, what in (
            ("owner", "name the team or person responsible"),
            ("approver", "name who approved it"),
        ):
            if name not in values:
                missing(name, what)
            elif not text.get(name):
                self.problem(line_of(name), where_of(name), f"is empty; {what}")
        requester = text.get("requester", "")
        approver = text.get("approver", "")
        if policy.separation_of_duties:
            if "requester" not in values:
                missing("requester", "separation of duties is on: name who asked for the port")
            elif not requester:
                self.problem(
                    line_of("requester"), where_of("requester"), "is empty; name who asked"
                )
            elif approver and person_of(requester) == person_of(approver):
                self.problem(
                    line_of("approver"),
                    where_of("approver"),
                    f"separation of duties: {person_of(approver)} requested this and cannot "
                    "also approve it",
                )
        mitigation = text.get("mitigation", "")
        if service and is_insecure(service, policy.insecure_services) and not mitigation:
            self.problem(
                line_of("service"),
                where_of("mitigation"),
                f"{service} is an insecure service: add a `mitigation:` describing the "
                "compensating control",
            )

        approved_at = self.date_value(values, "approved_at")
        if "approved_at" not in values:
            missing("approved_at", "give the approval date, e.g. 2026-05-01")
        review_by = self.date_value(values, "review_by")
        if approved_at is not None and review_by is not None:
            latest = add_months(approved_at, policy.review_months)
            if review_by <= approved_at:
                self.problem(
                    line_of("review_by"),
                    where_of("review_by"),
                    f"review_by {_shown_date(review_by)} is not after approved_at "
                    f"{_shown_date(approved_at)}",
                )
            elif review_by > latest:
                self.problem(
                    line_of("review_by"),
                    where_of("review_by"),
                    f"review_by {_shown_date(review_by)} is more than {policy.review_months} "
                    f"months after approval; review by {_shown_date(latest)} at the latest "
                    "(approval.review_months)",
                )
        if approved_at is not None and review_by is None:
            review_by = add_months(approved_at, policy.review_months)

        if len(self.result.problems) > before or hosts is None or ports is None:
            return
        assert approved_at is not None and review_by is not None
        port_list = ports.ports()
        self.pairs += len(hosts) * len(port_list)
        if self.pairs > MAX_APPROVALS:
            self.stop(
                line,
                where,
                f"the file approves more than {MAX_APPROVALS} host:port pairs; "
                "split it or narrow selectors and port ranges",
            )
            return
        duplicate: tuple[str, int] | None = None
        for host in hosts:
            for port in port_list:
                key = (host, port, proto)
                if key in self.claimed:
                    duplicate = duplicate or (f"{host}:{port}/{proto}", self.claimed[key])
                    continue
                self.claimed[key] = line
                self.result.specs.append(
                    ApprovalSpec(
                        host=host,
                        port=port,
                        proto=proto,
                        service=service,
                        justification=justification,
                        owner=text.get("owner", ""),
                        requester=requester,
                        approver=approver,
                        approved_at=approved_at,
                        review_by=review_by,
                        product_pattern=product,
                        ticket=text.get("ticket", ""),
                        mitigation=mitigation,
                        source=f"baseline:{Path(self.file).name}",
                        file=self.file,
                        line=line,
                    )
                )
        if duplicate is not None:
            self.problem(
                line,
                where,
                f"duplicate rule: {duplicate[0]} is already approved by the rule at line "
                f"{duplicate[1]}",
            )

    def date_value(self, values: dict[str, _Value], name: str) -> datetime | None:
        if name not in values:
            return None
        item = values[name]
        try:
            return _as_datetime(item.value)
        except (ValueError, TypeError):
            self.problem(item.line, item.where, f"bad date {item.value!r}: use YYYY-MM-DD")
            return None


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        return parse_iso(value)
    raise TypeError("not a date")


def _shown_date(moment: datetime) -> str:
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.strftime("%Y-%m-%d")
    return iso(moment)


def _groups_of(
    settings: Settings, groups: Mapping[str, Sequence[str]] | None
) -> Mapping[str, Sequence[str]]:
    if groups is not None:
        return groups
    return {name: group.targets for name, group in settings.groups.items()}


def read_baseline(
    path: Path | str,
    settings: Settings,
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    apply_scope: bool = True,
) -> Baseline:
    """Read a baseline file into problems and specs, without raising for its content."""
    file = str(path)
    reader = _Reader(
        file,
        settings,
        _groups_of(settings, groups),
        settings.scope_obj() if apply_scope else None,
    )
    target = Path(path)
    try:
        size = target.stat().st_size
        if size > MAX_FILE_BYTES:
            reader.problem(1, "(file)", f"{size} bytes; a baseline file may be at most 1 MB")
            return reader.result
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        reader.problem(0, "(file)", "no such file")
        return reader.result
    except UnicodeDecodeError:
        reader.problem(1, "(file)", "not UTF-8 text")
        return reader.result
    except OSError as error:
        reader.problem(0, "(file)", f"cannot read: {error.strerror}")
        return reader.result
    reader.read_text(text)
    reader.result.problems.sort(key=lambda p: p.line)
    if reader.result.problems:
        reader.result.specs = []
    return reader.result


def lint_baseline(
    path: Path | str,
    settings: Settings,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> list[LintProblem]:
    """Every problem in a baseline file, in line order (empty: the file is good).

    `groups` maps group names to targets; default: the groups in `settings`. Scope is
    not applied (documentation addresses pass); `load_baseline` applies it.
    """
    return read_baseline(path, settings, groups, apply_scope=False).problems


def load_baseline(
    path: Path | str,
    settings: Settings,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> list[ApprovalSpec]:
    """The approvals a baseline file asks for, one per host:port/proto.

    Raises BaselineError (a UserError, with `.problems`) if the file has any problem,
    including an address outside the configured scope.
    """
    baseline = read_baseline(path, settings, groups, apply_scope=True)
    if baseline.problems:
        raise BaselineError(str(path), baseline.problems)
    return baseline.specs


# -- export --------------------------------------------------------------------------------


def _date_text(moment: datetime) -> str:
    return _shown_date(moment.astimezone(UTC))


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
