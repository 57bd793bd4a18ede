"""The device catalog: what each device is, where, its labels and thresholds, and lookup."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Final, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from devices.detections import LABELS, ZONE_PATTERN
from devices.kinds import DEFAULT_INTERVAL_S, Kind
from devices.topics import DEVICE_ID_PATTERN
from siaga_core.configfile import StrictModel, load_yaml
from siaga_core.yamlfile import Loc

# Labels become InfluxDB tag keys and alert labels: keep them identifiers.
LABEL_KEY_PATTERN: Final = r"^[a-z_][a-z0-9_]*$"
# Siaga sets this tag itself (SPEC section 2); a label of that name would hide the real id.
RESERVED_LABELS: Final = frozenset({"device_id"})
# Flood gauge ladder (jakarta.md section 1): Siaga 3 < Siaga 2 < Siaga 1.
SIAGA_THRESHOLDS: Final = ("siaga3_cm", "siaga2_cm", "siaga1_cm")
CAMERA_FIELDS: Final = ("spot", "watches", "zones", "analytics")
WATCHABLE: Final = frozenset({Kind.WATER_LEVEL, Kind.TRAFFIC})  # what a camera watches over
EVENT_TAGS: Final = frozenset({"label", "type", "zone"})  # a detection's own tags
# A LoRaWAN DevEUI (EUI-64) as network servers write it: 16 hex digits, either case.
DEV_EUI_PATTERN: Final = r"^[0-9A-Fa-f]{16}$"


def _label_key(key: str) -> str:
    if key in RESERVED_LABELS:
        raise ValueError(f"key {key!r} is reserved: Siaga adds it from the device's id")
    return key


def _printable(value: str) -> str:
    # A line-protocol tag value cannot hold a newline; tabs and the like are typos.
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError("must not contain control characters such as newline or tab")
    # Line protocol cannot carry a tag value ending in a backslash: InfluxDB reads the
    # escaped space after it and stores a space instead (seen on InfluxDB 1.6.7).
    if value.endswith("\\"):
        raise ValueError("must not end with a backslash (InfluxDB cannot store it)")
    return value


def _lower(value: str) -> str:
    return value.lower()


def _analytic(name: str) -> str:
    if name not in LABELS:
        raise ValueError(f"unknown analytic {name!r} (expected one of {', '.join(sorted(LABELS))})")
    return name


LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN), AfterValidator(_label_key)]
LabelValue = Annotated[str, Field(min_length=1), AfterValidator(_printable)]
ThresholdName = Annotated[str, Field(pattern=LABEL_KEY_PATTERN)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# Kept in lower case: ChirpStack writes DevEUIs in lower case, The Things Stack in upper.
DevEui = Annotated[str, Field(pattern=DEV_EUI_PATTERN), AfterValidator(_lower)]


class Device(StrictModel):
    """One catalog entry."""

    # `kind` is the one lax field: YAML gives a string, strict mode wants the enum itself.

    id: str = Field(pattern=DEVICE_ID_PATTERN)
    kind: Annotated[Kind, Field(strict=False)]
    name: str = Field(min_length=1)
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    thresholds: dict[ThresholdName, FiniteFloat] = Field(default_factory=dict)
    expected_interval_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Cameras only (SPEC section 7): the road or place it looks at, the gauge or traffic
    # sensor it watches over, its zones (as its analytics name them) and which analytics
    # it runs. Other kinds refuse them.
    spot: LabelValue | None = None
    watches: str | None = Field(default=None, pattern=DEVICE_ID_PATTERN)
    # Tuples with a shared empty default: 10,000 gauges carry no list of their own.
    zones: tuple[Annotated[str, Field(pattern=ZONE_PATTERN)], ...] = Field(
        default=(), max_length=64, strict=False)
    analytics: tuple[Annotated[str, AfterValidator(_analytic)], ...] = Field(
        default=(), strict=False)
    # A LoRaWAN device's DevEUI: its uplinks from ChirpStack or The Things Stack are its
    # readings (`ingest.lorawan`). Unique across the catalog.
    dev_eui: DevEui | None = None

    @field_validator("thresholds")
    @classmethod
    def _ordered(cls, thresholds: dict[str, float]) -> dict[str, float]:
        if all(name in thresholds for name in SIAGA_THRESHOLDS):
            levels = [thresholds[name] for name in SIAGA_THRESHOLDS]
            if not levels[0] < levels[1] < levels[2]:
                shown = ", ".join(f"{name}={thresholds[name]:g}" for name in SIAGA_THRESHOLDS)
                raise ValueError(f"must rise from siaga3_cm to siaga1_cm (got {shown})")
        low, high = thresholds.get("normal_low_cm"), thresholds.get("normal_high_cm")
        if low is not None and high is not None and low > high:
            raise ValueError(f"normal_low_cm ({low:g}) must not exceed normal_high_cm ({high:g})")
        return thresholds

    @model_validator(mode="after")
    def _camera_fields(self) -> Self:
        if self.kind is not Kind.CAMERA:
            given = [name for name in CAMERA_FIELDS if name in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(given)}: only cameras have "
                                 f"{'these' if len(given) > 1 else 'this'} (kind camera)")
        elif self.watches == self.id:
            raise ValueError("watches: a camera cannot watch over itself")
        else:
            taken = sorted(EVENT_TAGS & self.labels.keys())
            if taken:  # its detections carry these tags themselves (SPEC section 7)
                raise ValueError(f"labels: {', '.join(taken)} is reserved on a camera: its "
                                 "detections are tagged with their own")
        return self

    @property
    def interval_s(self) -> float:
        """How often the device reports: its own `expected_interval_s` or its kind's default."""
        if self.expected_interval_s is not None:
            return self.expected_interval_s
        return DEFAULT_INTERVAL_S[self.kind]


