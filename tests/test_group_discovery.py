"""A group's host discovery setting (issue 15.8), with the real Monitor and nmap on loopback.

Hosts known from history or the baseline are always swept with -Pn; an address never seen
is found by nmap's ping probes in a group with `discovery = "default"`, and swept with -Pn
too in a group with `discovery = "none"`. The nmap command lines are read from the debug
log of adapters/nmap_process.py (what was really run).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from portconsole.core.errors import ConfigError
from portconsole.core.monitor import Monitor
from portconsole.core.settings import load_settings
from tests.conftest import write_config
from tests.fleet import TestFleet

pytestmark = pytest.mark.nmap


def _sweeps(caplog: pytest.LogCaptureFixture, address: str) -> list[list[str]]:
    """The argument lists of the nmap runs logged for `address`."""
    found = []
    for record in caplog.records:
        text = record.getMessage()
        if text.startswith("running: ") and text.endswith(f" -- {address}"):
            found.append(text.split())
    return found


def test_discovery_none_sweeps_new_addresses_with_pn_and_default_pings_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="portconsole.core.adapters.nmap_process")
    with TestFleet() as fleet:
        pinged, silent = fleet.new_address(), fleet.new_address()
        ports = {a: fleet.listen(a, "http") for a in (pinged, silent)}
        config = write_config(
            tmp_path / "config.toml",
            {"pinged": ([pinged], str(ports[pinged])), "silent": ([silent], str(ports[silent]))},
        )
        # No -sV and no confirm re-probe: the only nmap runs are the sweeps.
        text = config.read_text().replace("[scan]\n", '[scan]\nfingerprint = "none"\n')
        text = text.replace("confirm_probes = 1", "confirm_probes = 0")
        silent_targets = f'targets = ["{silent}"]\n'
        config.write_text(text.replace(silent_targets, silent_targets + 'discovery = "none"\n'))
        settings, paths = load_settings(config, tmp_path / "data")
        assert settings.groups["silent"].discovery == "none"
        assert settings.groups["pinged"].discovery == "default"
        monitor = Monitor(settings, paths, origin="cli")
        try:
            for group in ("pinged", "silent"):
                result = monitor.run_cycle(group=group)
                assert result.scan.outcome == "success"
                assert result.scan.open_port_count() == 1
            first_pinged, first_silent = _sweeps(caplog, pinged), _sweeps(caplog, silent)
            assert len(first_pinged) == 1 and "-Pn" not in first_pinged[0]
            assert len(first_silent) == 1 and "-Pn" in first_silent[0]
            # Known now: the next sweep of the default group skips discovery too.
            monitor.run_cycle(group="pinged")
            assert "-Pn" in _sweeps(caplog, pinged)[-1]
        finally:
            monitor.close()


def test_an_unknown_discovery_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {"web": (["127.0.0.2"], "80")})
    text = config.read_text().replace('ports = "80"\n', 'ports = "80"\ndiscovery = "sometimes"\n')
    config.write_text(text)
    with pytest.raises(ConfigError, match="discovery"):
        load_settings(config, tmp_path / "data")
