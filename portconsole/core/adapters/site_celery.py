"""Sites through Celery: the app per site, its queue, its key, and the worker's side of a job.

Why Celery with Redis (DESIGN.md, "Many sites"): a site's scanners are ordinary Celery
workers on the site's own queue, so queues, redelivery and `celery inspect` are Celery's,
not a protocol of ours. What is ours: every job and result is signed with the site's key
(domain/site_envelope.py), and the worker scans only inside its own scope, whatever a job
asks.

Delivery: `task_acks_late` with a prefetch of 1 and the solo pool, so a job is acknowledged
only once its result is stored; a worker killed mid-scan leaves the job unacknowledged and
Redis hands it to another worker of the site after `[sites.NAME] redeliver_after` seconds
(kombu's visibility timeout, swept every second).

Patience differs by role (`site_app(..., role)`). The central gives up on an unreachable
or password-refusing Redis within about a second (`CENTRAL_RETRY`): the group's run is a
monitoring gap, and the next cycle tries again. A worker tries for about 30 s to store a
result across a Redis blip (`WORKER_RETRY`, `WORKER_STORE`): a result it cannot store is a
scan lost (without `WORKER_STORE`, Celery 5.7 gives up at the first refused connection).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from portconsole.core.domain.model import PortObservation
from portconsole.core.domain.raw_xml import GzipDocuments, GzipMember
from portconsole.core.domain.site_envelope import JOB, RESULT, EnvelopeRefused, seal, unseal
from portconsole.core.domain.targets import Scope, parse_ports
from portconsole.core.errors import ConfigError, UserError
from portconsole.core.settings import Settings, SiteSettings
from portconsole.core.timeutil import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from celery import Celery

    from portconsole.core.adapters.scanning import ScannerLike

TASK_NAME = "portconsole.site_job"
Role = Literal["central", "worker"]
# How often a connection to the site's Redis is tried again before giving up (kombu's
# retry_over_time: max_retries more tries, sleeping interval_start, growing by
# interval_step up to interval_max).
# Central: one more try after 0.2 s; a refused connection or password fails in well under
# a second (a silent host: socket_connect_timeout, 3 s, per try). Celery's default is 20
# tries a second apart, which made every cycle with the broker down wait ~19 s.
CENTRAL_RETRY: dict[str, float] = {
    "max_retries": 1,
    "interval_start": 0.2,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
# Worker: each Redis command of storing a result (`RedisBackend.set`) is tried for ~30 s.
WORKER_RETRY: dict[str, float] = {
    "max_retries": 30,
    "interval_start": 0,
    "interval_step": 1,
    "interval_max": 1,
}
# ... and the whole store (Celery 5.7 first reads the task's meta, a GET outside the policy
# above) is tried again on a connection error (`result_backend_always_retry`): up to 60
# times, sleeping a random 0..min(1 s, 0.1 s * 2**n) between (full jitter), ~30 s in all.
WORKER_STORE: dict[str, object] = {
    "result_backend_always_retry": True,
    "result_backend_max_retries": 60,
    "result_backend_base_sleep_between_retries_ms": 100,
    "result_backend_max_sleep_between_retries_ms": 1000,
}
_APPS: dict[tuple[str, str, int, str], Celery] = {}
_APPS_LOCK = threading.Lock()


def queue_name(site: str) -> str:
    return f"portconsole.site.{site}"


def site_key(name: str, site: SiteSettings) -> bytes:
    """The site's shared key, from its file or environment variable (never shown)."""
    if site.key_file is not None:
        path = Path(site.key_file).expanduser()
        try:
            key = path.read_bytes().strip()
        except OSError as error:
            raise ConfigError(
                f"sites.{name}.key_file: cannot read {path}: {error.strerror}"
            ) from None
        where = f"sites.{name}.key_file {path}"
    elif site.key_env:
        key = os.environ.get(site.key_env, "").strip().encode()
        where = f"sites.{name}.key_env {site.key_env}"
    else:
        raise ConfigError(f"sites.{name}: set key_file or key_env (the site's shared key)")
    if len(key) < 16:
        raise ConfigError(f"{where}: the key is missing or shorter than 16 bytes")
    return key


def site_app(name: str, site: SiteSettings, role: Role = "central") -> Celery:
    """The Celery app of one site (one per broker, role and process): Redis broker and
    backend. `role`: the central sends jobs and gives up fast on an unreachable Redis; a
    worker runs them and waits out a short Redis blip to store its result."""
    from celery import Celery

    retry = CENTRAL_RETRY if role == "central" else WORKER_RETRY
    # The central's publishing connection fails as fast (kombu reads these keys of the
    # transport options when it connects); a worker's consumer has Celery's own
    # broker_connection_max_retries and backoff, whatever these say.
    broker_retry = retry if role == "central" else {}
    store: dict[str, object] = WORKER_STORE if role == "worker" else {}
    cache_key = (name, site.broker, site.redeliver_after, role)
    with _APPS_LOCK:
        app = _APPS.get(cache_key)
        if app is None:
            app = Celery(f"portconsole-site-{name}", broker=site.broker, backend=site.broker)
            app.conf.update(
                task_serializer="json",
                result_serializer="json",
                accept_content=["json"],
                task_acks_late=True,
                task_reject_on_worker_lost=True,
                worker_prefetch_multiplier=1,
                task_default_queue=queue_name(name),
                task_track_started=True,
                result_expires=max(3600, 2 * site.redeliver_after),
                broker_connection_retry_on_startup=True,
                broker_connection_timeout=3,
                broker_transport_options={
                    "visibility_timeout": site.redeliver_after,
                    "unacked_restore_interval": 1,
                    "unacked_restore_throttle": 1,
                    "socket_connect_timeout": 3,
                    "socket_timeout": 10,
                    **broker_retry,
                },
                # Documented for the Redis result backend: its reconnect policy.
                result_backend_transport_options={"retry_policy": retry},
                redis_socket_connect_timeout=3,
                redis_socket_timeout=10,
                worker_hijack_root_logger=False,
                worker_redirect_stdouts=False,
                **store,
            )
            _APPS[cache_key] = app
    return app


