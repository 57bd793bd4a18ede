"""The AMQP input's pure parts: acknowledgement order, topic mapping, settings.

The broker's side (the MQTT plugin's real mapping, redelivery, node loss) is in
tests/integration/test_amqp_input.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader
from pydantic import ValidationError

from devices.registry import bundled_catalog_path, load_catalog
from devices.topics import TopicScheme
from ingest.amqp import (
    BRIEF_SESSION_S,
    AckWindow,
    AmqpSubscriber,
    _AiormqLink,
    binding_key,
    mqtt_topic,
    routing_key,
)
from ingest.amqpwire import FrameReader
from ingest.decode import Decoded, Decoder
from ingest.inbox import Message
from ingest.settings import AmqpSettings, IngestSettings, MqttSettings
from siaga.settings import Settings, load_settings
from siaga_core.errors import ConfigFileError
from tests.ingest.test_amqpwire import delivery


def test_contiguous_tags_are_acknowledged_up_to_the_last() -> None:
    window = AckWindow()
    window.acknowledge([1, 2, 3])
    assert window.unsent() == 3
    assert window.unsent() is None  # told once


def test_a_tag_above_a_gap_waits_for_the_gap() -> None:
    window = AckWindow()
    window.acknowledge([1, 2, 4, 5])
    assert window.unsent() == 2  # 4 and 5 are durable, but `multiple` would cover 3
    window.acknowledge([3])
    assert window.unsent() == 5


def test_tags_may_come_in_any_order_and_twice() -> None:
    window = AckWindow()
    window.acknowledge([3, 1])
    window.acknowledge([1, 2])
    assert window.unsent() == 3
    window.acknowledge([2])  # already acknowledged: nothing more to say
    assert window.unsent() is None


def test_nothing_durable_means_nothing_to_send() -> None:
    window = AckWindow()
    window.acknowledge([2])
    assert window.unsent() is None


def message(mid: int, generation: int) -> Message:
    return Message("t/water-level/a/telemetry", b"{}", mid, 1, generation, 0)


def test_only_the_current_channels_messages_are_acknowledged() -> None:
    subscriber = AmqpSubscriber(AmqpSettings(), ["t/#"], lambda: 0)
    # Not connected yet: generation 0 is current; 7 stands for an older or newer channel.
    counted = subscriber.ack([message(1, 0), message(2, 7), message(2, 0)])
    assert counted == 2


@pytest.mark.parametrize("topic", [
    "siaga/water-level/pa-01/telemetry",
    "jakarta/siaga/air-quality/aq_7/status",
    "odd*id/x",  # `*` is no wildcard in a published topic
    "/leading/and/trailing/",
    "no-separator",
])
def test_the_topic_comes_back_from_its_routing_key(topic: str) -> None:
    assert mqtt_topic(routing_key(topic)) == topic


def test_a_dot_in_a_topic_comes_back_as_a_level_as_rabbitmq_310_keeps_it() -> None:
    assert routing_key("siaga/water-level/pa.01/telemetry") == "siaga.water-level.pa.01.telemetry"
    assert mqtt_topic("siaga.water-level.pa.01.telemetry") == "siaga/water-level/pa/01/telemetry"


def test_mqtt_filters_become_amqp_topic_bindings() -> None:
    assert binding_key("siaga/+/+/telemetry") == "siaga.*.*.telemetry"
    assert binding_key("frigate/events") == "frigate.events"
    assert binding_key("siaga/#") == "siaga.#"


def test_an_amqp_input_refuses_a_topic_prefix_with_a_dot() -> None:
    with pytest.raises(ValidationError, match="AMQP"):
        Settings(mqtt=MqttSettings(topic_prefix="city.jakarta"),
                 ingest=IngestSettings(input="amqp"))
    Settings(mqtt=MqttSettings(topic_prefix="city.jakarta"))  # over MQTT it is fine


def test_amqp_urls_may_come_comma_separated() -> None:
    settings = load_settings(environ={
        "SIAGA_AMQP_URL": "amqp://u:p@10.0.0.1:5672/, amqp://u:p@10.0.0.2:5672/"})
    assert settings.amqp.urls == ["amqp://u:p@10.0.0.1:5672/", "amqp://u:p@10.0.0.2:5672/"]


def test_an_amqp_url_needs_the_amqp_scheme() -> None:
    with pytest.raises(ValidationError, match="amqp://user:pass@host"):
        AmqpSettings(urls=["mqtt://127.0.0.1:1883"])


def test_at_least_one_amqp_url() -> None:
    with pytest.raises(ValidationError):
        AmqpSettings(urls=[])


def test_instances_share_the_partitions_by_remainder() -> None:
    settings = AmqpSettings(partitions=7, instance=1, instances=3)
    assert [n for n in range(settings.partitions) if settings.home(n)] == [1, 4]
    alone = AmqpSettings(partitions=3)  # one instance: every partition is home
    assert all(alone.home(n) for n in range(3))


@pytest.mark.parametrize(("instance", "instances"), [(3, 3), (1, 1)])
def test_an_instance_counts_from_zero_below_instances(instance: int, instances: int) -> None:
    with pytest.raises(ValidationError, match=f"instance {instance} of {instances}"):
        AmqpSettings(instance=instance, instances=instances)


def test_an_instance_and_the_cluster_database_come_from_the_environment() -> None:
    settings = load_settings(environ={
        "SIAGA_AMQP_INSTANCE": "2", "SIAGA_AMQP_INSTANCES": "3",
        "SIAGA_ALERTING_DATABASE_URL": "postgresql://siaga:pw@db:5432/siaga"})
    assert (settings.amqp.instance, settings.amqp.instances) == (2, 3)
    assert settings.alerting.database_url is not None
    assert settings.alerting.database_url.get_secret_value() == "postgresql://siaga:pw@db:5432/siaga"


def test_an_instance_past_the_count_names_both_settings() -> None:
    with pytest.raises(ConfigFileError, match="instance"):
        load_settings(environ={"SIAGA_AMQP_INSTANCE": "3", "SIAGA_AMQP_INSTANCES": "3"})


# --- partitions taken over, and moving back ---------------------------------------------

def takeovers_at_each_delivery(redelivered: list[bool]) -> list[int]:
    """How many takeovers had been announced once each delivery of one partition, marked
    `redelivered` or not, came to the same channel; each announced before its message."""
    calls: list[int] = []
    subscriber = AmqpSubscriber(AmqpSettings(), ["t/#"], lambda: 0)
    subscriber.on_takeover = lambda: calls.append(subscriber.backlog)
    deliver = subscriber._receiver(subscriber._generation, "siaga.p0")
    seen = []
    for tag, again in enumerate(redelivered, 1):
        deliver("t.water-level.a.telemetry", b"{}", tag, again)
        seen.append(len(calls))
    # Each call came while the messages before its own, and not its own, were in the inbox.
    assert calls == [n for n, (before, after) in enumerate(itertools.pairwise([0, *seen]))
                     if after > before]
    return seen


async def test_a_partition_back_on_the_same_channel_with_redeliveries_is_taken_over_again(
        ) -> None:
    # RabbitMQ moved the consumer to the waiting list, unannounced, and back: what the other
    # reader had not acknowledged comes again, after this channel's own newer messages.
    assert takeovers_at_each_delivery([False, False, True, True, False, True]) == [
        1, 1, 2, 2, 2, 3]


async def test_a_standby_taking_over_redeliveries_is_announced_once() -> None:
    assert takeovers_at_each_delivery([True, True, False, False]) == [1, 1, 1, 1]


async def test_a_partition_that_keeps_its_reader_is_announced_once() -> None:
    assert takeovers_at_each_delivery([False] * 5) == [1] * 5


class Channel:
    """What `_AiormqLink` uses of aiormq's channel."""

    def __init__(self) -> None:
        self.on_consumer_cancel_callbacks: set[Callable[[Any], Any]] = set()
        self.consumers: dict[str, Callable[[DeliveredMessage], Awaitable[None]]] = {}

    async def basic_consume(self, queue: str,
                            callback: Callable[[DeliveredMessage], Awaitable[None]], *,
                            no_ack: bool, consumer_tag: str) -> None:
        self.consumers[consumer_tag] = callback


