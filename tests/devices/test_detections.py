"""A camera's events (SPEC section 7): validation, and reasons that never echo what was sent."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from devices.detections import LABELS, explain_event, normalize_plate, validate_event

EVENT: dict[str, Any] = {"ts": "2020-01-01T06:00:00+07:00", "event_id": "1577833200.1-ab12",
                         "type": "new", "label": "flood", "score": 0.91, "zone": "underpass"}
PLATE = "B 1234 XYZ"


def reason(data: object) -> str:
    with pytest.raises(ValidationError) as caught:
        validate_event(data)
    return explain_event(caught.value)


def test_a_full_event_validates() -> None:
    event = validate_event(EVENT)
    assert (event.ts_ns, event.event_id, event.type, event.label, event.score, event.zone,
            event.plate) == (1_577_833_200 * 10**9, "1577833200.1-ab12", "new", "flood", 0.91,
                             "underpass", None)


def test_a_plate_event_carries_its_plate_and_only_it_does() -> None:
    event = validate_event({**EVENT, "label": "plate", "plate": PLATE})
    assert event.plate == PLATE
    assert reason({**EVENT, "label": "plate"}) == "plate: required for label plate"
    assert reason({**EVENT, "plate": PLATE}) == "plate: only events labelled plate carry one"


@pytest.mark.parametrize(("change", "expected"), [
    ({"type": "begin"}, "type: must be new, update or end"),
    ({"label": "ufo"}, "label: unknown label (expected one of " + ", ".join(sorted(LABELS)) + ")"),
    ({"score": 1.5}, "score: must be between 0 and 1"),
    ({"score": "0.9"}, "score: must be a number"),
    ({"event_id": "x" * 65}, "event_id: 1 to 64 letters, digits, '.', '_', ':' or '-'"),
    ({"zone": "Zone 1"}, "zone: 1 to 64 lower-case letters, digits, '_' or '-'"),
    ({"ts": "yesterday"}, "ts: must be RFC 3339 with an offset, or Unix epoch seconds"),
])
def test_a_refused_event_says_which_field_and_why(change: dict[str, Any], expected: str) -> None:
    assert reason({**EVENT, **change}) == expected


def test_no_reason_echoes_a_plate_whatever_field_carries_it() -> None:
    hostile = "B 9999 ZZ\x00"
    for field in ("plate", "event_id", "zone", "label", "type", "score", "ts"):
        data = {**EVENT, "label": "plate", "plate": PLATE, field: hostile}
        text = reason(data)
        assert "9999" not in text and "B 1234" not in text, (field, text)


def test_an_event_that_is_not_an_object_is_refused() -> None:
    assert reason([EVENT]) == "event: must be a JSON object"


def test_plates_are_compared_without_spaces_and_case() -> None:
    assert normalize_plate("b 1234  xyz") == normalize_plate("B1234XYZ") == "B1234XYZ"
