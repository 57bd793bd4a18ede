"""Frigate input: the NVR's own `frigate/events` messages -> Siaga `Detection`s.

Frigate (https://frigate.video) publishes one JSON object per change of a tracked object:
`{"type": "new"|"update"|"end", "before": {...}, "after": {...}}`, where `after` holds the
object now: `id`, `camera`, `frame_time`, `label`, `top_score`, `score`, `false_positive`,
`start_time`, `end_time`, `current_zones` and, since 0.16 with licence plate recognition,
`recognized_license_plate` (`[text, score]` as published; the docs show the text with a
separate `recognized_license_plate_score`, and both are read). Sites keep Frigate unchanged:
this module maps its camera, label and zone names to the catalog's, and the event to the
same `Detection` a camera publishing on `{prefix}/camera/{id}/events` gives.

A plate is personal data (SPEC section 7): a `Detection` from here carries the plate text
unfiltered, and the decoder applies the watch list before anything keeps it. No reason
given here echoes a value Frigate sent, except the name of an unmapped camera (the operator
needs it, and it is a name from Frigate's configuration, checked to look like one).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Final, Self

import orjson
from pydantic import AfterValidator, Field, ValidationError, model_validator

from devices.detections import (
    EVENT_ID_PATTERN,
    LABELS,
    PLATE_PATTERN,
    ZONE_PATTERN,
    Detection,
    explain_event,
    normalize_plate,
    validate_event,
)
from devices.kinds import Kind
from devices.registry import Registry
from devices.topics import DEVICE_ID_PATTERN
from siaga_core.configfile import StrictModel
from siaga_core.errors import ConfigurationError, InputError

# Frigate's own rule for camera names (frigate/const.py REGEX_CAMERA_NAME); a name sent that
# does not fit it is not shown back, as it could be anything.
FRIGATE_CAMERA_PATTERN: Final = r"^[a-zA-Z0-9_-]{1,64}$"
_FRIGATE_CAMERA_RE: Final = re.compile(FRIGATE_CAMERA_PATTERN)
# Frigate+ models name the dedicated plate object `license_plate`; Siaga calls it `plate`.
DEFAULT_LABELS: Final = MappingProxyType({**{label: label for label in LABELS},
                                          "license_plate": "plate"})
# A plate found on a car (Frigate's LPR puts it on the car, not on an object of its own)
# becomes a `plate` detection of its own, with this suffix on Frigate's id (Frigate's ids,
# "{frame_time}-{6 chars}", are about 24 characters: the suffix fits in EVENT_ID_PATTERN).
PLATE_ID_SUFFIX: Final = ":plate"
# Keys whose values are personal data wherever they appear in a Frigate message: the plate
# text, and `sub_label`, which holds a recognised face's name or a known plate's owner.
PERSONAL_KEYS: Final = frozenset({"recognized_license_plate", "sub_label", "plate"})
REDACTED: Final = "[redacted]"
_SLUG_RE: Final = re.compile(r"[^a-z0-9_-]+")
_EVENT_TYPES: Final = ("new", "update", "end")


log = logging.getLogger(__name__)
MAX_NAMED = 100  # unmapped cameras named in the log, once each; a flood of names is not


class Ignored(InputError):
    """A message that is Frigate's business, not Siaga's: an object Siaga has no label for
    (a dog, a cat, a package) or a camera deliberately left out of `frigate.cameras`.
    Frigate publishes several updates a second per object; each would be a dead letter."""


class Refused(InputError):
    """A Frigate message Siaga cannot take; the text is the dead letter's reason and names
    no value sent (but an unmapped camera's name)."""


def _siaga_label(label: str) -> str:
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r} (expected one of {', '.join(sorted(LABELS))})")
    return label


FrigateCamera = Annotated[str, Field(pattern=FRIGATE_CAMERA_PATTERN)]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
SiagaLabel = Annotated[str, AfterValidator(_siaga_label)]
SiagaZone = Annotated[str, Field(pattern=ZONE_PATTERN)]
FrigateName = Annotated[str, Field(min_length=1, max_length=256)]


