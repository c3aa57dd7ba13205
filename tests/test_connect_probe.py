"""The connect confirm (adapters/connect_probe.py, Scanner.confirm_open) against real
loopback listeners: it names only ports that accept, never waits past its window, and
never asks outside the scope."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from msgspec.structs import replace

from portconsole.core.adapters import connect_probe
from portconsole.core.adapters.scanner import Scanner
from portconsole.core.domain.targets import Scope
from portconsole.core.errors import TargetError
from portconsole.core.settings import ScanSettings
from tests.fleet import TestFleet


@pytest.fixture
def fleet() -> Iterator[TestFleet]:
    with TestFleet() as running:
        yield running


@pytest.fixture
def silent_port() -> Iterator[tuple[str, int]]:
    """A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    to it neither succeeds nor is refused (what a DROP rule does, on loopback)."""
    address = TestFleet.new_address()
    listener = socket.socket()
    listener.bind((address, 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    filler = socket.socket()
    filler.connect((address, port))  # the one connection a backlog of 0 queues
    probe = socket.socket()
    probe.settimeout(0.2)
    with pytest.raises(TimeoutError):
        probe.connect((address, port))  # silent now
    try:
        yield address, port
    finally:
        for sock in (probe, filler, listener):
            sock.close()


def test_only_ports_that_accept_are_named(fleet: TestFleet) -> None:
    address = fleet.new_address()
    listening = [fleet.listen(address) for _ in range(3)]
    refused = fleet.closed_port(address)
    pairs = [(address, port) for port in [*listening, refused]]

    started = time.monotonic()
    assert connect_probe.accepting(pairs, window=30.0) == {(address, p) for p in listening}
    # A refusal is an answer: nothing waits for the window.
    assert time.monotonic() - started < 10.0


def test_a_silent_port_is_not_named_and_the_window_bounds_the_wait(
    fleet: TestFleet, silent_port: tuple[str, int]
) -> None:
    address = fleet.new_address()
    listening = fleet.listen(address)

    started = time.monotonic()
    found = connect_probe.accepting([silent_port, (address, listening)], window=0.3)
    took = time.monotonic() - started

    assert found == {(address, listening)}
    assert 0.3 <= took < 5.0, took


def test_more_ports_than_run_at_once_are_all_asked(fleet: TestFleet) -> None:
    address = fleet.new_address()
    count = connect_probe.MAX_IN_FLIGHT + 22
    pairs = [(address, fleet.listen(address)) for _ in range(count)]

    assert connect_probe.accepting(pairs) == set(pairs)


def test_too_many_ports_are_left_to_nmap(fleet: TestFleet) -> None:
    address = fleet.new_address()
    port = fleet.listen(address)
    pairs = [(address, port)] + [(address, p) for p in range(1, connect_probe.MAX_PAIRS + 1)]

    assert connect_probe.accepting(pairs) == set()
    assert connect_probe.accepting(pairs[:1]) == {(address, port)}


def test_a_cancel_stops_the_wait(silent_port: tuple[str, int]) -> None:
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()

    started = time.monotonic()
    assert connect_probe.accepting([silent_port], window=30.0, cancel=cancel) == set()
    assert time.monotonic() - started < 10.0


def test_the_scanner_confirms_tcp_only_inside_its_scope(fleet: TestFleet) -> None:
    address = fleet.new_address()
    tcp = fleet.listen(address)
    scanner = Scanner(ScanSettings(), Scope([f"{address}/32"]))

    # The same number over UDP is not asked: a connect says nothing of a UDP port.
    question = {address: [(tcp, "tcp"), (tcp, "udp"), (fleet.closed_port(address), "tcp")]}
    assert scanner.confirm_open(question) == {address: {(tcp, "tcp")}}
    # Outside the scope: refused before anything is sent.
    outside = "127.0.0.1" if address != "127.0.0.1" else "127.0.0.2"
    with pytest.raises(TargetError):
        scanner.confirm_open({outside: [(tcp, "tcp")]})
    # Turned off: nothing is confirmed this way, every port goes to nmap.
    off = Scanner(replace(ScanSettings(), confirm_connect=False), Scope([f"{address}/32"]))
    assert off.confirm_open(question) == {}


def test_ipv6_loopback(fleet: TestFleet) -> None:
    try:
        port = fleet.listen("::1")
    except Exception:  # noqa: BLE001 - some CI containers have no ::1
        pytest.skip("::1 is not available")
    with socket.socket(socket.AF_INET6) as unused:
        unused.bind(("::1", 0))
        refused = int(unused.getsockname()[1])  # nothing listens once it is closed

    assert connect_probe.accepting([("::1", port), ("::1", refused)]) == {("::1", port)}
