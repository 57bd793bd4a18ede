"""deploy/systemd/siaga.service: systemd's own checker accepts it, and it keeps its hardening.

`systemd-analyze verify` loads a unit file without a running systemd (none runs as PID 1
in a container), so it runs on the shipped file itself; only ExecStart's /opt/siaga path,
which does not exist on a build machine, is pointed at this checkout's `siaga`, as verify
insists the command be executable. systemd 252 exits 0 on a misspelt directive or a value
it cannot parse (it logs "ignoring" and goes on), so the check also fails on any line
verify writes about the unit; the broken units below show that it does fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from ingest.pipeline import STOP_WRITES_S
from ingest.settings import InfluxSettings
from rules.alertmanager import AlertmanagerSettings
from rules.delivery import DeliveryPolicy
from siaga.settings import APPENDING, ENVIRONMENT

UNIT: Final = Path(__file__).parents[2] / "deploy" / "systemd" / "siaga.service"
INSTALLED: Final = "/opt/siaga/bin/siaga"  # where the README installs the venv's script
ANALYZE: Final = shutil.which("systemd-analyze")
ANALYZE_TIMEOUT_S: Final = 60  # verify reads a few hundred unit files: about a second
# `systemd-analyze security` scores exposure 0.0-10.0; --threshold counts in tenths. 2.0
# is well inside its "OK" band; the unit scores 1.3, and dropping NoNewPrivileges=,
# CapabilityBoundingSet= and ProtectSystem= takes it to 3.4.
MAX_EXPOSURE_TENTHS: Final = 20

needs_systemd_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian: apt install systemd)")


def directives(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> its values in order (a key may repeat, e.g. SystemCallFilter=)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def runnable(text: str) -> str:
    """The unit with ExecStart's installed path replaced by this checkout's command."""
    script = Path(sys.executable).with_name("siaga")
    command = str(script) if script.exists() else f"{sys.executable} -m siaga"
    assert text.count(f"ExecStart={INSTALLED} ") == 1, f"ExecStart= no longer runs {INSTALLED}"
    return text.replace(f"ExecStart={INSTALLED} ", f"ExecStart={command} ")


def analyze(folder: Path, text: str, *args: str) -> tuple[int, list[str]]:
    """Run systemd-analyze on `text` saved as siaga.service: its exit code and what it
    said about that unit (lines about other units on this machine are not ours)."""
    assert ANALYZE is not None
    path = folder / "siaga.service"
    path.write_text(text, encoding="utf-8")
    done = subprocess.run([ANALYZE, *args, "--man=no", str(path)], capture_output=True,
                          text=True, timeout=ANALYZE_TIMEOUT_S, check=False)
    said = [line for line in (done.stdout + done.stderr).splitlines()
            if str(path) in line or line.startswith("siaga.service:")]
    return done.returncode, said


def verify(folder: Path, text: str) -> list[str]:
    """What is wrong with the unit, per `systemd-analyze verify`; empty when nothing is."""
    code, said = analyze(folder, text, "verify")
    return said + ([f"systemd-analyze verify exited {code}"] if code else [])


@pytest.fixture
def shipped() -> str:
    return UNIT.read_text(encoding="utf-8")


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit(shipped: str, tmp_path: Path) -> None:
    assert verify(tmp_path, runnable(shipped)) == []


@needs_systemd_analyze
@pytest.mark.parametrize(("change", "complaint"), [
    (("ProtectSystem=strict", "ProtectSytem=strict"), "Unknown key 'ProtectSytem'"),
    (("ProtectSystem=strict", "ProtectSystem=strictly"), "Failed to parse protect system"),
    (("Restart=on-failure", "Restart=sometimes"), "Failed to parse service restart"),
    (("[Service]", "[Servce]"), "Unknown section 'Servce'"),
], ids=["misspelt-directive", "bad-value", "bad-restart", "misspelt-section"])
def test_verify_fails_a_broken_unit(shipped: str, tmp_path: Path,
                                    change: tuple[str, str], complaint: str) -> None:
    old, new = change
    assert f"\n{old}\n" in shipped
    problems = verify(tmp_path, runnable(shipped).replace(f"\n{old}\n", f"\n{new}\n"))
    assert any(complaint in problem for problem in problems), problems


@needs_systemd_analyze
def test_verify_fails_a_command_that_is_not_installed(shipped: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "siaga"
    problems = verify(tmp_path, shipped.replace(f"ExecStart={INSTALLED} ", f"ExecStart={missing} "))
    assert any(f"{missing} is not executable" in problem for problem in problems), problems


@needs_systemd_analyze
def test_the_units_exposure_stays_low(shipped: str, tmp_path: Path) -> None:
    code, said = analyze(tmp_path, runnable(shipped), "security", "--offline=yes",
                         f"--threshold={MAX_EXPOSURE_TENTHS}")
    assert code == 0, f"exposure above {MAX_EXPOSURE_TENTHS / 10}: {said}"


@needs_systemd_analyze
def test_the_exposure_check_fails_a_weakened_unit(shipped: str, tmp_path: Path) -> None:
    weakened = "\n".join(line for line in runnable(shipped).splitlines() if not line.startswith(
        ("NoNewPrivileges=", "CapabilityBoundingSet=", "ProtectSystem=")))
    code, _ = analyze(tmp_path, weakened, "security", "--offline=yes",
                      f"--threshold={MAX_EXPOSURE_TENTHS}")
    assert code != 0


def test_the_service_runs_siaga_as_its_own_user(shipped: str) -> None:
    unit = directives(shipped)
    assert unit["Service.Type"] == ["exec"]
    assert unit["Service.ExecStart"] == [f"{INSTALLED} run -c /etc/siaga/siaga.yaml"]
    assert unit["Service.User"] == ["siaga"]
    assert unit["Service.Group"] == ["siaga"]
    assert "Service.DynamicUser" not in unit


def test_the_service_is_hardened(shipped: str) -> None:
    unit = directives(shipped)
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictSUIDSGID": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "SystemCallArchitectures": "native",
    }.items():
        assert unit.get(f"Service.{key}") == [value], key
    assert "@system-service" in unit["Service.SystemCallFilter"]


def test_the_data_directory_is_the_only_writable_place(shipped: str) -> None:
    unit = directives(shipped)
    assert unit["Service.StateDirectory"] == ["siaga"]
    assert "Service.ReadWritePaths" not in unit  # StateDirectory= is writable already
    assert "SIAGA_DATA_DIR=%S/siaga" in unit["Service.Environment"]
    assert unit["Service.WorkingDirectory"] == ["%S/siaga"]


def test_the_environment_names_only_settings_variables(shipped: str) -> None:
    unit = directives(shipped)
    names = {assignment.partition("=")[0] for assignment in unit["Service.Environment"]}
    assert names <= ENVIRONMENT.keys() | APPENDING.keys()
    assert unit["Service.EnvironmentFile"] == ["-/etc/siaga/siaga.env"]  # optional: "-"


def test_it_restarts_on_failure_and_starts_after_the_broker_and_database(shipped: str) -> None:
    unit = directives(shipped)
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.RestartSec"] == ["5s"]
    after = unit["Unit.After"][0].split()
    assert {"network-online.target", "mosquitto.service", "influxdb.service"} <= set(after)
    assert unit["Unit.Wants"] == ["network-online.target"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_the_stop_timeout_outlasts_the_graceful_flush(shipped: str) -> None:
    # SIGTERM: InfluxDB's time for the batches collected and the write in flight at its
    # end (then the spool), the notifications' drain, and the last send to Alertmanagers,
    # each bounded by its default; twice their sum leaves room.
    flush_s = (STOP_WRITES_S + InfluxSettings().timeout_s + DeliveryPolicy().drain_s
               + float(AlertmanagerSettings.model_fields["timeout_s"].default))
    (timeout,) = directives(shipped)["Service.TimeoutStopSec"]
    assert timeout.endswith("s")
    assert float(timeout.removesuffix("s")) >= 2 * flush_s
