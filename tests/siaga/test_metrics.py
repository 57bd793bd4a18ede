"""Tests of the Prometheus exposition: the families, their text through prometheus_client,
and GET /metrics."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from ingest.stats import IngestStats
from ingest.storage import StorageStats
from rules.alerting import AlertingMetrics, ForwarderCounts
from siaga.api.metrics import alert_families, alerting_families, ingest_families
from siaga.api.server import exposition
from siaga_core.histogram import Histogram
from tests.siaga.apirig import T0, TOKEN, World, fire, open_world, running_api

S = 1_000_000_000

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)$")
_HELP = re.compile(rf"^# HELP ({_NAME}) (.*)$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

Key = tuple[str, frozenset[tuple[str, str]]]


def parse(text: str) -> dict[Key, float]:
    """A strict reader of the text format 0.0.4: every line must be HELP, TYPE or a sample
    of a family whose HELP and TYPE came first, and no sample may repeat."""
    assert text.endswith("\n")
    helped: set[str] = set()
    typed: set[str] = set()
    samples: dict[Key, float] = {}
    for line in text.splitlines():
        if found := _HELP.match(line):
            helped.add(found.group(1))
        elif found := _TYPE.match(line):
            assert found.group(1) in helped, f"TYPE before HELP: {line!r}"
            name, kind = found.groups()
            # A histogram's samples are its name's _bucket, _sum and _count.
            typed.update([f"{name}{suffix}" for suffix in _HISTOGRAM_SUFFIXES]
                         if kind == "histogram" else [name])
        else:
            found = _SAMPLE.match(line)
            assert found is not None, f"not a valid sample line: {line!r}"
            name, labels, value = found.groups()
            assert name in typed, f"sample without TYPE: {line!r}"
            key = (name, frozenset(_labels(labels or "").items()))
            assert key not in samples, f"duplicate sample: {line!r}"
            samples[key] = float(value)
    return samples


def _labels(text: str) -> dict[str, str]:
    return {name: re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], value)
            for name, value in _PAIR.findall(text)}


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


class Families:
    """A collector of fixed families, so a test renders them as a scrape would."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(families: Iterable[Metric]) -> str:
    registry = CollectorRegistry()
    registry.register(Families(families))
    return generate_latest(registry).decode()


def test_a_counter_renders_help_type_and_one_line_per_sample() -> None:
    family = CounterMetricFamily("siaga_things_total", "Things.", labels=["kind"])
    family.add_metric(["a"], 3)
    family.add_metric(["b"], 4)
    assert render([family]) == (
        "# HELP siaga_things_total Things.\n"
        "# TYPE siaga_things_total counter\n"
        'siaga_things_total{kind="a"} 3.0\n'
        'siaga_things_total{kind="b"} 4.0\n'
    )


def test_label_values_are_escaped_and_read_back_unchanged() -> None:
    nasty = 'a "quoted" \\ back\nslash'
    stats = IngestStats(ignored_fields=Counter({("pa-manggarai", nasty): 1}))
    text = render(ingest_families(stats, None))
    assert 'field="a \\"quoted\\" \\\\ back\\nslash"' in text
    assert parse(text)[key("siaga_ignored_fields_total", device_id="pa-manggarai",
                           field=nasty)] == 1


def storage_stats(latency_s: float | None = 0.0125) -> StorageStats:
    return StorageStats(written_total=90, spooled_total=10, rejected_total=2,
                        retryable_errors_total=1, spool_segments=3, spool_bytes=4096,
                        last_write_latency_s=latency_s)


def test_dead_letters_are_counted_by_code_with_influxdb_rejections() -> None:
    stats = IngestStats(messages=5, readings=100, dead_letters=Counter({"bad-json": 3}))
    samples = parse(render(ingest_families(stats, storage_stats())))
    assert samples[key("siaga_dead_letters_total", code="bad-json")] == 3
    assert samples[key("siaga_dead_letters_total", code="rejected-by-influxdb")] == 2
    assert samples[key("siaga_readings_received_total")] == 100
    assert samples[key("siaga_readings_written_total")] == 90
    assert samples[key("siaga_spool_bytes")] == 4096
    assert samples[key("siaga_influxdb_last_write_latency_seconds")] == 0.0125


def test_camera_detections_and_plates_are_counted_and_no_plate_is_a_label() -> None:
    stats = IngestStats(detections=40, plates_listed=2, plates_unlisted=9)
    samples = parse(render(ingest_families(stats, storage_stats())))
    assert samples[key("siaga_camera_detections_received_total")] == 40
    assert samples[key("siaga_camera_plates_total", list="listed")] == 2
    assert samples[key("siaga_camera_plates_total", list="unlisted")] == 9


