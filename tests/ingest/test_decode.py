"""The decoder: raw message -> readings, statuses or dead letters, never an exception."""

from __future__ import annotations

import orjson
import pytest

from devices.kinds import Kind
from devices.registry import bundled_catalog_path, load_catalog
from devices.topics import TopicScheme
from ingest.decode import Decoded, Decoder

NOW_NS = 1_700_000_000 * 10**9
REGISTRY = load_catalog(bundled_catalog_path())
TOPIC = "siaga/water-level/manggarai/telemetry"


def decode(topic: str, payload: bytes, **options: object) -> Decoded:
    decoder = Decoder(REGISTRY, TopicScheme("siaga"), **options)  # type: ignore[arg-type]
    out = Decoded()
    decoder.decode(topic, payload, NOW_NS, out)
    return out


def test_a_single_reading_decodes_with_its_event_time_and_seq() -> None:
    out = decode(TOPIC, b'{"ts": "2023-11-14T22:13:20Z", "seq": 7, "level_cm": 920}')
    [reading] = out.readings
    assert (reading.kind, reading.device_id, reading.ts_ns, reading.seq) == (
        Kind.WATER_LEVEL, "manggarai", NOW_NS, 7)
    assert reading.values == {"level_cm": 920.0}
    assert type(reading.values["level_cm"]) is float
    assert out.dead == []


def test_a_reading_without_ts_is_stamped_with_the_time_of_receipt() -> None:
    [reading] = decode(TOPIC, b'{"level_cm": 1}').readings
    assert reading.ts_ns == NOW_NS


def test_a_batch_decodes_every_item_in_order() -> None:
    payload = orjson.dumps([{"ts": 1_700_000_000 + i, "level_cm": i} for i in range(5)])
    assert [r.values["level_cm"] for r in decode(TOPIC, payload).readings] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("topic", "payload", "code", "reason_part"),
    [
        (TOPIC, b"", "bad-json", "empty payload"),
        (TOPIC, b"{level_cm: 1}", "bad-json", "JSON"),
        (TOPIC, b'{"level_cm": NaN}', "bad-json", "JSON"),
        (TOPIC, b'{"level_cm": 1}\xff', "bad-json", "JSON"),
        (TOPIC, b"42", "bad-json", "expected a JSON object or array"),
        (TOPIC, b"[]", "bad-json", "empty batch"),
        (TOPIC, orjson.dumps([{"level_cm": 1}] * 1001), "batch-too-large", "1001"),
        (TOPIC, b'{"level_cm": true}', "invalid-reading", "level_cm"),
        (TOPIC, b'{"level_cm": 1, "ts": 1900000000}', "future-ts", "future"),
        ("siaga/water-level/nowhere/telemetry", b'{"level_cm": 1}', "unknown-device", "nowhere"),
        ("siaga/traffic/manggarai/telemetry", b'{"speed_kmh": 1}', "kind-mismatch", "water-level"),
        ("siaga/rain/manggarai/telemetry", b'{"level_cm": 1}', "bad-topic", "rain"),
        ("other/water-level/manggarai/telemetry", b"{}", "bad-topic", "siaga/"),
        ("siaga/water-level/manggarai/status", b"maybe", "bad-status", "online"),
    ],
)
def test_bad_input_becomes_a_dead_letter_with_a_reason(
    topic: str, payload: bytes, code: str, reason_part: str
) -> None:
    out = decode(topic, payload)
    assert out.readings == []
    [letter] = out.dead
    assert (letter.code, letter.topic, letter.payload) == (code, topic, payload)
    assert reason_part in letter.reason


def test_a_bad_item_in_a_batch_costs_only_itself() -> None:
    payload = orjson.dumps([{"level_cm": 1}, {"level_cm": "x"}, 3, {"level_cm": 2}])
    out = decode(TOPIC, payload)
    assert [r.values["level_cm"] for r in out.readings] == [1.0, 2.0]
    assert [letter.reason.split(":")[0] for letter in out.dead] == ["item 1", "item 2"]
    assert orjson.loads(out.dead[0].payload) == {"level_cm": "x"}


def test_unknown_fields_are_ignored_and_counted_by_device_and_field() -> None:
    out = decode(TOPIC, b'{"level_cm": 1, "firmware": "2.1", "fw": 3}')
    assert out.readings[0].values == {"level_cm": 1.0}
    assert out.ignored_fields == {("manggarai", "firmware"): 1, ("manggarai", "fw"): 1}


def test_unknown_devices_are_accepted_when_the_policy_says_so() -> None:
    out = decode("siaga/water-level/nowhere/telemetry", b'{"level_cm": 1}',
                 unknown_devices="accept")
    assert [r.device_id for r in out.readings] == ["nowhere"]


def test_status_messages_become_status_updates() -> None:
    out = decode("siaga/water-level/manggarai/status", b"offline")
    [status] = out.statuses
    assert (status.device_id, status.online) == ("manggarai", False)
    assert out.dead == [] and out.readings == []


def test_ignored_field_counts_are_bounded_whatever_a_device_sends() -> None:
    from ingest.stats import IGNORED_FIELDS_MAX, OTHER, IngestStats

    stats = IngestStats()
    stats.count_ignored({("pos", f"f{i}"): 1 for i in range(IGNORED_FIELDS_MAX + 500)})
    assert len(stats.ignored_fields) == IGNORED_FIELDS_MAX + 1
    assert stats.ignored_fields[OTHER] == 500
