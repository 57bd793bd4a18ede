"""deploy/grafana: the Siaga dashboard is a well-formed Grafana dashboard, and every query on
it answers with data from the real InfluxDB and Prometheus a running `siaga run` fills.

Grafana itself is not in Debian's archive, so it does not run here: the test does what
Grafana would with each query (its macros and variables substituted as Grafana does, for a
1-hour range at 720 points, one every 5 s) and sends it to the test InfluxDB 1.x or
Prometheus. A query that errs or answers nothing fails, so a panel that shows nothing does.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from devices.kinds import Kind
from devices.registry import bundled_catalog_path, load_catalog
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.prometheus import Prometheus
from tests.deploy.city import RunningSiaga, publish_city, running_siaga, wait_stored
from tests.integration.support import unique_name
from tests.polling import wait_until

GRAFANA: Final = Path(__file__).parents[2] / "deploy" / "grafana"
DASHBOARD: Final = json.loads((GRAFANA / "siaga.json").read_text(encoding="utf-8"))
GRID_COLUMNS: Final = 24  # Grafana's grid is 24 columns wide
MIN_SCHEMA: Final = 36  # datasource refs by {type, uid}, as schemaVersion 36 made them
DATASOURCES: Final = {"influxdb": "${influxdb}", "prometheus": "${prometheus}"}
# As Grafana computes them for a 1-hour range on a panel of 720 data points: $__interval
# is range / points; $__rate_interval is max($__interval + scrape, 4 x scrape), the scrape
# interval being the data source's `timeInterval` (the test Prometheus scrapes every 1 s).
RANGE_S: Final = 3600
INTERVAL_S: Final = 5
SCRAPE_S: Final = 1
RATE_INTERVAL_S: Final = max(INTERVAL_S + SCRAPE_S, 4 * SCRAPE_S)
SCRAPED_S: Final = 60  # file_sd's 5 s discovery cycle, then a 1 s scrape; a ceiling
# Characters Grafana escapes in a multi-value variable's value in a PromQL regex matcher
# (prometheusRegularEscape): a backslash for the regex, doubled for the string literal.
PROM_REGEX_SPECIAL: Final = re.compile(r"[$^*{}\[\]'+?.()|\\]")
LABEL_VALUES: Final = re.compile(r"^label_values\((?P<match>.+),\s*(?P<label>\w+)\)$")


def panels() -> list[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    found = []
    for panel in DASHBOARD["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


@dataclass(frozen=True)
class Query:
    panel: str
    source: str  # influxdb | prometheus
    text: str

    def __str__(self) -> str:  # the test's id: panel and query
        return f"{self.panel}: {self.text}"


def queries() -> list[Query]:
    found = []
    for panel in panels():
        for target in panel.get("targets", []):
            source = target["datasource"]["type"]
            text = target["query"] if source == "influxdb" else target["expr"]
            found.append(Query(panel["title"], source, text))
    return found


# --- the dashboard's shape ------------------------------------------------------------


def test_the_dashboard_has_what_grafana_needs_to_import_it() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    assert DASHBOARD["schemaVersion"] >= MIN_SCHEMA
    assert DASHBOARD["time"]["from"].startswith("now-")
    assert "id" not in DASHBOARD or DASHBOARD["id"] is None  # Grafana assigns its own


def test_its_data_sources_are_variables_a_site_can_point_elsewhere() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    for name in DATASOURCES:
        assert variables[name]["type"] == "datasource"
        assert variables[name]["query"] == name  # the plugin type it offers


def test_each_panel_has_a_unique_id_and_a_place_on_the_grid() -> None:
    ids = [panel["id"] for panel in panels()]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), ids
    for panel in panels():
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["h"] > 0 and grid["w"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]


def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
    grid = panel["gridPos"]
    return set(itertools.product(range(grid["x"], grid["x"] + grid["w"]),
                                 range(grid["y"], grid["y"] + grid["h"])))


def test_no_two_panels_overlap() -> None:
    for one, other in itertools.combinations(DASHBOARD["panels"], 2):
        assert not cells(one) & cells(other), (one["title"], other["title"])


def test_every_query_reads_a_templated_data_source_the_panel_names_too() -> None:
    for panel in panels():
        if panel["type"] == "row":
            continue
        source = panel["datasource"]
        assert DATASOURCES.get(source["type"]) == source["uid"], panel["title"]
        assert panel["targets"], f"{panel['title']} queries nothing"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            if source["type"] == "influxdb":
                assert target["rawQuery"] is True and target["query"], panel["title"]
            else:
                assert target["expr"], panel["title"]


def test_each_gauges_panel_draws_that_gauges_siaga_levels_from_the_catalog() -> None:
    gauges = load_catalog(bundled_catalog_path()).by_kind(Kind.WATER_LEVEL)
    by_device = {}
    for panel in panels():
        for target in panel.get("targets", []):
            found = re.search(r""""device_id" = '([^']+)'""", target.get("query", ""))
            if found:
                by_device[found.group(1)] = panel
    assert set(by_device) == {gauge.id for gauge in gauges}
    for gauge in gauges:
        steps = by_device[gauge.id]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [step["value"] for step in steps[1:]] == [
            gauge.thresholds[name] for name in ("siaga3_cm", "siaga2_cm", "siaga1_cm")]


