"""Settings: one typed model read from a TOML file, with environment overrides.

Precedence (highest first): command-line flags (`--config`, `--data-dir`), environment
(`PORTCONSOLE_CONFIG`, `PORTCONSOLE_DATA_DIR`, and `PORTCONSOLE_<SECTION>__<KEY>` for any
field, e.g. `PORTCONSOLE_SCAN__WORKERS=2` or `PORTCONSOLE_SCOPE='["127.0.0.0/8"]'`), the
config file, then the defaults below. An unknown key or a bad value is a ConfigError that
names the key.
"""

# Annotations stay objects here (no `from __future__ import annotations`): msgspec would
# evaluate each string annotation when the settings are first converted (~4 ms a start).

import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import platformdirs
from msgspec import Meta, Struct, field

from portconsole.core.domain.targets import DEFAULT_SCOPE, Scope, check_in_scope, parse_ports
from portconsole.core.errors import ConfigError, TargetError
from portconsole.core.settings_sections import (
    ApprovalSettings,
    AuditSettings,
    DaemonSettings,
    LogSettings,
    NotifySettings,
    ReportSettings,
    RetentionSettings,
    SeveritySettings,
    StoreSettings,
    TuiSettings,
)
from portconsole.core.strict import FieldError, Strict, convert, problem

APP_NAME = "portconsole"
ENV_PREFIX = "PORTCONSOLE_"


def _check_ports(value: str) -> str:
    """A port list in its normal form (as the scanner is given it), or FieldError."""
    try:
        return str(parse_ports(value))
    except TargetError as error:
        raise FieldError("ports", str(error)) from None


def _check_scope(value: list[str] | None) -> None:
    if value is not None:
        try:
            Scope(value)
        except TargetError as error:
            raise FieldError("scope", str(error)) from None


class ScanSettings(Strict):
    ports: Annotated[
        str,
        Meta(
            description="Ports scanned when a target group does not set its own: '22,80,8000-8100' or 'all'."
        ),
    ] = "22,23,80,443,3306,5432,6379,8080"
    udp: Annotated[
        bool, Meta(description="Also scan UDP (slow; needs root). Off unless asked for.")
    ] = False
    timing: Annotated[int, Meta(ge=0, le=5, description="nmap timing template, -T0 to -T5.")] = 4
    workers: Annotated[
        int, Meta(ge=1, le=32, description="Parallel nmap processes (one per host batch).")
    ] = 4
    max_nmap_processes: Annotated[
        int,
        Meta(
            ge=0,
            le=256,
            description=(
                "Most nmap processes running at once in one process, over every group "
                "running in parallel (sweeps, re-probes, -sV), shared so that one scan never takes "
                "the last free one; 0 = the CPU count, at least 4 and at least workers + 1."
            ),
        ),
    ] = 0
    batch_size: Annotated[
        int,
        Meta(
            ge=0,
            le=256,
            description=(
                "Hosts per nmap process; 0 spreads the hosts evenly over the workers "
                "(at most 16 per process), gives a sweep of little work fewer runs (each at least "
                "2,048 host x port probes, no more runs than CPUs: a run costs ~75 ms however "
                "small), and grows the batches of a large target set to about 4 nmap runs per "
                "worker (at most 4,096 hosts each)."
            ),
        ),
    ] = 0
    batch_timeout: Annotated[
        float,
        Meta(
            gt=0,
            description=(
                "Seconds one nmap batch may run per 16 hosts before it is killed and "
                "reported (a grown batch gets at most 8 times this)."
            ),
        ),
    ] = 300.0
    fingerprint: Annotated[
        Literal["changed", "all", "none"],
        Meta(
            description="Service detection (-sV): on new or changed ports only, on every open port, or never."
        ),
    ] = "changed"
    force_unprivileged: Annotated[
        bool, Meta(description="Use a TCP connect scan even when running as root.")
    ] = False
    confirm_probes: Annotated[
        int,
        Meta(
            ge=0,
            le=5,
            description="Re-probes of a new or vanished port before it becomes a finding.",
        ),
    ] = 1
    confirm_connect: Annotated[
        bool,
        Meta(
            description=(
                "Confirm a new open TCP port by a TCP connect (closed at once, nothing "
                "sent) before any nmap re-probe: reported one nmap run sooner. A port "
                "that does not accept is re-probed by nmap as before."
            )
        ),
    ] = True
    flap_window: Annotated[
        int,
        Meta(
            ge=0, description="Seconds in which a port that opens and closes again is one finding."
        ),
    ] = 3600

    def __post_init__(self) -> None:
        self.ports = _check_ports(self.ports)


# Re-fingerprint age of a group, and of ports scanned outside any group (ad-hoc targets).
DEFAULT_REFINGERPRINT_HOURS = 24.0


