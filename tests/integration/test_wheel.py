"""The wheel, installed in a fresh virtualenv and run outside the checkout, does a user's first
steps: help, check, broker init and a short demo; and it ships the seven packages, nothing else.

Offline: the wheel is built without build isolation (by the test environment's setuptools,
which needs 70.1 or later: bdist_wheel built in) and installed without its dependencies;
one `.pth` line lends the fresh virtualenv the dependencies of the one running the tests. The
`.pth` files inside that directory are not processed (only site directories' are), so the
editable install's finder stays out and `siaga` is the wheel's copy, which a test checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"siaga", "siaga_core", "ingest", "rules", "devices", "simulators", "reports"}
COMMAND_TIMEOUT_S = 120.0  # a ceiling for a broken build or a hung demo, not a speed
DEMO_SECONDS = 10
DEMO_STOPPED = re.compile(r"Stopped\. ([\d,]+) messages received, ([\d,]+) readings stored")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    siaga: Path  # the console script, always called by its path: PATH may not have it
    site_packages: Path
    workdir: Path  # outside the checkout, so nothing is found there by accident


def run(command: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `command` to its end; fail the test with its output unless it exits 0."""
    # Nothing from the test run may point the wheel's Python at the checkout or change the
    # bundled configuration it is checked with.
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME") and not key.startswith("SIAGA_")}
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}"
    return done


def copy_source_tree(destination: Path) -> None:
    """The working tree as git sees it (tracked and new files, not ignored ones). Building
    from a copy keeps the build's scratch (build/, *.egg-info) out of the checkout, where a
    stale build/lib could also slip removed modules into the wheel."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not there
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv, workdir = (root / name for name in ("source", "dist", "venv", "work"))
    copy_source_tree(source)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", dist, source], cwd=root)
    (wheel,) = dist.glob("siaga-*.whl")
    run([sys.executable, "-m", "venv", venv], cwd=root)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], cwd=root)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(run([python, "-c", purelib], cwd=root).stdout.strip())
    lent = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site_packages / "siaga-test-dependencies.pth").write_text("".join(f"{d}\n" for d in lent))
    workdir.mkdir()
    return Installed(wheel, python, venv / "bin" / "siaga", site_packages, workdir)


def test_the_wheel_ships_the_seven_packages_and_no_test_code(installed: Installed) -> None:
    names = [PurePosixPath(name) for name in zipfile.ZipFile(installed.wheel).namelist()]
    version = installed.wheel.name.split("-")[1]
    assert {name.parts[0] for name in names} == PACKAGES | {f"siaga-{version}.dist-info"}
    test_code = [str(name) for name in names
                 if {"tests", "bench"} & set(name.parts) or "conftest" in name.name]
    assert test_code == []
    # The console's vendored libraries travel as package data, with their manifest.
    vendored = {str(name) for name in names if "vendor" in name.parts}
    assert {"siaga/console/static/vendor/MANIFEST.json",
            "siaga/console/static/vendor/leaflet-1.9.4/leaflet.js",
            "siaga/console/static/vendor/uplot-1.6.32/LICENSE"} <= vendored


def test_the_installed_packages_are_the_wheels_copies(installed: Installed) -> None:
    script = ("import importlib\n"
              f"for name in {sorted(PACKAGES)!r}: print(importlib.import_module(name).__file__)")
    where = run([installed.python, "-c", script], cwd=installed.workdir).stdout.split()
    assert len(where) == len(PACKAGES)
    assert all(Path(path).is_relative_to(installed.site_packages) for path in where), where


def test_the_installed_console_serves_its_page_and_files(installed: Installed) -> None:
    # Package data the page needs at run time, served from site-packages, not the checkout.
    script = """
import asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from siaga.console import page

async def main():
    app = web.Application()
    app.add_routes(page.routes())
    async with TestClient(TestServer(app)) as client:
        for path in ("/", "/console/static/js/main.js", "/console/static/i18n/en.json",
                     "/console/static/css/console.css", "/console/static/empty.gif",
                     "/console/static/vendor/leaflet-1.9.4/leaflet.js",
                     "/console/static/vendor/uplot-1.6.32/uPlot.esm.js"):
            answer = await client.get(path)
            print(answer.status, len(await answer.read()), path)

asyncio.run(main())
"""
    lines = run([installed.python, "-c", script], cwd=installed.workdir).stdout.splitlines()
    assert len(lines) == 7, lines
    for line in lines:
        status, size, _path = line.split()
        assert (status, int(size) > 0) == ("200", True), line


def test_help_and_check_run_from_the_wheel(installed: Installed) -> None:
    assert "demo" in run([installed.siaga, "--help"], cwd=installed.workdir).stdout
    run([installed.siaga, "check"], cwd=installed.workdir)


def test_broker_init_writes_the_password_and_acl_files(installed: Installed) -> None:
    run([installed.siaga, "broker", "init", "broker"], cwd=installed.workdir)
    for name in ("siaga.passwd", "siaga.acl"):
        assert (installed.workdir / "broker" / name).stat().st_size > 0, name


def test_a_short_demo_stores_readings(installed: Installed) -> None:
    # The demo reads the shipped mosquitto.conf, catalog, rules and scenarios: package data.
    output = run([installed.siaga, "demo", "--rate", "20", "--duration", str(DEMO_SECONDS),
                  "--dir", "demo"], cwd=installed.workdir).stdout
    stopped = DEMO_STOPPED.search(output)
    assert stopped is not None, output
    assert int(stopped.group(2).replace(",", "")) > 0, stopped.group(0)
