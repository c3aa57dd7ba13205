"""The scale benchmark's live sections (bench/scale.py runs them): real nmap over a /16 of
loopback, and a real daemon's port-opened -> webhook latency.

- slash16: `portconsole scan 127.0.0.0/16 --ports P` (10 ports, listeners on ~200 hosts of
  the range, the product's defaults) against raw `nmap -sS -n -T4 -p P 127.0.0.0/16` (-sT when
  not root): wall time and peak RSS of each (os.wait4: the process and its nmap runs). The
  first scan goes into an empty store (its listeners become findings: confirm and -sV run);
  the second is the steady state. A smaller --prefix (e.g. 20) makes a quick run.
- latency: a real `portconsole daemon` over a temp data dir, one group on a few loopback
  hosts with listeners, interval 30 s and no jitter, notifications per finding to a local
  webhook (tests/servers.py's HttpCatcher, an http.server on 127.0.0.1, through a
  json:// apprise URL). After the first cycle's findings arrive, a new listener opens at a
  random moment of the interval; the clock stops when the webhook receives its message.

Loopback only: 127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import json
import random
import tempfile
import time
from pathlib import Path

from bench.daemon_run import DaemonRun, group_config
from bench.harness import (
    CLI,
    Table,
    cli_env,
    free_ports,
    median,
    nmap_path,
    open_ports_in_xml,
    port_list,
    run_measured,
    scan_flag,
)
from portconsole.core.errors import UserError
from portconsole.demo import ListenerFleet
from tests.servers import HttpCatcher


def _spread_hosts(network: ipaddress.IPv4Network, count: int) -> list[str]:
    """`count` addresses spread evenly over the network (never .0 or .255 of a /24, nor
    127.0.0.1, which other processes listen on)."""
    step = max(1, network.num_addresses // (count + 1))
    chosen: list[str] = []
    index = step
    while len(chosen) < count and index < network.num_addresses:
        address = network[index]
        if address.packed[-1] not in (0, 1, 255):
            chosen.append(str(address))
        index += step
    return chosen


def bench_slash16(prefix: int, listener_hosts: int, table: Table) -> None:
    network = ipaddress.IPv4Network(f"127.0.0.0/{prefix}")
    ports = free_ports(10, 24000, step=11)
    spec = port_list(ports)
    hosts = _spread_hosts(network, listener_hosts)
    fleet = ListenerFleet().start()
    placed = 0
    try:
        for i, host in enumerate(hosts):
            for port in {ports[i % 10], ports[(i * 7 + 3) % 10]} if i % 4 == 0 else {ports[i % 10]}:
                try:
                    fleet.add(host, port, "http")
                    placed += 1
                except UserError:
                    continue
        raw_argv = [nmap_path(), scan_flag(), "-n", "-T4", "-p", spec, "-oX", "-", str(network)]
        with tempfile.TemporaryDirectory(prefix="pc-bench-16-") as tmp:
            config = Path(tmp) / "config.toml"
            config.write_text('scope = ["127.0.0.0/8"]\n', encoding="utf-8")
            cli_argv = [*CLI, "scan", str(network), "--ports", spec, "--json"]
            cli_argv += ["--config", str(config), "--data-dir", str(Path(tmp) / "data")]
            rows = []
            raws = []
            for label in ("first (empty store)", "second (steady)"):
                raw = run_measured(raw_argv)
                if raw.returncode != 0:
                    raise RuntimeError(f"raw nmap failed: {raw.stderr[-300:]!r}")
                raws.append(raw)
                cli = run_measured(cli_argv, env=cli_env())
                if cli.returncode not in (0, 3):
                    raise RuntimeError(f"portconsole scan failed: {cli.stderr[-400:]!r}")
                doc = json.loads(cli.stdout)
                found = sum(len(h["ports"]) for h in doc["hosts"])
                rows.append((label, cli, found, len(doc.get("findings", [])), raw))
    finally:
        fleet.stop()
    print(
        f"slash16: {network} ({network.num_addresses} addresses) x 10 ports ({spec}), "
        f"{placed} http listeners on {len(hosts)} hosts; CLI with the product's defaults"
    )
    for label, cli, found, findings, raw in rows:
        ratio = cli.seconds / raw.seconds
        print(
            f"  {label:20} CLI {cli.seconds:6.1f} s {cli.peak_mb:5.0f} MB ({found} open, "
            f"{findings} findings)   raw nmap {raw.seconds:6.1f} s {raw.peak_mb:5.0f} MB "
            f"({open_ports_in_xml(raw.stdout)} open)   ratio {ratio:4.2f}  (target <= 1.3)"
        )
        table.add(f"/{prefix} scan {label.split()[0]}: CLI / raw nmap", ratio, 1.3, "x")
    table.add(f"/{prefix} scan: CLI peak RSS", max(r[1].peak_mb for r in rows), 300, " MB", ".0f")
    del raws


def bench_latency(trials: int, interval: int, table: Table) -> None:
    hosts = [f"127.63.0.{i}" for i in range(2, 6)]
    ports = free_ports(6, 25000, step=13)
    rng = random.Random(11)
    fleet = ListenerFleet().start()
    took: list[float] = []
    try:
        first_open = set(zip(hosts, ports[: len(hosts)], strict=True))
        for host, port in first_open:
            fleet.add(host, port, "http")
        closed = [(h, p) for h in hosts for p in ports if (h, p) not in first_open]
        rng.shuffle(closed)
        with tempfile.TemporaryDirectory(prefix="pc-bench-lat-") as tmp, HttpCatcher() as hook:
            work = Path(tmp)
            config = work / "config.toml"
            webhook = f"json://127.0.0.1:{hook.port}/hook"
            group_config(config, hosts, port_list(ports), interval=interval, webhook=webhook)
            with DaemonRun(work, config) as run:
                first = len(hosts)
                if not run.wait(lambda: len(hook.accepted) >= first, 180, "the first findings"):
                    raise RuntimeError(f"first cycle's findings never reached the webhook:\n{run.log_tail()}")  # fmt: skip
                for host, port in closed[:trials]:
                    time.sleep(rng.uniform(0, interval))
                    fleet.add(host, port, "http")
                    opened = time.monotonic()
                    needle = f"{host}:{port}".encode()

                    def arrived(n: bytes = needle) -> bool:
                        return any(n in r.body for r in hook.accepted)

                    if not run.wait(
                        arrived,
                        3 * interval + 60,
                        f"the webhook for {host}:{port}",
                    ):
                        raise RuntimeError(f"no webhook for {host}:{port}:\n{run.log_tail()}")
                    took.append(time.monotonic() - opened)
                    print(
                        f"  trial {len(took)}: {host}:{port} opened -> webhook in {took[-1]:.1f} s"
                    )
    finally:
        fleet.stop()
    budget = interval + 10
    print(
        f"latency: daemon, interval {interval} s, no jitter, defaults on: max {max(took):.1f} s, "
        f"median {median(took):.1f} s over {len(took)} trials (target <= {budget} s)"
    )
    table.add(f"latency: port opened -> webhook, max ({interval} s interval)", max(took), budget, " s", ".1f")  # fmt: skip
