"""LoRaWAN inputs: ChirpStack v4 and The Things Stack v3 uplinks -> catalog devices' readings.

Both network servers publish one JSON message per uplink on their MQTT integration; Siaga
subscribes (to the local broker: The Things Stack is usually bridged into it, see the
README) and maps each uplink to a catalog device:

- ChirpStack v4 (`application/{application_id}/device/{dev_eui}/event/up`, the JSON
  marshaler; shape: `UplinkEvent` of chirpstack/chirpstack api/proto/integration/
  integration.proto and the "up" example of chirpstack-docs src/chirpstack/integrations/
  events.md): by `deviceInfo.devEui`, the catalog's `dev_eui`.
- The Things Stack v3 (`v3/{application_id}@{tenant_id}/devices/{device_id}/up`, or
  `v3/{application_id}/devices/...` on a single-tenant server; shape: the uplink example
  of lorawan-stack-docs doc/content/integrations/data-formats/_index.md): by
  `end_device_ids.dev_eui` when the catalog has that DevEUI, else by `device_id` equal to a
  catalog id.

The decoded payload (ChirpStack's `object`, The Things Stack's `decoded_payload`, what the
operator's codec returns) holds Siaga's field names for the device's kind; both servers
carry it as a protobuf `Struct`, so it is always a JSON object. The frame counter becomes
`seq`, the strongest gateway's RSSI and SNR `rssi_dbm` and `snr_db`, and the network
server's time of reception `ts`; what the codec gives itself wins. Both servers omit fields
whose value is zero (protobuf JSON), so a missing frame counter is 0. The reading is then
validated by the decoder exactly as a device's own. Refusals name no value sent but the
DevEUI or device id (the operator needs it to fix the catalog).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, Final, NamedTuple, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from devices.kinds import Kind
from devices.readings import explain
from devices.registry import DEV_EUI_PATTERN, Device, Registry
from siaga_core.configfile import StrictModel

# An MQTT subscription filter: levels split by `/`, `+` a whole level, `#` only the last.
_FILTER_LEVEL: Final = re.compile(r"[^+#]*|\+|#")
NO_CODEC: Final = "no-codec"


def valid_filter(topic: str) -> str:
    """`topic` if it is an MQTT subscription filter, else ValueError saying why."""
    levels = topic.split("/")
    if not topic or any(not _FILTER_LEVEL.fullmatch(level) for level in levels) \
            or "#" in levels[:-1]:
        raise ValueError("must be an MQTT topic filter: `+` only as a whole level, `#` only "
                         "as the last level")
    # It goes into the broker's ACL file as written (`siaga broker init`): a line break
    # would add lines of its own, and a lone `#` would read every topic there is.
    if any(char.isspace() or not char.isprintable() for char in topic):
        raise ValueError("must not hold spaces or control characters")
    if topic == "#":
        raise ValueError("must name the server's topics, not every topic (`#`)")
    return topic


def matches(topic_filter: str, topic: str) -> bool:
    """Whether `topic` matches the subscription filter (MQTT 3.1.1 section 4.7)."""
    wanted, given = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True
        if index >= len(given) or (level != "+" and level != given[index]):
            return False
    return len(wanted) == len(given)


TopicFilter = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(valid_filter)]


class ChirpStackSettings(StrictModel):
    """ChirpStack v4's MQTT integration (JSON marshaler) on the local broker."""

    enabled: bool = False
    topic: TopicFilter = "application/+/device/+/event/up"


class ThingsStackSettings(StrictModel):
    """The Things Stack v3's MQTT server, bridged into the local broker."""

    enabled: bool = False
    topic: TopicFilter = "v3/+/devices/+/up"


class LorawanSettings(StrictModel):
    """The `lorawan:` section: uplinks of LoRaWAN network servers as readings."""

    chirpstack: ChirpStackSettings = ChirpStackSettings()
    things_stack: ThingsStackSettings = ThingsStackSettings()


class NetworkReading(NamedTuple):
    """An uplink mapped to a catalog device, before validation (`ingest.decode` does that)."""

    device_id: str
    kind: Kind
    fields: dict[str, object]  # the decoded payload with the link's fields added


class Refused(NamedTuple):
    """An uplink that is no reading: a dead letter's code and reason."""

    code: str
    reason: str


