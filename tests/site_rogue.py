"""A misbehaving site worker for tests/test_sites.py: a real Celery worker on a site's queue
that scans like the real one, then lies about it.

    python -m tests.site_rogue forged CONFIG SITE            # signs with a wrong key
    python -m tests.site_rogue outside CONFIG SITE ADDRESS   # scans ADDRESS too, signs right

`forged` is an attacker on the broker without the site's key; `outside` is a worker (or a
key holder) returning a host the central never asked for. The central must refuse both.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from portconsole.core.adapters.scanner import Scanner
from portconsole.core.adapters.site_celery import SiteWorker, run_worker
from portconsole.core.domain.site_envelope import RESULT, signature
from portconsole.core.domain.targets import Scope
from portconsole.core.settings import load_settings


class Forger(SiteWorker):
    def handle(self, job: object) -> dict[str, Any]:
        result = super().handle(job)
        result["signature"] = signature(RESULT, result["meta"], b"not-the-site-key-0123456789")
        return result


class Outsider(SiteWorker):
    extra = ""

    def _run(self, meta: dict[str, Any], addresses: list[str]) -> Any:
        return super()._run(meta, [*addresses, self.extra])


def main(argv: list[str]) -> None:
    mode, config, site = argv[0], Path(argv[1]), argv[2]
    settings, _ = load_settings(config)
    # The rogue's own scanner may scan anything on loopback: only the central stands guard.
    scanner = Scanner(settings.scan, Scope(["127.0.0.0/8"]))
    handler: SiteWorker
    if mode == "forged":
        handler = Forger(settings, site, scanner, worker=f"rogue-{site}@test")
    else:
        outsider = Outsider(settings, site, scanner, worker=f"rogue-{site}@test")
        outsider.extra = argv[3]
        handler = outsider
    run_worker(settings, site, scanner, hostname=f"rogue-{site}@test", handler=handler)


if __name__ == "__main__":
    main(sys.argv[1:])