def test_storage_metrics_are_absent_rather_than_zero_before_storage_starts() -> None:
    text = render(ingest_families(IngestStats(), None))
    assert "# TYPE siaga_spool_bytes gauge" in text
    assert not any(name == "siaga_spool_bytes" for name, _ in parse(text))


def test_storage_refusals_are_shown_by_cause_with_both_causes_at_zero() -> None:
    samples = parse(render(ingest_families(IngestStats(), storage_stats())))
    assert samples[key("siaga_storage_unavailable_total", cause="spool-full")] == 0
    assert samples[key("siaga_storage_unavailable_total", cause="disk-error")] == 0
    assert samples[key("siaga_storage_unavailable")] == 0


def test_storage_that_cannot_make_readings_durable_is_shown_as_such() -> None:
    stats = replace(storage_stats(), unavailable_total={"spool-full": 0, "disk-error": 3},
                    unavailable_reason="spool disk error: [Errno 28] No space left on device",
                    unavailable_since=1_700_000_000.0)
    samples = parse(render(ingest_families(IngestStats(), stats)))
    assert samples[key("siaga_storage_unavailable_total", cause="disk-error")] == 3
    assert samples[key("siaga_storage_unavailable_total", cause="spool-full")] == 0
    assert samples[key("siaga_storage_unavailable")] == 1


def test_storage_unavailability_is_absent_rather_than_zero_before_storage_starts() -> None:
    text = render(ingest_families(IngestStats(), None))
    assert "# TYPE siaga_storage_unavailable_total counter" in text
    assert "# TYPE siaga_storage_unavailable gauge" in text
    assert not any(name.startswith("siaga_storage_unavailable") for name, _ in parse(text))


def test_an_unknown_write_latency_is_left_out() -> None:
    samples = parse(render(ingest_families(IngestStats(), storage_stats(None))))
    assert key("siaga_influxdb_last_write_latency_seconds") not in samples
    assert samples[key("siaga_spool_segments")] == 3


def test_every_alert_status_is_shown_even_at_zero() -> None:
    samples = parse(render(alert_families({"firing": 2}, {"delivered": 7}, 1)))
    assert samples[key("siaga_alerts", status="pending")] == 0
    assert samples[key("siaga_alerts", status="firing")] == 2
    assert samples[key("siaga_deliveries_total", outcome="delivered")] == 7
    assert samples[key("siaga_deliveries_pending")] == 1


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path) as opened:
        yield opened


