"""Who may lead: the settings a data dir was last run with, and the lease that lets one
process scan on schedule.

A data dir records the fingerprint of the settings it runs with (an audit event with the
non-secret definitions, so a report knows when each group was configured). Only a process
with those settings may take the lease (adapters/leader.py): one opened with other groups,
or none, would scan the wrong things, or nothing, while showing "leading". The leader hands
over what it left unfinished when it quits, and steps down when another took the lease.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from portconsole.core.services.base import ServiceBase
from portconsole.core.settings import Settings
from portconsole.core.timeutil import iso

# The hot file's table holding the data dir's settings fingerprint (one document).
SETTINGS_TABLE = "settings_fingerprint"


# Settings added after data dirs began recording fingerprints, each with its default: left
# out of the fingerprint at that default, so that an upgrade which adds a setting is not a
# change of the configuration (nor makes an upgraded console and a daemon not yet upgraded
# disagree on who may lead). A config that sets another value is fingerprinted with it.
LATER_SETTINGS: dict[tuple[str, str], object] = {("scan", "confirm_connect"): True}


def settings_fingerprint(settings: Settings) -> str:
    """sha256 of the effective settings, notification secrets masked, data dir and later
    settings at their defaults (LATER_SETTINGS) left out."""
    from portconsole.core.secrets import mask_url
    from portconsole.core.strict import to_builtins

    data = to_builtins(settings)
    data["notify"]["urls"] = [
        {**to_builtins(t), "url": mask_url(t.url)} for t in settings.notify.targets()
    ]
    data.pop("data_dir", None)
    for (section, key), default in LATER_SETTINGS.items():
        if data[section].get(key) == default:
            del data[section][key]
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


class Leadership(ServiceBase):
    """The settings record and the lease, for the Monitor."""

    # The fingerprint of this process's settings (`settings_fingerprint`, set by the Monitor).
    settings_sha256: str

    def _audit_settings_change(self) -> None:
        """Record a settings change (the config file is edited outside the product).

        The fingerprint covers the effective settings with notification secrets masked, so
        the audit chain shows that and when the configuration changed, never a token. The
        event also carries the non-secret definitions (scope, groups, retention, gap grace)
        so a report knows when each group was configured and what changed.

        The data dir's settings are the last recorded. A process records its own over them
        only when it has a config file, is not a console, and no live leader runs other
        settings: a console opened without the data dir's config (or with another copy)
        follows and says why (`lead_refusal`) instead of rewriting what the data dir is.
        """
        fingerprint = self.settings_sha256
        with self.store.lock.hold():
            table = self.store.hot.table(SETTINGS_TABLE)
            known = table.all()
            previous = known[0].get("sha256") if known else None
            if previous == fingerprint:
                return
            if previous is not None:
                holder = self.leader.current()
                if (
                    not self.paths.config_exists
                    or self.origin == "tui"
                    or (holder is not None and holder.alive and holder.fingerprint != fingerprint)
                ):
                    return
            # Here, not at the top: only a settings change needs it, not every command.
            from portconsole.core.domain.settings_history import definitions_of

            moment = self.clock()
            record = {
                "sha256": fingerprint,
                "at": iso(moment),
                "config": str(self.paths.config_file),
            }
            if known:
                table.update(record)
            else:
                table.insert(record)
            self._audit(
                "settings.changed" if previous else "settings.recorded",
                details={
                    "config": str(self.paths.config_file),
                    "sha256": fingerprint,
                    "previous": previous,
                    # What a report shows of the scope and groups, and when each began.
                    **definitions_of(self.settings),
                },
                at=moment,
            )

    def hand_over(self) -> bool:
        """Quit leading: runs this process left unfinished are due again at once (not gaps),
        and the lease is released for a follower's next try (`leader.handover`)."""
        if self.readonly or not self.leader.holds:
            return False
        self.scheduler.hand_back_unfinished(self.clock())
        term = self.leader.current()
        if not self.leader.release():
            return False
        self._audit(
            "leader.handover",
            details={"term": term.term if term else None, "lease": "released"},
        )
        return True

    def lead_refusal(self, holder_fingerprint: str = "") -> str:
        """Why this process may not lead ("" if it may).

        Only a process with the data dir's settings (the fingerprint of the last settings
        event, or the live lease holder's) may lead: one opened with other groups, or none,
        would scan the wrong things, or nothing, while showing "leading".
        """
        if self.readonly:
            return "read-only"
        with self.store.lock.hold(transaction=False):
            known = self.store.hot.table(SETTINGS_TABLE).all()
        recorded = str(known[0].get("sha256") or "") if known else ""
        if self.settings_sha256 in (recorded, holder_fingerprint) or not recorded:
            return ""
        # Short enough for the console's header at 80 columns ("following: " + this).
        return f"settings differ from the data dir's (fingerprint {recorded[:8]})"

    def try_lead(self) -> bool:
        """Keep or take the lease (see adapters/leader.py); True while this process leads."""
        if self.readonly:
            return False
        if self.leader.is_leader:
            return True
        if self.leader.holds and self.leader.try_acquire():
            return True
        displaced, lost = self.leader.take_lost()
        if displaced:
            # Stopped or hung past the lease, and someone took over (noticed here or by the
            # renewal thread): step down at once, before any scan.
            self._audit(
                "leader.stepped_down",
                outcome="failure",
                details={"taken_by": lost.describe() if lost else None},
            )
            return False
        holder = self.leader.current()
        live = holder.fingerprint if holder is not None and holder.alive else ""
        self.follow_reason = self.lead_refusal(live)
        if self.follow_reason:
            return False

        def eligible(_record: dict[str, Any] | None) -> bool:
            # Asked again under the lease's lock: the settings may have changed since.
            return not self.lead_refusal()

        if not self.leader.try_acquire(eligible):
            return False
        lapsed = self.leader.took_over
        if lapsed is not None:
            self._audit(
                "leader.takeover",
                details={
                    "previous": {
                        k: lapsed.get(k)
                        for k in ("user", "host", "pid", "tty", "origin", "term", "renewed_at")
                    },
                    "lease_seconds": self.leader.lease_seconds,
                },
            )
        # Renew in the background: a long scan must not lose the lease.
        self.leader.start_heartbeat()
        return True
