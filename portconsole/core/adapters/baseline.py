"""Baseline files: YAML that says which ports may be open where, and why, read into approvals.

The format (keys, problems, the line-keeping YAML loader) is domain/baseline_format.py and
the checks of one rule's fields are domain/baseline_rules.py; this reader reads the file,
walks hosts and selectors, and turns good rules into one approval per host:port/proto.
Lint reports every problem it finds, not just the first; `load_baseline` refuses a file with
any problem.

Lint checks syntax and policy but not scope, so the sample files' documentation-range
examples pass; import also checks every address against the configured scope (and resolves
the host names of a configured group).
Host names are refused as selectors: an approval is for an address, and resolving names
while linting would make the result depend on DNS.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from msgspec import Struct, field

from portconsole.core.adapters.dns import resolve_host_name
from portconsole.core.domain.approval import ApprovalSpec
from portconsole.core.domain.baseline_format import (
    DEFAULT_KEYS,
    FORMAT_VERSION,
    HOST_KEYS,
    RULE_KEYS,
    TOP_KEYS,
    BaselineError,
    LineLoader,
    LintProblem,
    YamlMap,
    YamlSeq,
)
from portconsole.core.domain.baseline_rules import Value, check_rule
from portconsole.core.domain.targets import Scope, expand_targets, parse_target
from portconsole.core.errors import TargetError
from portconsole.core.settings import Settings

MAX_FILE_BYTES = 1_000_000
# One approval per host and port: a rule for a /16 times ports 1-1024 is not a baseline.
MAX_APPROVALS = 20_000
# Past this, a file is too broken to be worth listing; also bounds work on alias bombs.
MAX_PROBLEMS = 500
# Addresses all selectors may name together (aliases can repeat one big selector).
MAX_SELECTED = 262_144

_ANY_SCOPE = Scope(["0.0.0.0/0", "::/0"])
_HOST_RANGE = re.compile(r"^[\d.\-]+$")


class Baseline(Struct):
    """The result of reading a baseline file: problems, or the specs it approves."""

    file: str
    problems: list[LintProblem] = field(default_factory=list)
    specs: list[ApprovalSpec] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # every address a selector names


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
        loader = LineLoader(text)
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
        if not isinstance(data, YamlMap):
            self.problem(1, "(file)", "a baseline is a mapping with `version: 1` and `hosts:`")
            return
        self.read_top(data)
        self.result.hosts = list(self.hosts)

    def read_top(self, data: YamlMap) -> None:
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
        if not isinstance(hosts, YamlSeq):
            self.problem(data.key_lines["hosts"], "hosts", "must be a list of host entries")
            return
        for index, (entry, line) in enumerate(zip(hosts, hosts.item_lines, strict=True)):
            if self.stopped:
                return
            self.read_host(entry, line, f"hosts[{index}]", defaults)

    def unknown_keys(self, data: YamlMap, allowed: Sequence[str], where: str) -> None:
        for key, line in data.key_lines.items():
            if key not in allowed:
                self.problem(
                    line,
                    f"{where}.{key}" if where else str(key),
                    f"unknown key; expected one of: {', '.join(allowed)}",
                )

    def text_field(self, data: YamlMap, key: str, where: str) -> str | None:
        if key not in data:
            return None
        value = data[key]
        if isinstance(value, str):
            return value
        self.problem(data.key_lines[key], where, "must be text (quote it)")
        return None

    def read_defaults(
        self, data: YamlMap, inherited: dict[str, Value], where: str
    ) -> dict[str, Value]:
        merged = dict(inherited)
        key = "defaults"
        if key not in data:
            return merged
        block = data[key]
        if not isinstance(block, YamlMap):
            self.problem(data.key_lines[key], where, "must be a mapping of rule fields")
            return merged
        self.unknown_keys(block, DEFAULT_KEYS, where)
        for name in DEFAULT_KEYS:
            if name in block:
                merged[name] = Value(block[name], block.key_lines[name], f"{where}.{name}")
        return merged

    # ---- hosts and selectors

    def read_host(self, entry: Any, line: int, where: str, defaults: dict[str, Value]) -> None:
        if not isinstance(entry, YamlMap):
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
        if not isinstance(rules, YamlSeq) or not rules:
            self.problem(
                entry.key_lines["rules"], f"{where}.rules", "must be a non-empty list of rules"
            )
            return
        for index, (rule, rule_line) in enumerate(zip(rules, rules.item_lines, strict=True)):
            if self.stopped:
                return
            self.read_rule(rule, rule_line, f"{where}.rules[{index}]", hosts, local)

    def read_selector(self, entry: YamlMap, where: str) -> list[str] | None:
        """The addresses a selector names, or None when it has a problem."""
        key = f"{where}.selector"
        if "selector" not in entry:
            self.problem(entry.line, key, "missing: name addresses, CIDRs, ranges or group:NAME")
            return None
        raw = entry["selector"]
        line = entry.key_lines["selector"]
        if isinstance(raw, str):
            items, lines = [raw], [line]
        elif isinstance(raw, YamlSeq) and raw:
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
        defaults: dict[str, Value],
    ) -> None:
        if not isinstance(rule, YamlMap):
            self.problem(
                line, where, "each rule is a mapping with ports, service, justification, ..."
            )
            return
        before = len(self.result.problems)
        self.unknown_keys(rule, RULE_KEYS, where)
        values = dict(defaults)
        for name in RULE_KEYS:
            if name in rule:
                values[name] = Value(rule[name], rule.key_lines[name], f"{where}.{name}")
        checked = check_rule(values, rule.line, where, self.settings.approval, self.problem)
        ports, proto = checked.ports, checked.proto
        if len(self.result.problems) > before or hosts is None or ports is None:
            return
        approved_at, review_by = checked.approved_at, checked.review_by
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
                        service=checked.service,
                        justification=checked.justification,
                        owner=checked.owner,
                        requester=checked.requester,
                        approver=checked.approver,
                        approved_at=approved_at,
                        review_by=review_by,
                        product_pattern=checked.product,
                        ticket=checked.ticket,
                        mitigation=checked.mitigation,
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
