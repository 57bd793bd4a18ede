"""`siaga simulate`: its options, what they exclude, and the catalog it writes for load mode."""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devices.kinds import Kind
from devices.registry import bundled_catalog_path, load_catalog
from rules.config import load_rules
from siaga.cli.main import _parser, main
from siaga.settings import BUNDLED_RULES


def parse(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["simulate", *argv])


def test_speed_max_and_zero_mean_as_fast_as_possible() -> None:
    assert parse("--speed", "max").speed is None
    assert parse("--speed", "0").speed is None
    assert parse("--speed", "60").speed == 60.0


def test_start_takes_rfc_3339_now_and_now_minus_a_duration() -> None:
    start = parse("--start", "2020-01-01T00:00:00+07:00").start
    assert start == datetime(2019, 12, 31, 17, tzinfo=UTC)
    ago = parse("--start", "now-26h").start
    assert abs(datetime.now(UTC) - timedelta(hours=26) - ago) < timedelta(seconds=5)


def test_until_takes_a_duration_from_the_start_or_an_instant() -> None:
    assert parse("--until", "6h").until == timedelta(hours=6)
    assert parse("--until", "2020-01-02T00:00:00Z").until == datetime(
        2020, 1, 2, tzinfo=UTC)


def test_rate_max_is_unbounded() -> None:
    assert parse("--rate", "max").rate == math.inf


@pytest.mark.parametrize("argv", [
    ["--speed", "-1"], ["--speed", "fast"], ["--start", "2020-01-01T00:00:00"],
    ["--until", "soon"], ["--devices", "0"], ["--rate", "nan"]])
def test_a_bad_value_is_refused_by_argparse(argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--devices", "10", "--scenario", "chaos"], ["--rate", "5", "--shared"],
    ["--write-catalog", "x.yaml"], ["--batch", "10"], ["--cameras", "5", "--scenario", "chaos"]])
def test_load_mode_options_do_not_mix_with_playback(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *argv]) == 2
    assert capsys.readouterr().err.startswith("siaga simulate: ")


def test_list_shows_every_bundled_scenario_with_its_description(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--list"]) == 0
    shown = capsys.readouterr().out
    for name in ("normal-day", "flood-2020-01-01", "flash-flood-katulampa", "rush-hour",
                 "dry-season-haze", "chaos"):
        assert f"\n{name}  (from " in f"\n{shown}"
    assert "Manggarai 700 cm at 02:00" in shown


def test_the_written_catalog_keeps_the_bundled_devices_so_the_bundled_rules_load(
    tmp_path: Path
) -> None:
    path = tmp_path / "load.yaml"
    assert main(["simulate", "--devices", "30", "--rate", "10", "--write-catalog",
                 str(path)]) == 0
    registry = load_catalog(path)
    assert len(registry) == len(load_catalog(bundled_catalog_path())) + 30
    assert registry.get("load-000030") is not None
    assert registry.get("load-000001").expected_interval_s == 3.0  # type: ignore[union-attr]
    load_rules(BUNDLED_RULES, registry)  # raises if a rule names a device it lacks


def test_the_written_catalog_takes_synthetic_cameras_beside_the_devices(tmp_path: Path) -> None:
    path = tmp_path / "cameras.yaml"
    assert main(["simulate", "--devices", "6", "--cameras", "4", "--write-catalog",
                 str(path)]) == 0
    registry = load_catalog(path)
    assert len(registry) == len(load_catalog(bundled_catalog_path())) + 6 + 4
    camera = registry.get("load-cam-000004")
    assert camera is not None and camera.kind is Kind.CAMERA
    load_rules(BUNDLED_RULES, registry)