class GroupSettings(Strict):
    targets: Annotated[
        list[str], Meta(description="Addresses, CIDRs, ranges (127.0.0.2-41) or names.")
    ]
    ports: Annotated[
        str | None, Meta(description="Ports for this group; default [scan].ports.")
    ] = None
    interval: Annotated[
        int, Meta(ge=10, description="Seconds between scheduled scans of this group.")
    ] = 900
    jitter: Annotated[
        int, Meta(ge=0, description="Up to this many seconds are added to each interval.")
    ] = 30
    udp: Annotated[bool | None, Meta(description="Override [scan].udp for this group.")] = None
    description: Annotated[str, Meta(description="What the group is, shown in the console.")] = ""
    refingerprint_hours: Annotated[
        float,
        Meta(
            ge=0,
            le=24 * 365,
            description=(
                "Hours after which an open port is fingerprinted (-sV) again, so a service "
                "swapped behind it is noticed; spread over the group's cycles, 0 = every cycle."
            ),
        ),
    ] = DEFAULT_REFINGERPRINT_HOURS
    site: Annotated[
        str | None,
        Meta(
            description="Scan this group from a site's workers ([sites.NAME]); unset: scanned here."
        ),
    ] = None
    timeout: (
        Annotated[
            int,
            Meta(
                ge=10,
                description=(
                    "Seconds a cycle of this group may run before it is cancelled (a failed run, "
                    "a gap of this group only); unset: interval + jitter + "
                    "daemon.gap_grace_seconds."
                ),
            ),
        ]
        | None
    ) = None
    discovery: Annotated[
        Literal["default", "none"],
        Meta(
            description=(
                "Host discovery for addresses not known from history or the baseline "
                "(known ones are always scanned with -Pn): 'default' (nmap's ping probes; an address "
                "that answers none is down) or 'none' (-Pn: every address is port-scanned, for hosts "
                "that drop pings; slow on a sparse range)."
            )
        ),
    ] = "default"

    def __post_init__(self) -> None:
        if self.ports is not None:
            self.ports = _check_ports(self.ports)


