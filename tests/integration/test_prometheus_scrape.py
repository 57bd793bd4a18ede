"""A real Prometheus (Debian's prometheus 2.42) scrapes a running `siaga run`: the build,
reading rates and the latency histograms answer PromQL, and Siaga's alerting rules
(deploy/prometheus/siaga-rules.yml) evaluate against its real series without error."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.prometheus import Prometheus
from tests.deploy.city import RunningSiaga, publish_city, running_siaga, wait_stored
from tests.integration.support import unique_name
from tests.polling import wait_until

RULES: Final = Path(__file__).parents[2] / "deploy" / "prometheus" / "siaga-rules.yml"
# Prometheus takes up a new file_sd target within its discovery manager's 5 s update
# cycle, then scrapes every second; a ceiling for a loaded machine.
SCRAPED_S: Final = 60
HISTOGRAMS: Final = ("siaga_ingest_durable_latency_seconds",
                     "siaga_influxdb_write_duration_seconds", "siaga_rules_latency_seconds")
LOOK_BACK_S: Final = 600  # range queries cover the whole test: a rate then is still seen


@dataclass(frozen=True)
class Scraped:
    """A siaga that Prometheus scrapes, its readings published and stored."""

    siaga: RunningSiaga
    prometheus: Prometheus
    selector: str  # {instance="..."}: this module's series only
    published: int

    def values(self, expr: str) -> list[float]:
        """Every value of `expr` over the last LOOK_BACK_S seconds, one a second, NaN left out
        (a quantile of no observations is NaN: that is no data)."""
        now = time.time()
        series = self.prometheus.query_range(expr, now - LOOK_BACK_S, now, 1)
        values = [float(value) for one in series for _, value in one["values"]]
        return [value for value in values if not math.isnan(value)]


def wait_scraped(prometheus: Prometheus, selector: str) -> None:
    wait_until(lambda: prometheus.query(f"up{selector} == 1"), SCRAPED_S,
               f"Prometheus scraping {selector}")


@pytest.fixture(scope="module")
def scraped(mosquitto: Mosquitto, influxdb1: InfluxDB1, prometheus: Prometheus,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    group = unique_name("scrape")
    with running_siaga(mosquitto, influxdb1, tmp_path_factory.mktemp(group)) as siaga:
        prometheus.scrape(group, [siaga.address])
        selector = f'{{instance="{siaga.address}"}}'
        try:
            # Scraped before anything arrives, so every count's rise shows in a rate.
            wait_scraped(prometheus, selector)
            published = publish_city(mosquitto, siaga)
            wait_stored(influxdb1, siaga)
            yield Scraped(siaga, prometheus, selector, published)
        finally:
            prometheus.forget(group)


def test_prometheus_sees_which_siaga_build_it_scrapes(scraped: Scraped) -> None:
    builds = scraped.prometheus.query(f"siaga_build_info{scraped.selector}")
    assert len(builds) == 1, builds
    assert builds[0]["metric"]["version"], builds[0]
    assert builds[0]["value"][1] == "1"


def test_the_readings_published_show_as_a_rate(scraped: Scraped) -> None:
    total = f"siaga_readings_received_total{scraped.selector}"
    wait_until(lambda: scraped.prometheus.query(f"{total} >= {scraped.published}"),
               SCRAPED_S, f"{scraped.published} readings counted in Prometheus")
    rates = scraped.values(f"rate({total}[30s])")
    assert rates and max(rates) > 0, rates


@pytest.mark.parametrize("histogram", HISTOGRAMS)
def test_a_latency_histograms_99th_percentile_answers(scraped: Scraped, histogram: str) -> None:
    expr = (f"histogram_quantile(0.99, sum by (le) "
            f"(rate({histogram}_bucket{scraped.selector}[30s])))")
    wait_until(lambda: scraped.values(expr), SCRAPED_S, f"a p99 of {histogram}")
    quantiles = scraped.values(expr)
    # A latency of this small city on one machine: above nothing, under a minute.
    assert all(0 < value < 60 for value in quantiles), quantiles


def rules_by_health(prometheus: Prometheus) -> dict[str, list[dict[str, Any]]]:
    """Each rule of the loaded groups under its health: ok, err, unknown (not yet run)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for group in prometheus.rule_groups():
        for rule in group["rules"]:
            found.setdefault(rule["health"], []).append(rule)
    return found


def test_prometheus_evaluates_siagas_rules_on_its_series_without_error(
    scraped: Scraped, tmp_path: Path
) -> None:
    # A Prometheus of its own: the session's loads no rules.
    with Prometheus(tmp_path, [scraped.siaga.address], rule_files=[RULES]) as prometheus:
        wait_scraped(prometheus, scraped.selector)
        wait_until(lambda: (health := rules_by_health(prometheus)) and "unknown" not in health,
                   SCRAPED_S, "every rule evaluated once")
        health = rules_by_health(prometheus)
        # Pending included: most rules wait a `for:` of minutes before firing, so at the
        # first evaluation a rule that misjudged healthy series would only be pending.
        raised = prometheus.query("ALERTS")
    assert set(health) == {"ok"}, {rule["name"]: rule.get("lastError")
                                   for rule in health.get("err", [])}
    assert len(health["ok"]) == RULES.read_text().count("- alert:")
    # A healthy siaga that has just taken in a city's readings sets nothing off.
    assert raised == [], raised
