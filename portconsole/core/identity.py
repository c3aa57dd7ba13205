"""Who is acting: the operator identity recorded on every audit event.

PCI DSS 10.2/10.3 ask for *who* did it and *from where*. The OS user comes from the
process's effective uid (the password database), not from the environment, because any
user can set `USER`. The environment still supplies what only it knows: `SUDO_USER` (the
person behind a `sudo`), `SSH_CONNECTION` (the client address of an SSH session) and
`SSH_USER_AUTH` (set by OpenSSH with `ExposeAuthInfo yes`: a file naming the public key the
session authenticated with, whose fingerprint is recorded as `ssh-keygen -l` prints it).
Environment text is untrusted: it is bounded, stripped of control characters, the SSH
client must parse as an IP address and the key must be a well-formed SSH key blob, or each
is dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import os
import pwd
import stat
from collections.abc import Mapping
from typing import Any

from msgspec import Struct

# "system": events the store records by itself (a migration, a rebuild, a bare update).
ORIGINS = ("tui", "cli", "daemon", "system")

# Long enough for any real user or host name, short enough that a hostile value cannot
# bloat every audit event.
MAX_NAME = 64
MAX_HOST = 253
# sshd writes one line per authentication method; a few hundred bytes each (an RSA-16384
# key is about 2.8 KB of base64). More than this is not an sshd file.
MAX_AUTH_INFO = 64 * 1024
MAX_KEY_BLOB = 8 * 1024


def clean_text(value: object, limit: int = MAX_NAME) -> str:
    """Bound `value` to `limit` characters and replace anything unprintable or spacing.

    User and host names never contain whitespace; replacing it keeps the display form
    (`user@host via ip`) unambiguous.
    """
    text = str(value)[:limit]
    return "".join(ch if ch.isprintable() and not ch.isspace() else "?" for ch in text)


def parse_ssh_client(environ: Mapping[str, str]) -> str | None:
    """The SSH client address from `SSH_CONNECTION` (or the older `SSH_CLIENT`), or None.

    `SSH_CONNECTION` is "client_ip client_port server_ip server_port"; `SSH_CLIENT` is
    "client_ip client_port server_port". Anything that does not parse as an IP is dropped.
    """
    for name in ("SSH_CONNECTION", "SSH_CLIENT"):
        raw = environ.get(name, "")
        if not raw:
            continue
        fields = raw[:200].split()
        if not fields:
            continue
        candidate = fields[0]
        # An IPv6 client may carry a zone (fe80::1%eth0); keep the zone only if it is tame.
        address, _, zone = candidate.partition("%")
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            continue
        text = str(parsed)
        if zone and zone.isalnum() and len(zone) <= 16:
            text = f"{text}%{zone}"
        return text
    return None


def ssh_key_fingerprint(key_type: str, key_base64: str) -> str | None:
    """`SHA256:...` of an SSH public key as `ssh-keygen -l` prints it, or None if malformed.

    The blob must decode as base64 and begin with its own type name (the SSH wire format:
    a uint32 length, then the name), and that name must be `key_type`.
    """
    if not key_type or len(key_type) > 64 or not all(c.isalnum() or c in "-.@" for c in key_type):
        return None
    if len(key_base64) > MAX_KEY_BLOB * 2:
        return None
    try:
        blob = base64.b64decode(key_base64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not 4 < len(blob) <= MAX_KEY_BLOB:
        return None
    size = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + size] != key_type.encode("ascii"):
        return None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def parse_ssh_user_auth(environ: Mapping[str, str]) -> str | None:
    """The fingerprint of the public key an SSH session authenticated with, or None.

    `SSH_USER_AUTH` names a file of lines `publickey TYPE BASE64 [...]` (other methods,
    such as `keyboard-interactive`, have their own lines). Only a regular file of bounded
    size is read; the first well-formed public key wins.
    """
    raw = environ.get("SSH_USER_AUTH", "")
    if not raw or len(raw) > 4096:
        return None
    try:
        fd = os.open(raw, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_AUTH_INFO + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_AUTH_INFO:
        return None
    for line in data.decode("ascii", errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "publickey":
            fingerprint = ssh_key_fingerprint(fields[1], fields[2])
            if fingerprint:
                return fingerprint
    return None


def _os_user(environ: Mapping[str, str]) -> str:
    euid = os.geteuid()
    try:
        return clean_text(pwd.getpwuid(euid).pw_name)
    except KeyError:
        # Containers often run a uid with no passwd entry.
        for name in ("USER", "LOGNAME"):
            if environ.get(name):
                return clean_text(environ[name])
        return f"uid{euid}"


class Actor(Struct, frozen=True):
    """One operator (or the daemon) acting from one machine through one front end.

    `user` is the effective OS user; `sudo_user` the invoking user when run under sudo
    (as claimed by the environment); `ssh_client` the SSH client address and `ssh_key` the
    fingerprint of the key the SSH session authenticated with, when present.
    """

    user: str
    host: str
    origin: str
    sudo_user: str | None = None
    ssh_client: str | None = None
    ssh_key: str | None = None

    @classmethod
    def current(cls, origin: str, environ: Mapping[str, str] | None = None) -> Actor:
        """The actor of this process. `environ` defaults to `os.environ` (tests pass a dict)."""
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
        env = os.environ if environ is None else environ
        user = _os_user(env)
        sudo_raw = env.get("SUDO_USER", "")
        sudo_user = clean_text(sudo_raw) if sudo_raw else None
        if sudo_user == user:
            sudo_user = None
        return cls(
            user=user,
            host=clean_text(os.uname().nodename, MAX_HOST),  # gethostname(), without socket
            origin=origin,
            sudo_user=sudo_user,
            ssh_client=parse_ssh_client(env),
            ssh_key=parse_ssh_user_auth(env),
        )

    @property
    def person(self) -> str:
        """The human responsible, for separation of duties.

        Under sudo to root this is the invoking user. `SUDO_USER` is only believed when the
        effective user is root: anyone can set it, but only root could also forge the data
        files anyway, so believing it there grants nothing new.
        """
        if self.sudo_user and self.user == "root":
            return self.sudo_user
        return self.user

    def __str__(self) -> str:
        who = self.user if not self.sudo_user else f"{self.user}(sudo:{self.sudo_user})"
        text = f"{who}@{self.host}"
        if self.ssh_client:
            text += f" via {self.ssh_client}"
        if self.ssh_key:
            text += f" key {self.ssh_key}"
        return text

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user": self.user,
            "sudo_user": self.sudo_user,
            "ssh_client": self.ssh_client,
            "host": self.host,
            "origin": self.origin,
        }
        # Only when known: events without a key keep the shape they always had.
        if self.ssh_key:
            data["ssh_key"] = self.ssh_key
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], origin: str | None = None) -> Actor:
        """Rebuild an actor from stored data (tolerant: stored data may be old or damaged)."""

        def optional(key: str) -> str | None:
            value = data.get(key)
            return clean_text(value, MAX_HOST) if value else None

        return cls(
            user=clean_text(data.get("user") or "?"),
            host=clean_text(data.get("host") or "?", MAX_HOST),
            origin=str(origin if origin is not None else data.get("origin") or "?"),
            sudo_user=optional("sudo_user"),
            ssh_client=optional("ssh_client"),
            ssh_key=optional("ssh_key"),
        )
