"""Settings: the TOML file as typed records, errors that name the key, and the fingerprint
a data dir records of them (a change of its encoding would log a settings change in every
existing store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from portconsole.core.errors import ConfigError
from portconsole.core.services.leadership import settings_fingerprint
from portconsole.core.settings import GroupSettings, ScanSettings, load_settings
from portconsole.core.strict import Secret

# Every section set, with the forms TOML writers use: ints for floats, inline tables, a
# notification target as a table, a secret, a path. Its fingerprint was computed by the
# settings code of 0.1 (pydantic models); the same settings must give the same sha256.
EVERY_SECTION = """
scope = ["127.0.0.0/8"]
data_dir = "rel/data"

[scan]
ports = "22,80,8000-8010"
timing = 3
workers = 2
fingerprint = "all"
confirm_probes = 2

[groups.web]
targets = ["127.0.0.2-9", "127.0.1.0/28"]
ports = "80,443"
interval = 60
jitter = 0
refingerprint_hours = 2
description = "web tier"
timeout = 120
discovery = "none"

[groups.db]
targets = ["127.0.0.20"]
udp = true

[sites.pci]
broker = "redis://:secretpw@127.0.0.1:6390/0"
key_env = "PCI_KEY"
scope = ["127.0.0.0/16"]

[notify]
urls = ["json://127.0.0.1:8099/hook?token=abc", { url = "mailto://user:pw@127.0.0.1:2525?to=a@b", tags = ["mail"], timeout = 7 }]
routes = [{ tags = ["mail"], min_severity = "high", kinds = ["unapproved_port"] }]
mode = "digest"
webhook_secret = "s3cret"
rate_limit_per_minute = 10
backoff_seconds = 2

[severity]
by_port = { "8080" = "low" }
high_ports = [22, 3306]

[report.sla_hours]
critical = 2
high = 12

[audit]
anchor_file = "anchors/anchors.txt"
anchor_interval = 600
anchor_urls = ["json://127.0.0.1:8098/"]

[log]
level = "debug"
format = "json"

[tui]
theme = "portconsole-mono"
bell = "off"
refresh_seconds = 1

[daemon]
lease_seconds = 20
gap_grace_seconds = 30

[store]
future_skew = 60

[approval]
separation_of_duties = false
review_months = 3
insecure_services = ["telnet"]

[retention]
scan_months = 6
raw_xml_months = 3
"""
EVERY_SECTION_SHA256 = "e540f1cbc1c6e98ff0b9579d5d735c530af8c620b90a3beb7beccd41e98510a1"


def load(tmp_path: Path, text: str, **environ: str) -> tuple[object, ...]:
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    return load_settings(config, tmp_path / "data", environ=environ)


def refusal(tmp_path: Path, text: str, **environ: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **environ)
    return str(caught.value)


def test_the_fingerprint_of_every_section_is_what_earlier_versions_recorded(
    tmp_path: Path,
) -> None:
    settings, _ = load(tmp_path, EVERY_SECTION)
    assert settings_fingerprint(settings) == EVERY_SECTION_SHA256  # type: ignore[arg-type]
    # And it moves with any value: one port more is another fingerprint.
    changed, _ = load(tmp_path, EVERY_SECTION.replace('ports = "80,443"', 'ports = "80,444"'))
    assert settings_fingerprint(changed) != EVERY_SECTION_SHA256  # type: ignore[arg-type]
    # A setting added later counts once it is set away from its default.
    for value, same in (("true", True), ("false", False)):
        text = EVERY_SECTION.replace("[scan]\n", f"[scan]\nconfirm_connect = {value}\n", 1)
        later, _ = load(tmp_path, text)
        assert later.scan.confirm_connect is same  # type: ignore[attr-defined]
        assert (settings_fingerprint(later) == EVERY_SECTION_SHA256) is same  # type: ignore[arg-type]


def test_values_are_typed_and_normalised(tmp_path: Path) -> None:
    settings, paths = load(tmp_path, EVERY_SECTION)
    web = settings.groups["web"]  # type: ignore[attr-defined]
    assert isinstance(web, GroupSettings) and web.timeout == 120 and web.discovery == "none"
    assert settings.report.sla_hours["critical"] == 2.0  # type: ignore[attr-defined]
    assert isinstance(settings.report.sla_hours["critical"], float)  # type: ignore[attr-defined]
    assert settings.audit.anchor_file == Path("anchors/anchors.txt")  # type: ignore[attr-defined]
    targets = settings.notify.targets()  # type: ignore[attr-defined]
    assert [t.timeout for t in targets] == [5.0, 7.0] and targets[1].tags == ["mail"]
    # The data dir of the config file is relative to that file; --data-dir wins.
    assert paths.data_dir == tmp_path / "data"  # type: ignore[attr-defined]
    # A port list is kept in its normal form, also when built in code.
    assert ScanSettings(ports="80,22,22-23").ports == "22-23,80"


def test_a_secret_is_never_shown(tmp_path: Path) -> None:
    settings, _ = load(tmp_path, EVERY_SECTION)
    secret = settings.notify.webhook_secret  # type: ignore[attr-defined]
    assert isinstance(secret, Secret) and secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(secret)


def test_environment_overrides_are_converted_from_text(tmp_path: Path) -> None:
    settings, _ = load(
        tmp_path,
        'scope = ["127.0.0.0/8"]\n',
        PORTCONSOLE_SCAN__WORKERS="2",
        PORTCONSOLE_SCAN__TIMING='"3"',
    )
    assert settings.scan.workers == 2 and settings.scan.timing == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[scan]\nworkrs = 2\n", ": scan.workrs: unknown key"),
        ("[scan]\nworkers = 0\n", ": scan.workers: expected int >= 1"),
        ("[scan]\nworkers = true\n", ": scan.workers: expected int, got bool"),
        ('[scan]\nports = "22,99999"\n', ": scan.ports: "),
        ('[groups.web]\ntargets = ["127.0.0.2"]\nports = "x"\n', ": groups.web.ports: "),
        ("[groups.web]\ninterval = 60\n", ": groups.web.targets: required, missing"),
        ('[groups.web]\ntargets = ["127.0.0.2"]\ncolour = 1\n', ": groups.web.colour: unknown key"),
        (
            '[sites.pci]\nbroker = "redis://127.0.0.1:1/0"\nscope = ["nope"]\n',
            ": sites.pci.scope: ",
        ),
        ('scope = ["nope"]\n', ": scope: "),
        (
            "[report.sla_hours]\nurgent = 1\n",
            ": report.sla_hours: invalid enum value 'urgent' (one of: critical, high, low, medium)",
        ),
        (
            '[tui]\nbell = "loud"\n',
            ": tui.bell: invalid enum value 'loud' (one of: critical, high, low, medium, off)",
        ),
        (
            '[groups.web]\ntargets = ["127.0.0.2"]\ndiscovery = "ping"\n',
            ": groups.web.discovery: invalid enum value 'ping' (one of: default, none)",
        ),
        (
            '[notify]\nurls = [{ url = "json://127.0.0.1:1/", timeout = "soon" }]\n',
            ": notify.urls.0.timeout: expected float, got str",
        ),
    ],
)
def test_a_bad_value_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    message = refusal(tmp_path, text)
    assert message.startswith(f"config {tmp_path / 'config.toml'}: "), message
    assert expected in message, message
