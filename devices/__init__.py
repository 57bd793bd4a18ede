"""What a device is: kinds, reading models, topics, timestamps and the device catalog."""

from devices.configfile import (
    ConfigError,
    Problem,
    YamlDocument,
    format_validation_error,
    load_yaml,
    read_yaml,
    validate_data,
)
from devices.kinds import DEFAULT_INTERVAL_S, MEASUREMENTS, Kind
from devices.readings import (
    NUMERIC_FIELDS,
    READING_MODELS,
    AirQualityReading,
    Reading,
    ReadingModel,
    TrafficReading,
    WaterLevelReading,
    explain,
    to_reading,
    validate_reading,
)
from devices.registry import Catalog, Device, Registry, bundled_catalog_path, load_catalog
from devices.timestamps import parse_ts
from devices.topics import DEVICE_ID_PATTERN, InvalidTopic, Topic, TopicScheme

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEVICE_ID_PATTERN",
    "MEASUREMENTS",
    "NUMERIC_FIELDS",
    "READING_MODELS",
    "AirQualityReading",
    "Catalog",
    "ConfigError",
    "Device",
    "InvalidTopic",
    "Kind",
    "Problem",
    "Reading",
    "ReadingModel",
    "Registry",
    "Topic",
    "TopicScheme",
    "TrafficReading",
    "WaterLevelReading",
    "YamlDocument",
    "bundled_catalog_path",
    "explain",
    "format_validation_error",
    "load_catalog",
    "load_yaml",
    "parse_ts",
    "read_yaml",
    "to_reading",
    "validate_data",
    "validate_reading",
]
