"""`portconsole worker --site NAME`: a site's scanner, as a Celery worker on its queue.

The worker reads the same settings file as the central (its own copy at the site) and uses
its site's entry: the broker, the shared key (`key_file` or `key_env`) and the site's scope.
It consumes only `portconsole.site.NAME`, runs the same local scanner as `portconsole scan`,
and answers each signed job with a signed result (core/adapters/site_celery.py). Run two
or more per site: a job whose worker dies is handed to another after `redeliver_after`.
"""

from __future__ import annotations

import argparse
import sys

from portconsole.cli_common import AddCommand


def shown_broker(url: str) -> str:
    """The broker URL with its password masked (core/secrets.py: a Redis URL may carry one)."""
    from portconsole.core.secrets import mask_url

    return mask_url(url)


def cmd_worker(args: argparse.Namespace) -> int:
    from portconsole import logs
    from portconsole.core.adapters.scanner import Scanner
    from portconsole.core.adapters.site_celery import queue_name, run_worker, site_key
    from portconsole.core.errors import ConfigError
    from portconsole.core.settings import load_settings

    settings, _ = load_settings(args.config, args.data_dir)
    logs.apply_settings(settings)
    site = settings.sites.get(args.site)
    if site is None:
        known = ", ".join(sorted(settings.sites)) or "none configured"
        raise ConfigError(f"no site {args.site!r} in the settings (known: {known})")
    site_key(args.site, site)  # refused now, with what to fix, not at the first job
    scanner = Scanner(settings.scan, settings.site_scope(args.site))
    scope = ", ".join(str(n) for n in settings.site_scope(args.site).networks)
    print(
        f"portconsole: worker for site {args.site} on queue {queue_name(args.site)} "
        f"at {shown_broker(site.broker)}; scope {scope}",
        file=sys.stderr,
        flush=True,
    )
    run_worker(settings, args.site, scanner, hostname=args.name or "")
    return 0


def add_site_commands(add: AddCommand) -> None:
    """Add `worker --site NAME`."""
    p = add("worker", cmd_worker, "run a site's scanner: a Celery worker on the site's queue")
    p.add_argument("--site", required=True, metavar="NAME", help="the [sites.NAME] to serve")
    p.add_argument(
        "--name",
        metavar="NODE",
        help="Celery node name, e.g. pci-1@scanner1 (default: SITE-PID@HOST)",
    )
