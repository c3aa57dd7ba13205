"""`portconsole scan` starts its first nmap sweeps before it has loaded the product.

Why: a scan from cron is a fresh process. Python and the modules a scan needs take ~0.1 s
of CPU before the first nmap can start, about as long as nmap's own sweep of a few dozen
hosts; run one after the other, they make a steady scan ~2x raw nmap. Started first, nmap
sweeps while Python loads.

How: after a scan, the CLI keeps the sweeps the same command would start first now
(`ScanCycle.first_sweeps`: the same settings, store and scope), in a plan file named by a
digest of everything the command's meaning depends on: its arguments, working directory,
user and group, the environment variables the settings read (PORTCONSOLE_*, HOME, PATH,
XDG_*) and the product's version. The plan also names the config file and a digest of its
bytes. The next run of the same command with the same config file starts the plan's
sweeps (`nmap_spawn.prelaunch`) before importing anything else, and its scanner takes
them over only if they are exactly the sweeps it would start (`nmap_spawn.claim`); any
other is killed before the scan's own runs start. A stale plan costs time, never a
result.

Trust: a plan only says which nmap arguments to run, so it is used only if it and its
folder belong to this user and nobody else can write them (like ssh's own files). Anyone
who could write it could already run nmap as this user. The scope cannot be left behind:
a plan is used only with the very config file (and environment) its scan was checked
against.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from portconsole import __version__

try:  # hashlib's own blake2b, without hashlib loading OpenSSL first (~4 ms before nmap)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - CPython always builds it
    from hashlib import blake2b

FORMAT = 1
APP_NAME = "portconsole"
# The environment a scan's settings and paths are read from (settings.load_settings).
ENVIRONMENT = ("HOME", "PATH", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")
ENV_PREFIX = "PORTCONSOLE_"
# Plans kept, newest first: one per distinct scan command a user runs.
KEEP_PLANS = 32
MAX_PLAN_BYTES = 1024 * 1024
# A plan is kept only for a scan that took at most this long: the head start is the
# ~0.1 s Python takes to load, worth it for a short scan only.
WORTH_SECONDS = 10.0


def plans_dir() -> str:
    """The user's cache (platformdirs' user_cache_dir rule on Linux, written out: loading
    platformdirs and pathlib costs ~10 ms before the early runs) / portconsole/scan-plans."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not cache.strip():
        cache = os.path.expanduser("~/.cache")
    return os.path.join(cache, APP_NAME, "scan-plans")


def start(argv: Sequence[str]) -> int:
    """Start the sweeps the plan for `argv` names; how many started (0 without a usable
    plan: none kept, not this user's, or its config file changed)."""
    if "scan" not in argv:
        return 0
    folder = plans_dir()
    path = os.path.join(folder, f"{command_key(argv)}.json")
    try:
        if not (_private(folder) and _private(path)):
            return 0
        with open(path, "rb") as file:
            plan = json.loads(file.read(MAX_PLAN_BYTES))
        commands = plan["commands"]
        if plan["format"] != FORMAT or plan["config_digest"] != _digest_of(plan["config"]):
            return 0
        if not all(isinstance(c, list) and all(isinstance(a, str) for a in c) for c in commands):
            return 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    # Only now: a command that keeps no plan (every other one) never loads subprocess.
    from portconsole.core.adapters import nmap_spawn

    return nmap_spawn.prelaunch(commands)


def remember(argv: Sequence[str], commands: list[list[str]], config: Path) -> None:
    """Keep `commands` as the plan for the next run of `argv` read with `config` (written
    only when it changed; an unwritable cache only loses the head start)."""
    folder = Path(plans_dir())
    path = folder / f"{command_key(argv)}.json"
    try:
        plan = {
            "format": FORMAT,
            "config": str(config),
            "config_digest": _digest_of(str(config)),
            "commands": commands,
        }
        text = json.dumps(plan, separators=(",", ":"), sort_keys=True).encode()
        try:
            if path.read_bytes() == text and _private(path):
                return
        except FileNotFoundError:
            pass
        if not commands:
            path.unlink(missing_ok=True)
            return
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(folder):
            return
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(text)
        os.replace(partial, path)
        _prune(folder)
    except OSError:
        return


def command_key(argv: Sequence[str]) -> str:
    """The digest naming a command's plan: what the command means depends on these."""
    environment = sorted(
        (name, value)
        for name, value in os.environ.items()
        if name in ENVIRONMENT or name.startswith(ENV_PREFIX)
    )
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    material = [FORMAT, __version__, list(argv), cwd, os.geteuid(), os.getegid(), environment]
    encoded = json.dumps(material, separators=(",", ":")).encode()
    return blake2b(encoded, digest_size=16).hexdigest()


def _digest_of(config: str) -> str:
    """A digest of the config file's bytes; "-" when there is no such file."""
    try:
        with open(config, "rb") as file:
            return blake2b(file.read(), digest_size=32).hexdigest()
    except FileNotFoundError:
        return "-"


def _private(path: str | Path) -> bool:
    """`path` is this user's, not a link, and nobody else may write it."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    kind_ok = stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)
    return kind_ok and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def _prune(folder: Path) -> None:
    plans = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in plans[KEEP_PLANS:]:
        old.unlink(missing_ok=True)


def main() -> int:
    """The `portconsole` command: a scan's plan first, then the CLI."""
    start(sys.argv[1:])
    from portconsole.cli import main as cli_main

    return cli_main()
