"""`portconsole demo`: the loopback demo fleet, its config and baseline, then the console."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from portconsole.core.errors import UserError
from portconsole.core.package_data import sample_baselines_dir
from portconsole.core.settings import default_data_dir
from portconsole.demo import DEMO_NETWORK, run_demo_fleet


def demo_baseline(port_offset: int) -> Path:
    name = "demo.yaml" if port_offset == 0 else "demo-offset.yaml"
    path = sample_baselines_dir() / name
    if not path.is_file():
        raise UserError(f"demo baseline {path} is missing: reinstall PortConsole (pipx install .)")
    return path


def run_demo(args: argparse.Namespace) -> int:
    from portconsole.core.monitor import Monitor

    default_dir = default_data_dir() / "demo"
    # --data-dir, then PORTCONSOLE_DATA_DIR (as every other command), then the demo's own.
    named = args.data_dir or os.environ.get("PORTCONSOLE_DATA_DIR")
    data_dir = Path(named).expanduser().absolute() if named else default_dir
    # A fresh demo each time tells the story from the start; only the demo's own default
    # folder is ever wiped, never a folder the user named.
    if data_dir == default_dir and data_dir.exists() and not args.keep:
        shutil.rmtree(data_dir)
    run = run_demo_fleet(data_dir, drift_after=args.drift)
    try:
        if run.notice:
            print(f"portconsole demo: {run.notice}", file=sys.stderr)
        print(
            f"demo fleet: {len(run.services)} listeners on {DEMO_NETWORK}; data in {data_dir}",
            file=sys.stderr,
        )
        monitor = Monitor.open(
            run.config_path, data_dir, origin="tui" if not args.no_tui else "cli"
        )
        baseline = demo_baseline(run.port_offset)
        added, _unchanged = monitor.baseline_import(baseline)
        if added:
            print(f"imported {added} approvals from {baseline.name}", file=sys.stderr)
        if args.no_tui:
            from portconsole.cli_scan import _print_cycle

            if args.drift is not None:
                run.open_drift()
            result = monitor.run_cycle()
            _print_cycle(result)
            return 0
        from portconsole.tui.app import run_console

        try:
            return run_console(monitor)
        finally:
            monitor.close()
    finally:
        run.stop()
