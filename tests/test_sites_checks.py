"""Sites without a broker: the central's checks on answers no honest worker sends, and the
site settings. The real round trips (Redis, workers, nmap) are in tests/test_sites.py."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from portconsole.core.monitor import Monitor
from portconsole.core.settings import load_settings


def refused_reasons(monitor: Monitor) -> list[str]:
    return [
        str(e.details["reason"])
        for e in monitor.audit_events()
        if e.action == "site.result.refused"
    ]


def test_replayed_late_unsigned_and_foreign_results_are_refused(tmp_path: Path) -> None:
    """The central's checks on answers no honest worker sends (no broker needed): each is
    refused with a `site.result.refused` event and the site's finding."""
    from datetime import timedelta

    from portconsole.core.adapters.site_router import SiteRouter
    from portconsole.core.adapters.site_scanner import SiteRefused, _Job
    from portconsole.core.domain.site_envelope import RESULT, seal
    from portconsole.core.timeutil import utcnow

    key = tmp_path / "east.key"
    key.write_text(secrets.token_hex(32))
    config = tmp_path / "config.toml"
    config.write_text(
        'scope = ["127.0.0.0/8"]\n[sites.east]\nbroker = "redis://127.0.0.1:1/0"\n'
        f'key_file = "{key}"\n[groups.g-east]\ntargets = ["127.88.250.2"]\nsite = "east"\n'
    )
    settings, paths = load_settings(config, tmp_path / "central")
    monitor = Monitor(settings, paths, origin="daemon")
    try:
        assert isinstance(monitor._scanner, SiteRouter)
        site = monitor._scanner.sites["east"]
        secret = key.read_text().encode()

        def answer(job: _Job, **changes: object) -> dict[str, object]:
            meta = {"job_id": job.job_id, "nonce": job.nonce, "site": "east", "kind": "probe",
                    "worker": "w@test", "outcome": "success", "open": []}  # fmt: skip
            return seal(RESULT, {**meta, **changes}, secret)

        def job(seconds: float = 60) -> _Job:
            return _Job("probe", "g-east", ["127.88.250.2"], utcnow() + timedelta(seconds=seconds))

        first = job()
        site._verified(first, answer(first))  # an honest answer is taken once...
        cases = [
            (first, answer(first)),  # ...and refused the second time (replayed)
            (job(), answer(first)),  # an old job's signed answer for a new job
            (job(-1), None),  # after the deadline
            (job(), {"meta": {"job_id": "x"}}),  # unsigned
        ]
        for asked, given in cases:
            with pytest.raises(SiteRefused):
                site._verified(asked, given if given is not None else answer(asked))
        assert refused_reasons(monitor) == ["replayed", "replayed", "late", "unsigned"]
        refused = [f for f in monitor.findings_book.all() if f.kind == "site_result_refused"]
        assert [(f.host, f.status) for f in refused] == [("east", "new")]
        assert monitor.audit_verify().ok
        # An evidence pack over the refusals still checks out on the assessor's side.
        pack = tmp_path / "pack"
        monitor.export_report(pack, start=utcnow() - timedelta(hours=1), end=utcnow())
        checked = subprocess.run(
            [sys.executable, "-I", "-S", "verify_pack.py"],
            capture_output=True, text=True, timeout=120, cwd=next(pack.glob("**/verify_pack.py")).parent, env={},
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        monitor.close()


def test_the_replay_record_is_pruned_past_the_lateness_bound(tmp_path: Path) -> None:
    """Entries older than the longest job deadline (and slack) leave `seen.jsonl` when an
    answer is next taken; a recent entry stays, so its replay is still refused."""
    import json
    from datetime import timedelta

    from portconsole.core.adapters.site_router import SiteRouter, replay_window
    from portconsole.core.adapters.site_scanner import SiteRefused, _Job
    from portconsole.core.domain.site_envelope import RESULT, seal
    from portconsole.core.timeutil import iso, utcnow

    key = tmp_path / "east.key"
    key.write_text(secrets.token_hex(32))
    config = tmp_path / "config.toml"
    config.write_text(
        'scope = ["127.0.0.0/8"]\n[sites.east]\nbroker = "redis://127.0.0.1:1/0"\n'
        f'key_file = "{key}"\n[groups.g-east]\ntargets = ["127.88.250.2"]\nsite = "east"\n'
        "interval = 3600\n"
    )
    settings, paths = load_settings(config, tmp_path / "central")
    window = replay_window(settings)
    assert window > 3600  # the group's deadline bounds it
    seen = paths.data_dir / "sites" / "seen.jsonl"
    seen.parent.mkdir(parents=True)
    now = utcnow()
    entries = [
        {"job_id": "old", "nonce": "old-nonce", "at": iso(now - timedelta(seconds=window + 60))},
        {"job_id": "recent", "nonce": "recent-nonce", "at": iso(now - timedelta(seconds=3000))},
    ]
    seen.write_text("".join(json.dumps(e) + "\n" for e in entries))
    monitor = Monitor(settings, paths, origin="daemon")
    try:
        assert isinstance(monitor._scanner, SiteRouter)
        site = monitor._scanner.sites["east"]
        secret = key.read_text().encode()

        def answer(job: _Job) -> dict[str, object]:
            meta = {"job_id": job.job_id, "nonce": job.nonce, "site": "east", "kind": "probe",
                    "worker": "w@test", "outcome": "success", "open": []}  # fmt: skip
            return seal(RESULT, meta, secret)

        def job(job_id: str = "", nonce: str = "") -> _Job:
            made = _Job("probe", "g-east", ["127.88.250.2"], utcnow() + timedelta(seconds=60))
            made.job_id, made.nonce = job_id or made.job_id, nonce or made.nonce
            return made

        honest = job()
        site._verified(honest, answer(honest))  # taken: the old entry goes
        kept = [json.loads(line)["job_id"] for line in seen.read_text().splitlines()]
        assert kept == ["recent", honest.job_id]
        # The recent entry (and the one just taken) still refuse their replay...
        for replay in (job("recent", "recent-nonce"), job(nonce="recent-nonce"), honest):
            with pytest.raises(SiteRefused, match="already taken"):
                site._verified(replay, answer(replay))
        # ...after a restart too (the record is the file).
        monitor.close()
        monitor = Monitor(settings, paths, origin="daemon")
        assert isinstance(monitor._scanner, SiteRouter)
        site = monitor._scanner.sites["east"]
        with pytest.raises(SiteRefused, match="already taken"):
            site._verified(honest, answer(honest))
    finally:
        monitor.close()


def test_site_settings_are_checked_and_the_key_is_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from portconsole.cli import main
    from portconsole.core.errors import ConfigError

    key = tmp_path / "west.key"
    site = f'[sites.west]\nbroker = "redis://127.0.0.1:1/0"\nkey_file = "{key}"\n'
    site += 'scope = ["127.88.249.0/24"]\n'
    config = tmp_path / "config.toml"
    config.write_text(f'{site}[groups.g]\ntargets = ["127.88.249.2"]\nsite = "east"\n')
    with pytest.raises(ConfigError, match="groups.g.site: no site 'east' \\(known: west\\)"):
        load_settings(config)
    config.write_text(f'{site}[groups.g]\ntargets = ["127.88.1.2"]\nsite = "west"\n')
    with pytest.raises(ConfigError, match="groups.g.targets: target '127.88.1.2'"):
        load_settings(config)
    config.write_text(f'{site}[groups.g]\ntargets = ["127.88.249.2"]\nsite = "west"\n')
    assert main(["--config", str(config), "worker", "--site", "west"]) == 2
    assert f"cannot read {key}" in capsys.readouterr().err
    key.write_text("tooshort-secret")
    assert main(["--config", str(config), "worker", "--site", "west"]) == 2
    err = capsys.readouterr().err
    assert "shorter than 16 bytes" in err and "tooshort-secret" not in err
    assert main(["--config", str(config), "worker", "--site", "north"]) == 2
    assert "no site 'north' in the settings (known: west)" in capsys.readouterr().err
