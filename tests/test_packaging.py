"""The package as users install it, and the systemd unit as operators run it.

The wheel is built from a copy of the source tree (no build isolation: setuptools comes from
the dev virtualenv, so nothing is downloaded) and installed into a fresh virtualenv. Its
dependencies are the dev virtualenv's, reached through a .pth line placed after the fresh
site-packages: PortConsole itself, its themes and its sample baselines can only come from
the wheel, and the run happens outside the checkout.
"""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from portconsole import __version__

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "docs" / "portconsole.service"
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "portconsole", "themes", "sample_baselines")
MAX_EXPOSURE = 3.0


def _copy_source(dest: Path) -> Path:
    dest.mkdir()
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(src, dest / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    source = _copy_source(base / "src")
    out = base / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
        cwd=base,
    )
    (found,) = out.glob("portconsole-*.whl")
    return found


def test_wheel_holds_the_themes_and_samples_and_one_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        meta = email.message_from_bytes(
            archive.read(f"portconsole-{__version__}.dist-info/METADATA")
        )
        # Real files, not links into a checkout: each holds the repository file's bytes.
        for folder, pattern in (("themes", "*.toml"), ("sample_baselines", "*.yaml")):
            for path in sorted((ROOT / folder).glob(pattern)):
                member = f"portconsole/_data/{folder}/{path.name}"
                assert member in names, member
                assert archive.read(member) == path.read_bytes()
        assert "portconsole/_data/sample_baselines/README.md" in names
        assert f"portconsole-{__version__}.dist-info/licenses/LICENSE" in names
    assert wheel.name == f"portconsole-{__version__}-py3-none-any.whl"
    assert meta["Version"] == __version__
    assert meta["License-Expression"] == "LicenseRef-Proprietary"
    classifiers = meta.get_all("Classifier") or []
    assert "Topic :: System :: Networking :: Monitoring" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the expression rules
    # The version is written once: pyproject.toml reads it from the package.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert __version__ not in pyproject


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # "zz" sorts last: the dependencies come after the wheel's own files on sys.path.
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "zz_dev_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    return venv


def _env(tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PORTCONSOLE_", "PYTHON"))}
    return keep | {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
    }


def test_installed_wheel_loads_every_theme_from_the_package(
    fresh_venv: Path, tmp_path: Path
) -> None:
    script = (
        "import json, portconsole\n"
        "from portconsole.core.package_data import sample_baselines_dir\n"
        "from portconsole.core.settings import builtin_themes_dir\n"
        "from portconsole.tui.themes import load_themes\n"
        "catalog = load_themes([builtin_themes_dir()])\n"
        "print(json.dumps({'package': portconsole.__file__, 'themes': str(builtin_themes_dir()),\n"
        "  'samples': str(sample_baselines_dir()), 'names': catalog.names(),\n"
        "  'errors': catalog.errors, 'sources': [str(p) for p in catalog.sources.values()]}))\n"
    )
    result = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        check=True,
    )
    found = json.loads(result.stdout)
    expected = sorted(
        re.search(r'^name\s*=\s*"([^"]+)"', p.read_text(), re.M).group(1)  # type: ignore[union-attr]
        for p in (ROOT / "themes").glob("*.toml")
    )
    assert found["errors"] == []
    assert found["names"] == expected
    for key in ("package", "themes", "samples"):
        path = Path(found[key])
        assert path.is_relative_to(fresh_venv), found[key]
        assert not path.is_symlink()
    assert all(Path(p).is_relative_to(fresh_venv) for p in found["sources"])


@pytest.mark.nmap
def test_installed_wheel_runs_the_demo_with_its_sample_baseline(
    fresh_venv: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            str(fresh_venv / "bin" / "portconsole"),
            "--data-dir",
            str(tmp_path / "demo-data"),
            "demo",
            "--no-tui",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "sample_baselines" not in result.stderr
    # The sample baseline was imported from the package: of a dozen open ports only the
    # drifted host's two unapproved ones (telnet, a stray Redis) are findings.
    unapproved = re.findall(r"unapproved_port\s+(\S+)", result.stdout)
    assert len(unapproved) == 2, result.stdout
    assert all(where.startswith("127.77.0.50:") for where in unapproved), unapproved
    events = subprocess.run(
        [
            str(fresh_venv / "bin" / "portconsole"),
            "--data-dir",
            str(tmp_path / "demo-data"),
            "audit",
            "show",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        check=True,
    )
    actions = [e["action"] for e in json.loads(events.stdout)["events"]]
    assert "baseline.import" in actions and "approval.added" in actions, actions


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; make test adds it)")
    return found


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this virtualenv's portconsole, which exists
    (verify refuses a unit whose command is missing)."""
    here = Path(sys.executable).parent / "portconsole"
    text = UNIT.read_text().replace("/usr/local/bin/portconsole", str(here))
    path = tmp_path / "portconsole.service"
    path.write_text(text)
    return path


def test_unit_file_has_the_hardening_the_readme_promises() -> None:
    text = UNIT.read_text()
    for line in (
        "Wants=network-online.target",
        "After=network-online.target",
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=portconsole",
        "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN",
        "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/portconsole",
    ):
        assert re.search(rf"^{re.escape(line)}", text, re.M), line
    assert not re.search(r"^User=root", text, re.M)
    readme = (ROOT / "README.md").read_text()
    assert "docs/portconsole.service" in readme
    assert "Wants=network-online.target" in readme


def test_unit_file_verifies(tmp_path: Path) -> None:
    analyze = _analyze()
    unit = _unit_for_this_machine(tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "portconsole.service" not in result.stderr, result.stderr


def test_unit_file_scores_safe_in_systemd_analyze_security(tmp_path: Path) -> None:
    analyze = _analyze()
    unit = _unit_for_this_machine(tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    match = re.search(r"Overall exposure level for portconsole\.service: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