class SiteWorker:
    """What one worker does with a job: check it, scan inside its scope, sign the answer."""

    def __init__(
        self, settings: Settings, name: str, scanner: ScannerLike, worker: str = ""
    ) -> None:
        if name not in settings.sites:
            known = ", ".join(sorted(settings.sites)) or "none configured"
            raise ConfigError(f"no site {name!r} in the settings (known: {known})")
        self.name = name
        self.site = settings.sites[name]
        self.key = site_key(name, self.site)
        self.scope: Scope = settings.site_scope(name)
        self.scanner = scanner
        self.worker = worker or f"{name}@{socket.gethostname()}"

    def handle(self, job: object) -> dict[str, Any]:
        """A signed result for a job: the scan's, or a signed refusal saying why not."""
        try:
            meta, _ = unseal(JOB, job, self.key)
        except EnvelopeRefused as error:
            # Not from our central: answer nothing it could use, sign nothing it chose.
            return {"refused": error.reason}
        base = {
            "job_id": str(meta.get("job_id", "")),
            "nonce": str(meta.get("nonce", "")),
            "site": self.name,
            "worker": self.worker,
            "kind": str(meta.get("kind", "")),
            "group": str(meta.get("group", "")),
        }
        try:
            if meta.get("site") != self.name:
                raise UserError(f"job for site {meta.get('site')!r} sent to site {self.name!r}")
            if utcnow() > parse_iso(str(meta["deadline"])):
                raise UserError("job arrived after its deadline; not scanned")
            addresses = [str(a) for a in meta.get("addresses", [])]
            # Our own scope, whatever the central asked (the central checks again).
            self.scope.check_addresses(addresses)
            answer, xml = self._run(meta, addresses)
        except (UserError, KeyError, ValueError, TypeError) as error:
            return seal(RESULT, {**base, "outcome": "refused", "error": str(error)[:500]}, self.key)
        return seal(RESULT, {**base, **answer}, self.key, xml)

    def _run(
        self, meta: dict[str, Any], addresses: list[str]
    ) -> tuple[dict[str, Any], list[bytes] | None]:
        kind = meta["kind"]
        if kind in ("probe", "fingerprint"):
            pairs = [(int(p), str(proto)) for p, proto in meta["pairs"]]
            if kind == "probe":
                found = self.scanner.probe(addresses[0], pairs)
                return {
                    "outcome": "success",
                    "open": sorted([p, proto] for p, proto in found),
                }, None
            seen = self.scanner.fingerprint(addresses[0], pairs)
            return {"outcome": "success", "ports": [p.to_json() for p in seen.values()]}, None
        if kind != "scan":
            raise UserError(f"unknown job kind {kind!r}")
        result = self.scanner.scan(
            addresses,
            parse_ports(str(meta["ports"])),
            udp=bool(meta.get("udp")),
            fingerprint="none",
            targets=addresses,
            origin="site",
            group=str(meta.get("group", "")),
            known=[str(a) for a in meta["known"]] if meta.get("known") is not None else None,
        )
        raw = result.raw_xml
        members = (
            raw.members if isinstance(raw, GzipDocuments) else [GzipMember.of(doc) for doc in raw]
        )
        scanned = {h.address: h.status for h in result.hosts}
        answer = {
            "outcome": result.outcome,
            "error": result.error[:2000],
            "started": iso(result.started_at),
            "finished": iso(result.finished_at),
            "nmap_version": result.nmap_version,
            "scan_type": result.scan_type,
            "privileged": result.privileged,
            "protocols": list(result.protocols),
            "down": sorted(a for a, status in scanned.items() if status == "down"),
            "failed": [a for a in result.addresses if a not in scanned],
            "xml_plain_sha256": [m.sha256 for m in members],
        }
        return answer, [m.data for m in members]


def fingerprint_from_json(item: dict[str, Any]) -> PortObservation:
    """A port as a site's service detection reported it (signed, still untrusted text)."""
    return PortObservation(
        port=int(item["port"]),
        proto=str(item["proto"]),
        state=str(item["state"]),
        service=str(item.get("service", ""))[:200],
        product=str(item.get("product", ""))[:200],
        version=str(item.get("version", ""))[:200],
        extrainfo=str(item.get("extrainfo", ""))[:500],
        fingerprinted=True,
    )


def run_worker(
    settings: Settings,
    name: str,
    scanner: ScannerLike,
    hostname: str = "",
    handler: SiteWorker | None = None,
) -> None:
    """Run a Celery worker on the site's queue only, until it is stopped (blocks).

    `handler`: what answers each job (default: a SiteWorker over `scanner`)."""
    site = settings.sites.get(name)
    if site is None:
        known = ", ".join(sorted(settings.sites)) or "none configured"
        raise ConfigError(f"no site {name!r} in the settings (known: {known})")
    node = hostname or f"{name}-{os.getpid()}@{socket.gethostname()}"
    answer = handler or SiteWorker(settings, name, scanner, worker=node)
    app = site_app(name, site, role="worker")

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)
    def site_job(job: dict[str, Any]) -> dict[str, Any]:
        return answer.handle(job)

    app.worker_main(
        [
            "worker",
            "--queues",
            queue_name(name),
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "--prefetch-multiplier",
            "1",
            "--hostname",
            node,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ]
    )
