"""The AMQP input's pure parts: acknowledgement order, topic mapping, settings.

The broker's side (the MQTT plugin's real mapping, redelivery, node loss) is in
tests/integration/test_amqp_input.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ingest.amqp import AckWindow, AmqpSubscriber, binding_key, mqtt_topic, routing_key
from ingest.inbox import Message
from ingest.settings import AmqpSettings, IngestSettings, MqttSettings
from siaga.settings import Settings, load_settings
from siaga_core.errors import ConfigFileError


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
