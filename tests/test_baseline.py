"""Baseline files: lint with lines, load, scope, export/import round trip, approvals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from tinydb import TinyDB

from portconsole.core.adapters.approvals import ApprovalRegistry
from portconsole.core.adapters.baseline import lint_baseline, load_baseline, read_baseline
from portconsole.core.adapters.storage import AtomicJSONStorage, DataLock
from portconsole.core.domain.approval import person_of
from portconsole.core.domain.baseline_export import export_baseline
from portconsole.core.domain.baseline_format import BaselineError
from portconsole.core.errors import NotFoundError, PermissionRefused, UserError
from portconsole.core.settings import GroupSettings, Settings, settings_from

SAMPLES = Path(__file__).resolve().parents[1] / "sample_baselines"
ACTOR = "carol@console via 127.0.0.9"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def registry(tmp_path: Path) -> ApprovalRegistry:
    db = TinyDB(tmp_path / "hot.json", storage=AtomicJSONStorage)
    return ApprovalRegistry(db, DataLock(tmp_path / "store.lock"), Settings())


def write(tmp_path: Path, text: str, name: str = "base.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
version: 1
defaults:
  owner: web-team
  requester: alice
  approver: bob
  approved_at: 2026-11-01
hosts:
  - selector: [127.77.0.10, 127.77.0.12-13]
    rules:
      - ports: "80,443"
        service: http
        product: "nginx*"
        justification: Storefront web front end
        ticket: CHG-1
  - selector: 127.77.0.40
    rules:
      - ports: 22
        service: ssh
        justification: Administrative access from the bastion
        owner: security
        review_by: 2027-02-01
"""


def test_good_file_loads_one_approval_per_host_and_port(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert lint_baseline(path, Settings()) == []
    specs = load_baseline(path, Settings())
    keys = sorted((s.host, s.port, s.proto) for s in specs)
    assert keys == sorted(
        [(h, p, "tcp") for h in ("127.77.0.10", "127.77.0.12", "127.77.0.13") for p in (80, 443)]
        + [("127.77.0.40", 22, "tcp")]
    )
    ssh = next(s for s in specs if s.port == 22)
    assert ssh.owner == "security" and ssh.requester == "alice" and ssh.approver == "bob"
    assert ssh.review_by == datetime(2027, 2, 1, tzinfo=UTC)
    web = next(s for s in specs if s.port == 80)
    # review_by defaults to approved_at + approval.review_months (6)
    assert web.review_by == datetime(2027, 5, 1, tzinfo=UTC)
    assert web.product_pattern == "nginx*" and web.ticket == "CHG-1"
    assert web.source == "baseline:base.yaml" and web.line == 10


BROKEN = """\
version: 1
defaults:
  approved_at: 2026-11-01
  colour: blue
hosts:
  - selector: [127.77.0.10, 127.77.0.1/28, "group:nope", web.example.com]
    rules:
      - ports: 80,99999
        service: http
        justification: Web
        owner: web
        requester: alice
        approver: bob
  - selector: 127.77.0.20
    rules:
      - ports: 8080
        proto: tcpx
        service: http
        justification: TODO
        owner: app
        requester: Alice
        approver: alice@laptop
        approved_at: 2026-13-01
      - ports: 23
        service: telnet
        justification: Legacy console
        owner: ops
        requester: dan
        approver: erin
        review_by: 2026-10-01
      - ports: 24
        service: lmtp
        justification: Mail delivery agent
        owner: ops
        requester: dan
        approver: erin
        review_by: 2028-01-01
        colour: red
  - selector: 127.77.0.30
    rules:
      - ports: 5432
        service: postgresql
        product: "re:(unclosed"
        owner: dba
        requester: dan
        approver: erin
      - ports: 5432
        service: postgresql
        justification: Duplicate of the rule above
        owner: dba
        requester: dan
        approver: erin
      - ports: 5432
        service: postgresql
        justification: Duplicate of the rule above
        owner: dba
        requester: dan
        approver: erin
"""


def test_lint_reports_every_broken_field_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    problems = lint_baseline(path, Settings())
    found = {(p.line, p.field.rsplit(".", 1)[-1]) for p in problems}
    expected = {
        (4, "colour"),  # unknown key in defaults
        (6, "selector[1]"),  # CIDR with host bits
        (6, "selector[2]"),  # unknown group
        (6, "selector[3]"),  # host names are refused
        (8, "ports"),  # 99999
        (17, "proto"),
        (19, "justification"),  # placeholder
        (22, "approver"),  # separation of duties: Alice == alice@laptop
        (23, "approved_at"),  # month 13
        (25, "mitigation"),  # telnet without mitigation, at the service line
        (30, "review_by"),  # before approved_at
        (37, "review_by"),  # beyond six months
        (38, "colour"),  # unknown key in a rule
        (43, "product"),  # bad regular expression
        (41, "justification"),  # missing: reported at the rule
        (53, "rules[2]"),  # duplicate of the rule at line 47
    }
    assert found == expected, "\n".join(str(p) for p in problems)
    assert all(p.file == str(path) for p in problems)
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    duplicate = next(p for p in problems if p.line == 53)
    assert "line 47" in duplicate.message and "127.77.0.30:5432/tcp" in duplicate.message
    host_bits = next(p for p in problems if p.field.endswith("selector[1]"))
    assert "127.77.0.0/28" in host_bits.message
    # the rule at line 41 has problems, so it claims nothing: line 47 is the first claim
    assert str(problems[0]).startswith(f"{path}:4: defaults.colour: unknown key")


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("version: 1\nhosts: [\n", 3, "not valid YAML"),
        ("version: 1\nversion: 1\nhosts: []\n", 2, "duplicate key"),
        ("version: 2\nhosts: []\n", 1, "unsupported version"),
        ("hosts: []\n", 1, "version"),
        ("- just a list\n", 1, "mapping"),
        ("version: 1\nhosts:\n  - selector: 127.0.0.5\n    rules: []\n", 4, "non-empty"),
        (
            "version: 1\nhosts:\n  - selector: 127.0.0.5\n    rules:\n      - ports: 22\n"
            "        service: no\n        justification: x1\n        owner: o\n"
            "        requester: r\n        approver: a\n        approved_at: 2026-01-01\n",
            6,
            "must be text",
        ),
    ],
)
def test_lint_structure_problems(tmp_path: Path, text: str, line: int, needle: str) -> None:
    problems = lint_baseline(write(tmp_path, text), Settings())
    assert any(p.line == line and needle in str(p) for p in problems), problems


