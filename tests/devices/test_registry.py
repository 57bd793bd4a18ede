"""The device catalog: the bundled Jakarta file, Registry lookups, and broken catalogs."""

from pathlib import Path

import pytest

from devices.kinds import Kind
from devices.registry import Device, Registry, bundled_catalog_path, load_catalog
from siaga_core.errors import ConfigFileError, Problem

# gauges.csv of the shared domain facts, copied so the test needs no file outside the repo:
# id, kota, river, siaga3_cm, siaga2_cm, siaga1_cm, normal_low_cm, normal_high_cm.
GAUGES = [
    ("katulampa", "Kota Bogor", "Ciliwung", 81, 151, 201, 0, 50),
    ("depok", "Kota Depok", "Ciliwung", 200, 271, 351, 75, 165),
    ("manggarai", "Jakarta Selatan", "Ciliwung", 751, 851, 950, 550, 700),
    ("karet", "Jakarta Pusat", "Banjir Kanal Barat", 451, 551, 601, 260, 400),
    ("krukut-hulu", "Jakarta Selatan", "Krukut", 151, 251, 301, 10, 100),
    ("pesanggrahan", "Kota Depok", "Pesanggrahan", 151, 251, 351, 60, 140),
    ("angke-hulu", "Kota Tangerang", "Angke", 151, 251, 301, 40, 130),
    ("cipinang-hulu", "Jakarta Timur", "Cipinang", 151, 201, 251, 80, 125),
    ("sunter-hulu", "Jakarta Timur", "Sunter", 141, 201, 251, 50, 130),
    ("pulo-gadung", "Jakarta Timur", "Sunter", 551, 701, 771, 330, 460),
    ("pasar-ikan", "Jakarta Utara", "Java Sea", 170, 200, 250, 145, 170),
]


def entry(**fields: str | None) -> str:
    """A catalog entry as YAML text: valid, with `fields` replaced (None drops a field)."""
    merged: dict[str, str | None] = {
        "id": "a",
        "kind": "traffic",
        "name": "Jl. X",
        "lat": "-6.2",
        "lon": "106.8",
    }
    merged.update(fields)
    lines = [f"{key}: {value}" for key, value in merged.items() if value is not None]
    return "  - " + "\n    ".join(lines) + "\n"


@pytest.fixture(scope="module")
def bundled() -> Registry:
    return load_catalog(bundled_catalog_path())


def test_the_bundled_catalog_has_every_gauge_with_the_published_thresholds(
    bundled: Registry,
) -> None:
    gauges = {device.id: device for device in bundled.by_kind(Kind.WATER_LEVEL)}
    assert list(gauges) == [row[0] for row in GAUGES]
    for gauge_id, kota, river, s3, s2, s1, low, high in GAUGES:
        device = gauges[gauge_id]
        assert device.labels == {"kota": kota, "river": river}
        assert device.thresholds == {
            "siaga3_cm": s3,
            "siaga2_cm": s2,
            "siaga1_cm": s1,
            "normal_low_cm": low,
            "normal_high_cm": high,
        }
        assert device.interval_s == 3600


def test_the_bundled_catalog_has_air_quality_monitors_and_traffic_detectors(
    bundled: Registry,
) -> None:
    monitors = bundled.by_kind(Kind.AIR_QUALITY)
    detectors = bundled.by_kind(Kind.TRAFFIC)
    assert {d.id for d in monitors} >= {"dki1-bundaran-hi", "dki5-kebon-jeruk"}
    assert all(set(d.labels) == {"kota", "kecamatan"} for d in monitors)
    assert len(detectors) == 8
    assert all(set(d.labels) == {"kota", "road"} and d.interval_s == 300 for d in detectors)
    cameras = bundled.by_kind(Kind.CAMERA)
    assert all(d.watches is None or d.watches in bundled for d in cameras)
    assert len(bundled) == len(GAUGES) + len(monitors) + len(detectors) + len(cameras)


def test_every_bundled_device_lies_around_jakarta(bundled: Registry) -> None:
    # Katulampa (Bogor) is the southernmost; Pasar Ikan and Kemayoran the north.
    assert all(-6.7 < d.lat < -6.0 and 106.6 < d.lon < 107.0 for d in bundled)