class Catalog(StrictModel):
    """A catalog file: `devices:` and a list of entries."""

    devices: list[Device]


def catalog_problems(catalog: Catalog) -> Iterator[tuple[Loc, str]]:
    """The semantic checks of a catalog: every id and DevEUI appears once, and a camera
    watches over a gauge or traffic sensor of the catalog."""
    first: dict[str, int] = {}
    for index, device in enumerate(catalog.devices):
        if device.id in first:
            message = f"duplicate id {device.id!r}: devices[{first[device.id]}] has it too"
            yield ("devices", index, "id"), message
        else:
            first[device.id] = index
    first_eui: dict[str, int] = {}
    for index, device in enumerate(catalog.devices):
        if device.dev_eui is None:
            continue
        if device.dev_eui in first_eui:
            message = (f"duplicate dev_eui {device.dev_eui!r}: "
                       f"devices[{first_eui[device.dev_eui]}] has it too")
            yield ("devices", index, "dev_eui"), message
        else:
            first_eui[device.dev_eui] = index
    kinds = {device.id: device.kind for device in catalog.devices}
    for index, device in enumerate(catalog.devices):
        if device.watches is None:
            continue
        watched = kinds.get(device.watches)
        if watched is None:
            yield ("devices", index, "watches"), f"no device {device.watches!r} in the catalog"
        elif watched not in WATCHABLE:
            yield (("devices", index, "watches"),
                   f"{device.watches!r} is a {watched} device; a camera watches over a "
                   "water-level gauge or a traffic sensor")


class Registry:
    """The devices Siaga accepts readings from, by id."""

    def __init__(self, devices: Iterable[Device]) -> None:
        self._devices: dict[str, Device] = {}
        self._by_dev_eui: dict[str, Device] = {}
        # pydantic gives every model its own set of the fields given (728 B for a device
        # with six); a catalog has a handful of distinct ones. Devices are frozen and a
        # model_copy copies the set, so one shared set per distinct value is safe, and
        # takes 7 MB off a 10,000-device catalog.
        fields_sets: dict[frozenset[str], set[str]] = {}
        for device in devices:
            if device.id in self._devices:
                raise ValueError(f"duplicate device id {device.id!r}")
            if device.dev_eui is not None:
                if device.dev_eui in self._by_dev_eui:
                    raise ValueError(f"duplicate dev_eui {device.dev_eui!r}")
                self._by_dev_eui[device.dev_eui] = device
            given = device.model_fields_set
            shared = fields_sets.setdefault(frozenset(given), given)
            if shared is not given:
                object.__setattr__(device, "__pydantic_fields_set__", shared)
            self._devices[device.id] = device
        self._by_kind: dict[Kind, tuple[Device, ...]] = {
            kind: tuple(d for d in self._devices.values() if d.kind is kind) for kind in Kind
        }

    def get(self, device_id: str) -> Device | None:
        """The device with this id, or None if the catalog does not have it."""
        return self._devices.get(device_id)

    def by_dev_eui(self, dev_eui: str) -> Device | None:
        """The device with this LoRaWAN DevEUI (either case), or None."""
        return self._by_dev_eui.get(dev_eui.lower())

    def tags(self, device_id: str) -> Mapping[str, str]:
        """InfluxDB tags of a known device: `device_id` and its labels (SPEC section 2).

        Made on each call, not kept: the pipeline keeps each device's series key instead.
        """
        return _tags(self._devices[device_id])

    def by_kind(self, kind: Kind) -> Sequence[Device]:
        """The devices of one kind, in catalog order."""
        return self._by_kind[kind]

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices.values())

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices


def _tags(device: Device) -> Mapping[str, str]:
    # Sorted by key, the order InfluxDB prefers, so the writer need not sort per point.
    tags = sorted({**device.labels, "device_id": device.id}.items())
    return MappingProxyType(dict(tags))


def load_catalog(path: Path) -> Registry:
    """Load a catalog file; raises `ConfigFileError` naming each problem's file, line and field."""
    catalog = load_yaml(path, Catalog, check=catalog_problems)
    return Registry(catalog.devices)


def bundled_catalog_path() -> Path:
    """The Jakarta catalog shipped with Siaga (used when no configuration names one)."""
    return Path(__file__).with_name("catalog") / "jakarta.yaml"
