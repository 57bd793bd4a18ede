"""A camera's detections (SPEC section 7): one event of its video analytics, Frigate-style.

`new`, `update` and `end` of one `event_id` are one detection. The payload is validated as
strictly as a reading; a `plate` is personal data, so `explain_event` never echoes any
value the camera sent, and what is kept of a plate is decided by the watch list
(`ingest.watchlist`): a `Detection` holds a plate only when it is listed.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, NamedTuple, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from devices.readings import validate_timestamp

# What the analytics may say they saw. Frigate's common object labels are here too, so its
# events pass unchanged; anything else is a typo or a model the city has not agreed to run.
LABELS: Final = frozenset({
    "flood", "illegal-parking", "wrong-way", "plate", "congestion",
    "vehicle", "car", "motorcycle", "bus", "truck", "bicycle", "person",
})
EventType = Literal["new", "update", "end"]
EVENT_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}$"
ZONE_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Indonesian plates: "B 1234 XYZ" (region, number, suffix); foreign and diplomatic plates
# fit too. Spaces are not significant when compared.
PLATE_PATTERN: Final = r"^[A-Z0-9 ]{1,16}$"
_MAX_ERRORS_SHOWN: Final = 3


def _label(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("label_type", "must be a string")
    if value not in LABELS:
        # The value is not shown: a camera could send anything here.
        raise PydanticCustomError("label_unknown", "unknown label (expected one of {labels})",
                                  {"labels": ", ".join(sorted(LABELS))})
    return value


class EventModel(BaseModel):
    """One message of `{prefix}/camera/{device_id}/events`."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    ts_ns: Annotated[int | None, PlainValidator(validate_timestamp)] = Field(
        default=None, alias="ts")
    event_id: str = Field(pattern=EVENT_ID_PATTERN)
    type: EventType
    label: Annotated[str, PlainValidator(_label)]
    score: float = Field(ge=0, le=1, allow_inf_nan=False)
    zone: str | None = Field(default=None, pattern=ZONE_PATTERN)
    plate: str | None = Field(default=None, pattern=PLATE_PATTERN)

    @model_validator(mode="after")
    def _plate_only_for_plates(self) -> Self:
        if self.label == "plate" and self.plate is None:
            raise PydanticCustomError("plate_missing", "plate: required for label plate")
        if self.label != "plate" and self.plate is not None:
            raise PydanticCustomError("plate_unexpected",
                                      "plate: only events labelled plate carry one")
        return self


_VALIDATE: Final = EventModel.__pydantic_validator__.validate_python


def validate_event(data: object) -> EventModel:
    """Validate one decoded JSON value as a camera event; raises `ValidationError`."""
    model: EventModel = _VALIDATE(data)
    return model


class Detection(NamedTuple):
    """One validated event, as the rest of Siaga sees it.

    `plate` is `None` unless the plate is on the watch list: the decoder drops every other
    plate before anything downstream (storage, rules, logs, the API) can hold it.
    """

    device_id: str
    ts_ns: int
    event_id: str
    type: EventType
    label: str
    score: float
    zone: str | None
    plate: str | None


def normalize_plate(text: str) -> str:
    """A plate as compared with the watch list: upper case, without spaces."""
    return "".join(text.split()).upper()


def explain_event(exc: ValidationError) -> str:
    """One short reason naming the field(s), and never the value sent (a plate is personal
    data; any field of an event could carry one by mistake)."""
    errors = exc.errors(include_url=False)
    reasons = []
    for error in errors[:_MAX_ERRORS_SHOWN]:
        kind = error["type"]
        field = ".".join(str(part) for part in error["loc"]) or "event"
        if kind in ("plate_missing", "plate_unexpected"):
            reasons.append(error["msg"])
        elif kind == "timestamp":
            reasons.append("ts: must be RFC 3339 with an offset, or Unix epoch seconds")
        elif kind == "missing":
            reasons.append(f"{field}: required")
        elif kind == "model_type":
            reasons.append("event: must be a JSON object")
        elif kind == "string_pattern_mismatch":
            reasons.append(f"{field}: {_PATTERN_HINTS.get(field, 'not in the expected form')}")
        elif kind in ("greater_than_equal", "less_than_equal"):
            reasons.append(f"{field}: must be between 0 and 1")
        elif kind == "literal_error":
            reasons.append(f"{field}: must be new, update or end")
        elif kind in ("float_type", "string_type", "label_type", "finite_number", "int_type"):
            wanted = "a number" if kind in ("float_type", "finite_number") else "a string"
            reasons.append(f"{field}: must be {wanted}")
        else:  # our own messages (label, timestamp) name no input value
            message = error["msg"]
            reasons.append(f"{field}: {message[:1].lower()}{message[1:]}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        reasons.append(f"and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return "; ".join(reasons)


_PATTERN_HINTS: Final = {
    "event_id": "1 to 64 letters, digits, '.', '_', ':' or '-'",
    "zone": "1 to 64 lower-case letters, digits, '_' or '-'",
    "plate": "1 to 16 capital letters, digits or spaces",
}
