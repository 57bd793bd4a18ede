"""Silent devices and dark areas, judged on the wall clock: DeviceOffline and AreaOffline.

The ingest side tells a `DeviceTracker` what it sees (a reading, a status message, the
broker connection going up or down); a scheduled job calls `OfflineChecker.check(now)`
and feeds the signals to the engine, like any rule's. Rules see event time; this is the
one judgement made on the wall clock (SPEC section 5).

- A device is offline when its status topic says `offline`, or when it has been silent
  longer than `grace_factor` x its expected interval. A device never seen counts from the
  service's start, so a restart pages nobody until the devices had their chance.
- While the broker connection is down nothing can be heard: devices are unobservable,
  not offline. That time does not count as silence, their alerts are left as they are,
  and after `connection_grace` one AreaOffline (`connection=mqtt`) says Siaga is blind.
- When at least `area_fraction` of an area's devices (per `area_labels`, e.g. one river)
  are offline together, the area gets one AreaOffline naming them, and those devices get
  no DeviceOffline of their own (inhibited, as Alertmanager would; one already firing is
  left as it is, so its resolution still arrives when the device returns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from pydantic import AfterValidator, Field

from devices.kinds import DEFAULT_INTERVAL_S, Kind
from devices.registry import Device, LabelKey, Registry
from rules.alert import Alert, Severity, Signal, ended, local_time
from siaga_core.configfile import StrictModel
from siaga_core.durations import Duration, format_duration, to_ns

DEVICE_OFFLINE: Final = "DeviceOffline"
AREA_OFFLINE: Final = "AreaOffline"
CONNECTION_AREA: Final = "connection=mqtt"  # the subject of "everything behind the broker"
DEVICE_SEVERITY: Final = Severity.WARNING  # one device: a maintenance job
AREA_SEVERITY: Final = Severity.MAJOR  # many at once: power, network or the broker


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s, e.g. 30s")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


class OfflineConfig(StrictModel):
    """When a silent device is offline, and when many of them are one dark area."""

    # Per kind; a device's own `expected_interval_s` in the catalog wins over this, and
    # without either the kind's default applies (devices.kinds.DEFAULT_INTERVAL_S).
    expected_interval: dict[Annotated[Kind, Field(strict=False)], PositiveDuration] = Field(
        default_factory=dict
    )
    grace_factor: float = Field(default=2.0, ge=1, allow_inf_nan=False)
    check_every: PositiveDuration = timedelta(seconds=30)
    area_labels: list[LabelKey] = Field(default_factory=lambda: ["river", "kota"])
    area_min_devices: int = Field(default=3, ge=2)  # fewer is not an area
    area_fraction: float = Field(default=0.6, gt=0, le=1, allow_inf_nan=False)
    # paho reconnects within seconds; a blip that short should page nobody.
    connection_grace: Duration = timedelta(minutes=2)


class DeviceTracker:
    """What the service hears from each device, on the wall clock. Event-loop only."""

    def __init__(self, started_ns: int) -> None:
        self.started_ns = started_ns
        self._last_seen: dict[str, int] = {}
        # Where each device's silence starts counting: its last reading, moved forward by
        # the time the connection was down since. `_silent_default` for the never seen.
        self._silent_from: dict[str, int] = {}
        self._silent_default = started_ns
        self._said_offline: set[str] = set()
        # Down until the service first connects: nothing was observable before.
        self._down_since: int | None = started_ns

    def seen(self, device_id: str, wall_ns: int) -> None:
        """A message from the device arrived (it is alive, whatever its status said)."""
        self._last_seen[device_id] = max(wall_ns, self._last_seen.get(device_id, wall_ns))
        self._silent_from[device_id] = max(wall_ns, self._silent_from.get(device_id, wall_ns))
        self._said_offline.discard(device_id)

    def status(self, device_id: str, online: bool, wall_ns: int) -> None:
        """The device's status topic: `offline` (its last will) or `online`.

        `online` is not proof of a reading (the retained message may be old), so it only
        takes back an `offline`; silence is still judged by readings.
        """
        if online:
            self._said_offline.discard(device_id)
        else:
            self._said_offline.add(device_id)

    def broker_connection_changed(self, up: bool, wall_ns: int) -> None:
        """The service's broker connection went up or down."""
        if not up:
            if self._down_since is None:
                self._down_since = wall_ns
            return
        if self._down_since is None:
            return
        down_since, self._down_since = self._down_since, None
        self._silent_default = _excuse(self._silent_default, down_since, wall_ns)
        for device_id, start in self._silent_from.items():
            self._silent_from[device_id] = _excuse(start, down_since, wall_ns)

    @property
    def down_since(self) -> int | None:
        """When the broker connection went down; None while it is up."""
        return self._down_since

    def last_seen(self, device_id: str) -> int | None:
        return self._last_seen.get(device_id)

    def said_offline(self, device_id: str) -> bool:
        return device_id in self._said_offline

    def silent_ns(self, device_id: str, now_ns: int) -> int:
        """How long the device has been silent while it could have been heard."""
        return now_ns - self._silent_from.get(device_id, self._silent_default)


