"""Simulated cameras: water with the gauges, jams at rush hour, their faults and detections."""

from __future__ import annotations

import random
from collections import defaultdict
from statistics import mean

import orjson

from devices.detections import normalize_plate, validate_event
from devices.kinds import Kind
from simulators.calendar import local_hour
from simulators.cameras import WATCHED_PLATES, random_plate
from simulators.world import is_sea_gauge
from tests.simulators.decoding import catalog, emissions_of, number, readings_of

INTERSECTIONS = ("cam-bundaran-hi", "cam-semanggi", "cam-kuningan")
SEEN = 0.8  # the water score from which a camera sees water (and FloodDetected counts)


def events_of(name: str, device_id: str | None = None) -> list[dict[str, object]]:
    return [orjson.loads(e.payload) for e in emissions_of(name)
            if e.events and device_id in (None, e.device_id)]


def gauge_at(name: str, gauge: str) -> list[tuple[float, float]]:
    readings = readings_of(emissions_of(name), gauge)
    return [(number(r, "ts"), number(r, "level_cm")) for r in readings]


def test_every_camera_of_the_catalog_reports_its_counts_in_every_scenario() -> None:
    cameras = {device.id for device in catalog().by_kind(Kind.CAMERA)}
    for name in ("normal-day", "flood-2020-01-01", "rush-hour", "chaos", "dry-season-haze"):
        sent = {e.device_id for e in emissions_of(name) if e.kind is Kind.CAMERA and e.readings}
        assert sent == cameras, name


def test_cameras_at_the_rising_gauges_see_water_once_their_gauge_is_at_siaga_2() -> None:
    for camera, gauge in (("cam-manggarai", "manggarai"), ("cam-kampung-melayu", "manggarai"),
                          ("cam-karet", "karet"), ("cam-underpass-dukuh-atas", "karet")):
        siaga2 = catalog().get(gauge).thresholds["siaga2_cm"]  # type: ignore[union-attr]
        first_s2 = min(ts for ts, level in gauge_at("flood-2020-01-01", gauge) if level >= siaga2)
        readings = readings_of(emissions_of("flood-2020-01-01"), camera)
        after = [number(r, "water_score") for r in readings
                 if first_s2 <= number(r, "ts") < first_s2 + 6 * 3600]
        assert mean(after) > SEEN + 0.05, camera


def test_a_camera_at_a_gauge_below_siaga_3_sees_no_water() -> None:
    siaga3 = catalog().get("manggarai").thresholds["siaga3_cm"]  # type: ignore[union-attr]
    low = [ts for ts, level in gauge_at("flood-2020-01-01", "manggarai") if level < siaga3 - 30]
    scores = [number(r, "water_score") for r in readings_of(
        emissions_of("flood-2020-01-01"), "cam-manggarai") if number(r, "ts") <= max(low)]
    assert scores and max(scores) < 0.5


def test_the_kemayoran_underpass_fills_with_the_new_year_rain() -> None:
    readings = readings_of(emissions_of("flood-2020-01-01"), "cam-underpass-kemayoran")
    morning = [number(r, "water_score") for r in readings if local_hour(number(r, "ts")) < 6
               and number(r, "ts") < readings[0]["ts"] + 86_400]  # type: ignore[operator]
    assert mean(morning) > SEEN
    # Under water, the road empties: few vehicles, crawling.
    assert mean(number(r, "vehicles_per_min") for r in readings[:360]) < 20


def test_intersection_cameras_see_the_morning_jam_slow_and_dense() -> None:
    for camera in INTERSECTIONS:
        readings = readings_of(emissions_of("rush-hour"), camera)
        by_hour: dict[int, list[dict[str, object]]] = defaultdict(list)
        for reading in readings:
            by_hour[int(local_hour(number(reading, "ts")))].append(reading)
        peak = by_hour[7] + by_hour[8]
        midday = by_hour[11] + by_hour[12] + by_hour[13]
        assert mean(number(r, "mean_speed_kmh") for r in peak) < 0.8 * mean(
            number(r, "mean_speed_kmh") for r in midday), camera
        assert mean(number(r, "vehicles_per_min") for r in peak) > 1.2 * mean(
            number(r, "vehicles_per_min") for r in midday), camera