def test_the_provisioned_data_sources_are_the_variables_defaults() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/siaga.yml").read_text())
    uids = {source["type"]: source["uid"] for source in provisioned["datasources"]}
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert provisioned["apiVersion"] == 1
    for name in DATASOURCES:
        assert variables[name]["current"]["value"] == uids[name]


def test_the_dashboard_provider_loads_files_from_a_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/siaga.yml").read_text())
    assert provider["apiVersion"] == 1
    [entry] = provider["providers"]
    assert entry["type"] == "file" and Path(entry["options"]["path"]).is_absolute()


# --- every query against the real servers ---------------------------------------------


@dataclass(frozen=True)
class Filled:
    """A siaga whose readings are in InfluxDB and which Prometheus scrapes."""

    siaga: RunningSiaga
    influx: InfluxDB1
    prometheus: Prometheus
    end_s: float  # the dashboard's "now": after every reading and scrape the test awaited


@pytest.fixture(scope="module")
def filled(mosquitto: Mosquitto, influxdb1: InfluxDB1, prometheus: Prometheus,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    group = unique_name("grafana")
    with running_siaga(mosquitto, influxdb1, tmp_path_factory.mktemp(group)) as siaga:
        prometheus.scrape(group, [siaga.address])
        try:
            # Scraped before the readings come, so their counts' rise shows in rates.
            wait_until(lambda: prometheus.query(f'up{{instance="{siaga.address}"}} == 1'),
                       SCRAPED_S, "Prometheus scraping the siaga")
            published = publish_city(mosquitto, siaga)
            wait_stored(influxdb1, siaga)
            counted = f'siaga_readings_written_total{{instance="{siaga.address}"}}'
            wait_until(lambda: prometheus.query(f"{counted} >= {published}"), SCRAPED_S,
                       "Prometheus seeing every reading written")
            # A counter's series starts with its first count (the dead letter's code): a
            # rate needs it scraped twice.
            dead = f'siaga_dead_letters_total{{instance="{siaga.address}"}}'
            wait_until(lambda: prometheus.query(f"count_over_time({dead}[1m]) >= 2"),
                       SCRAPED_S, "Prometheus scraping the dead letter's count twice")
            yield Filled(siaga, influxdb1, prometheus, time.time())
        finally:
            prometheus.forget(group)


def influxql(query: str, start_s: float, end_s: float) -> str:
    """`query` as Grafana's InfluxDB data source sends it."""
    return (query.replace("$timeFilter",
                          f"time >= {int(start_s * 1000)}ms and time <= {int(end_s * 1000)}ms")
            .replace("$__interval_ms", str(INTERVAL_S * 1000))
            .replace("$__interval", f"{INTERVAL_S}s"))


def prometheus_regex(value: str) -> str:
    return PROM_REGEX_SPECIAL.sub(lambda found: "\\\\" + found.group(0), value)


def promql(expr: str, instance: str) -> str:
    """`expr` as Grafana's Prometheus data source sends it, `instance` chosen."""
    return (expr.replace("$__rate_interval", f"{RATE_INTERVAL_S}s")
            .replace("$__interval", f"{INTERVAL_S}s")
            .replace("${instance}", prometheus_regex(instance))
            .replace("$instance", prometheus_regex(instance)))


def influx_values(filled: Filled, query: str) -> list[Any]:
    answer = filled.influx.query(query, filled.siaga.database)
    for statement in answer["results"]:
        assert "error" not in statement, f"{query}: {statement['error']}"
    return [value for statement in answer["results"] for series in statement.get("series", [])
            for row in series["values"] for value in row[1:] if value is not None]


def prometheus_values(filled: Filled, expr: str) -> list[float]:
    series = filled.prometheus.query_range(expr, filled.end_s - RANGE_S, filled.end_s,
                                           INTERVAL_S)
    values = [float(value) for one in series for _, value in one["values"]]
    return [value for value in values if not math.isnan(value)]  # NaN: nothing to draw


@pytest.mark.parametrize("query", queries(), ids=str)
def test_the_query_answers_with_data(filled: Filled, query: Query) -> None:
    influx = query.source == "influxdb"
    sent = (influxql(query.text, filled.end_s - RANGE_S, filled.end_s) if influx
            else promql(query.text, filled.siaga.address))
    assert "$" not in sent, f"a variable or macro the test does not fill in: {sent}"
    values = influx_values(filled, sent) if influx else prometheus_values(filled, sent)
    assert values, f"no data for {query.panel!r}: {sent}"


def test_the_instance_variable_offers_the_running_siaga(filled: Filled) -> None:
    [variable] = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "instance"]
    found = LABEL_VALUES.match(variable["query"]["query"])
    assert found is not None, variable["query"]
    offered = filled.prometheus.label_values(found["label"], found["match"])
    assert filled.siaga.address in offered, offered