class FrigateSettings(StrictModel):
    """The `frigate:` section: subscribe to Frigate's events and map its names to ours."""

    enabled: bool = False
    # Frigate's `mqtt.topic_prefix` (default `frigate`) followed by `/events`. No wildcards:
    # the decoder routes messages to this input by this exact topic.
    topic: str = Field(default="frigate/events", min_length=1, pattern=r"^[^+#$\s][^+#\s]*$")
    cameras: dict[FrigateCamera, DeviceId] = Field(default_factory=dict)
    # Frigate label -> Siaga label, over the defaults (Siaga's own labels as themselves,
    # `license_plate` as `plate`); a label mapped to nothing here is refused.
    labels: dict[FrigateName, SiagaLabel] = Field(default_factory=dict)
    # Frigate zone -> Siaga zone; unmapped zones are lower-cased and slugged.
    zones: dict[FrigateName, SiagaZone] = Field(default_factory=dict)
    # Events below this score (Frigate's `top_score`) are not detections; 0 keeps all.
    min_score: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    # A plate Frigate read on a car (or any non-plate object) becomes a `plate` detection.
    plates_on_objects: bool = True

    @model_validator(mode="after")
    def _cameras_when_enabled(self) -> Self:
        if self.enabled and not self.cameras:
            raise ValueError("cameras: map at least one Frigate camera to a catalog camera "
                             "(frigate_name: device_id)")
        return self


def zone_slug(name: str) -> str | None:
    """A Frigate zone name as a Siaga zone (lower case, runs of other characters as `-`),
    or None when nothing of it is left."""
    slug = _SLUG_RE.sub("-", name.lower()).lstrip("_-")[:64]
    return slug if re.fullmatch(ZONE_PATTERN, slug) else None


class FrigateMapper:
    """Maps Frigate's `frigate/events` messages to `Detection`s of catalog cameras."""

    def __init__(self, settings: FrigateSettings, registry: Registry) -> None:
        problems = []
        for name, device_id in settings.cameras.items():
            device = registry.get(device_id)
            if device is None:
                problems.append(f"frigate.cameras.{name}: no device {device_id!r} in the catalog")
            elif device.kind is not Kind.CAMERA:
                problems.append(f"frigate.cameras.{name}: {device_id!r} is a {device.kind} "
                                "device, not a camera")
        if problems:
            raise ConfigurationError("\n".join(problems))
        self._settings = settings
        self._cameras: Mapping[str, str] = dict(settings.cameras)
        self._labels: Mapping[str, str] = {**DEFAULT_LABELS, **settings.labels}
        self._zones: Mapping[str, str] = dict(settings.zones)
        # Messages passed over, by why ("label", "camera"): counted, not dead-lettered.
        self.ignored: Counter[str] = Counter()
        self._unmapped_named: set[str] = set()  # cameras already named in the log

    @property
    def topic(self) -> str:
        """The topic to subscribe to and route here."""
        return self._settings.topic

    def to_detections(self, payload: bytes, received_ns: int) -> tuple[list[Detection], str | None]:
        """The detections in one Frigate message, or a reason to refuse it (a dead letter).

        An empty list without a reason is not an error: a false positive, a score below
        `min_score`, or a plate object whose text Frigate has not read yet.
        """
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return [], "frigate: not JSON (Frigate publishes one JSON object per event)"
        try:
            events = self._events(message)
            return self._detections(events, received_ns), None
        except Ignored as why:
            self.ignored[str(why)] += 1
            return [], None
        except Refused as refusal:
            return [], f"frigate: {refusal}"

    def _events(self, message: object) -> list[dict[str, object]]:
        """Siaga events (by EventModel's field names, not validated yet) in one message."""
        if not isinstance(message, dict):
            raise Refused("must be a JSON object with type, before and after")
        kind, after = message.get("type"), message.get("after")
        if kind not in _EVENT_TYPES:
            raise Refused("type: must be new, update or end")
        if not isinstance(after, dict):
            raise Refused("after: must be a JSON object")
        before = message.get("before")
        device_id = self._device(after)
        if _false_positive(after):
            return []  # Frigate's own verdict: not an object after all
        fields = {"device_id": device_id, **_common_fields(kind, after),
                  "label": self._label(after), "zone": self._zone(after.get("current_zones"))}
        score = fields["score"]
        if isinstance(score, int | float) and score < self._settings.min_score:
            return []
        plate = _plate(after)
        plate_type = _plate_type(kind, before if isinstance(before, dict) else {})
        if fields["label"] == "plate":
            # A plate Frigate has not read (yet) has nothing to match: no detection.
            return [] if plate is None else [{**fields, "plate": plate[0], "type": plate_type}]
        events = [fields]
        if plate is not None and self._settings.plates_on_objects:
            plate_id = f"{fields['event_id']}{PLATE_ID_SUFFIX}"
            # A plate on a car that Siaga cannot hold is dropped, and the car kept.
            if re.fullmatch(EVENT_ID_PATTERN, plate_id) and _plate_text_ok(plate[0]):
                plate_score = fields["score"] if plate[1] is None else plate[1]
                events.append({**fields, "event_id": plate_id, "label": "plate",
                               "plate": plate[0], "score": plate_score, "type": plate_type})
        return events

    def _device(self, after: dict[str, object]) -> str:
        camera = after.get("camera")
        if not isinstance(camera, str):
            raise Refused("after.camera: must be a string")
        device_id = self._cameras.get(camera)
        if device_id is None:
            if not _FRIGATE_CAMERA_RE.match(camera):
                raise Refused("after.camera: not a Frigate camera name")
            if camera not in self._unmapped_named and len(self._unmapped_named) < MAX_NAMED:
                self._unmapped_named.add(camera)
                log.info("frigate: camera %r is not in frigate.cameras: its events are passed "
                         "over (map it to a catalog camera to take them)", camera)
            raise Ignored("camera")
        return device_id

    def _label(self, after: dict[str, object]) -> str:
        label = after.get("label")
        if not isinstance(label, str):
            raise Refused("after.label: must be a string")
        mapped = self._labels.get(label)
        if mapped is None:
            raise Ignored("label")  # map it in frigate.labels to take it
        return mapped

    def _zone(self, zones: object) -> str | None:
        """The first zone the object is in, by Siaga's name; None when in none."""
        if zones is None or zones == []:
            return None
        if isinstance(zones, list) and isinstance(zones[0], str):
            mapped = self._zones.get(zones[0]) or zone_slug(zones[0])
            if mapped is not None:
                return mapped
        raise Refused("after.current_zones: not a list of zone names, or a name with no "
                      "letter or digit (map it in frigate.zones)")

    @staticmethod
    def _detections(events: list[dict[str, object]], received_ns: int) -> list[Detection]:
        detections = []
        for event in events:
            data = {key: value for key, value in event.items() if value is not None}
            try:
                model = validate_event(data)
            except ValidationError as exc:
                raise Refused(explain_event(exc)) from None
            ts_ns = model.ts_ns if model.ts_ns is not None else received_ns
            detections.append(Detection(str(event["device_id"]), ts_ns, model.event_id,
                                        model.type, model.label, model.score, model.zone,
                                        model.plate))
        return detections