def test_a_crash_on_the_watched_road_raises_a_congestion_detection() -> None:
    # Rush hour: a crash on Jl. Sudirman at 08:10, where the Semanggi camera looks.
    jams = [e for e in events_of("rush-hour", "cam-semanggi")
            if e["label"] == "congestion" and e["type"] == "new"]
    assert any(8.1 <= local_hour(float(e["ts"])) < 9 for e in jams)  # type: ignore[arg-type]


def test_a_frozen_camera_repeats_its_counts_and_detects_nothing() -> None:
    readings = readings_of(emissions_of("flood-2020-01-01"), "cam-semanggi")
    day = number(readings[0], "ts")
    frozen = [r for r in readings if day + 8 * 3600 <= number(r, "ts") < day + 10 * 3600]
    counts = {tuple(r[f] for f in ("vehicles_per_min", "mean_speed_kmh", "water_score",
                                   "people")) for r in frozen}
    assert len(frozen) > 600 and len(counts) == 1
    assert len({r["seq"] for r in frozen}) == len(frozen)  # still numbered, still sending
    new = [e for e in events_of("flood-2020-01-01", "cam-semanggi") if e["type"] == "new"
           and day + 8 * 3600 <= float(e["ts"]) < day + 10 * 3600]  # type: ignore[arg-type]
    assert new == []


def test_a_glare_prone_camera_sees_water_at_night_with_no_gauge_rising() -> None:
    readings = readings_of(emissions_of("normal-day"), "cam-underpass-kemayoran")
    night = [number(r, "water_score") for r in readings if local_hour(number(r, "ts")) < 5]
    noon = [number(r, "water_score") for r in readings if 11 <= local_hour(number(r, "ts")) < 14]
    assert min(night) > SEEN and max(noon) < 0.3
    for gauge in catalog().by_kind(Kind.WATER_LEVEL):  # no river rises to corroborate it
        if is_sea_gauge(gauge):
            continue  # the tide at Pasar Ikan, 5 km off
        assert all(level < gauge.thresholds["siaga3_cm"] for _, level in
                   gauge_at("normal-day", gauge.id))
    floods = [e for e in events_of("normal-day", "cam-underpass-kemayoran")
              if e["label"] == "flood"]
    assert floods and all(local_hour(float(e["ts"])) < 7 or  # type: ignore[arg-type]
                          local_hour(float(e["ts"])) >= 18 for e in floods)  # type: ignore[arg-type]


def test_every_detection_is_a_valid_event_with_new_first_and_end_last() -> None:
    lives: dict[tuple[str, str], list[str]] = defaultdict(list)
    for emission in emissions_of("normal-day"):
        if emission.events:
            event = validate_event(orjson.loads(emission.payload))
            assert emission.topic == f"siaga/camera/{emission.device_id}/events"
            lives[(emission.device_id, event.event_id)].append(event.type)
    assert len(lives) > 1000
    for types in lives.values():  # a detection still open when the day ends has no end
        assert types[0] == "new" and set(types[1:-1]) <= {"update"}
    assert sum(types[-1] == "end" for types in lives.values()) > 0.99 * len(lives)


def test_cameras_detect_only_what_their_analytics_run() -> None:
    labels: dict[str, set[object]] = defaultdict(set)
    for emission in emissions_of("normal-day"):
        if emission.events:
            labels[emission.device_id].add(orjson.loads(emission.payload)["label"])
    for camera, seen in labels.items():
        assert seen <= set(catalog().get(camera).analytics), camera  # type: ignore[union-attr]
    for camera in INTERSECTIONS:
        assert {"illegal-parking", "wrong-way", "plate"} <= labels[camera]


def test_plates_are_made_up_and_a_few_are_on_the_watch_list() -> None:
    plates = [str(e["plate"]) for e in events_of("normal-day") if e["label"] == "plate"]
    watched = {normalize_plate(plate) for plate in WATCHED_PLATES}
    listed = [plate for plate in plates if normalize_plate(plate) in watched]
    assert 0 < len(listed) < 0.1 * len(plates)
    assert len(set(plates) - set(listed)) > 0.9 * len(set(plates))


def test_a_random_plate_is_never_on_the_watch_list() -> None:
    rng = random.Random(3)
    watched = {normalize_plate(plate) for plate in WATCHED_PLATES}
    assert not any(normalize_plate(random_plate(rng)) in watched for _ in range(20_000))
