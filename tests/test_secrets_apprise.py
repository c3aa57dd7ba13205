"""No secret of any apprise URL reaches an output or a file: one URL per schema that takes one.

The URLs come from apprise's own description of its plugins (tests/secret_urls.py). The
product run happens in a network namespace of its own (`unshare -n`: not even loopback is
up), so delivering to ~170 real services fails at once and contacts nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portconsole.core.secrets import mask_text, mask_url, url_secrets
from tests.conftest import write_config
from tests.secret_urls import SecretURL, secret_taking_schemas, secret_urls

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def urls() -> list[SecretURL]:
    logging.disable(logging.CRITICAL)  # apprise warns about the values it rejects
    try:
        built, missed = secret_urls()
    finally:
        logging.disable(logging.NOTSET)
    # Most secret-taking schemas get a URL apprise accepts (or a disabled plugin's URL);
    # the rest need values no regex describes (real phone numbers, certificates).
    assert len(built) >= 0.85 * len(secret_taking_schemas()), missed
    assert len(built) >= 120
    return built


def test_mask_url_hides_every_private_token(urls: list[SecretURL]) -> None:
    leaks = []
    for item in urls:
        masked = mask_url(item.url)
        echoed = mask_text(
            f"error from {item.url}: bad key {item.secrets[0]}", url_secrets(item.url)
        )
        leaks += [(item.schema, s) for s in item.secrets if s in masked or s in echoed]
    assert leaks == []


def test_our_patterns_for_what_apprise_leaves_visible() -> None:
    cases = {
        "gotify://push.example.net/AbCdEfGhIjKlMnO": "AbCdEfGhIjKlMnO",  # letters only
        "ntfy://ntfy.example.net/ops-alerts-topic": "ops-alerts-topic",
        "ntfys://opsalertstopic": "opsalertstopic",
        "json://127.0.0.1:8099/hook?hmac=deadbeefcafe": "deadbeefcafe",
        "jsons://hooks.example.net/in?s=sig0123456789": "sig0123456789",
        "json://127.0.0.1:8099/?h=hash98765&format=json": "hash98765",
        "json://127.0.0.1:8099/?apikey=k3y-value-1": "k3y-value-1",
    }
    for url, secret in cases.items():
        masked = mask_url(url)
        assert secret not in masked, url
        assert masked.split("://")[0] == url.split("://")[0]
    assert mask_url("json://127.0.0.1:8099/?h=x9y8z7&format=json").endswith("format=json")


def _network_isolated() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _network_isolated(), reason="needs `unshare -n` (no network at all)")
def test_no_secret_in_any_output_or_file(tmp_path: Path, urls: list[SecretURL]) -> None:
    quoted = "\n".join(f"  {json.dumps(item.url)}," for item in urls)
    config = write_config(
        tmp_path / "config.toml",
        extra=f"[notify]\nmax_attempts = 1\nurls = [\n{quoted}\n]\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCONSOLE_")} | {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
    }
    base = ["unshare", "-n", sys.executable, "-m", "portconsole", "--config", str(config)]
    base += ["--data-dir", str(tmp_path / "data"), "--log-level", "debug"]
    outputs: list[str] = []
    stdouts: list[str] = []
    for args in (
        ["import", str(DATA / "nmap_loopback.xml"), "--json"],
        ["notify", "flush", "--wait", "20"],
        ["notify", "status"],
        ["notify", "status", "--json"],
        ["notify", "test", "--json"],
        ["findings", "--json"],
        ["audit", "show", "--json"],
        ["paths", "--json"],
    ):
        run = subprocess.run(
            base + args, capture_output=True, text=True, env=env, timeout=300, check=False
        )
        assert "Traceback" not in run.stderr, run.stderr
        outputs.append(run.stdout + run.stderr)
        stdouts.append(run.stdout)
    status = json.loads(stdouts[3])
    assert len(status["targets"]) >= 100  # every URL was configured and reached the outbox
    assert sum(t["pending"] + t["dead"] for t in status["targets"].values()) >= 100
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert any(p.name == "hot.json" for p in files) and len(files) > 3
    texts = outputs + [p.read_bytes().decode("utf-8", "replace") for p in files]
    leaks = sorted(
        {(item.schema, s) for item in urls for s in item.secrets for t in texts if s in t}
    )
    assert leaks == []