def _false_positive(after: dict[str, object]) -> bool:
    value = after.get("false_positive", False)
    if not isinstance(value, bool):
        raise Refused("after.false_positive: must be true or false")
    return value


def _common_fields(kind: str, after: dict[str, object]) -> dict[str, object]:
    """Id, type, time and score of Frigate's object, by Siaga's names (validated later)."""
    event_id = after.get("id")
    if not isinstance(event_id, str):
        raise Refused("after.id: must be a string")
    # The end is when the object was last seen; otherwise the frame that changed it.
    times = ("end_time", "frame_time", "start_time") if kind == "end" else (
        "frame_time", "start_time")
    ts = next((after[key] for key in times if after.get(key) is not None), None)
    score = after.get("top_score")
    if score is None:
        score = after.get("score")
    return {"event_id": event_id, "type": kind, "ts": ts, "score": score}


def _plate(after: dict[str, object]) -> tuple[str, float | None] | None:
    """The plate Frigate read, as upper-case text and its score, or None.

    Frigate publishes `[text, score]` (the tracked object's tuple); its docs, and events
    read back from its database, show the text alone beside `recognized_license_plate_score`.
    """
    value = after.get("recognized_license_plate")
    score = after.get("recognized_license_plate_score")
    if isinstance(value, list) and len(value) == 2:
        value, score = value
    if not isinstance(value, str) or not value.strip():
        return None
    # A score Siaga cannot use leaves the object's own: the plate is no less seen.
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        score = None
    return value.strip().upper(), score


def _plate_text_ok(text: str) -> bool:
    return re.fullmatch(PLATE_PATTERN, text) is not None and bool(normalize_plate(text))


def _plate_type(kind: str, before: dict[str, object]) -> str:
    # A plate is usually read a few frames into the object's life: its detection is `new`
    # when the text first appears, so a rule counting `new` sees it once.
    if kind == "end":
        return "end"
    return "update" if _plate(before) is not None and kind != "new" else "new"


def redact(payload: bytes) -> bytes | None:
    """A Frigate message fit for a dead letter: every personal value (plate text, a face's
    or a known plate's name) replaced by `[redacted]`, at any depth; None if not JSON (the
    caller withholds it whole)."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return orjson.dumps(_redacted(document))


def _redacted(value: object) -> object:
    if isinstance(value, dict):
        return {key: REDACTED if key in PERSONAL_KEYS and value[key] is not None
                else _redacted(value[key]) for key in value}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value
