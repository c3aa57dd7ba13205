"""Errors a user can cause. The CLI prints their message on one line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: bad input, bad configuration, missing tool.

    The message is one line and says what to do.
    """

    exit_code = 2


class ConfigError(UserError):
    """The configuration file or an environment override is invalid."""


class TargetError(UserError):
    """A target or port specification was refused (bad syntax or outside scope)."""


class ScannerError(UserError):
    """nmap is missing, lacks privilege, or failed in a way the user can fix."""


class StoreError(UserError):
    """A data file is unreadable or corrupt; the message names it."""


class NotFoundError(UserError):
    """A finding, approval or host the user named does not exist."""


class PermissionRefused(UserError):
    """An action was refused by policy (read-only mode, separation of duties)."""