class _Envelope(BaseModel):
    """The parts of a server's message Siaga reads; the rest is the server's business."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


M = TypeVar("M", bound=_Envelope)


DevEui = Annotated[str, Field(pattern=DEV_EUI_PATTERN)]
Number = Annotated[float, Field(allow_inf_nan=False)]
FrameCounter = Annotated[int, Field(ge=0, le=2**32 - 1)]  # LoRaWAN's 32-bit FCnt


@dataclass(frozen=True, slots=True)
class _Link:
    """What the network says about the uplink: added to the decoded payload."""

    time: str | None
    f_cnt: int
    gateways: list[tuple[float | None, float | None]]  # (rssi, snr) per gateway

    def fields(self, decoded: dict[str, object]) -> dict[str, object]:
        fields = dict(decoded)
        seq = fields.get("seq")
        if isinstance(seq, float) and seq.is_integer():
            fields["seq"] = int(seq)  # a Struct holds every number as a double
        fields.setdefault("seq", self.f_cnt)
        heard = [gateway for gateway in self.gateways if gateway[0] is not None]
        if heard:
            # The strongest gateway: its RSSI and SNR belong together.
            rssi, snr = max(heard, key=lambda gateway: (gateway[0], gateway[1] or 0.0))
            fields.setdefault("rssi_dbm", rssi)
            if snr is not None:
                fields.setdefault("snr_db", snr)
        if self.time is not None:
            fields.setdefault("ts", self.time)  # RFC 3339, checked as a device's own `ts`
        return fields


class _ChirpStackDevice(_Envelope):
    dev_eui: DevEui = Field(alias="devEui")


class _ChirpStackRx(_Envelope):
    rssi: Number | None = None
    snr: Number | None = None


class _ChirpStackUp(_Envelope):
    """`integration.UplinkEvent` in the protobuf JSON mapping."""

    device_info: _ChirpStackDevice = Field(alias="deviceInfo")
    time: str | None = None  # ChirpStack's time of the (deduplicated) uplink
    f_cnt: FrameCounter = Field(default=0, alias="fCnt")
    # `object`, set only when the device profile has a codec (named apart from the builtin).
    decoded: dict[str, object] | None = Field(default=None, alias="object")
    rx_info: list[_ChirpStackRx] = Field(default_factory=list, alias="rxInfo")


class _ThingsStackIds(_Envelope):
    device_id: str = Field(min_length=1, max_length=64)
    dev_eui: DevEui | None = None


class _ThingsStackRx(_Envelope):
    rssi: Number | None = None
    channel_rssi: Number | None = None
    snr: Number | None = None


class _ThingsStackUplink(_Envelope):
    f_cnt: FrameCounter = 0
    decoded_payload: dict[str, object] | None = None  # set by the payload formatter
    rx_metadata: list[_ThingsStackRx] = Field(default_factory=list)
    received_at: str | None = None  # the Network Server's time of reception


class _ThingsStackUp(_Envelope):
    """`ApplicationUp` with an `uplink_message`, as the MQTT server publishes it."""

    end_device_ids: _ThingsStackIds
    received_at: str | None = None  # the Application Server's time
    uplink_message: _ThingsStackUplink


class _Source(ABC):
    """The part both servers share: the topic, and reading the message's JSON."""

    name = ""

    def __init__(self, topic: str, registry: Registry) -> None:
        self._topic = valid_filter(topic)
        self._registry = registry

    @property
    def topic(self) -> str:
        """The subscription filter, routed here."""
        return self._topic

    def matches(self, topic: str) -> bool:
        return matches(self._topic, topic)

    @abstractmethod
    def read(self, payload: bytes, received_ns: int) -> NetworkReading | Refused:
        """The uplink as a reading of its device, or why it is none."""

    def _load(self, payload: bytes, model: type[M]) -> M | Refused:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return Refused("bad-json", f"{self.name} uplink: not valid UTF-8 JSON")
        try:
            return model.model_validate(document)
        except ValidationError as exc:
            return Refused("invalid-reading", f"{self.name} uplink: {explain(exc)}")

    def _reading(self, device: Device, decoded: dict[str, object] | None,
                 link: _Link) -> NetworkReading | Refused:
        if decoded is None:
            return Refused(NO_CODEC, f"{self.name} uplink of {device.id!r} has no decoded "
                           f"payload: give the device a payload codec that returns Siaga's "
                           f"fields for a {device.kind} device")
        return NetworkReading(device.id, device.kind, link.fields(decoded))


class ChirpStackUplinks(_Source):
    """ChirpStack v4 `event/up` messages of catalog devices (by DevEUI)."""

    name = "ChirpStack"

    def __init__(self, settings: ChirpStackSettings, registry: Registry) -> None:
        super().__init__(settings.topic, registry)

    def read(self, payload: bytes, received_ns: int) -> NetworkReading | Refused:
        """The uplink as a reading of its device, or why it is none."""
        up = self._load(payload, _ChirpStackUp)
        if isinstance(up, Refused):
            return up
        eui = up.device_info.dev_eui
        device = self._registry.by_dev_eui(eui)
        if device is None:
            return Refused("unknown-device", f"no catalog device has dev_eui {eui.lower()!r}")
        link = _Link(up.time, up.f_cnt, [(rx.rssi, rx.snr) for rx in up.rx_info])
        return self._reading(device, up.decoded, link)


class ThingsStackUplinks(_Source):
    """The Things Stack v3 `up` messages of catalog devices (by DevEUI, else device id)."""

    name = "The Things Stack"

    def __init__(self, settings: ThingsStackSettings, registry: Registry) -> None:
        super().__init__(settings.topic, registry)

    def read(self, payload: bytes, received_ns: int) -> NetworkReading | Refused:
        """The uplink as a reading of its device, or why it is none."""
        up = self._load(payload, _ThingsStackUp)
        if isinstance(up, Refused):
            return up
        ids, uplink = up.end_device_ids, up.uplink_message
        device = None if ids.dev_eui is None else self._registry.by_dev_eui(ids.dev_eui)
        device = device or self._registry.get(ids.device_id)
        if device is None:
            eui = "" if ids.dev_eui is None else f"dev_eui {ids.dev_eui.lower()!r} nor "
            return Refused("unknown-device",
                           f"no catalog device has {eui}id {ids.device_id[:64]!r}")
        gateways = [(rx.rssi if rx.rssi is not None else rx.channel_rssi, rx.snr)
                    for rx in uplink.rx_metadata]
        link = _Link(uplink.received_at or up.received_at, uplink.f_cnt, gateways)
        return self._reading(device, uplink.decoded_payload, link)