async def test_the_aiormq_reader_hands_over_the_redelivered_bit() -> None:
    channel = Channel()
    link = _AiormqLink(None, channel, print)  # type: ignore[arg-type]
    got: list[tuple[str, bytes, int, bool]] = []
    await link.consume("siaga.p0", "c0", lambda *args: got.append(args))
    for tag, again in ((1, False), (2, True)):
        await channel.consumers["c0"](DeliveredMessage(
            spec.Basic.Deliver(consumer_tag="c0", delivery_tag=tag, redelivered=again,
                               exchange="siaga.partitions", routing_key="k"),
            ContentHeader(), b"x", channel))  # type: ignore[arg-type]
    assert got == [("k", b"x", 1, False), ("k", b"x", 2, True)]


# --- what no instance can read -----------------------------------------------------------

async def test_a_routing_key_that_is_not_utf8_is_dead_lettered_and_acknowledged() -> None:
    # RabbitMQ's MQTT plugin takes such a topic; it must not end the connection (and then
    # each next one the quorum queue redelivers it to), but reach the decoder.
    subscriber = AmqpSubscriber(AmqpSettings(), ["siaga/#"], lambda: 0)
    reader = FrameReader(lambda channel, method: None)
    reader.consumers["c0"] = subscriber._receiver(subscriber._generation, "siaga.p0")
    reader.feed(delivery("c0", "siaga.water-level.XY.telemetry", b'{"level_cm": 1}', 1)
                .replace(b".XY.", b".\xff\xfe."))  # the same length
    [message] = subscriber.take(10)
    out = Decoded()
    Decoder(load_catalog(bundled_catalog_path()), TopicScheme("siaga")).decode(
        message.topic, message.payload, 0, out)
    [dead] = out.dead
    assert (dead.topic, dead.code, out.readings) == (
        "siaga/water-level/\\xff\\xfe/telemetry", "bad-topic", [])
    assert subscriber.ack([message]) == 1