def test_load_refuses_a_file_with_problems_and_lists_them(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    with pytest.raises(BaselineError) as caught:
        load_baseline(path, Settings())
    assert len(caught.value.problems) == len(lint_baseline(path, Settings()))
    assert str(caught.value).startswith(f"{path}:4:")
    assert "\n" not in str(caught.value)


def test_samples_pass_lint() -> None:
    for name in ("demo.yaml", "demo-offset.yaml", "pci-cde.yaml", "hipaa.yaml"):
        problems = lint_baseline(SAMPLES / name, Settings())
        assert problems == [], [str(p) for p in problems]
        assert read_baseline(SAMPLES / name, Settings(), apply_scope=False).specs


def test_documentation_addresses_lint_but_do_not_import() -> None:
    with pytest.raises(BaselineError) as caught:
        load_baseline(SAMPLES / "pci-cde.yaml", Settings())
    assert "outside the configured scope" in str(caught.value)
    assert "192.0.2.10" in str(caught.value)


@pytest.mark.parametrize(("name", "offset"), [("demo.yaml", 0), ("demo-offset.yaml", 10000)])
def test_demo_baseline_approves_exactly_the_expected_demo_services(name: str, offset: int) -> None:
    demo = pytest.importorskip("portconsole.demo")
    specs = load_baseline(SAMPLES / name, Settings())
    approved = {(s.host, s.port, s.proto) for s in specs}
    fleet = demo.demo_services(offset, include_drift=True)
    expected = {(s.address, s.port, s.proto) for s in fleet if s.expected}
    assert approved == expected
    unexpected = {(s.address, s.port, s.proto) for s in fleet if not s.expected}
    assert unexpected and not unexpected & approved
    from portconsole.core.domain.detect import product_matches, service_matches

    by_key = {(s.host, s.port, s.proto): s for s in specs}
    for service in fleet:
        spec = by_key.get((service.address, service.port, service.proto))
        if spec is not None:
            assert service_matches(spec.service, service.service), service
            assert product_matches(spec.product_pattern, service.product, service.version)


def test_group_selectors_resolve_through_settings_and_scope(tmp_path: Path) -> None:
    text = GOOD.replace("[127.77.0.10, 127.77.0.12-13]", '"group:web-tier"')
    path = write(tmp_path, text)
    settings = Settings(groups={"web-tier": GroupSettings(targets=["127.77.0.10-11"])})
    specs = load_baseline(path, settings)
    assert {s.host for s in specs if s.port == 80} == {"127.77.0.10", "127.77.0.11"}
    # lint does not apply scope; import does, also through a group
    wide = Settings(groups={"web-tier": GroupSettings(targets=["192.0.2.0/30"])})
    assert lint_baseline(path, wide) == []
    with pytest.raises(BaselineError, match="group 'web-tier'.*outside the configured scope"):
        load_baseline(path, wide)
    unknown = lint_baseline(path, Settings())
    assert [p.line for p in unknown] == [8] and "unknown group 'web-tier'" in unknown[0].message


def test_import_is_idempotent_and_changes_supersede(
    tmp_path: Path, registry: ApprovalRegistry
) -> None:
    path = write(tmp_path, GOOD)
    first = registry.import_specs(load_baseline(path, Settings()), ACTOR, now=NOW)
    assert len(first.added) == 7 and first.unchanged == [] and first.retired == []
    again = registry.import_specs(load_baseline(path, Settings()), ACTOR, now=NOW)
    assert again.added == [] and len(again.unchanged) == 7
    assert len(registry.all()) == 7

    changed = write(tmp_path, GOOD.replace("Administrative access", "Admin access"))
    third = registry.import_specs(load_baseline(changed, Settings()), ACTOR, now=NOW)
    assert [a.port for a in third.added] == [22] and len(third.unchanged) == 6
    (old,) = third.retired
    assert old.status == "retired" and old.retired_by == ACTOR and "superseded" in old.retire_reason
    assert third.added[0].supersedes == [old.id]
    assert len(registry.all()) == 8 and len(registry.active()) == 7  # retired, never deleted

    pruned_file = write(tmp_path, GOOD.split("  - selector: 127.77.0.40")[0])
    pruned = registry.import_specs(load_baseline(pruned_file, Settings()), ACTOR, prune=True)
    assert [a.port for a in pruned.retired] == [22] and len(registry.active()) == 6


def test_export_then_import_gives_the_same_approvals(
    tmp_path: Path, registry: ApprovalRegistry
) -> None:
    registry.import_specs(load_baseline(SAMPLES / "demo.yaml", Settings()), ACTOR, now=NOW)
    registry.add(
        host="127.77.0.50",
        port=23,
        proto="tcp",
        service="telnet",
        justification="Console of the legacy batch host until its migration",
        owner="legacy-team",
        requester="dan",
        approver="erin@console via 127.0.0.7",
        actor="erin@console via 127.0.0.7",
        mitigation="Reachable only from the bastion; replaced in CHG-2001",
        product_pattern="re:telnetd",
        now=datetime(2026, 11, 20, 9, 30, 15, 123456, tzinfo=UTC),
    )
    exported = write(tmp_path, export_baseline(registry.all(), now=NOW), "export.yaml")
    assert lint_baseline(exported, Settings()) == []
    specs = load_baseline(exported, Settings())
    assert sorted(s.content() for s in specs) == sorted(a.content() for a in registry.active())
    # into the same registry: nothing new
    result = registry.import_specs(specs, ACTOR)
    assert result.added == [] and len(result.unchanged) == len(registry.active()) == 17
    # into a fresh registry: the same set
    other = ApprovalRegistry(
        TinyDB(tmp_path / "other.json", storage=AtomicJSONStorage),
        DataLock(tmp_path / "other.lock"),
        Settings(),
    )
    other.import_specs(specs, ACTOR)
    assert sorted(a.content() for a in other.active()) == sorted(
        a.content() for a in registry.active()
    )


def test_export_of_nothing_imports_to_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, export_baseline([]))
    assert load_baseline(path, Settings()) == []


