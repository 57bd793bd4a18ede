"""Behaviours: gauges, monitors and roads shaped like Jakarta's days (jakarta.md 1, 3, 4)."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

import orjson
import pytest

from devices.kinds import Kind
from devices.registry import Device, Registry
from simulators.calendar import HOUR_S, WIB
from simulators.emission import Emission
from simulators.rivers import REACHES, Routing, hydrograph, tide_cm, upstream_first
from simulators.roads import density
from simulators.scenario import DeviceSelection, Haze, Incident, Rain, Rob, Scenario
from simulators.simulation import Simulation
from tests.simulators.decoding import catalog, emissions_of, number, readings_of

SEEDS = range(8)


def day(date: str, *kinds: Kind, events: tuple[Rain | Haze | Incident | Rob, ...] = (),
        hours: float = 24) -> Scenario:  # fmt: skip
    """A scenario of `kinds` from midnight WIB of `date`, every device every 10 minutes."""
    start = datetime.fromisoformat(date).replace(tzinfo=WIB)
    return Scenario(date, "", start, timedelta(hours=hours), DeviceSelection(kinds=kinds),
                    events).with_intervals(600)  # fmt: skip


def mean_at(scenario: Scenario, field: str, hour: float, seeds: Iterable[int] = SEEDS) -> float:
    """The mean of `field` over every device and seed, for readings within 30 min of `hour`."""
    at = scenario.start_s + hour * HOUR_S
    values = []
    for seed in seeds:
        simulation = Simulation(catalog(), scenario, seed)
        for emission in simulation.emissions(at - 1800, at + 1800):
            values.append(number(orjson.loads(emission.payload), field))
    assert values, "no readings near that hour"
    return statistics.fmean(values)


# --- air quality ------------------------------------------------------------------------

DRY_TUESDAY = day("2023-08-15", Kind.AIR_QUALITY)
WET_TUESDAY = day("2024-01-16", Kind.AIR_QUALITY)


def test_pm25_is_higher_at_seven_than_at_fifteen_on_a_dry_season_weekday() -> None:
    assert mean_at(DRY_TUESDAY, "pm25", 7) > 1.8 * mean_at(DRY_TUESDAY, "pm25", 15)


def test_the_dry_season_air_is_worse_than_the_wet_season_air() -> None:
    for hour in (3, 8, 15):
        assert mean_at(DRY_TUESDAY, "pm25", hour) > 1.6 * mean_at(WET_TUESDAY, "pm25", hour)


def test_dry_season_daily_means_are_near_jakartas() -> None:
    # South Jakarta 2016: Jun-Aug mean 57.4 ug/m3; early-June 2022 mean 41 (section 3).
    daily = statistics.fmean(mean_at(DRY_TUESDAY, "pm25", hour, range(3)) for hour in range(24))
    assert 40 < daily < 75


def test_rain_washes_particulates_out_of_the_air() -> None:
    rain = Rain(at_s=12 * HOUR_S, duration_s=2 * HOUR_S, intensity_mm_h=25)
    wet = day("2023-08-15", Kind.AIR_QUALITY, events=(rain,))
    assert mean_at(wet, "pm25", 13.5) < 0.6 * mean_at(DRY_TUESDAY, "pm25", 13.5)
    # and the air fills up again over the following hours
    assert mean_at(wet, "pm25", 22) > 0.75 * mean_at(DRY_TUESDAY, "pm25", 22)


def test_haze_raises_particulates() -> None:
    haze = Haze(at_s=0.0, duration_s=24 * HOUR_S, factor=2.0, ramp_s=HOUR_S)
    hazy = day("2023-08-15", Kind.AIR_QUALITY, events=(haze,))
    assert mean_at(hazy, "pm25", 12) > 1.7 * mean_at(DRY_TUESDAY, "pm25", 12)


def test_pm10_is_never_below_pm25_and_gases_stay_in_realistic_ranges() -> None:
    simulation = Simulation(catalog(), DRY_TUESDAY, seed=3)
    for device in simulation.devices:
        for reading in readings_of(simulation.emissions(), device.id):
            assert number(reading, "pm10") >= number(reading, "pm25")
            assert 0 < number(reading, "o3") < 400  # ISPU "Sangat Tidak Sehat" starts at 400
            assert 0 < number(reading, "no2") < 400
            assert 100 < number(reading, "co") < 8000  # ISPU 100 is 8,000 ug/m3
            assert 22 <= number(reading, "temp_c") <= 37


# --- traffic ----------------------------------------------------------------------------

MONDAY = day("2024-09-02", Kind.TRAFFIC)
SUNDAY = day("2024-09-01", Kind.TRAFFIC)


def test_traffic_is_slower_at_eight_than_at_eleven_on_a_weekday() -> None:
    assert mean_at(MONDAY, "speed_kmh", 8) < 0.75 * mean_at(MONDAY, "speed_kmh", 11)


def test_the_evening_rush_is_slow_too() -> None:
    assert mean_at(MONDAY, "speed_kmh", 17.5) < 0.75 * mean_at(MONDAY, "speed_kmh", 11)


def test_rush_hour_speeds_are_near_jakartas_averages() -> None:
    # Rush-hour average 21-22 km/h (2022-2025, section 4).
    assert 15 < mean_at(MONDAY, "speed_kmh", 8) < 30


def test_sunday_mornings_are_quieter_than_weekday_mornings() -> None:
    assert mean_at(SUNDAY, "speed_kmh", 8) > 1.3 * mean_at(MONDAY, "speed_kmh", 8)
    assert mean_at(SUNDAY, "volume_vph", 8) < mean_at(MONDAY, "volume_vph", 8)


def test_an_incident_drops_the_speed_at_once() -> None:
    crash = Incident("thamrin-sarinah", at_s=11 * HOUR_S, duration_s=HOUR_S, severity=0.8)
    scenario = replace(day("2024-09-02", Kind.TRAFFIC, events=(crash,)),
                       devices=DeviceSelection(ids=("thamrin-sarinah",)))  # fmt: skip
    before = mean_at(scenario, "speed_kmh", 10.75)
    during = mean_at(scenario, "speed_kmh", 11.5)
    assert during < 0.3 * before


def test_volume_peaks_at_capacity_as_greenshields_says() -> None:
    # Flow is highest at mid occupancy and falls both in free flow and in queues.
    readings = readings_of(emissions_of("rush-hour"), "sudirman-setiabudi")
    by_band: dict[str, list[float]] = {"free": [], "capacity": [], "queue": []}
    for reading in readings:
        occupancy = number(reading, "occupancy_pct")
        band = "free" if occupancy < 12 else "capacity" if 25 <= occupancy <= 35 else (
            "queue" if occupancy > 45 else None)  # fmt: skip
        if band is not None:
            by_band[band].append(number(reading, "volume_vph"))
    capacity = statistics.fmean(by_band["capacity"])
    assert capacity > statistics.fmean(by_band["free"])
    assert capacity > statistics.fmean(by_band["queue"])


def test_speed_falls_as_occupancy_rises() -> None:
    readings = readings_of(emissions_of("rush-hour"), "gatot-subroto-kuningan")
    pairs = sorted((number(r, "occupancy_pct"), number(r, "speed_kmh")) for r in readings)
    third = len(pairs) // 3
    emptiest = statistics.fmean(speed for _, speed in pairs[:third])
    fullest = statistics.fmean(speed for _, speed in pairs[-third:])
    assert emptiest > 1.5 * fullest


@pytest.mark.parametrize("load", [0.0, 0.3, 0.8, 1.0, 1.2, 5.0])
def test_density_stays_between_empty_and_jam(load: float) -> None:
    assert 0.0 <= density(load) < 1.0


def test_density_rises_with_demand() -> None:
    loads = [i / 10 for i in range(30)]
    assert [density(x) for x in loads] == sorted(density(x) for x in loads)


def test_roads_near_a_flooding_gauge_slow_down() -> None:
    # Manggarai at Siaga 1 around midnight on 1 Jan 2020; Casablanca is 2 km away.
    flood = emissions_of("flood-2020-01-01")
    quiet = Scenario("quiet", "", datetime(2020, 1, 1, tzinfo=WIB), timedelta(days=1))
    dry = Simulation(catalog(), quiet, 1).emissions()
    midnight = datetime(2020, 1, 2, tzinfo=WIB).timestamp()

    def night_speed(emissions: Iterable[Emission]) -> float:
        readings = readings_of(emissions, "casablanca-tebet")
        near = [number(r, "speed_kmh") for r in readings
                if abs(number(r, "ts") - (midnight - 2 * HOUR_S)) <= 1800]  # fmt: skip
        return statistics.fmean(near)

    assert night_speed(flood) < 0.8 * night_speed(dry)


# --- water ------------------------------------------------------------------------------


def test_river_gauges_wander_inside_their_normal_range_on_a_quiet_day() -> None:
    quiet = day("2024-03-12", Kind.WATER_LEVEL, hours=72)
    simulation = Simulation(catalog(), quiet, seed=5)
    for gauge in simulation.devices:
        if gauge.labels.get("river") == "Java Sea":
            continue
        low, high = gauge.thresholds["normal_low_cm"], gauge.thresholds["normal_high_cm"]
        for reading in readings_of(simulation.emissions(), gauge.id):
            assert low - 4 <= number(reading, "level_cm") <= high + 4  # 4: sensor noise


def test_a_gauge_without_thresholds_still_reports_plausible_levels() -> None:
    bare = Device(id="bare", kind=Kind.WATER_LEVEL, name="Bare", lat=-6.2, lon=106.8)
    scenario = day("2024-03-12", Kind.WATER_LEVEL, hours=48)
    simulation = Simulation(Registry([bare]), scenario, seed=2)
    levels = [number(r, "level_cm") for r in readings_of(simulation.emissions(), "bare")]
    assert len(levels) == 48 * 6 and all(-5 <= level <= 105 for level in levels)


def test_the_tide_is_semi_diurnal() -> None:
    start = datetime(2024, 3, 1, tzinfo=WIB).timestamp()
    samples = [tide_cm(start + minute * 60) for minute in range(0, 5 * 24 * 60, 10)]
    highs = sum(1 for a, b, c in zip(samples, samples[1:], samples[2:], strict=False)
                if a < b >= c)  # fmt: skip
    assert 9 <= highs <= 10  # two a day over five days


def test_spring_tides_run_higher_than_neap_tides() -> None:
    start = datetime(2024, 3, 1, tzinfo=WIB).timestamp()
    ranges = []
    for day_index in range(30):
        samples = [tide_cm(start + day_index * 86_400 + m * 600) for m in range(144)]
        ranges.append(max(samples) - min(samples))
    assert max(ranges) > 1.8 * min(ranges)


def test_pasar_ikan_follows_the_tide() -> None:
    readings = readings_of(emissions_of("normal-day"), "pasar-ikan")
    levels = [number(r, "level_cm") for r in readings]
    tides = [tide_cm(number(r, "ts")) for r in readings]
    assert statistics.correlation(levels, tides) > 0.7


SIAGA = ("siaga3_cm", "siaga2_cm", "siaga1_cm")


def test_a_rob_raises_the_sea_gauge() -> None:
    rob = Rob(at_s=0.0, duration_s=12 * HOUR_S, rise_cm=60)
    coast = replace(day("2024-03-12", Kind.WATER_LEVEL, events=(rob,)),
                    devices=DeviceSelection(ids=("pasar-ikan",)))  # fmt: skip
    calm = replace(coast, events=())
    assert mean_at(coast, "level_cm", 6) > mean_at(calm, "level_cm", 6) + 45


def test_the_reporting_interval_tightens_as_the_status_rises() -> None:
    # jakarta.md section 1: hourly at normal, 30 min in Siaga 3-2, 5 min at Siaga 1; the
    # next report comes at the next mark of that interval on the clock (hh:00, hh:30...).
    for gauge_id in ("manggarai", "karet"):
        gauge = catalog().get(gauge_id)
        assert gauge is not None
        readings = readings_of(emissions_of("flood-2020-01-01"), gauge_id)
        offset = number(readings[0], "ts") % 300  # the post's few seconds after the mark
        seen = set()
        for before, after in itertools.pairwise(readings):
            level = number(before, "level_cm")
            status = sum(level >= gauge.thresholds[name] for name in SIAGA)
            interval = {0: 3600, 1: 1800, 2: 1800, 3: 300}[status]
            gap = number(after, "ts") - number(before, "ts")
            assert 0 < gap <= interval + 1e-3, (gauge_id, level)
            assert number(after, "ts") % interval == pytest.approx(offset, abs=1e-3)
            seen.add(status)
        assert seen == {0, 1, 2, 3}


def test_gauges_report_on_the_clock() -> None:
    # Hourly reports at hh:00 (a few seconds after, as the message leaves the post).
    for reading in readings_of(emissions_of("normal-day"), "manggarai"):
        assert number(reading, "ts") % 3600 < 60


def test_a_wave_arrives_downstream_later_lower_and_wider() -> None:
    def excess(gauge: str, t: float, inflow: float) -> float:
        return hydrograph(t, 200.0, HOUR_S, 2 * HOUR_S) if gauge == "katulampa" else inflow

    routing = Routing(REACHES, excess, -HOUR_S, 30 * HOUR_S)
    times = [minute * 60.0 for minute in range(0, 30 * 60, 5)]
    depok = [routing.inflow("depok", t) for t in times]
    manggarai = [routing.inflow("manggarai", t) / 2.0 for t in times]  # per cm at Depok
    assert times[depok.index(max(depok))] == pytest.approx(HOUR_S + 3 * HOUR_S, abs=HOUR_S)
    assert times[manggarai.index(max(manggarai))] == pytest.approx(10 * HOUR_S, abs=1.5 * HOUR_S)
    assert max(depok) < 200 * 0.6 and max(manggarai) < max(depok)
    assert math.isclose(routing.inflow("depok", -10 * HOUR_S), 0.0)


def test_rivers_are_routed_from_upstream_down() -> None:
    order = upstream_first(REACHES)
    for reach in REACHES:
        assert order.index(reach.upstream) < order.index(reach.downstream)