def test_tags_are_the_device_id_and_its_labels_sorted_by_key(bundled: Registry) -> None:
    tags = bundled.tags("manggarai")
    assert tags == {"device_id": "manggarai", "kota": "Jakarta Selatan", "river": "Ciliwung"}
    assert list(tags) == sorted(tags)


def test_tags_are_read_only(bundled: Registry) -> None:
    with pytest.raises(TypeError):
        bundled.tags("manggarai")["kota"] = "x"  # type: ignore[index]  # the point of the test


def test_devices_given_the_same_fields_share_one_fields_set_without_mixing_them() -> None:
    def device(number: int, **extra: object) -> Device:
        return Device.model_validate({"id": f"d{number}", "kind": "traffic",
                                      "name": f"D {number}", "lat": -6.2, "lon": 106.8, **extra})

    first, second, other = device(1), device(2), device(3, labels={"kota": "Jakarta Pusat"})
    registry = Registry([first, second, other])
    a, b, c = (registry.get(f"d{n}") for n in (1, 2, 3))
    assert a is not None and b is not None and c is not None
    assert a.model_fields_set is b.model_fields_set  # the memory saving itself
    assert c.model_fields_set == {"id", "kind", "name", "lat", "lon", "labels"}
    assert "labels" not in a.model_dump(exclude_unset=True)
    # A copy gets its own set: updating it leaves the shared one alone.
    copied = a.model_copy(update={"name": "Renamed"})
    assert "name" in copied.model_fields_set and copied.name == "Renamed"
    assert b.model_fields_set == {"id", "kind", "name", "lat", "lon"}


def test_get_returns_none_for_an_unknown_device(bundled: Registry) -> None:
    assert bundled.get("nope") is None
    assert "nope" not in bundled
    assert "manggarai" in bundled


def test_iteration_follows_the_catalog_order(bundled: Registry) -> None:
    assert next(iter(bundled)).id == "katulampa"


def test_interval_defaults_to_the_kind_when_a_device_does_not_say() -> None:
    device = Device.model_validate(
        {"id": "t1", "kind": "traffic", "name": "T", "lat": -6.2, "lon": 106.8}
    )
    assert device.expected_interval_s is None
    assert device.interval_s == 300


def test_a_registry_refuses_duplicate_ids() -> None:
    device = Device.model_validate({"id": "t1", "kind": "traffic", "name": "T", "lat": 0, "lon": 0})
    with pytest.raises(ValueError, match="duplicate device id 't1'"):
        Registry([device, device])


def problems_in(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError) as caught:
        load_catalog(path)
    assert all(line.startswith(f"{path}:") for line in str(caught.value).splitlines())
    return caught.value.problems


def test_an_unknown_kind_is_named_with_the_allowed_ones(tmp_path: Path) -> None:
    text = "devices:\n" + entry(kind="water-levl")
    assert problems_in(tmp_path, text) == [
        Problem(
            "devices[0].kind",
            "must be one of water-level, air-quality, traffic, camera (got 'water-levl')",
            3,
        )
    ]


def test_a_duplicate_id_names_both_positions(tmp_path: Path) -> None:
    text = "devices:\n" + entry() + entry()
    assert problems_in(tmp_path, text) == [
        Problem("devices[1].id", "duplicate id 'a': devices[0] has it too", 7)
    ]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("Kota: x", "key must match ^[a-z_][a-z0-9_]*$ (got 'Kota')"),
        ("device_id: x", "key 'device_id' is reserved: Siaga adds it from the device's id"),
        ("kota: ''", "must not be empty"),
        ('kota: "a\\nb"', "must not contain control characters such as newline or tab"),
        ("kota: 1", "must be a string, not an integer (put it in quotes)"),
    ],
)
def test_a_bad_label_is_refused_at_its_line(tmp_path: Path, label: str, message: str) -> None:
    text = "devices:\n" + entry(labels=f"\n      {label}")
    [problem] = problems_in(tmp_path, text)
    assert problem.place.startswith("devices[0].labels.")
    assert (problem.message, problem.line) == (message, 8)


def test_a_missing_field_is_named(tmp_path: Path) -> None:
    text = "devices:\n" + entry(name=None)
    assert problems_in(tmp_path, text) == [Problem("devices[0].name", "required, but missing", 2)]