class SiteSettings(Strict):
    """One site: its Celery broker and the key its results are signed with (docs: README)."""

    broker: Annotated[
        str,
        Meta(
            description=(
                "The site's Celery broker, e.g. redis://127.0.0.1:6379/0 (also its result backend)."
            )
        ),
    ]
    key_file: Annotated[
        Path | None,
        Meta(description="File holding the site's shared HMAC key (never printed or logged)."),
    ] = None
    key_env: Annotated[
        str | None, Meta(description="Or the name of an environment variable holding that key.")
    ] = None
    scope: Annotated[
        list[str] | None,
        Meta(
            description=(
                "CIDR blocks this site may scan; unset: the top-level scope. Checked by "
                "the worker before it scans and by the central on every result."
            )
        ),
    ] = None
    redeliver_after: Annotated[
        int,
        Meta(
            ge=2,
            le=86400,
            description=(
                "Seconds after which a job a worker took and never acknowledged (it was "
                "killed) is handed to another worker of the site; longer than the longest scan."
            ),
        ),
    ] = 600

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class Settings(Strict):
    """Everything PortConsole reads from its TOML file."""

    scope: Annotated[
        list[str], Meta(description="CIDR blocks that may be scanned; everything else is refused.")
    ] = field(default_factory=lambda: list(DEFAULT_SCOPE))
    data_dir: Annotated[
        Path | None, Meta(description="Where the store lives; default per platformdirs.")
    ] = None
    groups: Annotated[
        dict[str, GroupSettings], Meta(description="Named target groups, e.g. [groups.web-tier].")
    ] = field(default_factory=dict)
    sites: Annotated[
        dict[str, SiteSettings],
        Meta(description="Sites whose workers scan groups, e.g. [sites.pci]."),
    ] = field(default_factory=dict)
    scan: ScanSettings = field(default_factory=ScanSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    approval: ApprovalSettings = field(default_factory=ApprovalSettings)
    severity: SeveritySettings = field(default_factory=SeveritySettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    tui: TuiSettings = field(default_factory=TuiSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        _check_scope(self.scope)

    def scope_obj(self) -> Scope:
        return Scope(self.scope)

    def site_scope(self, site: str) -> Scope:
        """What a site may scan: its own scope, or the top-level one."""
        chosen = self.sites[site].scope
        return Scope(chosen if chosen is not None else self.scope)

    def group_discovery(self, label: str) -> str:
        """The discovery of a group's scan ("default" for a scan that is not a group's)."""
        group = self.groups.get(label)
        return group.discovery if group is not None else "default"

    def group_ports(self, group: str) -> str:
        chosen = self.groups[group].ports
        return chosen if chosen else self.scan.ports


class Paths(Struct, frozen=True):
    """Every file and folder in use; printed by `portconsole paths`."""

    config_file: Path
    config_exists: bool
    data_dir: Path
    themes_dirs: tuple[Path, ...]

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "store.lock"

    @property
    def leader_lock(self) -> Path:
        return self.data_dir / "leader.lock"

    def as_rows(self) -> list[tuple[str, str]]:
        rows = [
            (
                "config file",
                f"{self.config_file}{'' if self.config_exists else ' (not present: defaults)'}",
            ),
            ("data dir", str(self.data_dir)),
            ("journal (the record)", str(self.data_dir / "journal")),
            ("projection cache", str(self.data_dir / "hot.json")),
            ("scan history", str(self.data_dir / "scans")),
            ("store lock", str(self.lock_file)),
            ("leader lock", str(self.leader_lock)),
        ]
        # Each row has its own name: `paths --json` keys by it and must lose none.
        labels = ["themes dir (yours)", "themes dir (built in)"]
        rows += [
            (labels[i] if i < len(labels) else f"themes dir {i + 1}", str(p))
            for i, p in enumerate(self.themes_dirs)
        ]
        return rows


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def builtin_themes_dir() -> Path:
    """The built-in themes, shipped as package data (see core/package_data.py)."""
    from portconsole.core.package_data import themes_dir

    return themes_dir()


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in (
            f"{ENV_PREFIX}CONFIG",
            f"{ENV_PREFIX}DATA_DIR",
        ):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(parts):
            raise ConfigError(f"environment variable {name}: use PORTCONSOLE_SECTION__KEY")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name}: {part} is not a section")
            node = child
        node[parts[-1]] = _parse_env_value(raw)


def warn_if_world_readable(path: Path) -> str | None:
    """A warning when a file that may hold secrets is readable by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"warning: {path} is readable by other users and may hold notification secrets; chmod 600 it"
    return None


def settings_from(data: Mapping[str, Any], where_from: str = "(settings)") -> Settings:
    """Settings from parsed TOML (a dict). Raises ConfigError naming the first bad key, as
    `config FILE: scan.workers: expected int >= 1`."""
    try:
        return convert(data, Settings)
    except msgspec.ValidationError as error:
        refused = error
    # The whole document's conversion names a bad entry of a named table only as "groups":
    # its entries one by one say which (groups.web.ports). Only once something was refused.
    for section, kind in (("groups", GroupSettings), ("sites", SiteSettings)):
        entries = data.get(section)
        if isinstance(entries, Mapping):
            for name, entry in entries.items():
                try:
                    convert(entry, kind)
                except msgspec.ValidationError as error:
                    where, what = problem(error, (section, str(name)), kind)
                    raise ConfigError(f"config {where_from}: {where}: {what}") from None
    where, what = problem(refused, kind=Settings)
    raise ConfigError(f"config {where_from}: {where}: {what}") from None


def load_settings(
    config: Path | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, Paths]:
    """Read settings and resolve paths. Raises ConfigError naming the bad key."""
    env = os.environ if environ is None else environ
    config_file = config or (
        Path(env[f"{ENV_PREFIX}CONFIG"]) if env.get(f"{ENV_PREFIX}CONFIG") else None
    )
    explicit = config_file is not None
    config_file = (config_file or default_config_file()).expanduser()
    data: dict[str, Any] = {}
    exists = config_file.is_file()
    if exists:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {config_file} is not valid TOML: {error}") from None
        except OSError as error:
            raise ConfigError(f"cannot read config file {config_file}: {error.strerror}") from None
    elif explicit:
        raise ConfigError(f"config file {config_file} does not exist")
    _apply_env(data, env)
    where_from = str(config_file) if exists else "(environment)"
    settings = settings_from(data, where_from)
    scope = settings.scope_obj()
    for name, group in settings.groups.items():
        if group.site is not None and group.site not in settings.sites:
            known = ", ".join(sorted(settings.sites)) or "none configured"
            raise ConfigError(
                f"config: groups.{name}.site: no site {group.site!r} (known: {known})"
            )
        for target in group.targets:
            if not target or any(ch.isspace() for ch in target) or target.startswith("-"):
                raise ConfigError(f"config: groups.{name}.targets: bad target {target!r}")
            # Refused now, not by every cycle of a daemon that would fail forever.
            try:
                check_in_scope(target, scope)
                if group.site is not None:
                    check_in_scope(target, settings.site_scope(group.site))
            except TargetError as error:
                raise ConfigError(
                    f"config {where_from}: groups.{name}.targets: "
                    f"target {target!r}: {error}; widen scope or remove the target"
                ) from None
    resolved_data = (
        data_dir
        or (Path(env[f"{ENV_PREFIX}DATA_DIR"]) if env.get(f"{ENV_PREFIX}DATA_DIR") else None)
        or settings.data_dir
        or default_data_dir()
    ).expanduser()
    if not resolved_data.is_absolute():
        # A relative data_dir in the config file is relative to that file; elsewhere, to cwd.
        from_file = settings.data_dir is not None and data_dir is None
        resolved_data = config_file.parent / resolved_data if from_file else resolved_data.resolve()
    themes = (Path(platformdirs.user_config_dir(APP_NAME)) / "themes", builtin_themes_dir())
    return settings, Paths(config_file, exists, resolved_data, themes)
