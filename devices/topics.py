"""The MQTT topic scheme of SPEC section 1: `{prefix}/{kind}/{device_id}/{channel}`."""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from devices.kinds import Kind
from siaga_core.errors import InputError

# SPEC section 1. Anchored for pydantic's `pattern=` (a search); Python code uses fullmatch.
DEVICE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
DEVICE_ID_RE: Final = re.compile(DEVICE_ID_PATTERN)

Channel = Literal["telemetry", "status", "events"]
# Kind(segment) raises and formats an error on every miss; a dict lookup does neither.
_KINDS: Final[Mapping[str, Kind]] = MappingProxyType({kind.value: kind for kind in Kind})
_KIND_NAMES: Final = ", ".join(_KINDS)


class InvalidTopic(InputError, ValueError):
    """A topic that is not one of the SPEC's; `reason` says what is wrong with it."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(reason)
        self.topic = topic
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: which device, and which of its channels (`events`: cameras only)."""

    kind: Kind
    device_id: str
    channel: Channel


@dataclass(frozen=True)
class TopicScheme:
    """Builds and parses the topics under one prefix (which may have several levels)."""

    prefix: str = "siaga"
    # Derived once: `parse` runs for every message.
    _head: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reason = _prefix_problem(self.prefix)
        if reason is not None:
            raise ValueError(f"topic prefix {self.prefix!r}: {reason}")
        object.__setattr__(self, "_head", self.prefix + "/")

    def telemetry(self, kind: Kind, device_id: str) -> str:
        """The topic a device publishes its readings on."""
        return self._build(kind, device_id, "telemetry")

    def status(self, kind: Kind, device_id: str) -> str:
        """The topic of a device's retained `online`/`offline` status (and last will)."""
        return self._build(kind, device_id, "status")

    def events(self, device_id: str) -> str:
        """The topic a camera publishes its detections on (SPEC section 7)."""
        return self._build(Kind.CAMERA, device_id, "events")

    def subscriptions(self) -> list[str]:
        """The topic filters that receive every device's telemetry and status, and the
        cameras' detections."""
        return [f"{self.prefix}/+/+/telemetry", f"{self.prefix}/+/+/status",
                f"{self.prefix}/{Kind.CAMERA.value}/+/events"]

    def parse(self, topic: str) -> Topic:
        """Return the device and channel of `topic`, or raise `InvalidTopic` saying why."""
        if not topic.startswith(self._head):
            raise InvalidTopic(topic, f"topic does not start with {self._head!r}")
        parts = topic[len(self._head) :].split("/")
        if len(parts) != 3:
            raise InvalidTopic(
                topic,
                f"expected {self._head}KIND/DEVICE_ID/CHANNEL, got {len(parts)} levels "
                f"after the prefix instead of 3",
            )
        kind_name, device_id, channel = parts
        kind = _KINDS.get(kind_name)
        if kind is None:
            raise InvalidTopic(
                topic, f"unknown kind {_shown(kind_name)} (expected one of {_KIND_NAMES})"
            )
        if DEVICE_ID_RE.fullmatch(device_id) is None:
            raise InvalidTopic(topic, _device_id_problem(device_id))
        if channel == "telemetry":
            return Topic(kind, device_id, "telemetry")
        if channel == "status":
            return Topic(kind, device_id, "status")
        if channel == "events":
            if kind is not Kind.CAMERA:
                raise InvalidTopic(topic, f"only cameras publish events, not {kind.value}")
            return Topic(kind, device_id, "events")
        raise InvalidTopic(
            topic, f"unknown channel {_shown(channel)} (expected telemetry, status or events)"
        )

    def _build(self, kind: Kind, device_id: str, channel: Channel) -> str:
        # Refuse here what `parse` would refuse, so a simulator never publishes a dead letter.
        kind = Kind(kind)
        if DEVICE_ID_RE.fullmatch(device_id) is None:
            raise ValueError(_device_id_problem(device_id))
        return f"{self._head}{kind.value}/{device_id}/{channel}"


def _prefix_problem(prefix: str) -> str | None:
    if not prefix:
        return "must not be empty"
    if "+" in prefix or "#" in prefix:
        return "must not contain the MQTT wildcards + or #"
    if "\x00" in prefix:
        return "must not contain NUL"
    if prefix.startswith("$"):
        return "must not start with $ (reserved for broker topics such as $SYS)"
    if "" in prefix.split("/"):
        return "must not have empty levels (a leading, trailing or double /)"
    return None


def _device_id_problem(device_id: str) -> str:
    if len(device_id) > 64:
        return f"device id {_shown(device_id)} is longer than 64 characters"
    return (
        f"device id {_shown(device_id)} must be lower-case letters, digits, - and _, "
        "starting with a letter or digit"
    )


def _shown(segment: str) -> str:
    # Topics are untrusted and up to 64 KiB: keep echoed parts short so a reason stays one line.
    return repr(segment if len(segment) <= 70 else segment[:67] + "...")
