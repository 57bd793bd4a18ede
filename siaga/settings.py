"""The service's settings: one YAML file plus the SPEC section 4 environment overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

import rules
from devices.registry import bundled_catalog_path
from ingest.frigate import FrigateSettings
from ingest.lorawan import LorawanSettings, matches
from ingest.settings import (
    AmqpSettings,
    CameraSettings,
    FilePath,
    InfluxSettings,
    IngestSettings,
    MqttSettings,
    Section,
    SpoolSettings,
)
from reports.settings import ReportsSettings
from rules.alertmanager import AlertmanagerSettings
from siaga_core.configfile import locate, validate_data
from siaga_core.errors import ConfigFileError, Problem
from siaga_core.yamlfile import Loc, read_yaml

BUNDLED_CONFIG = Path(__file__).with_name("siaga.yaml")
BUNDLED_RULES = Path(rules.__file__).with_name("default.yaml")


class BrokerSettings(Section):
    """Mosquitto's files, written by `siaga broker init` and `siaga devices add`."""

    password_file: FilePath | None = None
    acl_file: FilePath | None = None
    # What devices connect to, printed for each new device (no credentials in it);
    # without it, mqtt.url's scheme, host and port.
    device_url: str | None = None

class HttpSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    # Bearer token for the mutating endpoints (ack, silences); without one they refuse all.
    token: SecretStr | None = None
    # The base URL operators reach the API at, used in webhook links (externalURL).
    external_url: str | None = None


class ConsoleSettings(Section):
    """The monitoring room's page at `GET /` (SPEC section 8)."""

    # A base map's tiles, OpenStreetMap style: https://tiles.example/{z}/{x}/{y}.png ({s}
    # optional). Without one the page draws the offline base shipped with the package, and
    # loads nothing from outside the service.
    tile_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+/.*\{z\}.*\{x\}.*\{y\}")
    tile_attribution: str = ""  # shown under the map, as text (e.g. "© OpenStreetMap")
    language: Literal["id", "en"] = "id"  # the page's default; each operator may switch
    max_streams: int = Field(default=200, ge=1)  # open consoles at once; more get 503
    values_every_s: float = Field(default=10.0, gt=0)  # how often latest readings are pushed


class AlertingSettings(Section):
    """Where the alert book and the outbox live (issue 18)."""

    # Empty: SQLite files in data_dir (one instance). postgresql://...: shared by several
    # instances, which then also elect a leader there for the city-wide checks.
    database_url: SecretStr | None = None


