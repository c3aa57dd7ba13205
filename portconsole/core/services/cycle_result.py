"""What one scan cycle did (CycleResult): the scan, its changes and findings, and the
fingerprint (-sV) it left running, folded in once waited for (`settle_fingerprint`)."""

from __future__ import annotations

from typing import Any

from msgspec import Struct, field

from portconsole.core.domain.finding import Finding
from portconsole.core.domain.model import Change, PortObservation, ScanResult
from portconsole.core.domain.schedule import Gap
from portconsole.core.services.fingerprint_after import FingerprintJob, FingerprintOutcome


class CycleResult(Struct):
    """What one scan cycle did: the scan, what changed, what it raised."""

    scan: ScanResult
    changes: list[Change]
    findings: list[Finding]
    approval_status: dict[str, str] = field(default_factory=dict)  # "host:port/proto" -> status
    unconfirmed: list[str] = field(default_factory=list)  # keys a re-probe did not confirm
    gaps: list[Gap] = field(default_factory=list)
    # The -sV the cycle left running (services/fingerprint_after.py), and once waited for
    # (`settle_fingerprint`), what it recorded.
    fingerprint: FingerprintJob | None = None
    fingerprinted: FingerprintOutcome | None = None

    def settle_fingerprint(self, timeout: float | None = None) -> bool:
        """Wait for the cycle's fingerprint and fold what it identified, changed and raised
        into this result (what `portconsole scan` shows). True when it raised findings."""
        if self.fingerprint is None or self.fingerprinted is not None:
            return False
        outcome = self.fingerprint.wait(timeout)
        if outcome is None:
            return False
        self.fingerprinted = outcome
        if outcome.error:
            self.scan.error = "; ".join(filter(None, [self.scan.error, outcome.error]))
        if outcome.scan is not None:
            found = {(h.address, p.key): p for h in outcome.scan.hosts for p in h.ports}
            for host in self.scan.hosts:
                host.ports = [_shown(p, found.get((host.address, p.key))) for p in host.ports]
            self.scan.fingerprinted = outcome.scan.fingerprinted
        self.changes += outcome.changes
        self.findings += outcome.findings
        return bool(outcome.findings)

    def to_json(self) -> dict[str, Any]:
        meta = self.scan.metadata_json()
        hosts = []
        for host in self.scan.hosts:
            ports = []
            for port in host.ports:
                item = {
                    "port": port.port,
                    "proto": port.proto,
                    "state": port.state,
                    "service": port.service,
                    "product": port.product,
                    "version": port.version,
                }
                key = f"{host.address}:{port.port}/{port.proto}"
                item["approval"] = self.approval_status.get(key, "unapproved")
                ports.append(item)
            hosts.append({"address": host.address, "status": host.status, "ports": ports})
        return {
            "scan_id": meta["scan_id"],
            "started_at": meta["started_at"],
            "finished_at": meta["finished_at"],
            "scan_type": meta["scan_type"],
            "privileged": meta["privileged"],
            "outcome": meta["outcome"],
            "error": meta["error"],
            "targets": meta["targets"],
            "ports": meta["ports"],
            "nmap_version": meta["nmap_version"],
            "raw_xml_sha256": meta["raw_xml_sha256"],
            "hosts": hosts,
            "changes": [c.to_json() for c in self.changes],
            "findings": [
                {
                    "id": f.id,
                    "kind": f.kind,
                    "severity": f.severity,
                    "host": f.host,
                    "port": f.port,
                    "proto": f.proto,
                }
                for f in self.findings
            ],
            "unconfirmed": list(self.unconfirmed),
            "fingerprint": self.fingerprinted.to_json() if self.fingerprinted else None,
        }


def _shown(swept: PortObservation, identified: PortObservation | None) -> PortObservation:
    """What -sV identified, unless it named nothing the sweep did not already show."""
    if identified is None or not (identified.product or identified.version or not swept.product):
        return swept
    return identified