def test_a_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    [problem] = problems_in(tmp_path, "devices:\n  - id: a\n   kind: traffic\n")
    assert (problem.place, problem.line) == ("YAML syntax", 3)


def test_an_unknown_key_suggests_the_intended_one(tmp_path: Path) -> None:
    text = "devices:\n" + entry(treshold="{siaga3_cm: 1}")
    [problem] = problems_in(tmp_path, text)
    assert (problem.place, problem.line) == ("devices[0].treshold", 7)
    assert problem.message.startswith("unknown key (did you mean thresholds?")


def test_siaga_thresholds_must_rise(tmp_path: Path) -> None:
    thresholds = "{siaga3_cm: 200, siaga2_cm: 150, siaga1_cm: 300}"
    [problem] = problems_in(tmp_path, "devices:\n" + entry(thresholds=thresholds))
    assert problem == Problem(
        "devices[0].thresholds",
        "must rise from siaga3_cm to siaga1_cm (got siaga3_cm=200, siaga2_cm=150, siaga1_cm=300)",
        7,
    )


@pytest.mark.parametrize(
    ("key", "value", "message", "line"),
    [
        ("id", "Manggarai", "must match ^[a-z0-9][a-z0-9_-]{0,63}$ (got 'Manggarai')", 2),
        ("name", "''", "must not be empty", 4),
        ("lat", "-91", "must be >= -90 (got -91)", 5),
        ("lon", "181", "must be <= 180 (got 181)", 6),
        ("expected_interval_s", "0", "must be > 0 (got 0)", 7),
        ("expected_interval_s", ".inf", "must be a finite number (got inf)", 7),
    ],
)
def test_a_bad_field_value_says_what_is_expected(
    tmp_path: Path, key: str, value: str, message: str, line: int
) -> None:
    [problem] = problems_in(tmp_path, "devices:\n" + entry(**{key: value}))
    assert problem == Problem(f"devices[0].{key}", message, line)


def test_a_camera_names_its_spot_watched_device_zones_and_analytics(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "devices:\n"
        "  - {id: manggarai, kind: water-level, name: PA Manggarai, lat: -6.2, lon: 106.8}\n"
        "  - {id: cctv-mgr, kind: camera, name: CCTV Manggarai, lat: -6.2, lon: 106.8,\n"
        "     spot: Jl. Tambak, watches: manggarai, zones: [gate, road],\n"
        "     analytics: [flood, plate]}\n", encoding="utf-8")
    camera = load_catalog(path).get("cctv-mgr")
    assert camera is not None
    assert (camera.spot, camera.watches, camera.zones, camera.analytics, camera.interval_s) == (
        "Jl. Tambak", "manggarai", ("gate", "road"), ("flood", "plate"), 10.0)


@pytest.mark.parametrize(("entry", "message"), [
    ("{id: g, kind: water-level, name: G, lat: 0, lon: 0, zones: [a]}",
     "devices[1]: zones: only cameras have this (kind camera)"),
    ("{id: c, kind: camera, name: C, lat: 0, lon: 0, watches: nowhere}",
     "devices[1].watches: no device 'nowhere' in the catalog"),
    ("{id: c, kind: camera, name: C, lat: 0, lon: 0, watches: udara}",
     "devices[1].watches: 'udara' is a air-quality device; a camera watches over a "
     "water-level gauge or a traffic sensor"),
    ("{id: c, kind: camera, name: C, lat: 0, lon: 0, labels: {zone: utara}}",
     "labels: zone is reserved on a camera: its detections are tagged with their own"),
    ("{id: c, kind: camera, name: C, lat: 0, lon: 0, analytics: [telepathy]}",
     "devices[1].analytics[0]: unknown analytic 'telepathy'"),
])
def test_a_camera_entry_that_cannot_be_is_named(tmp_path: Path, entry: str,
                                                 message: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("devices:\n  - {id: udara, kind: air-quality, name: U, lat: 0, lon: 0}\n"
                    f"  - {entry}\n", encoding="utf-8")
    with pytest.raises(ConfigFileError) as caught:
        load_catalog(path)
    assert message in str(caught.value)
