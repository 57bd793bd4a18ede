"""The offline base map: rivers ordered by the flood-wave links and by latitude, kota labels at
their devices' centroid, served as GeoJSON."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devices.kinds import Kind
from devices.registry import Device, Registry
from siaga.console.basemap import base_map, kota_labels, links, rivers
from tests.siaga.apirig import World, open_world
from tests.siaga.console.test_series import REGISTRY, RULES, serving_console


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path) as opened:
        yield opened


def gauge(device_id: str, lat: float, river: str = "Kali", kota: str = "Jakarta Utara") -> Device:
    return Device(id=device_id, kind=Kind.WATER_LEVEL, name=device_id, lat=lat, lon=106.8,
                  labels={"river": river, "kota": kota})


def by_river(features: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {f["properties"]["river"]: f["properties"]["gauges"] for f in features}


def test_the_bundled_rivers_follow_the_flood_wave_links() -> None:
    assert by_river(rivers(REGISTRY, links(RULES))) == {
        "Ciliwung": ["katulampa", "depok", "manggarai"],
        "Krukut / Banjir Kanal Barat": ["krukut-hulu", "karet"],
        "Sunter": ["sunter-hulu", "pulo-gadung"],
        "Pesanggrahan": ["pesanggrahan"],
        "Angke": ["angke-hulu"],
        "Cipinang": ["cipinang-hulu"],
    }  # and the Java Sea's tide gauge at Pasar Ikan is no river


def test_a_river_of_one_gauge_is_a_point_and_of_several_a_line_upstream_first() -> None:
    features = {f["properties"]["river"]: f["geometry"] for f in rivers(REGISTRY, links(RULES))}
    assert features["Angke"] == {"type": "Point", "coordinates": [106.6943, -6.2183]}
    assert features["Ciliwung"]["type"] == "LineString"
    assert features["Ciliwung"]["coordinates"][0] == [106.8367, -6.6331]  # Katulampa, Bogor


def test_without_links_gauges_go_south_to_north() -> None:
    registry = Registry([gauge("mid", -6.3), gauge("mouth", -6.1), gauge("spring", -6.6)])
    assert by_river(rivers(registry, [])) == {"Kali": ["spring", "mid", "mouth"]}


def test_a_link_outranks_latitude() -> None:
    # A canal may run south from its intake: the rules' link says which way it flows.
    registry = Registry([gauge("intake", -6.2), gauge("outfall", -6.4)])
    assert by_river(rivers(registry, [("intake", "outfall")])) == {
        "Kali": ["intake", "outfall"]}


def test_links_in_a_circle_still_give_every_gauge_once() -> None:
    registry = Registry([gauge("a", -6.3), gauge("b", -6.2), gauge("c", -6.5)])
    flows = [("a", "b"), ("b", "a"), ("c", "a")]
    assert by_river(rivers(registry, flows)) == {"Kali": ["c", "a", "b"]}  # then by latitude


def test_links_naming_unknown_or_sea_gauges_are_ignored() -> None:
    registry = Registry([gauge("up", -6.5), gauge("down", -6.2),
                         gauge("tide", -6.1, river="Java Sea")])
    flows = [("up", "nowhere"), ("down", "tide")]
    assert by_river(rivers(registry, flows)) == {"Kali": ["up", "down"]}


def test_a_kota_label_sits_at_the_centroid_of_its_devices() -> None:
    registry = Registry([gauge("a", -6.1, kota="Jakarta Utara"),
                         gauge("b", -6.3, kota="Jakarta Utara"),
                         gauge("c", -6.5, kota="Kota Depok")])
    assert kota_labels(registry) == [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [106.8, -6.2]},
         "properties": {"layer": "label", "kota": "Jakarta Utara"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [106.8, -6.5]},
         "properties": {"layer": "label", "kota": "Kota Depok"}},
    ]


async def test_the_base_map_is_served_as_geojson(world: World) -> None:
    async with serving_console(world, None) as api:
        answer = await api.get("/console/api/basemap")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.body == base_map(REGISTRY, RULES)
    assert answer.body["type"] == "FeatureCollection"
    layers = {f["properties"]["layer"] for f in answer.body["features"]}
    assert layers == {"river", "label"}  # no outline ships (data/SOURCES.md)
    for feature in answer.body["features"]:
        geometry = feature["geometry"]
        points = ([geometry["coordinates"]] if geometry["type"] == "Point"
                  else geometry["coordinates"])
        assert all(106 < lon < 108 and -7 < lat < -6 for lon, lat in points), feature
    kota = {f["properties"]["kota"] for f in answer.body["features"]
            if f["properties"]["layer"] == "label"}
    assert {"Jakarta Pusat", "Jakarta Utara", "Kota Bogor"} <= kota