class Settings(Section):
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    ingest: IngestSettings = IngestSettings()
    # RabbitMQ's partitions, read instead of MQTT when `ingest.input` is "amqp".
    amqp: AmqpSettings = AmqpSettings()
    spool: SpoolSettings = SpoolSettings()
    http: HttpSettings = HttpSettings()
    broker: BrokerSettings = BrokerSettings()
    reports: ReportsSettings = ReportsSettings()
    alerting: AlertingSettings = AlertingSettings()
    console: ConsoleSettings = ConsoleSettings()
    cameras: CameraSettings = CameraSettings()
    # Frigate NVRs publishing on the same broker (off unless enabled, with its cameras mapped).
    frigate: FrigateSettings = FrigateSettings()
    # LoRaWAN network servers' uplinks on the same broker (ChirpStack, The Things Stack).
    lorawan: LorawanSettings = LorawanSettings()
    data_dir: FilePath = Path(".siaga/data")
    catalog: FilePath | None = None
    rules: FilePath | None = None
    # A receiver that gets every notification, besides the routes of the rules file.
    webhook_url: str | None = None
    # Prometheus Alertmanagers told of every firing alert and its end (SPEC section 9).
    alertmanagers: list[AlertmanagerSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _foreign_topics_leave_siagas_own(self) -> Self:
        # An input routed by its topic before Siaga's own decoding would take devices'
        # messages for a foreign server's (and dead-letter them all).
        prefix = self.mqtt.topic_prefix
        own = [f"{prefix}/water-level/a/telemetry", f"{prefix}/traffic/a/status",
               f"{prefix}/camera/a/events"]
        for topic in self.foreign_topics():
            if any(matches(topic, sample) for sample in own):
                raise ValueError(f"the input topic {topic!r} would also take Siaga's own "
                                 f"topics ({prefix}/...): give the server's own topics")
        return self

    @model_validator(mode="after")
    def _amqp_topics_have_no_dots(self) -> Self:
        # RabbitMQ's MQTT plugin turns `/` into `.` and keeps a `.`: over AMQP a dot in a
        # topic would come back as a level separator (ingest.amqp).
        if self.ingest.input == "amqp":
            for topic in [self.mqtt.topic_prefix, *self.foreign_topics()]:
                if "." in topic:
                    raise ValueError(f"the topic {topic!r} has a '.', which the AMQP input "
                                     "(ingest.input: amqp) cannot tell from a '/'")
        return self

    def foreign_topics(self) -> list[str]:
        """The topic filters of enabled inputs other than Siaga's own topics (Frigate, the
        LoRaWAN servers): the service subscribes to them, and the broker's ACL lets it."""
        chirpstack, things_stack = self.lorawan.chirpstack, self.lorawan.things_stack
        inputs = [(self.frigate.enabled, self.frigate.topic),
                  (chirpstack.enabled, chirpstack.topic),
                  (things_stack.enabled, things_stack.topic)]
        return [topic for enabled, topic in inputs if enabled]

    @property
    def report_book(self) -> ReportsSettings:
        """The report book's settings as used. Instances sharing an alert book are one
        cluster: a resident's report must count in the city's flood clusters whichever
        instance's API took it, so they share the report book too, in the same database
        unless `reports.database_url` names another."""
        shared, own = self.alerting.database_url, self.reports.database_url
        if shared is None or (own is not None and own.get_secret_value()):
            return self.reports
        return self.reports.model_copy(update={"database_url": shared})

    @property
    def catalog_path(self) -> Path:
        return self.catalog or bundled_catalog_path()

    @property
    def rules_path(self) -> Path:
        return self.rules or BUNDLED_RULES


# SPEC section 4: variable -> (field path, converter from the environment's string).
ENVIRONMENT: Mapping[str, tuple[tuple[str, ...], type]] = {
    "SIAGA_MQTT_URL": (("mqtt", "url"), str),
    "SIAGA_AMQP_URL": (("amqp", "urls"), str),  # comma-separated nodes of one cluster
    "SIAGA_AMQP_INSTANCE": (("amqp", "instance"), int),  # this one, counting from 0 ...
    "SIAGA_AMQP_INSTANCES": (("amqp", "instances"), int),  # ... of this many
    "SIAGA_INFLUX_URL": (("influx", "url"), str),
    "SIAGA_INFLUX_API": (("influx", "api"), str),
    "SIAGA_INFLUX_DATABASE": (("influx", "database"), str),
    "SIAGA_INFLUX_ORG": (("influx", "org"), str),
    "SIAGA_INFLUX_BUCKET": (("influx", "bucket"), str),
    "SIAGA_INFLUX_TOKEN": (("influx", "token"), SecretStr),
    "SIAGA_HTTP_PORT": (("http", "port"), int),
    "SIAGA_API_TOKEN": (("http", "token"), SecretStr),
    "SIAGA_DATA_DIR": (("data_dir",), Path),
    "SIAGA_WEBHOOK_URL": (("webhook_url",), str),
    "SIAGA_REPORTS_DATABASE_URL": (("reports", "database_url"), SecretStr),
    "SIAGA_ALERTING_DATABASE_URL": (("alerting", "database_url"), SecretStr),
    "SIAGA_CONSOLE_TILE_URL": (("console", "tile_url"), str),
}
# Variables that add an entry to a list rather than set a field: variable -> (list, field).
APPENDING: Mapping[str, tuple[str, str]] = {
    "SIAGA_ALERTMANAGER_URL": ("alertmanagers", "url"),
}


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None, *,
                  require_files: bool = False) -> Settings:
    """Read the YAML file (the bundled one without a path) and apply the environment on top.

    `require_files`: the files the service reads at start (catalog, rules, mqtt.ca_file)
    must be there and readable, and data_dir must be a folder, so `siaga run` and
    `siaga check` name the setting and its line rather than fail deep inside start-up.
    Raises ConfigFileError naming the file, the line and field (or the variable) and the fix.
    """
    path = path or BUNDLED_CONFIG
    document = read_yaml(path)
    data = document.data
    sources: dict[Loc, str] = {}
    problems: list[Problem] = []
    for name, (field_path, convert) in ENVIRONMENT.items():
        raw = (environ if environ is not None else os.environ).get(name)
        if raw is None or raw == "":
            continue
        try:
            value: object = convert(raw)
        except ValueError:
            problems.append(Problem(f"environment {name}", f"must be an integer, got {raw!r}"))
            continue
        _set_path(data, field_path, value)
        sources[field_path] = f"environment {name}"
    for name, (list_name, field) in APPENDING.items():
        raw = (environ if environ is not None else os.environ).get(name)
        if raw:
            loc = _append_entry(data, list_name, field, raw)
            if loc is not None:
                sources[loc] = f"environment {name}"
    if problems:
        raise ConfigFileError(path, problems)
    settings = validate_data(data, Settings, path, lambda: document.node, sources)
    settings = _resolve_paths(settings, path.parent, sources)
    if require_files:
        found = [locate(loc, message, document.node, sources)
                 for loc, message in _file_problems(settings)]
        if found:
            raise ConfigFileError(path, found)
    return settings