def test_separation_of_duties_refuses_self_approval(tmp_path: Path) -> None:
    db = TinyDB(tmp_path / "hot.json", storage=AtomicJSONStorage)
    lock = DataLock(tmp_path / "store.lock")
    strict = ApprovalRegistry(db, lock, Settings())
    fields = dict(
        host="127.0.0.5",
        port=8443,
        proto="tcp",
        service="https",
        justification="Partner API",
        owner="api-team",
        requester="alice",
        actor="alice@box via 127.0.5.9",
    )
    with pytest.raises(PermissionRefused, match="alice requested this approval"):
        strict.add(**fields, approver="alice@box via 127.0.5.9")  # type: ignore[arg-type]
    with pytest.raises(PermissionRefused, match="name the requester"):
        strict.add(**{**fields, "requester": ""}, approver="bob")  # type: ignore[arg-type]
    assert strict.all() == []
    approved = strict.add(**fields, approver="bob")  # type: ignore[arg-type]
    assert approved.approver == "bob" and approved.id == "A-000001"
    relaxed = ApprovalRegistry(
        db,
        lock,
        settings_from({"approval": {"separation_of_duties": False}}),
    )
    same = relaxed.add(**{**fields, "port": 9443}, approver="alice")  # type: ignore[arg-type]
    assert same.requester == "alice" == same.approver
    assert person_of("Alice <alice@example.com>") == "alice"


