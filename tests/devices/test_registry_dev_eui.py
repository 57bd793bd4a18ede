"""A catalog device's LoRaWAN DevEUI: its form, its uniqueness, and lookup by it."""

from pathlib import Path

import pytest

from devices.registry import Device, Registry, load_catalog
from siaga_core.errors import ConfigFileError, Problem

GAUGE = """\
  - id: {id}
    kind: water-level
    name: Pos {id}
    lat: -6.2
    lon: 106.8
    dev_eui: "{dev_eui}"
"""


def catalog(tmp_path: Path, *entries: tuple[str, str]) -> Path:
    path = tmp_path / "catalog.yaml"
    text = "devices:\n" + "".join(GAUGE.format(id=id_, dev_eui=eui) for id_, eui in entries)
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[Problem]:
    with pytest.raises(ConfigFileError) as caught:
        load_catalog(path)
    assert all(line.startswith(f"{path}:") for line in str(caught.value).splitlines())
    return caught.value.problems


def test_a_device_is_found_by_its_dev_eui_in_either_case(tmp_path: Path) -> None:
    # ChirpStack writes DevEUIs in lower case, The Things Stack in upper case.
    registry = load_catalog(catalog(tmp_path, ("pos-a", "70B3D57ED005B89A")))
    for asked in ("70b3d57ed005b89a", "70B3D57ED005B89A"):
        device = registry.by_dev_eui(asked)
        assert device is not None and device.id == "pos-a"
    assert registry.by_dev_eui("0000000000000000") is None


def test_a_dev_eui_is_kept_in_lower_case(tmp_path: Path) -> None:
    registry = load_catalog(catalog(tmp_path, ("pos-a", "0004A30B001C0530")))
    device = registry.get("pos-a")
    assert device is not None and device.dev_eui == "0004a30b001c0530"


def test_a_device_without_a_dev_eui_has_none(tmp_path: Path) -> None:
    device = Device.model_validate({"id": "t1", "kind": "traffic", "name": "T", "lat": 0,
                                    "lon": 0})
    assert device.dev_eui is None


@pytest.mark.parametrize("eui", ["0004A30B001C053", "0004A30B001C05300", "0004A30B001C053G",
                                 "00-04-A3-0B-00-1C-05-30"])
def test_a_dev_eui_that_is_not_16_hex_digits_is_refused_at_its_line(
        tmp_path: Path, eui: str) -> None:
    [problem] = problems(catalog(tmp_path, ("pos-a", eui)))
    assert (problem.place, problem.line) == ("devices[0].dev_eui", 7)
    assert "^[0-9A-Fa-f]{16}$" in problem.message


def test_a_dev_eui_of_digits_only_must_be_quoted_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("devices:\n" + GAUGE.format(id="pos-a", dev_eui="x").replace(
        '"x"', "0101010101010101"), encoding="utf-8")
    [problem] = problems(path)
    assert (problem.place, problem.line) == ("devices[0].dev_eui", 7)
    assert problem.message == "must be a string, not an integer (put it in quotes)"


def test_a_dev_eui_given_twice_names_both_devices_whatever_the_case(tmp_path: Path) -> None:
    path = catalog(tmp_path, ("pos-a", "0101010101010101"), ("pos-b", "0101010101010101"),
                   ("pos-c", "70B3D57ED005B89A"), ("pos-d", "70b3d57ed005b89a"))
    assert problems(path) == [
        Problem("devices[1].dev_eui", "duplicate dev_eui '0101010101010101': devices[0] has "
                "it too", 13),
        Problem("devices[3].dev_eui", "duplicate dev_eui '70b3d57ed005b89a': devices[2] has "
                "it too", 25),
    ]


def test_a_registry_refuses_a_dev_eui_given_twice() -> None:
    one, two = (Device.model_validate({"id": id_, "kind": "traffic", "name": "T", "lat": 0,
                                       "lon": 0, "dev_eui": "0101010101010101"})
                for id_ in ("t1", "t2"))
    with pytest.raises(ValueError, match="duplicate dev_eui '0101010101010101'"):
        Registry([one, two])