def _excuse(start: int, down_since: int, up_ns: int) -> int:
    # Silence counted from `start` skips the outage [down_since, up_ns).
    return start + max(0, up_ns - max(down_since, start))


@dataclass(frozen=True, slots=True)
class _Area:
    key: str
    value: str
    devices: tuple[str, ...]

    @property
    def subject(self) -> str:
        return f"{self.key}={self.value}"


class OfflineChecker:
    """DeviceOffline and AreaOffline signals from the tracker at a wall-clock instant."""

    def __init__(self, config: OfflineConfig, registry: Registry, tracker: DeviceTracker,
                 utc_offset: str = "+07:00") -> None:
        """`utc_offset`: the operators' clock in resolution texts (`alerting.utc_offset`)."""
        self._config = config
        self._devices = tuple(registry)
        self._names = {device.id: device.name for device in registry}
        self._utc_offset = utc_offset
        self._tracker = tracker
        self._interval_s = {device.id: self._interval(device) for device in registry}
        self._areas = _areas(self._devices, config)

    def check(self, now_wall_ns: int) -> list[Signal]:
        """A signal for the connection, every area and every device not inside a dark area.

        Inactive signals are cheap for the engine (no alert, no change) and are how an
        alert resolves, so every subject gets one each time.
        """
        down_since = self._tracker.down_since
        if down_since is not None:
            return [self._connection_signal(now_wall_ns, down_since)]
        offline = {d.id for d in self._devices if self.is_offline(d, now_wall_ns)}
        dark = self._dark_areas(offline)
        covered = {device_id for area in dark for device_id in area.devices}
        signals = [Signal(AREA_OFFLINE, CONNECTION_AREA, False, now_wall_ns, AREA_SEVERITY, {}, {})]
        for area in self._areas:
            if area in dark:
                signals.append(self._area_signal(area, offline, now_wall_ns))
            else:
                signals.append(Signal(AREA_OFFLINE, area.subject, False, now_wall_ns,
                                      AREA_SEVERITY, {}, {}))
        for device in self._devices:
            if device.id in offline and device.id not in covered:
                signals.append(self._device_signal(device, now_wall_ns))
            elif device.id not in offline:
                signals.append(Signal(DEVICE_OFFLINE, device.id, False, now_wall_ns,
                                      DEVICE_SEVERITY, {}, {}))
        return signals

    def resolution(self, alert: Alert) -> Mapping[str, str]:
        """What ended a DeviceOffline or AreaOffline (`RuleEngine.signal` asks on resolution)."""
        at_ns = alert.ends_at_ns if alert.ends_at_ns is not None else alert.evaluated_at_ns
        at = local_time(at_ns, self._utc_offset)
        if alert.rule == DEVICE_OFFLINE:
            name = self._names.get(alert.subject, alert.subject)
            last = self._tracker.last_seen(alert.subject)
            if last is not None and last >= alert.starts_at_ns:
                how = f"heard from at {local_time(last, self._utc_offset)}"
            else:
                how = "its status topic says online again"
            summary = f"{name} is back online: {how}"
            return ended(summary, f"{summary}; checked at {at}.", at_ns, self._utc_offset)
        if alert.subject == CONNECTION_AREA:
            summary = f"Siaga reaches its MQTT broker again (at {at})"
            return ended(summary, f"{summary}: devices can be heard again.", at_ns,
                         self._utc_offset)
        key, _, value = alert.subject.partition("=")
        summary = f"{key} {value} is reporting again (at {at})"
        return ended(summary, f"{summary}: fewer than {self._config.area_fraction:.0%} of its "
                              "devices are silent now.", at_ns, self._utc_offset)

    def _interval(self, device: Device) -> float:
        if device.expected_interval_s is not None:
            return device.expected_interval_s
        configured = self._config.expected_interval.get(device.kind)
        if configured is not None:
            return configured.total_seconds()
        return DEFAULT_INTERVAL_S[device.kind]

    def is_offline(self, device: Device, now_ns: int) -> bool:
        """The device is offline at wall-clock `now_ns`: its status topic says so, or it has
        been silent longer than its grace (also read by the console for its grey markers)."""
        if self._tracker.said_offline(device.id):
            return True
        allowed_ns = self._interval_s[device.id] * self._config.grace_factor * 1e9
        return self._tracker.silent_ns(device.id, now_ns) > allowed_ns

    def _dark_areas(self, offline: set[str]) -> list[_Area]:
        # Areas in `area_labels` order: a kota whose silent devices are all already named
        # by a dark river adds nothing, so it is not a second incident.
        dark: list[_Area] = []
        covered: set[str] = set()
        for area in self._areas:
            silent = {device_id for device_id in area.devices if device_id in offline}
            enough = len(silent) >= self._config.area_fraction * len(area.devices)
            if silent and enough and not silent <= covered:
                dark.append(area)
                covered |= silent
        return dark

    def _device_signal(self, device: Device, now_ns: int) -> Signal:
        last = self._tracker.last_seen(device.id)
        last_seen = "never since start" if last is None else _rfc3339(last)
        interval = format_duration(timedelta(seconds=self._interval_s[device.id]))
        if self._tracker.said_offline(device.id):
            reason = f"its status topic says offline (last reading: {last_seen})"
        else:
            reason = f"no reading since {last_seen}; it reports every {interval}"
        labels = {**device.labels, "alertname": DEVICE_OFFLINE, "severity": DEVICE_SEVERITY.value,
                  "device_id": device.id, "kind": device.kind.value}
        annotations = {"summary": f"{device.name} is offline",
                       "description": f"{device.name} is offline: {reason}.",
                       "last_seen": last_seen, "expected_interval": interval}
        return Signal(DEVICE_OFFLINE, device.id, True, now_ns, DEVICE_SEVERITY, labels, annotations)

    def _area_signal(self, area: _Area, offline: set[str], now_ns: int) -> Signal:
        silent = [device_id for device_id in area.devices if device_id in offline]
        labels = {"alertname": AREA_OFFLINE, "severity": AREA_SEVERITY.value,
                  "area": area.subject, area.key: area.value}
        count = f"{len(silent)} of {len(area.devices)} devices"
        annotations = {"summary": f"{count} of {area.key} {area.value} are offline",
                       "description": f"{count} of {area.key} {area.value} went silent "
                                      f"together: {', '.join(silent)}.",
                       "devices": ", ".join(silent)}
        return Signal(AREA_OFFLINE, area.subject, True, now_ns, AREA_SEVERITY, labels, annotations)

    def _connection_signal(self, now_ns: int, down_since: int) -> Signal:
        down_ns = now_ns - down_since
        active = down_ns >= to_ns(self._config.connection_grace)
        if not active:
            return Signal(AREA_OFFLINE, CONNECTION_AREA, False, now_ns, AREA_SEVERITY, {}, {})
        names = [device.id for device in self._devices]
        labels = {"alertname": AREA_OFFLINE, "severity": AREA_SEVERITY.value,
                  "area": CONNECTION_AREA, "connection": "mqtt"}
        annotations = {"summary": "Siaga cannot reach its MQTT broker",
                       "description": f"The broker connection has been down since "
                                      f"{_rfc3339(down_since)}: no device can be heard.",
                       "devices": ", ".join(names)}
        return Signal(AREA_OFFLINE, CONNECTION_AREA, True, now_ns, AREA_SEVERITY, labels,
                      annotations)


def _areas(devices: Sequence[Device], config: OfflineConfig) -> list[_Area]:
    areas: list[_Area] = []
    for key in config.area_labels:
        groups: dict[str, list[str]] = {}
        for device in devices:
            if key in device.labels:
                groups.setdefault(device.labels[key], []).append(device.id)
        areas.extend(_Area(key, value, tuple(ids)) for value, ids in sorted(groups.items())
                     if len(ids) >= config.area_min_devices)
    return areas


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat("T", "seconds").replace("+00:00", "Z")
