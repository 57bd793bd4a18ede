"""TopicScheme: building and parsing the SPEC section 1 topics."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.kinds import Kind
from devices.topics import DEVICE_ID_RE, InvalidTopic, Topic, TopicScheme


@pytest.mark.parametrize("kind", list(Kind))
def test_telemetry_topics_parse_back_to_their_device(kind: Kind) -> None:
    scheme = TopicScheme()
    topic = scheme.telemetry(kind, "manggarai")
    assert topic == f"siaga/{kind.value}/manggarai/telemetry"
    assert scheme.parse(topic) == Topic(kind, "manggarai", "telemetry")


@pytest.mark.parametrize("kind", list(Kind))
def test_status_topics_parse_back_to_their_device(kind: Kind) -> None:
    scheme = TopicScheme()
    topic = scheme.status(kind, "dki1-bundaran-hi")
    assert topic == f"siaga/{kind.value}/dki1-bundaran-hi/status"
    assert scheme.parse(topic) == Topic(kind, "dki1-bundaran-hi", "status")


@given(st.from_regex(DEVICE_ID_RE, fullmatch=True), st.sampled_from(list(Kind)))
def test_every_valid_device_id_round_trips(device_id: str, kind: Kind) -> None:
    scheme = TopicScheme("city/jkt")
    assert scheme.parse(scheme.telemetry(kind, device_id)) == Topic(kind, device_id, "telemetry")


def test_subscriptions_cover_telemetry_and_status_of_every_device_and_camera_events() -> None:
    assert TopicScheme("city/jkt").subscriptions() == [
        "city/jkt/+/+/telemetry",
        "city/jkt/+/+/status",
        "city/jkt/camera/+/events",
    ]


def test_only_cameras_have_an_events_channel() -> None:
    scheme = TopicScheme("siaga")
    assert scheme.events("cctv-manggarai") == "siaga/camera/cctv-manggarai/events"
    assert scheme.parse("siaga/camera/cctv-manggarai/events") == Topic(
        Kind.CAMERA, "cctv-manggarai", "events")
    with pytest.raises(InvalidTopic, match="only cameras publish events, not water-level"):
        scheme.parse("siaga/water-level/manggarai/events")


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("other/water-level/manggarai/telemetry", "does not start with 'siaga/'"),
        ("siaga", "does not start with 'siaga/'"),
        ("siagax/water-level/manggarai/telemetry", "does not start with 'siaga/'"),
        ("siaga/water-level/manggarai", "got 2 levels after the prefix instead of 3"),
        ("siaga/water-level/manggarai/telemetry/x", "got 4 levels after the prefix instead of 3"),
        ("siaga/water/manggarai/telemetry", "unknown kind 'water'"),
        ("siaga/Water-Level/manggarai/telemetry", "unknown kind 'Water-Level'"),
        ("siaga/water-level/Manggarai/telemetry", "device id 'Manggarai' must be lower-case"),
        ("siaga/water-level/-x/telemetry", "starting with a letter or digit"),
        ("siaga/water-level//telemetry", "device id ''"),
        ("siaga/water-level/gauge\n/telemetry", "device id 'gauge\\n'"),
        ("siaga/water-level/" + "a" * 65 + "/telemetry", "longer than 64 characters"),
        ("siaga/water-level/manggarai/readings", "unknown channel 'readings'"),
    ],
)
def test_invalid_topics_are_refused_with_a_reason(topic: str, reason: str) -> None:
    with pytest.raises(InvalidTopic) as caught:
        TopicScheme().parse(topic)
    assert reason in caught.value.reason
    assert caught.value.topic == topic


def test_invalid_topic_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        TopicScheme().parse("siaga/x/y/telemetry")


def test_reasons_echo_long_segments_shortened() -> None:
    with pytest.raises(InvalidTopic) as caught:
        TopicScheme().parse("siaga/" + "k" * 5000 + "/d/telemetry")
    assert len(caught.value.reason) < 150


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("", "must not be empty"),
        ("siaga/+", "wildcards"),
        ("siaga/#", "wildcards"),
        ("/siaga", "empty levels"),
        ("siaga/", "empty levels"),
        ("a//b", "empty levels"),
        ("$SYS", "must not start with $"),
    ],
)
def test_a_bad_prefix_is_refused_at_construction(prefix: str, reason: str) -> None:
    with pytest.raises(ValueError, match="topic prefix") as caught:
        TopicScheme(prefix)
    assert reason in str(caught.value)


def test_building_a_topic_for_an_invalid_device_id_is_refused() -> None:
    with pytest.raises(ValueError, match="device id 'Bad Id'"):
        TopicScheme().telemetry(Kind.TRAFFIC, "Bad Id")
