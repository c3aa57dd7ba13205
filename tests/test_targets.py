"""Our target/scope/port grammar: what is accepted, and everything that is refused."""

from __future__ import annotations

import pytest

from portconsole.core.adapters.dns import resolve_host_name
from portconsole.core.domain.targets import (
    DEFAULT_SCOPE,
    PortSpec,
    Scope,
    expand_targets,
    parse_location,
    parse_ports,
    parse_target,
)
from portconsole.core.errors import TargetError, UserError

LOOPBACK = Scope(DEFAULT_SCOPE)

HOSTILE = [
    "127.0.0.2 --script x.nse",
    "-iL /etc/passwd",
    "-iL",
    "127.0.0.2;id",
    "$(id)",
    "`id`",
    "127.0.0.2 -oN /tmp/f",
    "127.0.0.2\t-oN",
    "127.0.0.2\n127.0.0.3",
    "127.0.0.2|nc",
    "127.0.0.2&&id",
    "127.0.0.2>/tmp/f",
    "--script=x.nse",
    "-oX-",
    " 127.0.0.2",
    "127.0.0.2 ",
    "127.0.0.\u0662",
    "127.0.0.2\x00",
    "",
    "127.0.0.2,127.0.0.3",
    "127.0.0.*",
    "127.0.0.0/8/8",
    "127.0.0.2/33",
    "127.0.0.256",
    "127.0.0.3-2",
    "127.0.0.2-300",
    "a..b",
    "host_name.example",
    "::1 --script",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_or_malformed_targets_are_refused(text: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(text, LOOPBACK)
    message = str(caught.value)
    assert "\n" not in message and message
    assert isinstance(caught.value, UserError) and caught.value.exit_code == 2


def test_expand_refuses_if_any_target_is_bad() -> None:
    with pytest.raises(TargetError):
        expand_targets(["127.0.0.2", "127.0.0.3;id"], LOOPBACK)


def test_address_cidr_range_and_ipv6_in_scope() -> None:
    assert parse_target("127.0.0.2", LOOPBACK).addresses == ("127.0.0.2",)
    assert parse_target("127.0.0.2", LOOPBACK).kind == "address"
    cidr = parse_target("127.0.0.0/30", LOOPBACK)
    assert cidr.kind == "cidr" and cidr.addresses == ("127.0.0.1", "127.0.0.2")
    rng = parse_target("127.0.0.2-41", LOOPBACK)
    assert rng.kind == "range" and len(rng.addresses) == 40
    assert rng.addresses[0] == "127.0.0.2" and rng.addresses[-1] == "127.0.0.41"
    multi = parse_target("127.0-1.0.1-2", LOOPBACK)
    assert multi.addresses == ("127.0.0.1", "127.0.0.2", "127.1.0.1", "127.1.0.2")
    assert parse_target("::1", LOOPBACK).addresses == ("::1",)
    assert parse_target("0:0:0:0:0:0:0:1", LOOPBACK).addresses == ("::1",)


def test_hostname_resolves_and_is_checked() -> None:
    target = parse_target("localhost", LOOPBACK, resolve_host_name)
    assert target.kind == "hostname"
    assert target.addresses and all(LOOPBACK.contains_address(a) for a in target.addresses)
    # The domain itself asks no DNS: without a resolver a name is refused, not looked up.
    with pytest.raises(TargetError, match="not resolved here"):
        parse_target("localhost", LOOPBACK)


@pytest.mark.parametrize(
    "text",
    ["10.0.0.1", "8.8.8.8", "192.168.0.0/16", "0.0.0.0/0", "126.255.255.255-255", "::2", "::/0"],
)
def test_outside_scope_is_refused(text: str) -> None:
    with pytest.raises(TargetError, match="outside the configured scope"):
        parse_target(text, LOOPBACK)


def test_cidr_straddling_scope_is_refused() -> None:
    with pytest.raises(TargetError, match="outside"):
        parse_target("127.0.0.0/7", LOOPBACK)


def test_narrow_scope() -> None:
    scope = Scope(["127.88.0.0/16"])
    assert parse_target("127.88.1.2", scope).addresses == ("127.88.1.2",)
    with pytest.raises(TargetError, match="outside"):
        parse_target("127.0.0.1", scope)
    with pytest.raises(TargetError, match="outside"):
        parse_target("127.88.255.250-255", Scope(["127.88.255.0/30"]))


def test_scope_check_addresses_refuses_non_addresses_and_outsiders() -> None:
    LOOPBACK.check_addresses(["127.0.0.2", "::1"])
    with pytest.raises(TargetError, match="not an IP address"):
        LOOPBACK.check_addresses(["127.0.0.2 --script x.nse"])
    with pytest.raises(TargetError, match="outside"):
        LOOPBACK.check_addresses(["127.0.0.2", "10.1.2.3"])


def test_bad_scope_entries() -> None:
    with pytest.raises(TargetError):
        Scope(["not-a-cidr"])
    with pytest.raises(TargetError):
        Scope([])


def test_expand_dedupes_in_first_seen_order() -> None:
    assert expand_targets(["127.0.0.3", "127.0.0.2-3"], LOOPBACK) == ["127.0.0.3", "127.0.0.2"]
    with pytest.raises(TargetError, match="no targets"):
        expand_targets([], LOOPBACK)


def test_huge_expansions_are_refused() -> None:
    with pytest.raises(TargetError, match="limit"):
        parse_target("127.0-255.0-255.0-255", LOOPBACK)


def test_ports_grammar() -> None:
    spec = parse_ports("443,22,80,8000-8100,81")
    assert str(spec) == "22,80-81,443,8000-8100"
    assert 8050 in spec and 8101 not in spec and 22 in spec
    assert len(spec) == 3 + 1 + 101
    assert str(parse_ports("all")) == "1-65535" and len(parse_ports("ALL")) == 65535
    assert PortSpec.of([5, 3, 4, 9]) == parse_ports("3-5,9")
    assert parse_ports("22").ports() == [22]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "65536",
        "22,",
        "22;id",
        "22 80",
        "-p 22",
        "80-22",
        "1-70000",
        "ssh",
        "22,-1",
        "T:22",
    ],
)
def test_bad_ports_are_refused(text: str) -> None:
    with pytest.raises(TargetError):
        parse_ports(text)


