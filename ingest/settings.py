"""The data path's settings: MQTT, InfluxDB, batching, spool (siaga.settings composes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from siaga_core.configfile import StrictModel
from siaga_core.mqttloop import BrokerAddress

# YAML has no path type: a path is a string, so this one field type converts.
FilePath = Annotated[Path, Field(strict=False)]


class Section(StrictModel):
    """A settings section: see StrictModel."""


class MqttSettings(Section):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = Field(default="siaga-ingest", min_length=1, max_length=64)
    topic_prefix: str = "siaga"
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)
    ca_file: FilePath | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError("must look like mqtt://user:pass@host:port (mqtts:// for TLS)")
        if not parts.hostname:
            raise ValueError("needs a host, e.g. mqtt://127.0.0.1:1883")
        return url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def username(self) -> str | None:
        user = urlsplit(self.url).username
        return unquote(user) if user else None

    @property
    def password(self) -> SecretStr | None:
        password = urlsplit(self.url).password
        return SecretStr(unquote(password)) if password else None

    def address(self) -> BrokerAddress:
        """Where and as whom to connect, for a paho client (`BrokerAddress.log_in`)."""
        password = self.password.get_secret_value() if self.password else None
        ca_file = str(self.ca_file) if self.ca_file else None
        return BrokerAddress(self.host, self.port, self.username, password, self.tls, ca_file)


class AmqpSettings(Section):
    """RabbitMQ's partition queues as the input (`ingest.input: amqp`, issue 18).

    Devices publish MQTT to RabbitMQ's MQTT plugin; the service reads the partitions over
    AMQP 0-9-1 (ingest.amqp). Every instance must use the same `name`, `partitions` and
    `replicas`: RabbitMQ refuses to declare a queue again with other arguments.
    """

    # Nodes of one cluster, tried in turn: amqp://user:pass@host:5672/vhost (amqps:// for
    # TLS); `SIAGA_AMQP_URL` takes them comma-separated.
    urls: list[str] = Field(default_factory=lambda: ["amqp://guest:guest@127.0.0.1:5672/"],
                            min_length=1)
    name: str = Field(default="siaga", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # Queues the devices are spread over: the most instances that can share the work.
    partitions: int = Field(default=12, ge=1, le=1000)
    # Unacknowledged messages per partition: enough for a few batches in flight (the
    # pipeline acknowledges a batch once durable). The inbox has its own bound, in bytes
    # too (ingest.inbox), with the wire reader.
    prefetch: int = Field(default=1000, ge=1, le=65535)
    # Members of each quorum queue: 3 survive the loss of one node.
    replicas: int = Field(default=3, ge=1, le=99)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)
    # Several instances share the partitions: instance `instance` of `instances` reads its
    # home partitions (p % instances == instance) at once and registers on the others
    # `standby_after_s` later, as a standby that takes a partition over when its reader's
    # channel dies. RabbitMQ 3.10's single-active-consumer makes the first consumer
    # registered active and never rebalances, so without the delay the first instance up
    # would read every partition. Instances started further apart than the delay, or one
    # restarted while the others ran, read what they got: see ingest.amqp.
    instance: int = Field(default=0, ge=0)
    instances: int = Field(default=1, ge=1, le=1000)
    # Long enough for every instance of a deployment to start and register on its home
    # partitions (a service manager starts them within a second or two).
    standby_after_s: float = Field(default=5.0, ge=0, le=3600)
    # What reads the deliveries: `wire`, ingest.amqpwire's own reader, which parses
    # deliveries from large reads (2.7 times aiormq's single-reading drain in the cores
    # benchmark, docs/scaling.md), or `aiormq`, the reference. The partitions are declared
    # through aiormq either way. Both read an `amqps://` URL's options (cafile, capath,
    # cadata, certfile, keyfile, no_verify_ssl).
    reader: Literal["aiormq", "wire"] = "wire"

    @model_validator(mode="after")
    def _check_instance(self) -> Self:
        if self.instance >= self.instances:
            raise ValueError(f"instance must be below instances (they count from 0): "
                             f"instance {self.instance} of {self.instances}")
        return self

    def home(self, partition: int) -> bool:
        """Whether `partition` (its number, from 0) is one this instance reads at once."""
        return partition % self.instances == self.instance

    @field_validator("urls", mode="before")
    @classmethod
    def _split(cls, urls: object) -> object:
        return [url.strip() for url in urls.split(",") if url.strip()] if isinstance(
            urls, str) else urls

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
                raise ValueError("each must look like amqp://user:pass@host:5672/vhost "
                                 "(amqps:// for TLS)")
        return urls


class InfluxSettings(Section):
    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:8086"
    # v1
    database: str = Field(default="siaga", min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    create_database: bool = True
    # v2
    org: str = "siaga"
    bucket: str = "siaga"
    token: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8086")
        return url.rstrip("/")


class IngestSettings(Section):
    # Where readings come from: MQTT (the `mqtt` section's broker) or RabbitMQ's partition
    # queues over AMQP (the `amqp` section), for several instances sharing the devices.
    input: Literal["mqtt", "amqp"] = "mqtt"
    # Readings (lines) per InfluxDB write, and messages per write: the MQTT in-flight window
    # (max_inflight_messages 20000 in mosquitto.conf) must hold a few batches of messages.
    # Single readings make 5000-line writes, as InfluxDB recommends; batched messages (100
    # readings each) 20000-line ones: a write a backlog waits on carries four times the
    # readings (batched drains +3 to +22 % in alternated runs, with the core busier).
    batch_size: int = Field(default=20000, ge=1, le=20000)
    batch_messages: int = Field(default=5000, ge=1, le=20000)
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    # While no write is under way a batch goes out once its first reading waited this
    # long: readings are queryable sooner, and a high rate still makes large batches.
    linger_s: float = Field(default=0.05, ge=0, le=60)
    unknown_devices: Literal["dead-letter", "accept"] = "dead-letter"
    max_future_s: float = Field(default=300.0, ge=0)


class SpoolSettings(Section):
    max_bytes: int = Field(default=1 << 30, ge=1 << 20)  # 1 GiB: hours of a city's readings


class CameraSettings(Section):
    """Cameras' plates (SPEC section 7): the watch list, the only plates Siaga keeps.

    Without `watchlist_file` no plate is kept: every plate event is stored and counted
    without its plate.
    """

    watchlist_file: FilePath | None = None  # a CSV: a `plate` column, others become labels