async def test_the_endpoint_serves_every_family_as_parseable_text(world: World) -> None:
    world.stats.messages, world.stats.readings = 12, 30
    world.stats.dead_letters["future-ts"] += 2
    world.stats.ignored_fields[("pa-manggarai", 'fw"ver')] += 4
    world.storage = storage_stats()
    world.seen["pa-manggarai"] = T0
    fire(world, "pa-manggarai")
    world.outbox.enqueue("bpbd", "abc", b"{}", T0)
    async with running_api(world) as api, api.session.get(api.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        samples = parse(await response.text())
    assert samples[key("siaga_mqtt_messages_received_total")] == 12
    assert samples[key("siaga_dead_letters_total", code="future-ts")] == 2
    assert samples[key("siaga_ignored_fields_total", device_id="pa-manggarai",
                       field='fw"ver')] == 4
    assert samples[key("siaga_alerts", status="firing")] == 1
    assert samples[key("siaga_deliveries_pending")] == 1
    assert samples[key("siaga_deliveries_total", outcome="dead")] == 0
    assert samples[key("siaga_ready")] == 1
    assert samples[key("siaga_devices")] == 2 and samples[key("siaga_devices_seen")] == 1


async def test_the_endpoint_says_when_the_service_is_not_ready(world: World) -> None:
    world.reasons.append("not subscribed to MQTT yet")
    async with running_api(world) as api, api.session.get(api.url + "/metrics") as response:
        samples = parse(await response.text())
    assert samples[key("siaga_ready")] == 0


async def test_no_secret_appears_in_any_read_endpoint(world: World) -> None:
    world.storage = storage_stats()
    async with running_api(world) as api:
        for path in ("/metrics", "/openapi.json", "/api/devices", "/readyz", "/healthz"):
            async with api.session.get(api.url + path) as response:
                assert TOKEN not in await response.text(), path


async def test_the_build_is_shown_with_its_version_and_commit(world: World) -> None:
    context = replace(world.context(), build_commit="3f9a2c1")
    samples = parse((await exposition(context).render()).decode())
    assert samples[key("siaga_build_info", version=metadata.version("siaga"),
                       commit="3f9a2c1")] == 1


async def test_a_build_without_a_commit_says_unknown(world: World) -> None:
    samples = parse((await exposition(world.context()).render()).decode())
    [build] = [labels for name, labels in samples if name == "siaga_build_info"]
    assert dict(build)["commit"] == "unknown"


async def test_each_service_counts_in_its_own_registry(world: World, tmp_path: Path) -> None:
    with open_world(tmp_path / "other") as other:
        world.stats.messages, other.stats.messages = 5, 7
        first, second = exposition(world.context()), exposition(other.context())
        texts = [(await shown.render()).decode() for shown in (first, second)]
    assert [parse(text)[key("siaga_mqtt_messages_received_total")] for text in texts] == [5, 7]
    assert "siaga_" not in generate_latest(REGISTRY).decode()  # the process-wide one untouched


async def test_no_created_samples_are_added_to_the_counters(world: World) -> None:
    world.storage = storage_stats()
    text = (await exposition(world.context()).render()).decode()
    assert "_created" not in text


def test_latency_histograms_render_cumulative_buckets_sum_and_count() -> None:
    stats = IngestStats()
    for seconds in (0.004, 0.004, 0.3, 75.0):
        stats.durable_latency.observe(seconds)
    samples = parse(render(ingest_families(stats, storage_stats())))
    bucket = "siaga_ingest_durable_latency_seconds_bucket"
    assert samples[key(bucket, le="0.005")] == 2
    assert samples[key(bucket, le="0.5")] == 3
    assert samples[key(bucket, le="60.0")] == 3
    assert samples[key(bucket, le="+Inf")] == 4
    assert samples[key("siaga_ingest_durable_latency_seconds_count")] == 4
    assert samples[key("siaga_ingest_durable_latency_seconds_sum")] == pytest.approx(75.308)
    assert samples[key("siaga_rules_latency_seconds_count")] == 0


def test_influxdb_write_durations_and_the_spool_budget_are_shown_once_storage_runs() -> None:
    writes = Histogram()
    writes.observe(0.02)
    stats = replace(storage_stats(), spool_max_bytes=1 << 30, write_duration=writes.snapshot())
    samples = parse(render(ingest_families(IngestStats(), stats)))
    assert samples[key("siaga_influxdb_write_duration_seconds_bucket", le="0.025")] == 1
    assert samples[key("siaga_influxdb_write_duration_seconds_bucket", le="0.01")] == 0
    assert samples[key("siaga_spool_max_bytes")] == 1 << 30
    before = parse(render(ingest_families(IngestStats(), None)))
    assert not any(name.startswith("siaga_influxdb_write_duration") for name, _ in before)


def test_notification_latency_by_channel_alertmanager_counts_and_devices_by_kind() -> None:
    webhook, alertmanager = Histogram(), Histogram()
    webhook.observe(0.04)
    alertmanager.observe(1.5)
    alertmanager.observe(0.2)
    metrics = AlertingMetrics(
        {"webhook": webhook.snapshot(), "alertmanager": alertmanager.snapshot()},
        [ForwarderCounts("http://am:9093", sent=12, failed=1)],
        {("water-level", "online"): 3, ("water-level", "offline"): 1,
         ("traffic", "online"): 0, ("traffic", "offline"): 2})
    samples = parse(render(alerting_families(metrics)))
    latency = "siaga_notification_latency_seconds"
    assert samples[key(f"{latency}_count", channel="webhook")] == 1
    assert samples[key(f"{latency}_count", channel="alertmanager")] == 2
    assert samples[key(f"{latency}_bucket", channel="alertmanager", le="1.0")] == 1
    assert samples[key("siaga_alertmanager_notifications_sent_total",
                       alertmanager="http://am:9093")] == 12
    assert samples[key("siaga_alertmanager_notifications_failed_total",
                       alertmanager="http://am:9093")] == 1
    assert samples[key("siaga_devices_online", kind="water-level")] == 3
    assert samples[key("siaga_devices_offline", kind="water-level")] == 1
    assert samples[key("siaga_devices_offline", kind="traffic")] == 2


def test_the_alerting_families_are_declared_without_samples_before_alerting_runs() -> None:
    text = render(alerting_families(None))
    assert "# TYPE siaga_devices_offline gauge" in text
    assert "# TYPE siaga_notification_latency_seconds histogram" in text
    assert parse(text) == {}


async def test_the_outbox_shows_its_depth_and_the_age_of_its_oldest_delivery(
    world: World,
) -> None:
    world.outbox.enqueue("bpbd", "abc", b"{}", T0)
    world.outbox.enqueue("bpbd", "def", b"{}", T0 + 30 * S)
    world.clock.now_ns = T0 + 90 * S
    samples = parse((await exposition(world.context()).render()).decode())
    assert samples[key("siaga_outbox_depth")] == 2
    assert samples[key("siaga_outbox_oldest_age_seconds")] == 90
    world.outbox.mark_delivered(world.outbox.due(world.clock(), 10)[0].id, world.clock())
    samples = parse((await exposition(world.context()).render()).decode())
    assert samples[key("siaga_outbox_depth")] == 1
    assert samples[key("siaga_outbox_oldest_age_seconds")] == 60