def test_many_large_ranges_are_refused_before_they_are_all_expanded() -> None:
    import tracemalloc

    wide = Scope(["127.0.0.0/8"])
    texts = [f"127.{i}.0.0/16" for i in range(64)]
    tracemalloc.start()
    with pytest.raises(TargetError, match=r"more than 65536 addresses \(at '127\.1\.0\.0/16'\)"):
        expand_targets(texts, wide)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Refused at the second /16 (the old code expanded all 64 first: 428 MB).
    assert peak < 60 * 1024 * 1024, peak


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.2", ("127.0.0.2", None, None)),
        ("127.0.0.2:22", ("127.0.0.2", 22, "tcp")),
        ("127.0.0.2:53/UDP", ("127.0.0.2", 53, "udp")),
        ("[::1]:21010", ("::1", 21010, "tcp")),
        ("[0:0:0:0:0:0:0:1]:22/sctp", ("::1", 22, "sctp")),
        ("[::1]", ("::1", None, None)),
        ("::1", ("::1", None, None)),
        ("::1:2101", ("::1:2101", None, None)),  # bare: an address, by the rule
        ("web1", ("web1", None, None)),
    ],
)
def test_locations_follow_one_rule(text: str, expected: tuple[str, int | None, str | None]) -> None:
    assert parse_location(text) == expected


@pytest.mark.parametrize(
    "text",
    ["[::1]:", "[::1", "[::1]22", "127.0.0.2:0", "127.0.0.2:+22", "127.0.0.2:22/xyz", "::zz:1"],
)
def test_bad_locations_are_refused(text: str) -> None:
    with pytest.raises(TargetError):
        parse_location(text)


def test_an_ipv6_port_without_brackets_says_how_to_write_it() -> None:
    with pytest.raises(TargetError, match=r"\[ADDRESS\]:PORT"):
        parse_location("::1:21010")
