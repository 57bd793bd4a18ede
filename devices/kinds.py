"""The kinds of device Siaga knows, and where each kind's readings are stored."""

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Kind(StrEnum):
    """A device kind; its value is the `{kind}` segment of the MQTT topic (SPEC section 1)."""

    WATER_LEVEL = "water-level"
    AIR_QUALITY = "air-quality"
    TRAFFIC = "traffic"


# The InfluxDB measurement per kind (SPEC section 2). Read-only: no module-level mutable state.
MEASUREMENTS: Mapping[Kind, str] = MappingProxyType(
    {
        Kind.WATER_LEVEL: "water_level",
        Kind.AIR_QUALITY: "air_quality",
        Kind.TRAFFIC: "traffic",
    }
)

# How often a device of each kind reports when its catalog entry does not say
# (`expected_interval_s: null`). Gauges report hourly at normal level (jakarta.md section 1);
# ISPU is computed from hourly data (section 3); traffic detectors aggregate over minutes.
DEFAULT_INTERVAL_S: Mapping[Kind, float] = MappingProxyType(
    {
        Kind.WATER_LEVEL: 3600.0,
        Kind.AIR_QUALITY: 3600.0,
        Kind.TRAFFIC: 300.0,
    }
)