def _file_problems(settings: Settings) -> list[tuple[Loc, str]]:
    """Files named in the settings that start-up would fail to read."""
    problems: list[tuple[Loc, str]] = []
    named: list[tuple[Loc, Path | None]] = [
        (("catalog",), settings.catalog), (("rules",), settings.rules),
        (("mqtt", "ca_file"), settings.mqtt.ca_file if settings.mqtt.tls else None),
        (("cameras", "watchlist_file"), settings.cameras.watchlist_file),
    ]
    for loc, file in named:
        if file is None:
            continue
        if not file.exists():
            problems.append((loc, f"{file}: no such file"))
        elif not file.is_file():
            problems.append((loc, f"{file}: not a file"))
        elif not os.access(file, os.R_OK):
            problems.append((loc, f"{file}: cannot be read (permission denied)"))
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        problems.append((("data_dir",), f"{settings.data_dir}: exists and is not a folder"))
    return problems


def _set_path(data: dict[str, object], field_path: tuple[str, ...], value: object) -> None:
    target = data
    for key in field_path[:-1]:
        section = target.setdefault(key, {})
        if not isinstance(section, dict):  # the YAML had a scalar here; validation will say so
            return
        target = section
    target[field_path[-1]] = value


def _append_entry(data: dict[str, object], list_name: str, field: str, value: str) -> Loc | None:
    """Add `{field: value}` to the list `list_name` unless an entry has it already; its place."""
    entries = data.setdefault(list_name, [])
    if entries is None:
        entries = data[list_name] = []
    if not isinstance(entries, list):  # the YAML had something else here; validation says so
        return None
    if any(isinstance(entry, dict) and entry.get(field) == value for entry in entries):
        return None  # the file names it too: one Alertmanager, told once
    entries.append({field: value})
    return (list_name, len(entries) - 1, field)


def _resolve_paths(settings: Settings, base: Path, sources: Mapping[Loc, str]) -> Settings:
    """Relative paths in a file are relative to that file; from the environment or the
    bundled file (which lives inside the installed package), to the working directory."""
    if base == BUNDLED_CONFIG.parent:
        return settings
    update: dict[str, Path] = {}
    if not settings.data_dir.is_absolute() and ("data_dir",) not in sources:
        update["data_dir"] = base / settings.data_dir
    for name in ("catalog", "rules"):
        path = getattr(settings, name)
        if path is not None and not path.is_absolute():
            update[name] = base / path
    sections: dict[str, object] = {}
    for section, names in (("mqtt", ("ca_file",)), ("broker", ("password_file", "acl_file")),
                           ("cameras", ("watchlist_file",))):
        current = getattr(settings, section)
        relative = {name: base / getattr(current, name) for name in names
                    if getattr(current, name) is not None
                    and not getattr(current, name).is_absolute()}
        if relative:
            sections[section] = current.model_copy(update=relative)
    alertmanagers = [_resolve_tls(entry, base) for entry in settings.alertmanagers]
    if alertmanagers != settings.alertmanagers:
        sections["alertmanagers"] = alertmanagers
    return settings.model_copy(update={**update, **sections})


def _resolve_tls(entry: AlertmanagerSettings, base: Path) -> AlertmanagerSettings:
    tls = entry.tls
    if tls is None:
        return entry
    names = ("ca_file", "cert_file", "key_file")
    relative = {name: base / getattr(tls, name) for name in names
                if getattr(tls, name) is not None and not getattr(tls, name).is_absolute()}
    return entry.model_copy(update={"tls": tls.model_copy(update=relative)}) if relative else entry
