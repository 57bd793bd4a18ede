"""deploy/prometheus: the rules for Siaga itself pass promtool's check and their own unit
tests, the example configuration is valid, and every metric they name is one Siaga exposes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.server import ServerNotInstalled, find_binary
from tests.deploy.city import running_siaga

DEPLOY: Final = Path(__file__).parents[2] / "deploy" / "prometheus"
RULES: Final = DEPLOY / "siaga-rules.yml"
PROMTOOL_S: Final = 60  # promtool answers in well under a second; a ceiling for a busy CI
# A word starting siaga_ anywhere in the file: expressions and the annotations operators
# read (a misspelt metric in a description misleads as much as in an expression).
SIAGA_METRIC: Final = re.compile(r"\bsiaga_[a-z0-9_]*[a-z0-9]")
# Sample names a family of each type adds to its own name in the text format.
SUFFIXES: Final = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum",
                   "_count", "_created"), "summary": ("_sum", "_count", "_created")}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        binary = find_binary("promtool", "prometheus")
    except ServerNotInstalled as exc:
        pytest.skip(f"{exc} (scripts/ensure-system-packages installs it)")
    return subprocess.run([binary, *args], cwd=DEPLOY, capture_output=True, text=True,
                          timeout=PROMTOOL_S, check=False)


def test_the_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    result = promtool("test", "rules", "siaga-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.MULTILINE))
    tested = set(re.findall(r"alertname: (\w+)",
                            (DEPLOY / "siaga-rules.test.yml").read_text()))
    assert alerts, "no alert found in the rules"
    assert alerts <= tested, f"alerts without a unit test: {sorted(alerts - tested)}"


def test_the_example_configuration_passes_promtool_check() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def exposed_names(text: str) -> set[str]:
    """Every sample name the exposition `text` declares or carries, with or without samples
    (a counter's or histogram's bare family name is no sample: Prometheus never sees it)."""
    names = set()
    for family in text_string_to_metric_families(text):
        if family.type not in SUFFIXES:
            names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.integration
def test_every_metric_the_rules_name_is_on_a_running_siagas_metrics(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    named = set(SIAGA_METRIC.findall(RULES.read_text()))
    with running_siaga(mosquitto, influxdb1, tmp_path) as siaga:
        exposed = exposed_names(siaga.metrics())
    assert len(named) > 10, named  # the pattern found the rules' metrics at all
    assert named <= exposed, f"named by the rules, absent from /metrics: {sorted(named - exposed)}"
