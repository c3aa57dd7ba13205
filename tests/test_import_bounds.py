"""`portconsole import` reads only regular files, bounded, and refuses junk with exit 2.

Each refusal is checked both at the reader (fast, in process) and through the real CLI
(a separate process with its own config and data dir), where it must be one line on
stderr, exit code 2, and quick: a FIFO nobody writes to must not block, `/dev/zero` must
not be read until memory runs out.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from portconsole.core.adapters.nmap_parse import NotARegularFile, ReportRefused, ReportTooLarge
from portconsole.core.adapters.nmapxml import read_report_file
from portconsole.core.monitor import Monitor
from tests.conftest import write_config
from tests.test_cli import run_cli
from tests.test_nmap_parse import report

DATA = Path(__file__).parent / "data"


def refused_quickly(tmp_path: Path, target: Path | str) -> str:
    """Run `portconsole import TARGET`; assert one line, exit 2, within 10 s; return it."""
    started = time.monotonic()
    result = run_cli(tmp_path, "import", str(target), timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert elapsed < 10, f"took {elapsed:.1f} s"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("portconsole: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def test_dev_zero_is_refused_before_reading() -> None:
    started = time.monotonic()
    with pytest.raises(NotARegularFile, match="character device, not a regular file"):
        read_report_file(Path("/dev/zero"))
    assert time.monotonic() - started < 0.5


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(NotARegularFile, match="FIFO"):
        read_report_file(fifo)
    assert time.monotonic() - started < 0.5


def test_directory_socket_and_missing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotARegularFile, match="directory"):
        read_report_file(tmp_path)
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(NotARegularFile, match="socket"):
            read_report_file(path)
    with pytest.raises(ReportRefused, match="does not exist"):
        read_report_file(tmp_path / "missing.xml")


def test_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "innocent.xml"
    link.symlink_to("/dev/zero")
    with pytest.raises(NotARegularFile):
        read_report_file(link)


def test_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.xml"
    with sparse.open("wb") as handle:
        handle.truncate(300 * 1024 * 1024)  # sparse: no disk used, over the 256 MiB cap
    started = time.monotonic()
    with pytest.raises(ReportTooLarge, match="256 MiB"):
        read_report_file(sparse)
    assert time.monotonic() - started < 0.5
    small = tmp_path / "small.xml"
    small.write_bytes(report())
    with pytest.raises(ReportTooLarge):
        read_report_file(small, max_bytes=100)
    assert read_report_file(small) == report()


def test_cli_refuses_dev_zero(tmp_path: Path) -> None:
    line = refused_quickly(tmp_path, "/dev/zero")
    assert "not a regular file" in line


def test_cli_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    line = refused_quickly(tmp_path, fifo)
    assert "FIFO" in line


@pytest.mark.parametrize("portid", ["-1", "0", "65536", "+22", " 22 ", "٢٢"])
def test_cli_refuses_junk_port_ids(tmp_path: Path, portid: str) -> None:
    path = tmp_path / "junk.xml"
    path.write_bytes(report(portid=portid))
    line = refused_quickly(tmp_path, path)
    assert "not a port number 1-65535" in line
    # Nothing was stored (read in this process: a `state` CLI run per case cost as much
    # again, and passed on an empty stdout too).
    monitor = Monitor.open(tmp_path / "config.toml", tmp_path / "data", readonly=True)
    try:
        assert monitor.host_rows() == []
    finally:
        monitor.close()


def test_cli_refuses_junk_protocol(tmp_path: Path) -> None:
    path = tmp_path / "junk.xml"
    path.write_bytes(report(protocol="xyz"))
    assert "not tcp, udp or sctp" in refused_quickly(tmp_path, path)


def test_cli_imports_masscan_xml(tmp_path: Path) -> None:
    # The sample has an IPv6 host (::1) too.
    write_config(tmp_path / "config.toml")
    config = (tmp_path / "config.toml").read_text()
    (tmp_path / "config.toml").write_text(
        config.replace('scope = ["127.0.0.0/8"]', 'scope = ["127.0.0.0/8", "::1/128"]')
    )
    result = run_cli(tmp_path, "import", str(DATA / "masscan_loopback.xml"), "--json")
    assert result.returncode == 0, result.stderr
    state = run_cli(tmp_path, "state", "--json")
    assert state.returncode == 0, state.stderr
    for address in ("127.0.0.2", "127.0.0.3"):
        assert address in state.stdout