async def reconnections(subscriber: AmqpSubscriber, consumed_s: float,
                        sessions: int) -> list[float]:
    """When each of `sessions` sessions started, each consuming for `consumed_s`."""
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def session(url: str) -> float | None:
        starts.append(loop.time())
        subscriber._closing = len(starts) == sessions
        return consumed_s

    subscriber._session = session  # type: ignore[method-assign]
    await asyncio.wait_for(subscriber._keep_connected(), 10)
    return [later - earlier for earlier, later in itertools.pairwise(starts)]


async def test_sessions_that_end_within_seconds_back_off_longer_each_time() -> None:
    # A message that ends every session it comes to would otherwise spin every instance.
    # Below the settings' 1 s floor, so the test takes a fraction of a second.
    settings = AmqpSettings().model_copy(update={"reconnect_min_s": 0.02, "reconnect_max_s": 0.08})
    gaps = await reconnections(AmqpSubscriber(settings, ["t/#"], lambda: 0), 0.0, 5)
    # Lower bounds only: a loaded machine may wait longer, never shorter.
    assert [gap >= 0.9 * wait for gap, wait in zip(gaps, [0.02, 0.04, 0.08, 0.08],
                                                  strict=True)] == [True] * 4, gaps


async def test_a_session_that_consumed_a_while_reconnects_at_once() -> None:
    # A back-off of a minute: any would outlast the test's 10 s.
    settings = AmqpSettings(reconnect_min_s=60, reconnect_max_s=60)
    gaps = await reconnections(AmqpSubscriber(settings, ["t/#"], lambda: 0), BRIEF_SESSION_S, 5)
    assert len(gaps) == 4
