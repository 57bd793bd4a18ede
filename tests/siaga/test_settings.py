"""Settings: the YAML file, the SPEC environment overrides, and errors that name the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from siaga.settings import BUNDLED_CONFIG, load_settings
from siaga_core.errors import ConfigFileError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "siaga.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_bundled_configuration_is_valid_and_uses_the_bundled_catalog() -> None:
    settings = load_settings(None, environ={})
    assert settings.influx.api == "v1"
    assert settings.catalog_path.name == "jakarta.yaml"
    assert load_settings(BUNDLED_CONFIG, environ={}) == settings


def test_every_section_can_be_set_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
mqtt: {url: "mqtts://ingest:s%40cret@broker.example:8884", ca_file: ca.pem, client_id: a}
influx: {api: v2, url: "http://db:8086/", org: o, bucket: b, token: t0k3n, timeout_s: 5}
ingest: {batch_size: 100, flush_interval_s: 0.5, unknown_devices: accept}
spool: {max_bytes: 2097152}
data_dir: state
catalog: devices.yaml
""")
    settings = load_settings(path, environ={})
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.tls) == (
        "broker.example", 8884, True)
    assert settings.mqtt.username == "ingest"
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s@cret"
    assert settings.mqtt.ca_file == tmp_path / "ca.pem"  # relative to the file, like all paths
    assert settings.influx.url == "http://db:8086"
    assert settings.influx.token is not None and settings.influx.token.get_secret_value() == "t0k3n"
    assert settings.ingest.unknown_devices == "accept"
    assert settings.data_dir == tmp_path / "state"
    assert settings.catalog == tmp_path / "devices.yaml"


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "influx: {api: v1, database: fromfile}\ndata_dir: fromfile\n")
    settings = load_settings(path, environ={
        "SIAGA_MQTT_URL": "mqtt://other:1884",
        "SIAGA_INFLUX_API": "v2",
        "SIAGA_INFLUX_DATABASE": "fromenv",
        "SIAGA_INFLUX_TOKEN": "secret",
        "SIAGA_HTTP_PORT": "9090",
        "SIAGA_DATA_DIR": "/var/lib/siaga",
    })
    assert settings.mqtt.port == 1884
    assert settings.influx.api == "v2"
    assert settings.influx.database == "fromenv"
    assert settings.http.port == 9090
    assert settings.data_dir == Path("/var/lib/siaga")


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("influx:\n  api: v3\n", {}, "siaga.yaml:2: influx.api:"),
        ("ingest:\n  batch_size: 0\n", {}, "siaga.yaml:2: ingest.batch_size:"),
        ("mqtt:\n  url: http://x\n", {}, "siaga.yaml:2: mqtt.url: "),
        ("influx:\n  tmeout_s: 3\n", {}, "siaga.yaml:2: influx.tmeout_s:"),
        ("spool: 5\n", {}, "siaga.yaml:1: spool:"),
        ("data_dir: x\n", {"SIAGA_HTTP_PORT": "eighty"}, "environment SIAGA_HTTP_PORT"),
        ("", {"SIAGA_INFLUX_API": "v9"}, "environment SIAGA_INFLUX_API"),
        # Foreign inputs' topics go into the broker's ACL and are routed before Siaga's own.
        ("lorawan:\n  chirpstack: {enabled: true, topic: \"a/b\\nuser x\"}\n", {},
         "siaga.yaml:2: lorawan.chirpstack.topic: must not hold spaces or control characters"),
        ("lorawan:\n  things_stack: {enabled: true, topic: \"#\"}\n", {},
         "lorawan.things_stack.topic: must name the server's topics, not every topic"),
        ("frigate:\n  topic: \"frigate/events\\ntopic readwrite #\"\n", {},
         "siaga.yaml:2: frigate.topic:"),
        ("lorawan:\n  chirpstack: {enabled: true, topic: \"siaga/+/+/telemetry\"}\n", {},
         "the input topic 'siaga/+/+/telemetry' would also take Siaga's own topics"),
    ],
)
def test_a_mistake_names_the_file_the_place_and_the_fix(
    tmp_path: Path, text: str, environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigFileError) as caught:
        load_settings(write(tmp_path, text), environ=environ)
    assert expected in str(caught.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_alertmanagers_come_from_the_file_with_their_tls_files_beside_it(tmp_path: Path) -> None:
    path = write(tmp_path, """
alertmanagers:
  - {url: "http://am1:9093", bearer_token: t0k3n}
  - url: "https://am2:9093/alertmanager"
    basic_auth: {username: siaga, password: pw}
    tls: {ca_file: ca.pem}
""")
    first, second = load_settings(path, environ={}).alertmanagers
    assert first.api_url == "http://am1:9093/api/v2/alerts"
    assert first.headers()["Authorization"] == "Bearer t0k3n"
    assert second.api_url == "https://am2:9093/alertmanager/api/v2/alerts"
    assert second.headers()["Authorization"] == "Basic c2lhZ2E6cHc="
    assert second.tls is not None and second.tls.ca_file == tmp_path / "ca.pem"


def test_siaga_alertmanager_url_adds_one_alertmanager_once(tmp_path: Path) -> None:
    path = write(tmp_path, 'alertmanagers: [{url: "http://am1:9093"}]\n')
    added = load_settings(path, environ={"SIAGA_ALERTMANAGER_URL": "http://am2:9093"})
    assert [am.url for am in added.alertmanagers] == ["http://am1:9093", "http://am2:9093"]
    again = load_settings(path, environ={"SIAGA_ALERTMANAGER_URL": "http://am1:9093"})
    assert [am.url for am in again.alertmanagers] == ["http://am1:9093"]
    alone = load_settings(None, environ={"SIAGA_ALERTMANAGER_URL": "http://am3:9093"})
    assert [(am.url, am.resend_interval_s) for am in alone.alertmanagers] == [
        ("http://am3:9093", 60.0)]


def test_a_bad_alertmanager_url_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigFileError, match=r"SIAGA_ALERTMANAGER_URL.*http://"):
        load_settings(None, environ={"SIAGA_ALERTMANAGER_URL": "am:9093"})


@pytest.mark.parametrize(("entry", "message"), [
    ('{url: "http://am:9093", bearer_token: t, basic_auth: {username: u, password: p}}',
     "not both"),
    ('{url: "http://u:p@am:9093"}', "basic_auth"),
    ('{url: "http://am:9093", tls: {cert_file: c.pem}}', "go together"),
])
def test_an_alertmanager_mistake_names_its_line(tmp_path: Path, entry: str, message: str) -> None:
    path = write(tmp_path, f"\nalertmanagers:\n  - {entry}\n")
    with pytest.raises(ConfigFileError, match=rf"siaga.yaml:3: .*{message}"):
        load_settings(path, environ={})


def test_a_cluster_shares_its_report_book_unless_another_is_named() -> None:
    shared = "postgresql://siaga:pw@db:5432/siaga"
    book = load_settings(environ={"SIAGA_ALERTING_DATABASE_URL": shared}).report_book
    assert book.database_url is not None and book.database_url.get_secret_value() == shared
    other = "postgresql://siaga:pw@db:5432/reports"
    book = load_settings(environ={"SIAGA_ALERTING_DATABASE_URL": shared,
                                  "SIAGA_REPORTS_DATABASE_URL": other}).report_book
    assert book.database_url is not None and book.database_url.get_secret_value() == other
    assert load_settings(environ={}).report_book.database_url is None  # one instance: SQLite
