"""A device's colour on the console: one status word from its reading, alerts and silence.

Pure functions over what the service already keeps (the latest reading, the open alerts,
the offline judgement); the live hub and the history view both call them, so the map of
a past moment is drawn by the same rules as the live one.

    offline          the offline checker says so (grey, whatever the last value was)
    no-data          no reading since the service started
    ok siaga-3 siaga-2 siaga-1
                     a gauge: a firing ladder alert's `level` wins (it has the rules'
                     hysteresis, so the map agrees with the alerts panel); otherwise the
                     device's Siaga thresholds, each reached at or above it
    baik sedang tidak-sehat sangat-tidak-sehat berbahaya
                     an air monitor: a firing ISPU alert's `level`, otherwise the ISPU
                     category of its latest concentrations
    congested        a traffic detector while a window alert of it fires (else ok); a
                     camera while its CameraCongestion alert fires
    water            a camera while its FloodDetected alert fires, or its latest
                     water_score is at least 0.8 (what that rule waits two minutes on)

In a cluster an instance holds the readings of the devices it reads only; a device another
instance reads (heard, by the board of devices heard) is coloured by its firing alerts in
the shared book alone, and is `ok` without one (`heard_status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from devices.kinds import Kind
from devices.readings import POLLUTANTS, Reading
from devices.registry import SIAGA_THRESHOLDS, Device
from rules.alert import Alert, AlertStatus
from rules.cameras import CAMERA_CONGESTION, FLOOD_DETECTED
from rules.config import RulesFile
from rules.ispu import Category, ispu

OK: Final = "ok"
OFFLINE: Final = "offline"
NO_DATA: Final = "no-data"
CONGESTED: Final = "congested"
WATER: Final = "water"
# The camera rules (issue 16) by name: built-in alerts of their own, not ladders.
CAMERA_WATER_RULE: Final = FLOOD_DETECTED
CAMERA_JAM_RULE: Final = CAMERA_CONGESTION
CAMERA_RULES: Final = (CAMERA_WATER_RULE, CAMERA_JAM_RULE)
WATER_SEEN: Final = 0.8  # water_score from which a camera is drawn as seeing water
SIAGA_LEVELS: Final = ("siaga-3", "siaga-2", "siaga-1")  # in SIAGA_THRESHOLDS' order
ISPU_LEVELS: Final = tuple(category.value for category in Category)
# Least to most urgent: a device list sorted by rank, descending, puts what needs eyes first.
# An ISPU category sits just above the Siaga level of like severity; `offline` above the
# calm ones (someone must go and look), `no-data` last.
_URGENCY: Final = (NO_DATA, OK, "baik", "sedang", OFFLINE, CONGESTED, "tidak-sehat", "siaga-3",
                   WATER, "sangat-tidak-sehat", "siaga-2", "berbahaya", "siaga-1")
STATUSES: Final = frozenset(_URGENCY)
_RANK: Mapping[str, int] = MappingProxyType({status: i for i, status in enumerate(_URGENCY)})

# The field each kind's marker, list row and chart show. Air monitors report any subset of
# the pollutants: PM2.5 when present (Jakarta's usual dominant one), else the first present.
MAIN_FIELD: Mapping[Kind, str] = MappingProxyType({
    Kind.WATER_LEVEL: "level_cm",
    Kind.AIR_QUALITY: "pm25",
    Kind.TRAFFIC: "speed_kmh",
    Kind.CAMERA: "water_score",
})


@dataclass(frozen=True, slots=True)
class StatusRules:
    """Which alert names colour a device: the rules file's ladder, ISPU and window rules."""

    ladder: frozenset[str]
    ispu: frozenset[str]
    window: frozenset[str]

    @classmethod
    def of(cls, rules_file: RulesFile) -> StatusRules:
        def named(kind: str) -> frozenset[str]:
            return frozenset(rule.name for rule in rules_file.rules if rule.type == kind)

        return cls(ladder=named("ladder"), ispu=named("ispu"), window=named("window"))

    @property
    def names(self) -> frozenset[str]:
        return self.ladder | self.ispu | self.window


