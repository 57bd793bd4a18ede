"""The kinds of device Siaga knows, and where each kind's readings are stored."""

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Kind(StrEnum):
    """A device kind; its value is the `{kind}` segment of the MQTT topic (SPEC section 1)."""

    WATER_LEVEL = "water-level"
    AIR_QUALITY = "air-quality"
    TRAFFIC = "traffic"
    # A CCTV camera's video analytics (SPEC section 7): counts as readings, detections as
    # events on their own channel; never video.
    CAMERA = "camera"


# The InfluxDB measurement per kind (SPEC section 2). Read-only: no module-level mutable state.
MEASUREMENTS: Mapping[Kind, str] = MappingProxyType(
    {
        Kind.WATER_LEVEL: "water_level",
        Kind.AIR_QUALITY: "air_quality",
        Kind.TRAFFIC: "traffic",
        Kind.CAMERA: "camera",
    }
)
# Where a camera's detections (the `events` channel) are stored (SPEC section 7).
EVENT_MEASUREMENT = "camera_event"

# How often a device of each kind reports when its catalog entry does not say
# (`expected_interval_s: null`). Gauges report hourly at normal level (jakarta.md section 1);
# ISPU is computed from hourly data (section 3); traffic detectors aggregate over minutes;
# camera analytics count every 10 s (issue 16).
DEFAULT_INTERVAL_S: Mapping[Kind, float] = MappingProxyType(
    {
        Kind.WATER_LEVEL: 3600.0,
        Kind.AIR_QUALITY: 3600.0,
        Kind.TRAFFIC: 300.0,
        Kind.CAMERA: 10.0,
    }
)