def test_insecure_service_needs_a_mitigation(registry: ApprovalRegistry) -> None:
    fields = dict(
        host="127.0.0.5",
        port=21,
        proto="tcp",
        service="ftp",
        justification="Settlement files",
        owner="finance",
        requester="dan",
        approver="erin",
        actor=ACTOR,
    )
    with pytest.raises(UserError, match="ftp is an insecure service: give a mitigation"):
        registry.add(**fields)  # type: ignore[arg-type]
    approval = registry.add(**fields, mitigation="PGP-encrypted files; source-restricted")  # type: ignore[arg-type]
    assert approval.mitigation.startswith("PGP")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"justification": "  "}, "justification is required"),
        ({"justification": "TBD"}, "justification is required"),
        ({"host": "web.example.com"}, "not an IP address"),
        ({"host": "192.0.2.1"}, "outside the configured scope"),
        ({"proto": "icmp"}, "protocol"),
        ({"review_by": datetime(2030, 1, 1, tzinfo=UTC)}, "more than 6 months"),
    ],
)
def test_add_validates(registry: ApprovalRegistry, change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = dict(
        host="127.0.0.5",
        port=8080,
        proto="tcp",
        service="http",
        justification="Internal app",
        owner="app",
        requester="dan",
        approver="erin",
        actor=ACTOR,
        approved_at=NOW,
    )
    with pytest.raises(UserError, match=message):
        registry.add(**{**fields, **change})  # type: ignore[arg-type]
    assert registry.all() == []


def test_retire_match_and_expiry(registry: ApprovalRegistry) -> None:
    approval = registry.add(
        host="127.0.0.5",
        port=8080,
        proto="tcp",
        service="http",
        justification="Internal app",
        owner="app",
        requester="dan",
        approver="erin",
        actor=ACTOR,
        approved_at=datetime(2026, 1, 10, tzinfo=UTC),
        now=datetime(2026, 1, 10, tzinfo=UTC),
    )
    assert approval.review_by == datetime(2026, 7, 10, tzinfo=UTC)
    assert registry.match("127.0.0.5", 8080, "tcp", NOW) == approval
    assert registry.match("127.0.0.5", 8080, "udp", NOW) is None
    assert registry.expired(NOW) == [approval]
    assert registry.expired(datetime(2026, 3, 1, tzinfo=UTC)) == []
    with pytest.raises(UserError, match="reason is required"):
        registry.retire(approval.id, ACTOR, " ")
    retired = registry.retire(approval.id, ACTOR, "service decommissioned", now=NOW)
    assert retired.status == "retired" and retired.retired_at == NOW
    assert registry.get("a-1") == retired and registry.active() == []
    assert registry.match("127.0.0.5", 8080, "tcp", NOW) is None
    # point in time: before retirement it was in force
    assert registry.match("127.0.0.5", 8080, "tcp", datetime(2026, 5, 1, tzinfo=UTC)) == retired
    with pytest.raises(UserError, match="already retired"):
        registry.retire(approval.id, ACTOR, "again")
    with pytest.raises(NotFoundError):
        registry.get("A-000099")


def test_hostile_files_are_bounded(tmp_path: Path) -> None:
    rule = (
        "{ports: 1-100, service: '*', justification: Wide, owner: o, requester: r, "
        "approver: a, approved_at: 2026-11-01}"
    )
    wide = f"version: 1\nhosts:\n  - selector: 127.0.0.0/24\n    rules: [{rule}]\n"
    (too_many,) = lint_baseline(write(tmp_path, wide), Settings())
    assert too_many.line == 4 and "more than 20000 host:port pairs" in too_many.message
    # YAML aliases multiply one big selector without growing the file: refused, quickly
    bomb = (
        "version: 1\n"
        "x: &h {selector: 127.0.0.0/16, rules: [{ports: 1-1024, service: '*'}]}\n"
        "hosts: [" + ", ".join(["*h"] * 2000) + "]\n"
    )
    problems = lint_baseline(write(tmp_path, bomb), Settings())
    assert "more than 262144 addresses" in problems[-1].message and len(problems) < 50
    tagged = "version: 1\nhosts: !!python/object/apply:os.system ['true']\n"
    (problem,) = lint_baseline(write(tmp_path, tagged), Settings())
    assert "not valid YAML" in problem.message and problem.line == 2