def device_status(device: Device, reading: Reading | None, alerts: Iterable[Alert],
                  offline: bool, rules: StatusRules) -> str:
    """The device's status word (see the module docstring); `alerts` are the device's own
    (any status: only firing ones count)."""
    if offline:
        return OFFLINE
    if reading is None:
        return NO_DATA
    firing = [alert for alert in alerts if alert.status is AlertStatus.FIRING]
    if device.kind is Kind.WATER_LEVEL:
        return _gauge(device, reading, firing, rules)
    if device.kind is Kind.AIR_QUALITY:
        return _air(reading, firing, rules)
    if device.kind is Kind.TRAFFIC:
        return CONGESTED if any(a.rule in rules.window for a in firing) else OK
    if device.kind is Kind.CAMERA:
        return _camera(reading, firing)
    return OK  # a kind without colours of its own


def heard_status(alerts: Iterable[Alert], rules: StatusRules) -> str:
    """The status of a device heard but whose latest reading is not here (another instance
    of a cluster reads it): what its firing alerts say, else `ok`. A gauge below Siaga 3
    has no ladder alert, so `ok` is its colour; an air monitor's `baik` or `sedang` and a
    camera's water score under its rule's wait are not told apart from `ok`."""
    said = [OK]
    for alert in alerts:
        if alert.status is not AlertStatus.FIRING:
            continue
        level = alert.labels.get("level", "")
        if (alert.rule in rules.ladder and level in SIAGA_LEVELS) or (
                alert.rule in rules.ispu and level in ISPU_LEVELS):
            said.append(level)
        elif alert.rule == CAMERA_WATER_RULE:
            said.append(WATER)
        elif alert.rule in rules.window or alert.rule == CAMERA_JAM_RULE:
            said.append(CONGESTED)
    return max(said, key=rank)


def rank(status: str) -> int:
    """How urgent a status is: higher first; unknown words rank with `ok`."""
    return _RANK.get(status, _RANK[OK])


def main_value(device: Device, reading: Reading | None) -> tuple[str, float] | None:
    """The (field, value) the console shows for the device's latest reading, if any."""
    if reading is None:
        return None
    values = reading.values
    field = MAIN_FIELD.get(device.kind)
    if field is not None and field in values:
        return field, values[field]
    if device.kind is Kind.AIR_QUALITY:
        for pollutant in POLLUTANTS:
            if pollutant in values:
                return pollutant, values[pollutant]
    return None


def _gauge(device: Device, reading: Reading, firing: list[Alert], rules: StatusRules) -> str:
    for alert in firing:
        level = alert.labels.get("level", "")
        if alert.rule in rules.ladder and level in SIAGA_LEVELS:
            return level
    value = reading.values.get("level_cm")
    if value is None:
        return OK
    status = OK
    for name, level in zip(SIAGA_THRESHOLDS, SIAGA_LEVELS, strict=True):
        threshold = device.thresholds.get(name)
        if threshold is not None and value >= threshold:
            status = level
    return status


def _air(reading: Reading, firing: list[Alert], rules: StatusRules) -> str:
    for alert in firing:
        level = alert.labels.get("level", "")
        if alert.rule in rules.ispu and level in ISPU_LEVELS:
            return level
    try:
        return ispu(reading.values).category.value
    except ValueError:  # no pollutant among the values (the model requires one): no colour
        return OK


def _camera(reading: Reading, firing: list[Alert]) -> str:
    names = {alert.rule for alert in firing}
    if CAMERA_WATER_RULE in names or reading.values.get("water_score", 0.0) >= WATER_SEEN:
        return WATER
    return CONGESTED if CAMERA_JAM_RULE in names else OK
